#!/usr/bin/python3
"""torch_train.py -- PyTorch baseline for `lina bench --model`: training tokens/s.

The same causal LMs as lina (the functional model of dev/torch_ref.py, built
from docs/mixers.md), float32, with the token mixers in chunkwise
form written with plain torch ops (below): GLA as intra-chunk dense products
plus an inter-chunk state, (Gated) DeltaNet through the WY / UT transform
(a unit-lower-triangular solve per chunk). Mamba2's SSD as the scalar-gate chunk form. The
chunkwise mixers run at the chunk length of 32, 64, 128 or 256 that trains fastest on the
machine for the model and shape (--chunk best, the default: a short timing run of each
first; the JSON says which), so that the baseline is the fastest form of this code. Timed: forward + backward
(+ global-norm clipping with --clip) + torch.optim.AdamW step on B x T random
tokens; tokens/s from the median step after one warm-up step.

  /usr/bin/python3 bench/torch_train.py --model configs/gla-10m.json --seq-len 512 --batch 1 \
      --threads 2 --steps 3 [--json]

Prints one JSON object (with --json) or a line of text.
"""
import argparse
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "dev"))
import torch_ref  # noqa: E402  (the model definition)


def _chunks(x, C):
    """[B,T,H,D] -> [B,H,n,C,D] (zero padded to a multiple of C)."""
    B, T, H = x.shape[:3]
    n = (T + C - 1) // C
    pad = n * C - T
    if pad:
        x = torch.cat([x, x.new_zeros((B, pad) + tuple(x.shape[2:]))], dim=1)
    return x.view((B, n, C, H) + tuple(x.shape[3:])).transpose(1, 3).transpose(2, 3)


def _unchunk(o, T):
    """[B,H,n,C,D] -> [B,T,H,D]."""
    B, H, n, C, D = o.shape
    return o.permute(0, 2, 3, 1, 4).reshape(B, n * C, H, D)[:, :T]


CHUNKS = (32, 64, 128, 256)  # the chunk lengths the baselines try (--chunk best)


def gla_chunk(q, k, v, g, scale, C=64):
    """GLA (vector log-gate g [B,T,H,K]) in chunk form (docs/mixers.md 3.1). The
    intra-chunk weights factor exp(b_r - b_c) = exp(b_r) exp(-b_c) against the
    chunk start, which is fine for GLA's mild gates (logsigmoid / 16) but would
    overflow float32 for decays beyond ~ -88 per chunk."""
    T = q.shape[1]
    q, k, v, g = (_chunks(t, C) for t in (q, k, v, g))  # [B,H,n,C,*]
    b = g.cumsum(dim=3)
    bl = b[:, :, :, -1:, :]  # [B,H,n,1,K]
    qe = q * scale * torch.exp(b)
    ke = k * torch.exp(-b)
    kd = k * torch.exp(bl - b)
    mask = torch.ones(C, C, dtype=torch.bool, device=q.device).tril()
    A = (qe @ ke.transpose(-1, -2)).masked_fill(~mask, 0.0)
    o_intra = A @ v
    S = q.new_zeros(q.shape[0], q.shape[1], q.shape[-1], v.shape[-1])
    outs = []
    for i in range(q.shape[2]):
        outs.append(qe[:, :, i] @ S)
        S = torch.exp(bl[:, :, i, 0])[..., None] * S + kd[:, :, i].transpose(-1, -2) @ v[:, :, i]
    o = o_intra + torch.stack(outs, dim=2)
    return _unchunk(o, T)


def la_chunk(q, k, v, scale, C=64):
    """Linear attention without decay in chunk form: the causal mask instead of a decay
    matrix, the state summed without a factor (plain linear attention as a PyTorch user
    would write it; ssd_chunk with g = 0 gives the same values with more work)."""
    T = q.shape[1]
    q, k, v = (_chunks(t, C) for t in (q, k, v))  # [B,H,n,C,*]
    mask = torch.ones(C, C, dtype=torch.bool, device=q.device).tril()
    qs = q * scale
    o = (qs @ k.transpose(-1, -2)).masked_fill(~mask, 0.0) @ v
    S = q.new_zeros(q.shape[0], q.shape[1], q.shape[-1], v.shape[-1])
    outs = []
    for i in range(q.shape[2]):
        outs.append(qs[:, :, i] @ S)
        S = S + k[:, :, i].transpose(-1, -2) @ v[:, :, i]
    return _unchunk(o + torch.stack(outs, dim=2), T)


def ssd_const_chunk(q, k, v, gh, scale, C=64):
    """Linear attention with a fixed log decay per head gh [H] (RetNet's retention) in
    chunk form: the decay matrix exp((r - c) gh) and the chunk factors are the same for
    every chunk and batch row, made once per call ([H, C, C]) instead of from a gate
    tensor (ssd_chunk with g = gh expanded gives the same values)."""
    T = q.shape[1]
    q, k, v = (_chunks(t, C) for t in (q, k, v))  # [B,H,n,C,*]
    r = torch.arange(C, dtype=q.dtype, device=q.device)
    ghc = gh.to(q.dtype)[:, None]  # [H,1]
    incl = torch.ones(C, C, dtype=torch.bool, device=q.device).tril()
    gam = torch.exp(((r[:, None] - r[None, :]) * ghc[..., None]).masked_fill(~incl, float("-inf")))  # [H,C,C]
    qf = torch.exp((r + 1) * ghc)[None, :, None, :, None]  # exp(b_r), b_r = (r + 1) gh
    kf = torch.exp((C - 1 - r) * ghc)[None, :, None, :, None]  # exp(b_last - b_r)
    dec = torch.exp(C * ghc)[None, :, :, None]  # [1,H,1,1]
    qs = q * scale
    o = ((qs @ k.transpose(-1, -2)) * gam[None, :, None]) @ v
    qe = qs * qf
    kd = k * kf
    S = q.new_zeros(q.shape[0], q.shape[1], q.shape[-1], v.shape[-1])
    outs = []
    for i in range(q.shape[2]):
        outs.append(qe[:, :, i] @ S)
        S = dec * S + kd[:, :, i].transpose(-1, -2) @ v[:, :, i]
    return _unchunk(o + torch.stack(outs, dim=2), T)


def delta_chunk(q, k, v, beta, g, scale, C=64):
    """(Gated) delta rule in chunk form, WY / UT transform (docs/mixers.md 4.1, 4.2).
    q, k [B,T,H,K] (L2-normalised), v [B,T,H,V], beta [B,T,H], g [B,T,H] or None."""
    T = q.shape[1]
    q, k, v = (_chunks(t, C) for t in (q, k, v))  # [B,H,n,C,*]
    beta = _chunks(beta[..., None], C)[..., 0]  # [B,H,n,C]
    if g is None:
        b = torch.zeros_like(beta)
    else:
        b = _chunks(g[..., None], C)[..., 0].cumsum(dim=-1)
    incl = torch.ones(C, C, dtype=torch.bool, device=q.device).tril()
    strict = incl.clone().fill_diagonal_(False)
    diff = b[..., :, None] - b[..., None, :]
    gam = torch.exp(diff.masked_fill(~incl, float("-inf")))  # exp(b_r - b_c), 0 above the diagonal
    kk = k @ k.transpose(-1, -2)
    A = (beta[..., :, None] * kk * gam).masked_fill(~strict, 0.0)
    eye = torch.eye(C, dtype=q.dtype, device=q.device)
    Tm = torch.linalg.solve_triangular(eye + A, eye.expand_as(A), upper=False, unitriangular=True)
    W = Tm @ ((beta * torch.exp(b))[..., None] * k)
    U = Tm @ (beta[..., None] * v)
    qs = q * scale
    P = (qs @ k.transpose(-1, -2)) * gam  # gam is 0 above the diagonal
    qe = qs * torch.exp(b)[..., None]
    bl = b[..., -1:]  # [B,H,n,1]
    kd = k * torch.exp(bl - b)[..., None]
    S = q.new_zeros(q.shape[0], q.shape[1], q.shape[-1], v.shape[-1])
    outs = []
    for i in range(q.shape[2]):
        Ut = U[:, :, i] - W[:, :, i] @ S
        outs.append(qe[:, :, i] @ S + P[:, :, i] @ Ut)
        S = torch.exp(bl[:, :, i])[..., None] * S + kd[:, :, i].transpose(-1, -2) @ Ut
    return _unchunk(torch.stack(outs, dim=2), T)


def ssd_chunk(q, k, v, g, scale, C=64):
    """Scalar-gated linear attention (Mamba2's SSD: q = C, k = B, v = delta x, g = delta A
    [B,T,H]) in chunk form with the decays taken as differences inside the chunk
    (exp(b_r - b_c) for r >= c), so no factor exceeds 1."""
    T = q.shape[1]
    q, k, v = (_chunks(t, C) for t in (q, k, v))  # [B,H,n,C,*]
    b = _chunks(g[..., None], C)[..., 0].cumsum(dim=-1)  # [B,H,n,C]
    incl = torch.ones(C, C, dtype=torch.bool, device=q.device).tril()
    gam = torch.exp((b[..., :, None] - b[..., None, :]).masked_fill(~incl, float("-inf")))
    qs = q * scale
    o = ((qs @ k.transpose(-1, -2)) * gam) @ v
    qe = qs * torch.exp(b)[..., None]
    bl = b[..., -1:]
    kd = k * torch.exp(bl - b)[..., None]
    S = q.new_zeros(q.shape[0], q.shape[1], q.shape[-1], v.shape[-1])
    outs = []
    for i in range(q.shape[2]):
        outs.append(qe[:, :, i] @ S)
        S = torch.exp(bl[:, :, i])[..., None] * S + kd[:, :, i].transpose(-1, -2) @ v[:, :, i]
    return _unchunk(o + torch.stack(outs, dim=2), T)


def step_flops(c, shapes, B, T, C=64):
    """Floating-point operations of one training step (forward + backward) of model c on
    B x T tokens, counted from the products (a multiply-add is 2):
    - weights: every weight matrix used once per token (projections, output head, short
      convolutions; not the embedding lookup): 2 x numel per token forward, 4 backward;
    - mixer products, forward, the backward counted as twice the forward:
      softmax attention: QK^T and PV over the causal half, T(T+1)/2 x (dk + dv) x 2 per head;
      chunk forms (GLA, Mamba2's SSD, (Gated) DeltaNet) with chunks of C: the intra-chunk
      QK^T and AV over the causal half of each C x C block, the inter-chunk Q S and the state
      update K^T V (dk x dv per token each); (Gated) DeltaNet adds K K^T, the unit-lower-
      triangular inverse (C^3 / 3), W = T K, U = T V (lower halves) and W S.
    Elementwise work (norms, gates, activations, the loss, AdamW) is not counted.
    Returns (total, {part: flops})."""
    N = B * T
    w = sum(_numel(s) for n, s in shapes.items() if len(s) >= 2 and "embeddings" not in n)
    L, H, D = c["num_hidden_layers"], c["num_heads"], c["hidden_size"]
    mt = c["model_type"]
    qdim = next((s[0] for n, s in shapes.items() if n.endswith("layers.0.attn.q_proj.weight")), D)
    vdim = next((s[0] for n, s in shapes.items() if n.endswith("layers.0.attn.v_proj.weight")), D)
    dk, dv = qdim // H, vdim // H
    Cc = min(C, T)
    nch = (T + Cc - 1) // Cc
    tri = Cc * (Cc + 1) // 2  # causal pairs in a chunk
    if mt == "transformer":
        f = T * (T + 1) // 2 * 2 * (dk + dv)
    elif mt == "mamba2":
        P = c["head_dim"]
        H = c["expand"] * D // P
        dk, dv = c["state_size"], P
        f = nch * (2 * tri * (dk + dv) + 4 * Cc * dk * dv)
    elif mt in ("delta_net", "gated_deltanet"):
        f = nch * (2 * tri * (dk + dv)  # QK^T, P U
                   + 2 * tri * (2 * dk + dv)  # K K^T, W = T K, U = T V
                   + Cc ** 3 // 3  # the triangular inverse
                   + 6 * Cc * dk * dv)  # Q S, W S, K^T U
    else:  # gla and the other chunk forms
        f = nch * (2 * tri * (dk + dv) + 4 * Cc * dk * dv)
    parts = {"weights": 6 * w * N, "mixer": 3 * f * B * H * L}
    return sum(parts.values()), parts


def _numel(s):
    n = 1
    for x in s:
        n *= x
    return n


def check_flops(c, params, mixers, tok, tgt, a):
    """torch.profiler's FLOP count of one forward + backward against step_flops: the matrix
    products (aten::mm) must equal the weight-matrix part without the short convolutions (which
    torch runs elementwise); the batched products (aten::bmm: the mixer in dense C x C blocks,
    softmax attention over the full T x T) are printed beside the count's causal halves."""
    from torch.profiler import profile
    with profile(with_flops=True) as prof:
        torch_ref.lm_loss(torch_ref.model_logits(params, c, tok, mixers), tgt).backward()
    fl = {}
    for e in prof.key_averages():
        if e.flops:
            fl[e.key] = fl.get(e.key, 0) + e.flops
    shapes = torch_ref.param_shapes(c)
    total, parts = step_flops(c, shapes, a.batch, a.seq_len, 64 if a.chunk == "best" else int(a.chunk))
    conv = 6 * a.batch * a.seq_len * sum(_numel(s) for n, s in shapes.items() if len(s) == 3)
    mm, bmm = fl.get("aten::mm", 0) + fl.get("aten::addmm", 0), fl.get("aten::bmm", 0)
    print("%s: profiler mm %.4f GFLOP, step_flops weights without convolutions %.4f GFLOP; "
          "profiler bmm %.4f GFLOP (dense blocks), step_flops mixer %.4f GFLOP (causal halves)"
          % (c["model_type"], mm / 1e9, (parts["weights"] - conv) / 1e9, bmm / 1e9, parts["mixer"] / 1e9))
    return 0 if mm == parts["weights"] - conv else 1


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--seq-len", type=int, default=512)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--chunk", default="best",
                    help="chunk length of the chunkwise mixers, or best (default): the one of 32, 64, 128, "
                         "256 (at most the sequence length) whose training steps ran fastest in a short "
                         "timing run before the timed steps")
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--beta2", type=float, default=0.95)
    ap.add_argument("--clip", type=float, default=0.0, help="global gradient-norm clipping (0: none)")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--check-flops", action="store_true",
                    help="count the step's products with torch.profiler and compare with step_flops")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass
    with open(a.model) as f:
        c = json.load(f)
    if not c.get("intermediate_size"):
        D, r = c["hidden_size"], c.get("hidden_ratio") or 4
        c["intermediate_size"] = 256 * ((int(D * r * 2 / 3) + 255) // 256)
    gen = torch.Generator().manual_seed(1)
    params = torch_ref.init_params(torch_ref.param_shapes(c), gen)
    for t in params.values():
        t.requires_grad_(True)
    n_params = sum(t.numel() for t in params.values())
    decay = [t for n, t in params.items() if t.dim() >= 2 and "embeddings" not in n]
    no_decay = [t for n, t in params.items() if not (t.dim() >= 2 and "embeddings" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=a.lr, betas=(0.9, a.beta2), eps=1e-8)
    if c["model_type"] == "mamba2" and c.get("allow_neg_eigval"):
        sys.exit("torch_train.py: mamba2 with allow_neg_eigval has no chunk form here")
    def chunk_mixers(C):
        return {"gla": lambda *x: gla_chunk(*x, C=C), "delta": lambda *x: delta_chunk(*x, C=C),
                "ssd": lambda *x: ssd_chunk(*x, C=C)}

    best = a.chunk == "best"
    chunk = 64 if best else int(a.chunk)
    mixers = chunk_mixers(chunk)
    tok = torch.randint(0, c["vocab_size"], (a.batch, a.seq_len), generator=gen)
    tgt = torch.randint(0, c["vocab_size"], (a.batch, a.seq_len), generator=gen)

    def step():
        opt.zero_grad(set_to_none=True)
        loss = torch_ref.lm_loss(torch_ref.model_logits(params, c, tok, mixers), tgt)
        loss.backward()
        if a.clip > 0:
            torch.nn.utils.clip_grad_norm_(list(params.values()), a.clip)
        opt.step()
        return loss.item()

    if a.check_flops:
        sys.exit(check_flops(c, params, mixers, tok, tgt, a))
    if best and c["model_type"] != "transformer":
        # the chunk length that trains fastest here: a warm-up and two steps each, least CPU
        # time (the parameters move a little; the step's cost does not depend on them)
        cands = [C for C in CHUNKS if C <= max(32, a.seq_len)]
        cost = {}
        for C in cands:
            mixers.update(chunk_mixers(C))
            step()  # warm-up at this chunk length
            runs = []
            for _ in range(2):
                c0 = time.process_time()
                step()
                runs.append(time.process_time() - c0)
            cost[C] = min(runs)
        chunk = min(cands, key=lambda C: cost[C])
        mixers.update(chunk_mixers(chunk))
    step()  # warm-up
    times, cpu = [], []
    for _ in range(a.steps):
        t0, c0 = time.perf_counter(), time.process_time()
        step()
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)

    def median(x):
        x = sorted(x)
        n = len(x)
        return x[n // 2] if n % 2 else 0.5 * (x[n // 2 - 1] + x[n // 2])
    med = median(times)
    tps = a.batch * a.seq_len / med
    r = {"framework": "torch", "torch": torch.__version__, "model_type": c["model_type"], "params": n_params,
         "seq_len": a.seq_len, "batch": a.batch, "threads": a.threads, "train_tokens_per_s": round(tps, 1),
         "train_ms_per_step": round(1e3 * med, 3), "train_cpu_ms_per_step": round(1e3 * median(cpu), 3),
         "chunk": chunk}
    # the FLOP count is the one definition (chunk 64 unless --chunk gives one), whatever chunk ran
    fl, parts = step_flops(c, torch_ref.param_shapes(c), a.batch, a.seq_len, 64 if best else chunk)
    r["step_gflop"] = round(fl / 1e9, 4)
    r["step_gflop_parts"] = {k: round(v / 1e9, 4) for k, v in parts.items()}
    if a.json:
        print(json.dumps(r))
    else:
        print("torch %s: %s, %d parameters, B %d x T %d, %d threads: %.1f train tokens/s" %
              (torch.__version__, c["model_type"], n_params, a.batch, a.seq_len, a.threads, tps))


if __name__ == "__main__":
    main()
