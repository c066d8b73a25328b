#!/usr/bin/python3
"""lina.ops against the float64 references of reference.py: forward outputs, final
states and the gradients of every input (initial states included), both forms, with
and without initial_state / output_final_state; layouts, NumPy, non-contiguous inputs;
bad input raising one exception that names the argument."""

import subprocess
import sys

import harness
from harness import check, raises, run

import torch
import torch.nn.functional as F

import lina
from lina import _core, _lib, ops
import reference as ref

FWD_RTOL, GRAD_RTOL = 1e-4, 5e-4
B, T, H, K, V = 2, 100, 2, 16, 12     # T crosses the 64-token chunk boundary


def flat(x):
    if x is None:
        return []
    if isinstance(x, (tuple, list)):
        return [e for y in x for e in flat(y)]
    return [x]


def err(a, b):
    """max|a - b| / max(1, max|b|)"""
    return float((a.double() - b).abs().max() / max(1.0, float(b.abs().max())))


FORM_TAG = [""]  # prefix of the test names while forced_form_tests runs


def compare(name, fn_lina, fn_ref, inputs, seed=1):
    """inputs: name -> float64 tensor (or None). fn_*(**tensors) -> (o, state); the loss is
    sum(out * w) over every returned tensor with random weights, the same for both."""
    name = FORM_TAG[0] + name
    xs32 = {n: None if x is None else x.float().requires_grad_() for n, x in inputs.items()}
    xs64 = {n: None if x is None else x.clone().requires_grad_() for n, x in inputs.items()}
    out32, out64 = flat(fn_lina(**xs32)), flat(fn_ref(**xs64))
    if not check(f"{name}: outputs", len(out32) == len(out64),
                 f"{len(out32)} outputs, reference {len(out64)}"):
        return
    gen = torch.Generator().manual_seed(seed)
    ws = [torch.randn(o.shape, generator=gen, dtype=torch.float64) for o in out64]
    worst, what = 0.0, ""
    for i, (a, b) in enumerate(zip(out32, out64)):
        e = err(a.detach(), b.detach())
        if e > worst:
            worst, what = e, f"output {i}"
    check(f"{name}: forward", worst <= FWD_RTOL, f"{what} off by {worst:.3g}")
    sum((a * w.float()).sum() for a, w in zip(out32, ws)).backward()
    sum((b * w).sum() for b, w in zip(out64, ws)).backward()
    worst, what = 0.0, "all"
    for n in inputs:
        if inputs[n] is None:
            continue
        g32, g64 = xs32[n].grad, xs64[n].grad
        if g32 is None or g64 is None:
            check(f"{name}: d{n}", False, f"gradient missing (lina {g32 is not None}, ref {g64 is not None})")
            continue
        e = err(g32, g64)
        if e > worst:
            worst, what = e, "d" + n
    check(f"{name}: gradients", worst <= GRAD_RTOL, f"{what} off by {worst:.3g}")


gen = torch.Generator().manual_seed(0)


def randn(*s, scale=1.0):
    return torch.randn(s, generator=gen, dtype=torch.float64) * scale


def uniform(lo, hi, *s):
    return lo + (hi - lo) * torch.rand(s, generator=gen, dtype=torch.float64)


def qkv(Kd=K, Vd=V, positive=False):
    q, k, v = randn(B, T, H, Kd), randn(B, T, H, Kd), randn(B, T, H, Vd)
    if positive:  # feature-mapped queries and keys (normalised forms)
        q, k = F.elu(q) + 1, F.elu(k) + 1
    return q, k, v


def state():
    return randn(B, H, K, V, scale=0.5)


# ---------------------------------------------------------- diagonal decay

def dd_tests():
    for fs in (False, True):
        for with_h0 in (False, True):
            tag = f"[h0={int(with_h0)} final={int(fs)}]"
            q, k, v = qkv()
            h0 = state() if with_h0 else None
            compare(f"chunk_linear_attn normalize=False {tag}",
                    lambda q, k, v, h0: ops.chunk_linear_attn(q, k, v, initial_state=h0,
                                                              output_final_state=fs, normalize=False),
                    lambda q, k, v, h0: (lambda r: (r[0], r[1] if fs else None))(ref.dd(q, k, v, h0=h0)),
                    dict(q=q, k=k, v=v, h0=h0))
            compare(f"fused_recurrent_linear_attn {tag}",
                    lambda q, k, v, h0: ops.fused_recurrent_linear_attn(q, k, v, initial_state=h0,
                                                                        output_final_state=fs),
                    lambda q, k, v, h0: (lambda r: (r[0], r[1] if fs else None))(ref.dd(q, k, v, h0=h0)),
                    dict(q=q, k=k, v=v, h0=h0))
    # normalised, with the (h0, z0) state tuple, both forms
    q, k, v = qkv(positive=True)
    h0, z0 = state().abs(), uniform(0.5, 1.0, B, 1, H, K)

    def ref_norm(q, k, v, h0, z0, reverse=False, scale=0.3):
        o, h = ref.dd(q, k, v, h0=h0, scale=scale, reverse=reverse)
        o, z = ref.normalize(o, q, k, scale, z0, reverse)
        return o, (h, z)
    compare("chunk_linear_attn normalize=True (h0, z0) scale=0.3",
            lambda q, k, v, h0, z0: ops.chunk_linear_attn(q, k, v, scale=0.3, initial_state=(h0, z0),
                                                          output_final_state=True),
            ref_norm, dict(q=q, k=k, v=v, h0=h0, z0=z0))
    compare("fused_recurrent_linear_attn normalize=True reverse=True",
            lambda q, k, v, h0, z0: ops.fused_recurrent_linear_attn(
                q, k, v, scale=0.3, initial_state=(h0, z0), output_final_state=True, normalize=True,
                reverse=True),
            lambda q, k, v, h0, z0: ref_norm(q, k, v, h0, z0, reverse=True),
            dict(q=q, k=k, v=v, h0=h0, z0=z0))
    q, k, v = qkv()
    gamma = torch.log1p(-torch.pow(2.0, -5.0 - torch.arange(H, dtype=torch.float64)))
    for with_h0 in (False, True):
        h0 = state() if with_h0 else None
        compare(f"chunk_retention [h0={int(with_h0)}]",
                lambda q, k, v, h0: ops.chunk_retention(q, k, v, initial_state=h0, output_final_state=True),
                lambda q, k, v, h0: ref.dd(q, k, v, gamma, "head", h0=h0), dict(q=q, k=k, v=v, h0=h0))
        g = uniform(-0.5, -0.01, B, T, H)
        compare(f"chunk_simple_gla g [h0={int(with_h0)}]",
                lambda q, k, v, g, h0: ops.chunk_simple_gla(q, k, v, g=g, initial_state=h0,
                                                            output_final_state=True),
                lambda q, k, v, g, h0: ref.dd(q, k, v, g, "scalar", h0=h0), dict(q=q, k=k, v=v, g=g, h0=h0))
        gg = uniform(-0.3, -0.01, H)
        compare(f"chunk_simple_gla g_gamma [h0={int(with_h0)}]",
                lambda q, k, v, g, h0: ops.chunk_simple_gla(q, k, v, g_gamma=g, initial_state=h0,
                                                            output_final_state=True),
                lambda q, k, v, g, h0: ref.dd(q, k, v, g, "head", h0=h0), dict(q=q, k=k, v=v, g=gg, h0=h0))
        g = F.logsigmoid(randn(B, T, H, K)) / 8
        compare(f"chunk_gla [h0={int(with_h0)}]",
                lambda q, k, v, g, h0: ops.chunk_gla(q, k, v, g, initial_state=h0, output_final_state=True),
                lambda q, k, v, g, h0: ref.dd(q, k, v, g, "vector", h0=h0), dict(q=q, k=k, v=v, g=g, h0=h0))
        compare(f"fused_recurrent_gla [h0={int(with_h0)}]",
                lambda q, k, v, g, h0: ops.fused_recurrent_gla(q, k, v, gk=g, initial_state=h0,
                                                               output_final_state=with_h0),
                lambda q, k, v, g, h0: (lambda r: (r[0], r[1] if with_h0 else None))(
                    ref.dd(q, k, v, g, "vector", h0=h0)),
                dict(q=q, k=k, v=v, g=g, h0=h0))
    compare("fused_recurrent_gla reverse=True scale=0.5",
            lambda q, k, v, g, h0: ops.fused_recurrent_gla(q, k, v, gk=g, scale=0.5, initial_state=h0,
                                                           output_final_state=True, reverse=True),
            lambda q, k, v, g, h0: ref.dd(q, k, v, g, "vector", scale=0.5, h0=h0, reverse=True),
            dict(q=q, k=k, v=v, g=g, h0=state()))


# ------------------------------------------------------------- delta rule

def delta_inputs(n=1):
    q = ref.l2norm(randn(B, T, H, K))
    k = ref.l2norm(randn(B, T * n, H, K))
    v = randn(B, T * n, H, V)
    beta = uniform(0.05, 0.95 if n == 1 else 1.9, B, T * n, H)
    g = uniform(-0.5, -0.01, B, T, H)
    return q, k, v, beta, g


def delta_tests():
    q, k, v, beta, g = delta_inputs()
    for with_h0 in (False, True):
        for fs in (False, True):
            tag = f"[h0={int(with_h0)} final={int(fs)}]"
            h0 = state() if with_h0 else None
            keep = (lambda r: (r[0], r[1] if fs else None))
            compare(f"chunk_delta_rule {tag}",
                    lambda q, k, v, beta, h0: ops.chunk_delta_rule(q, k, v, beta, initial_state=h0,
                                                                   output_final_state=fs),
                    lambda q, k, v, beta, h0: keep(ref.delta(q, k, v, beta, h0=h0)),
                    dict(q=q, k=k, v=v, beta=beta, h0=h0))
            compare(f"fused_recurrent_delta_rule {tag}",
                    lambda q, k, v, beta, h0: ops.fused_recurrent_delta_rule(q, k, v, beta, initial_state=h0,
                                                                             output_final_state=fs),
                    lambda q, k, v, beta, h0: keep(ref.delta(q, k, v, beta, h0=h0)),
                    dict(q=q, k=k, v=v, beta=beta, h0=h0))
            compare(f"chunk_gated_delta_rule {tag}",
                    lambda q, k, v, g, beta, h0: ops.chunk_gated_delta_rule(
                        q, k, v, g, beta, initial_state=h0, output_final_state=fs),
                    lambda q, k, v, g, beta, h0: keep(ref.delta(q, k, v, beta, g, h0=h0)),
                    dict(q=q, k=k, v=v, g=g, beta=beta, h0=h0))
            compare(f"fused_recurrent_gated_delta_rule {tag}",
                    lambda q, k, v, g, beta, h0: ops.fused_recurrent_gated_delta_rule(
                        q, k, v, g=g, beta=beta, initial_state=h0, output_final_state=fs),
                    lambda q, k, v, g, beta, h0: keep(ref.delta(q, k, v, beta, g, h0=h0)),
                    dict(q=q, k=k, v=v, g=g, beta=beta, h0=h0))
    # raw q, k normalised in the op; beta as logits through sigmoid (x2 with negative eigenvalues)
    qr, kr, bl = randn(B, T, H, K), randn(B, T, H, K), randn(B, T, H)
    for neg in (False, True):
        compare(f"chunk_gated_delta_rule l2norm+beta sigmoid neg_eigval={int(neg)}",
                lambda q, k, v, g, beta, h0: ops.chunk_gated_delta_rule(
                    q, k, v, g, beta, initial_state=h0, output_final_state=True, use_qk_l2norm_in_kernel=True,
                    use_beta_sigmoid_in_kernel=True, allow_neg_eigval=neg),
                lambda q, k, v, g, beta, h0: ref.delta(ref.l2norm(q), ref.l2norm(k), v,
                                                       torch.sigmoid(beta) * (2 if neg else 1), g, h0=h0),
                dict(q=qr, k=kr, v=v, g=g, beta=bl, h0=state()))
    # grouped value heads (HV = 2 H): value head j reads q/k head j // 2
    vg, bg, gg = randn(B, T, 2 * H, V), uniform(0.05, 0.95, B, T, 2 * H), uniform(-0.5, -0.01, B, T, 2 * H)
    rep = lambda x: x.repeat_interleave(2, dim=2)  # noqa: E731
    for fn in (ops.chunk_gated_delta_rule, ops.fused_recurrent_gated_delta_rule):
        compare(f"{fn.__name__} grouped value heads HV = 2H",
                lambda q, k, v, g, beta, h0: fn(q, k, v, g=g, beta=beta, initial_state=h0, output_final_state=True,
                                                use_qk_l2norm_in_kernel=True),
                lambda q, k, v, g, beta, h0: ref.delta(rep(ref.l2norm(q)), rep(ref.l2norm(k)), v, beta, g, h0=h0),
                dict(q=qr, k=kr, v=vg, g=gg, beta=bg, h0=randn(B, 2 * H, K, V, scale=0.5)))
    raises("value heads not a multiple", ValueError, "not a multiple",
           lambda: ops.chunk_gated_delta_rule(qr.float(), kr.float(), randn(B, T, 3, V).float(),
                                              gg[..., :3].float(), bg[..., :3].float()))
    compare("fused_recurrent_delta_rule l2norm beta=None",
            lambda q, k, v: ops.fused_recurrent_delta_rule(q, k, v, use_qk_l2norm_in_kernel=True),
            lambda q, k, v: (ref.delta(ref.l2norm(q), ref.l2norm(k), v, torch.ones(B, T, H, dtype=torch.float64))[0], None),
            dict(q=qr, k=kr, v=v))
    for n in (1, 2, 3):
        q, k, v, beta, g = delta_inputs(n)
        for with_h0 in (False, True):
            h0 = state() if with_h0 else None
            compare(f"chunk_gated_delta_product n={n} [h0={int(with_h0)}]",
                    lambda q, k, v, g, beta, h0: ops.chunk_gated_delta_product(
                        q, k, v, g, beta, n, initial_state=h0, output_final_state=True),
                    lambda q, k, v, g, beta, h0: ref.delta(q, k, v, beta, g, n, h0=h0),
                    dict(q=q, k=k, v=v, g=g, beta=beta, h0=h0))
    compare("chunk_gated_delta_product n=2 g=None",
            lambda q, k, v, beta: ops.chunk_gated_delta_product(q, k, v, None, beta, 2, output_final_state=True),
            lambda q, k, v, beta: ref.delta(q, k, v, beta, None, 2),
            dict(q=q[:, :T], k=delta_inputs(2)[1], v=randn(B, 2 * T, H, V), beta=uniform(0.1, 1.9, B, 2 * T, H)))


# ----------------------------------------------------- the form of a call

def forced_form_tests():
    """The diagonal-decay and delta-rule tests again with each form forced: the ops run the
    faster form for the call's shape (at the shapes above the chunk form), so each form
    is held to the reference here, and each form's gate check (the recurrent form checks
    the gate in the kernel as it reads it, the chunk form in one pass before)."""
    for form, tag in ((_core.RECURRENT, "[recurrent form] "), (_core.CHUNK, "[chunk form] ")):
        _core.forced_form, FORM_TAG[0] = form, tag
        try:
            dd_tests()
            delta_tests()
            gate_check_tests()
        finally:
            _core.forced_form, FORM_TAG[0] = None, ""


def fast_form_tests():
    """lina_dd_fast_form / lina_delta_fast_form pick what include/lina.h says, and an op at a
    shape where the recurrent form is picked (GLA at K = V = 64) or the chunk form is picked
    for a fused_recurrent_* name (the delta rule at T = 2 chunks) matches the reference."""
    def dd_form(B, T, K, V, gate, bw):
        return _lib.lib.lina_dd_fast_form(_lib.MixDims(B, T, 2, K, V, 0, 0.0), gate, bw)

    def delta_form(T, K, n, chunk=0, bw=1):
        return _lib.lib.lina_delta_fast_form(_lib.MixDims(1, T, 2, K, K, chunk, 0.0), n, bw)
    R, C = _core.RECURRENT, _core.CHUNK
    picks = [(dd_form(8, 512, 64, 64, 3, 1), R), (dd_form(8, 512, 64, 64, 3, 0), R),
             (dd_form(1, 4096, 128, 128, 3, 0), R), (dd_form(1, 4096, 256, 256, 3, 1), C),
             (dd_form(8, 512, 64, 64, 2, 1), R),
             (dd_form(8, 512, 64, 64, 2, 0), R), (dd_form(8, 512, 64, 64, 0, 1), R),
             (dd_form(8, 512, 128, 128, 2, 0), C), (dd_form(8, 512, 16, 16, 1, 1), C),
             (dd_form(8, 512, 64, 64, 0, 0), R), (dd_form(8, 1, 16, 16, 0, 0), R),
             (delta_form(63, 64, 1), R), (delta_form(127, 128, 1), R), (delta_form(128, 128, 1), C),
             (delta_form(1, 64, 1), R), (delta_form(512, 16, 1, bw=0), R)]
    # the delta rule at K, V <= 64 (forward alone: <= 128): the chunk form on full-width
    # AVX-512 units only (lina_cpu_full512)
    full = _lib.lib.lina_cpu_full512()
    path = _lib.lib.lina_isa_name().decode()
    Cf = C if full else R
    # the diagonal decay at K 17..64, V 17..128 with a backward, and gla at K 17..128,
    # V 17..256 with a backward: likewise
    # the other gates at K, V 65..128 with a backward: recurrent on the avx2 and avx512 paths
    # where lina_cpu_full512 is 0
    Cs = R if path in ("avx512", "avx2") and not full else C
    picks += [(dd_form(1, 4096, 128, 128, 3, 1), Cf), (dd_form(8, 512, 128, 256, 3, 1), Cf),
              (dd_form(8, 512, 128, 128, 2, 1), Cs), (dd_form(1, 4096, 128, 128, 0, 1), Cs),
              (dd_form(8, 512, 128, 256, 1, 1), C), (dd_form(1, 4096, 128, 128, 0, 0), C),
              (dd_form(8, 512, 32, 32, 3, 1), Cf), (dd_form(8, 512, 64, 128, 1, 1), Cf),
              (dd_form(8, 512, 32, 64, 2, 1), Cf), (dd_form(8, 512, 32, 64, 2, 0), C)]
    picks += [(delta_form(64, 64, 1), Cf), (delta_form(32, 64, 2), Cf), (delta_form(16, 64, 1, chunk=8), Cf),
              (delta_form(512, 16, 1), Cf), (delta_form(512, 32, 1, bw=0), Cf),
              (delta_form(512, 128, 1, bw=0), Cf), (delta_form(512, 128, 1), C)]
    check("lina_cpu_full512: 0 or 1, and 0 off the avx512 path", full in (0, 1) and (path == "avx512" or full == 0),
          f"{full} on path {path}")
    bad = [i for i, (got, want) in enumerate(picks) if got != want]
    check("fast form: the forms include/lina.h names", not bad, f"cases {bad} differ")
    Tn, Kn = 70, 64
    q, k, v = randn(1, Tn, 1, Kn), randn(1, Tn, 1, Kn), randn(1, Tn, 1, Kn)
    g = F.logsigmoid(randn(1, Tn, 1, Kn)) / 8
    compare("chunk_gla K=V=64 (recurrent form picked)",
            lambda q, k, v, g, h0: ops.chunk_gla(q, k, v, g, initial_state=h0, output_final_state=True),
            lambda q, k, v, g, h0: ref.dd(q, k, v, g, "vector", h0=h0),
            dict(q=q, k=k, v=v, g=g, h0=randn(1, 1, Kn, Kn, scale=0.5)))
    Tn, Kn = 130, 128  # two chunks at K = 128: the chunk form on every CPU
    qd, kd = ref.l2norm(randn(1, Tn, 1, Kn)), ref.l2norm(randn(1, Tn, 1, Kn))
    v = randn(1, Tn, 1, Kn)
    beta, gd = uniform(0.05, 0.95, 1, Tn, 1), uniform(-0.5, -0.01, 1, Tn, 1)
    compare("fused_recurrent_gated_delta_rule T=130 K=128 (chunk form picked)",
            lambda q, k, v, g, beta: ops.fused_recurrent_gated_delta_rule(q, k, v, g=g, beta=beta,
                                                                          output_final_state=True),
            lambda q, k, v, g, beta: ref.delta(q, k, v, beta, g),
            dict(q=qd, k=kd, v=v, g=gd, beta=beta))


# -------------------------------------------------- mLSTM, LION, softmax

def other_tests():
    q, k, v = qkv()
    i, f = randn(B, T, H), randn(B, T, H) + 2
    for form in ("chunk", "recurrent"):
        compare(f"mlstm form={form}",
                lambda q, k, v, i, f: ops.mlstm(q, k, v, i, f, form=form, output_final_state=True),
                lambda q, k, v, i, f: ref.mlstm(q, k, v, i, f), dict(q=q, k=k, v=v, i=i, f=f))
        st = (state(), randn(B, H, K, scale=0.5), randn(B, H))
        compare(f"mlstm form={form} initial_state",
                lambda q, k, v, i, f, C, n, m: ops.mlstm(q, k, v, i, f, initial_state=(C, n, m), form=form,
                                                         output_final_state=True),
                lambda q, k, v, i, f, C, n, m: ref.mlstm(q, k, v, i, f, state=(C, n, m)),
                dict(q=q, k=k, v=v, i=i, f=f, C=st[0], n=st[1], m=st[2]))
    g = uniform(-0.5, -0.01, B, T, H)
    qp, kp, _ = qkv(positive=True)
    for form in ("chunk", "recurrent"):
        compare(f"lion form={form}", lambda q, k, v, g: (ops.lion(q, k, v, g, form=form), None),
                lambda q, k, v, g: (ref.lion(q, k, v, g), None), dict(q=q, k=k, v=v, g=g))
        compare(f"lion normalize form={form}",
                lambda q, k, v, g: (ops.lion(q, k, v, g, normalize=True, form=form), None),
                lambda q, k, v, g: (ref.lion(q, k, v, g, normalize=True), None), dict(q=qp, k=kp, v=v, g=g))
    for causal, window in ((True, None), (True, 7), (False, None)):
        compare(f"softmax_attn causal={int(causal)} window={window}",
                lambda q, k, v: (ops.softmax_attn(q, k, v, causal=causal, window_size=window), None),
                lambda q, k, v: (ref.softmax_attn(q, k, v, causal=causal, window=window or 0), None),
                dict(q=q, k=k, v=v))


# -------------------------------------------------- layouts and containers

def layout_tests():
    q, k, v = qkv()
    g = F.logsigmoid(randn(B, T, H, K)) / 8
    h0 = state()
    t = lambda x: x.transpose(1, 2)  # noqa: E731
    compare("chunk_gla head_first=True",
            lambda q, k, v, g: ops.chunk_gla(q, k, v, g, head_first=True),
            lambda q, k, v, g: (t(ref.dd(t(q), t(k), t(v), t(g), "vector")[0]), None),
            dict(q=t(q).contiguous(), k=t(k).contiguous(), v=t(v).contiguous(), g=t(g).contiguous()))
    compare("chunk_gla state_v_first=True",
            lambda q, k, v, g, h0: ops.chunk_gla(q, k, v, g, initial_state=h0, output_final_state=True,
                                                 state_v_first=True),
            lambda q, k, v, g, h0: (lambda r: (r[0], r[1].transpose(-1, -2)))(
                ref.dd(q, k, v, g, "vector", h0=h0.transpose(-1, -2))),
            dict(q=q, k=k, v=v, g=g, h0=h0.transpose(-1, -2).contiguous()))
    # non-contiguous inputs (a transposed view and a strided slice) are copied, with gradients
    qs = randn(B, T, H, 2 * K)
    compare("chunk_gla non-contiguous q, k",
            lambda q, k, v, g: ops.chunk_gla(q[..., ::2], t(k), v, g),
            lambda q, k, v, g: (ref.dd(q[..., ::2], t(k), v, g, "vector")[0], None),
            dict(q=qs, k=t(k).contiguous(), v=v, g=g))
    # NumPy in, NumPy out
    import numpy as np
    o, h = ops.chunk_gla(q.float().numpy(), k.float().numpy(), v.float().numpy(), g.float().numpy(),
                         initial_state=h0.float().numpy(), output_final_state=True)
    ro, rh = ref.dd(q, k, v, g, "vector", h0=h0)
    check("numpy in -> numpy out", isinstance(o, np.ndarray) and isinstance(h, np.ndarray), type(o).__name__)
    check("numpy results", err(torch.from_numpy(o), ro) <= FWD_RTOL and err(torch.from_numpy(h), rh) <= FWD_RTOL,
          "numpy results differ from the reference")
    # no grad mode: nothing saved for a backward, the same result
    with torch.no_grad():
        o2, _ = ops.chunk_gla(q.float(), k.float(), v.float(), g.float())
    check("no_grad forward", err(o2, ro if h0 is None else ref.dd(q, k, v, g, "vector")[0]) <= FWD_RTOL, "differs")


# ------------------------------------------------------------- cu_seqlens

def varlen_tests():
    """N documents packed into B = 1: each runs alone with its own initial / final state."""
    cu = [0, 30, 31, 64, 100]
    N = len(cu) - 1
    r1 = lambda *s: randn(1, *s)  # noqa: E731

    def per_doc(fn, seqs, h0, rows=None):
        """reference: fn(**{name: doc slice}, h0=state i) per document, outputs concatenated"""
        rows = rows or {}
        os_, hs = [], []
        for i, (s0, e0) in enumerate(zip(cu, cu[1:])):
            d = {n: x[:, s0 * rows.get(n, 1):e0 * rows.get(n, 1)] for n, x in seqs.items()}
            o, h = fn(h0=None if h0 is None else tuple(z[i:i + 1] for z in h0) if isinstance(h0, tuple)
                      else h0[i:i + 1], **d)
            os_.append(o)
            hs.append(h)
        if isinstance(hs[0], tuple):
            return torch.cat(os_, 1), tuple(torch.cat(z, 0) for z in zip(*hs))
        return torch.cat(os_, 1), torch.cat(hs, 0)
    q, k, v = r1(T, H, K), r1(T, H, K), r1(T, H, V)
    g = F.logsigmoid(r1(T, H, K)) / 8
    h0 = randn(N, H, K, V, scale=0.5)
    compare("chunk_gla cu_seqlens (4 documents, one of length 1)",
            lambda q, k, v, g, h0: ops.chunk_gla(q, k, v, g, initial_state=h0, output_final_state=True,
                                                 cu_seqlens=torch.tensor(cu)),
            lambda q, k, v, g, h0: per_doc(lambda q, k, v, g, h0: ref.dd(q, k, v, g, "vector", h0=h0),
                                           dict(q=q, k=k, v=v, g=g), h0),
            dict(q=q, k=k, v=v, g=g, h0=h0))
    qp, kp = F.elu(q) + 1, F.elu(k) + 1
    z0 = uniform(0.5, 1.0, N, 1, H, K)

    def ref_norm(q, k, v, h0):
        o, h = ref.dd(q, k, v, h0=h0[0], reverse=True)
        o, z = ref.normalize(o, q, k, K ** -0.5, h0[1], True)
        return o, (h, z)
    compare("fused_recurrent_linear_attn normalize reverse cu_seqlens",
            lambda q, k, v, h0, z0: ops.fused_recurrent_linear_attn(
                q, k, v, initial_state=(h0, z0), output_final_state=True, normalize=True, reverse=True,
                cu_seqlens=cu),
            lambda q, k, v, h0, z0: per_doc(ref_norm, dict(q=q, k=k, v=v), (h0, z0)),
            dict(q=qp, k=kp, v=v, h0=h0.abs(), z0=z0))
    qd = ref.l2norm(q)
    for n in (1, 2):
        kd, vd = ref.l2norm(r1(T * n, H, K)), r1(T * n, H, V)
        beta, gs = uniform(0.1, 0.9 * n, 1, T * n, H), uniform(-0.5, -0.01, 1, T, H)
        if n == 1:
            fl = lambda q, k, v, g, beta, h0: ops.chunk_gated_delta_rule(  # noqa: E731
                q, k, v, g, beta, initial_state=h0, output_final_state=True, cu_seqlens=torch.tensor(cu))
        else:
            fl = lambda q, k, v, g, beta, h0: ops.chunk_gated_delta_product(  # noqa: E731
                q, k, v, g, beta, 2, initial_state=h0, output_final_state=True, cu_seqlens=torch.tensor(cu))
        compare(f"chunk_gated_delta_{'rule' if n == 1 else 'product n=2'} cu_seqlens", fl,
                lambda q, k, v, g, beta, h0, n=n: per_doc(
                    lambda q, k, v, g, beta, h0: ref.delta(q, k, v, beta, g, n, h0=h0),
                    dict(q=q, k=k, v=v, g=g, beta=beta), h0, rows=dict(k=n, v=n, beta=n)),
                dict(q=qd, k=kd, v=vd, g=gs, beta=beta, h0=h0))
    i, f = r1(T, H), r1(T, H) + 2
    st = (randn(N, H, K, V, scale=0.5), randn(N, H, K, scale=0.5), randn(N, H))
    for form in ("chunk", "recurrent"):
        compare(f"mlstm form={form} cu_seqlens",
                lambda q, k, v, i, f, C, n, m: ops.mlstm(q, k, v, i, f, initial_state=(C, n, m), form=form,
                                                         output_final_state=True, cu_seqlens=torch.tensor(cu)),
                lambda q, k, v, i, f, C, n, m: per_doc(lambda q, k, v, i, f, h0: ref.mlstm(q, k, v, i, f, state=h0),
                                                       dict(q=q, k=k, v=v, i=i, f=f), (C, n, m)),
                dict(q=q, k=k, v=v, i=i, f=f, C=st[0], n=st[1], m=st[2]))
    gl = uniform(-0.5, -0.01, 1, T, H)
    for form, norm in (("chunk", False), ("recurrent", True)):
        compare(f"lion form={form} normalize={norm} cu_seqlens",
                lambda q, k, v, g: (ops.lion(q, k, v, g, normalize=norm, form=form, cu_seqlens=cu), None),
                lambda q, k, v, g: per_doc(lambda q, k, v, g, h0: (ref.lion(q, k, v, g, normalize=norm),
                                                                   torch.zeros(1)),
                                           dict(q=q, k=k, v=v, g=g), None)[0:1] + (None,),
                dict(q=qp if norm else q, k=kp if norm else k, v=v, g=gl))
    for causal, window in ((True, None), (True, 7), (False, None)):
        compare(f"softmax_attn causal={int(causal)} window={window} cu_seqlens",
                lambda q, k, v: (ops.softmax_attn(q, k, v, causal=causal, window_size=window,
                                                  cu_seqlens=torch.tensor(cu)), None),
                lambda q, k, v: per_doc(lambda q, k, v, h0: (ref.softmax_attn(q, k, v, causal=causal,
                                                                              window=window or 0), torch.zeros(1)),
                                        dict(q=q, k=k, v=v), None)[0:1] + (None,),
                dict(q=q, k=k, v=v))
    qf, kf, vf, gf = (x.float() for x in (q, k, v, g))
    cut = torch.tensor(cu)
    raises("softmax_attn cu_seqlens not ending at T", ValueError, "cu_seqlens must rise strictly from 0 to T",
           lambda: ops.softmax_attn(qf, kf, vf, cu_seqlens=torch.tensor([0, 10, 50])))
    raises("mlstm cu_seqlens: one state per document", ValueError, "one state per document",
           lambda: ops.mlstm(qf, kf, vf, i.float(), f.float(), cu_seqlens=cut,
                             initial_state=tuple(z[:1].float() for z in st)))
    raises("cu_seqlens not ending at T", ValueError, "cu_seqlens must rise strictly from 0 to T",
           lambda: ops.chunk_gla(qf, kf, vf, gf, cu_seqlens=torch.tensor([0, 10, 50])))
    raises("cu_seqlens not increasing", ValueError, "cu_seqlens",
           lambda: ops.chunk_gla(qf, kf, vf, gf, cu_seqlens=torch.tensor([0, 50, 50, T])))
    raises("cu_seqlens with B=2", ValueError, "[1, T, H, K]",
           lambda: ops.chunk_gla(qf.expand(2, -1, -1, -1), kf, vf, gf, cu_seqlens=cut))
    raises("cu_seqlens float", ValueError, "integer", lambda: ops.chunk_gla(qf, kf, vf, gf, cu_seqlens=cut.float()))
    raises("cu_seqlens: one state per document", ValueError, "one state per document",
           lambda: ops.chunk_gla(qf, kf, vf, gf, cu_seqlens=cut, initial_state=torch.zeros(1, H, K, V)))


# ------------------------------------------------------------ threads

def thread_tests():
    q, k, v = (x.float() for x in qkv())
    g = (F.logsigmoid(randn(B, T, H, K)) / 8).float()
    base = torch.get_num_threads()
    check("default threads follow torch", lina.get_num_threads() == base,
          f"lina {lina.get_num_threads()} torch {base}")
    o1, _ = ops.chunk_gla(q, k, v, g)
    lina.set_num_threads(base + 1)
    o2, _ = ops.chunk_gla(q, k, v, g)
    check("set_num_threads", lina.get_num_threads() == base + 1, str(lina.get_num_threads()))
    check("torch's thread count untouched", torch.get_num_threads() == base,
          f"torch now {torch.get_num_threads()}, was {base}")
    lina.set_num_threads(0)
    check("set_num_threads(0) restores the default", lina.get_num_threads() == base, str(lina.get_num_threads()))
    check("same result on other thread counts", err(o2, o1.double()) <= 1e-5, f"{err(o2, o1.double()):.3g}")
    raises("set_num_threads('2')", TypeError, "int", lambda: lina.set_num_threads("2"))


# ------------------------------------------------------------- bad input

def bad_input_tests():
    q, k, v = (x.float() for x in qkv())
    g = (F.logsigmoid(randn(B, T, H, K)) / 8).float()
    beta = torch.rand(B, T, H)
    gs = -torch.rand(B, T, H)
    raises("wrong rank names v", ValueError, "v has shape", lambda: ops.chunk_gla(q, k, v[0], g))
    raises("mismatched dim names k", ValueError, "k has shape", lambda: ops.chunk_gla(q, k[:, :5], v, g))
    raises("bad state shape", ValueError, "initial_state",
           lambda: ops.chunk_gla(q, k, v, g, initial_state=torch.zeros(B, H, K, V + 1)))
    raises("float64 input", NotImplementedError, "q is torch.float64", lambda: ops.chunk_gla(q.double(), k, v, g))
    raises("bfloat16 input", NotImplementedError, "k is torch.bfloat16",
           lambda: ops.chunk_delta_rule(q, k.bfloat16(), v, beta))
    raises("integer input", TypeError, "beta has dtype", lambda: ops.chunk_delta_rule(q, k, v, beta.long()))
    raises("other device", NotImplementedError, "v is on meta",
           lambda: ops.chunk_gla(q, k, v.to("meta"), g))
    raises("not a tensor", TypeError, "g must be a torch.Tensor", lambda: ops.chunk_gla(q, k, v, [1.0]))
    qn = q.clone()
    qn[0, 3, 1, 2] = float("nan")
    raises("NaN", ValueError, "q contains NaN", lambda: ops.chunk_gla(qn, k, v, g))
    raises("Inf in state", ValueError, "initial_state contains NaN or Inf",
           lambda: ops.chunk_delta_rule(q, k, v, beta, initial_state=torch.full((B, H, K, V), float("inf"))))
    big = torch.full((B, T, H, V), 3e38)  # finite, though its sum overflows: not refused
    try:
        ops.softmax_attn(q, k, big)
        check("finite inputs whose sum overflows are accepted", True)
    except ValueError as e:
        check("finite inputs whose sum overflows are accepted", False, str(e))
    raises("positive log decay", ValueError, "g must hold log decays <= 0",
           lambda: ops.chunk_gated_delta_rule(q, k, v, -gs, beta))
    raises("cu_seqlens with head_first", NotImplementedError, "cu_seqlens with head_first",
           lambda: ops.chunk_gla(q[:1], k[:1], v[:1], g[:1], cu_seqlens=torch.tensor([0, T]), head_first=True))
    raises("scale=0", ValueError, "scale", lambda: ops.chunk_gla(q, k, v, g, scale=0.0))
    raises("gv", NotImplementedError, "gv", lambda: ops.fused_recurrent_gla(q, k, v, gk=g, gv=g))
    raises("unknown kwarg", TypeError, "bogus", lambda: ops.chunk_gla(q, k, v, g, bogus=1))
    raises("num_householder", ValueError, "num_householder",
           lambda: ops.chunk_gated_delta_product(q, k, v, gs, beta, 0))
    raises("rows not n*T", ValueError, "num_householder * T",
           lambda: ops.chunk_gated_delta_product(q, k, v, gs, beta, 2))
    raises("mlstm state", ValueError, "initial_state", lambda: ops.mlstm(q, k, v, gs, gs, initial_state=(1, 2)))
    raises("window without causal", ValueError, "window_size",
           lambda: ops.softmax_attn(q, k, v, causal=False, window_size=4))
    raises("form", ValueError, "form", lambda: ops.lion(q, k, v, gs, form="parallel"))
    raises("missing g", ValueError, "g is required", lambda: ops.chunk_gla(q, k, v, None))
    raises("neg eigval without sigmoid", ValueError, "allow_neg_eigval",
           lambda: ops.chunk_gated_delta_rule(q, k, v, gs, beta, allow_neg_eigval=True))


def gate_check_tests():
    """The log gate's one-pass check (the maximum of its bits read as int32) and the slow
    path it falls back to: every value at and around the boundaries, at the first, a
    middle and the last position of g, in the per-channel, per-head-and-step and per-head
    gates; accepted values give the reference's output."""
    import math
    import warnings
    fmax = 3.4028234663852886e38
    good = [-0.0, 0.0, -fmax, -1e-45, -1.0]          # -1e-45: the smallest negative denormal
    bad = [(float("nan"), "contains NaN or Inf"), (-float("nan"), "contains NaN or Inf"),
           (float("-inf"), "contains NaN or Inf"), (float("inf"), "contains NaN or Inf"),
           (1e-45, "log decays <= 0"), (1.0, "log decays <= 0"), (fmax, "log decays <= 0")]
    q, k, v = (x.float() for x in qkv())
    Tn = q.shape[1]
    gates = [("chunk_gla g", lambda g: ops.chunk_gla(q, k, v, g), uniform(-0.5, -0.01, B, T, H, K)),
             ("fused_recurrent_gla gk", lambda g: ops.fused_recurrent_gla(q, k, v, gk=g),
              uniform(-0.5, -0.01, B, T, H, K)),
             ("chunk_simple_gla g", lambda g: ops.chunk_simple_gla(q, k, v, g=g), uniform(-0.5, -0.01, B, T, H)),
             ("chunk_simple_gla g_gamma", lambda g: ops.chunk_simple_gla(q, k, v, g_gamma=g),
              uniform(-0.5, -0.01, H))]
    for name, fn, g0 in gates:
        g0 = g0.float()
        where = [0, g0.numel() // 2, g0.numel() - 1]
        for val in good:
            g = g0.clone()
            for w in where:
                g.view(-1)[w] = val
            gate = {4: "vector", 3: "scalar", 1: "head"}[g.dim()]
            want = ref.dd(q.double(), k.double(), v.double(), g.double(), gate)[0]
            e = err(fn(g)[0].double(), want) if math.isfinite(val) and val > -1e30 else 0.0
            check(f"{FORM_TAG[0]}gate check: {name} holding {val!r} accepted", e < FWD_RTOL, f"error {e:.2e}")
        for val, needle in bad:
            for w in where:
                g = g0.clone()
                g.view(-1)[w] = val
                raises(f"{FORM_TAG[0]}gate check: {name} holding {val!r} at {w} refused", ValueError, needle,
                       lambda: fn(g))
    # retention's decays are made once per head count: two head counts in turn
    for Hn in (3, 1, 3):
        qh, kh, vh = (torch.randn(1, Tn, Hn, K if i < 2 else V) for i in range(3))
        gamma = torch.log1p(-torch.pow(2.0, -5.0 - torch.arange(Hn, dtype=torch.float64)))
        e = err(ops.chunk_retention(qh, kh, vh)[0].double(),
                ref.dd(qh.double(), kh.double(), vh.double(), gamma, "head")[0])
        check(f"chunk_retention with H={Hn} after other head counts", e < FWD_RTOL, f"error {e:.2e}")
    # an output probe holding +Inf and -Inf: the ValueError alone, no NumPy warning
    vi = v.clone()
    vi[0, 5, 0, 0], vi[0, 6, 0, 1] = float("inf"), float("-inf")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        raises("+Inf and -Inf in v: ValueError, no warning", ValueError, "v contains NaN or Inf",
               lambda: ops.chunk_gla(q, k, vi, gates[0][2].float()))


def nonfinite_tests():
    """NaN, +Inf and -Inf in every input of every op, at the first, a middle and the last
    position (both forms, with and without the final state returned): always one
    ValueError naming the input. The linear ops prove finite inputs from their outputs,
    so this is what shows that no non-finite input can slip through."""
    q, k, v = (x.float() for x in qkv())
    pk, pq, _ = (x.float() for x in qkv(positive=True))
    g = (F.logsigmoid(randn(B, T, H, K)) / 8).float()
    gs = (-uniform(0.01, 0.5, B, T, H)).float()
    beta = uniform(0.1, 0.9, B, T, H).float()
    i, f = randn(B, T, H).float(), (3 + randn(B, T, H)).float()
    h0 = state().float()
    _, dq2, dv2, db2, _ = (x.float() for x in delta_inputs(2))
    cases = [
        ("chunk_linear_attn", ops.chunk_linear_attn, dict(q=pq, k=pk, v=v, initial_state=h0)),
        ("chunk_linear_attn normalize=False", ops.chunk_linear_attn,
         dict(q=q, k=k, v=v, initial_state=h0, normalize=False)),
        ("fused_recurrent_linear_attn", ops.fused_recurrent_linear_attn,
         dict(q=q, k=k, v=v, initial_state=h0, normalize=False)),
        ("chunk_retention", ops.chunk_retention, dict(q=q, k=k, v=v, initial_state=h0)),
        ("chunk_simple_gla", ops.chunk_simple_gla, dict(q=q, k=k, v=v, g=gs, initial_state=h0)),
        ("chunk_gla", ops.chunk_gla, dict(q=q, k=k, v=v, g=g, initial_state=h0)),
        ("fused_recurrent_gla", ops.fused_recurrent_gla, dict(q=q, k=k, v=v, gk=g, initial_state=h0)),
        ("chunk_delta_rule", ops.chunk_delta_rule, dict(q=q, k=k, v=v, beta=beta, initial_state=h0)),
        ("fused_recurrent_delta_rule", ops.fused_recurrent_delta_rule,
         dict(q=q, k=k, v=v, beta=beta, initial_state=h0)),
        ("chunk_delta_rule l2norm", ops.chunk_delta_rule,
         dict(q=q, k=k, v=v, beta=beta, initial_state=h0, use_qk_l2norm_in_kernel=True)),
        ("chunk_gated_delta_rule", ops.chunk_gated_delta_rule,
         dict(q=q, k=k, v=v, g=gs, beta=beta, initial_state=h0)),
        ("fused_recurrent_gated_delta_rule", ops.fused_recurrent_gated_delta_rule,
         dict(q=q, k=k, v=v, g=gs, beta=beta, initial_state=h0)),
        ("chunk_gated_delta_product", ops.chunk_gated_delta_product,
         dict(q=q, k=dq2, v=dv2, g=gs, beta=db2, num_householder=2, initial_state=h0)),
        # the layouts and options that move o before it is checked, or map inputs first
        ("fused_recurrent_linear_attn reverse", ops.fused_recurrent_linear_attn,
         dict(q=q, k=k, v=v, initial_state=h0, reverse=True)),
        ("fused_recurrent_gla reverse", ops.fused_recurrent_gla,
         dict(q=q, k=k, v=v, gk=g, initial_state=h0, reverse=True)),
        ("chunk_gla head_first", ops.chunk_gla,
         dict(q=q.transpose(1, 2), k=k.transpose(1, 2), v=v.transpose(1, 2), g=g.transpose(1, 2),
              initial_state=h0, head_first=True)),
        ("chunk_gated_delta_rule grouped value heads", ops.chunk_gated_delta_rule,
         dict(q=q[:, :, :1], k=k[:, :, :1], v=v, g=gs, beta=beta, initial_state=h0)),
        ("chunk_gated_delta_rule beta logits", ops.chunk_gated_delta_rule,
         dict(q=q, k=k, v=v, g=gs, beta=beta, initial_state=h0, use_beta_sigmoid_in_kernel=True)),
        ("fused_recurrent_gated_delta_rule beta logits", ops.fused_recurrent_gated_delta_rule,
         dict(q=q, k=k, v=v, g=gs, beta=beta, initial_state=h0, use_beta_sigmoid_in_kernel=True,
              allow_neg_eigval=True)),
        ("mlstm", ops.mlstm, dict(q=q, k=k, v=v, i=i, f=f)),
        ("lion", ops.lion, dict(q=q, k=k, v=v, g=gs)),
        ("softmax_attn", ops.softmax_attn, dict(q=q, k=k, v=v)),
        ("softmax_attn window", ops.softmax_attn, dict(q=q, k=k, v=v, window_size=8)),
    ]
    for op, fn, args in cases:
        for fs in (False, True):
            extra = {} if op.startswith(("mlstm", "lion", "softmax")) or not fs else {"output_final_state": True}
            if op.startswith(("lion", "softmax")) and fs:
                continue
            missed = []
            for name, x in args.items():
                if not isinstance(x, torch.Tensor):
                    continue
                idx = [(0,) * x.dim(), tuple(d // 2 for d in x.shape), tuple(d - 1 for d in x.shape)]
                for bad in (float("nan"), float("inf"), float("-inf")):
                    for at in idx:
                        y = x.clone()
                        y[at] = bad
                        try:
                            fn(**dict(args, **{name: y}), **extra)
                            missed.append(f"{name}[{at}]={bad}: accepted")
                        except ValueError as e:
                            if name not in str(e) or "NaN or Inf" not in str(e):
                                missed.append(f"{name}[{at}]={bad}: {e}")
            check(f"non-finite input refused, every input: {op} [final={int(fs)}]", not missed,
                  "; ".join(missed[:3]))
    # the normalizer's initial key sum z_0 only divides the output
    z0 = pk[:, :1].sum(1, keepdim=True)
    missed = []
    for bad in (float("nan"), float("inf"), float("-inf")):
        for at in ((0, 0, 0, 0), (B - 1, 0, H - 1, K - 1)):
            z = z0.clone()
            z[at] = bad
            try:
                ops.chunk_linear_attn(pq, pk, v, initial_state=(h0, z))
                missed.append(f"z0[{at}]={bad}: accepted")
            except ValueError as e:
                if "initial_state[1]" not in str(e):
                    missed.append(f"z0[{at}]={bad}: {e}")
    check("non-finite input refused: chunk_linear_attn's initial_state[1] (z_0)", not missed,
          "; ".join(missed[:3]))


def struct_tests():
    from lina import _lib as L
    table = L.lib.lina_abi_layout().decode()
    check("structures: the package's mirror equals the library's layout",
          L.layout_mismatches(table) == [], str(L.layout_mismatches(table)[:2]))
    added = table.replace(" gk:56", " gk:56 gv:64")
    check("structures: a field the package lacks is found", added != table and any(
        "lina_delta_in has fields" in m for m in L.layout_mismatches(added)), str(L.layout_mismatches(added)))
    moved = table.replace("dh0:32", "dh0:40")
    check("structures: a moved field is found", moved != table and any(
        "dh0 at byte 40" in m for m in L.layout_mismatches(moved)), str(L.layout_mismatches(moved)))
    grown = table.replace("lina_lion_in 40", "lina_lion_in 48")
    check("structures: a grown structure is found", grown != table and any(
        "lina_lion_in is 48 bytes" in m for m in L.layout_mismatches(grown)), str(L.layout_mismatches(grown)))


def library_missing():
    code = "import sys; sys.path.insert(0, sys.argv[1]); import lina"
    env = dict(__import__("os").environ, LINA_LIBRARY="/nonexistent/liblina.so")
    r = subprocess.run([sys.executable, "-c", code, harness.ROOT + "/python"], env=env,
                       capture_output=True, text=True)
    check("missing library: one ImportError naming the path",
          r.returncode != 0 and "ImportError: lina: LINA_LIBRARY=/nonexistent/liblina.so" in r.stderr,
          r.stderr[-300:])


def pool_tests():
    """The buffers a forward keeps for its backward (chunk states, the delta rule's cache) come
    from a pool: one is reused only after the graph that kept it is freed, so a graph kept
    with retain_graph=True gives the same gradients again after other calls of that shape."""
    from lina import _core
    q, k, v = (x.float() for x in qkv())
    g = (F.logsigmoid(randn(B, T, H, K)) / 8).float()
    dq, dk, dv, db, dg = (x.float() for x in delta_inputs())
    cases = (("chunk_gla", lambda x: ops.chunk_gla(*x)[0], (q, k, v, g)),
             ("chunk_gated_delta_rule", lambda x: ops.chunk_gated_delta_rule(*x)[0], (dq, dk, dv, dg, db)))
    _core.forced_form = _core.CHUNK  # the form that keeps buffers (on every CPU at these shapes)
    for name, fn, args in cases:
        xs = [a.clone().requires_grad_() for a in args]
        loss = (fn(xs) ** 2).sum()
        loss.backward(retain_graph=True)
        first = [x.grad.clone() for x in xs]
        for _ in range(2):  # other graphs of the same shape, built and freed in between
            ys = [(a * 1.5).requires_grad_() for a in args]
            (fn(ys) ** 2).sum().backward()
        loss.backward()
        worst = max(float((x.grad - 2 * f).abs().max() / f.abs().max()) for x, f in zip(xs, first))
        check(f"pool: {name} retain_graph keeps its buffer (second backward equals the first)",
              worst < 1e-6, f"off by {worst:.3g}")
        del loss
        idle = _core.pool.idle_bytes
        xs = [a.clone().requires_grad_() for a in args]
        o = fn(xs)
        check(f"pool: {name} reuses a freed graph's buffer", _core.pool.idle_bytes < idle,
              f"idle {idle} -> {_core.pool.idle_bytes} bytes")
        del o
        check(f"pool: {name} buffer given back when the graph is dropped", _core.pool.idle_bytes == idle,
              f"idle {idle} -> {_core.pool.idle_bytes} bytes")
    _core.forced_form = None
    # a call that autograd does not record runs the forward alone: the same outputs, no graph
    for name, fn, args in cases:
        with_graph = fn([a.clone().requires_grad_() for a in args])
        plain = fn(list(args))
        with torch.no_grad():
            nograd = fn([a.clone().requires_grad_() for a in args])
        check(f"forward without autograd: {name} gives the recorded call's output, no graph",
              torch.equal(plain, with_graph.detach()) and torch.equal(nograd, plain)
              and with_graph.grad_fn is not None and plain.grad_fn is None and nograd.grad_fn is None
              and not plain.requires_grad and not nograd.requires_grad)
    lina.empty_cache()
    check("pool: lina.empty_cache() releases the idle buffers", _core.pool.idle_bytes == 0
          and not _core.pool.idle, f"{_core.pool.idle_bytes} bytes idle")


for name, fn in (("diagonal decay", dd_tests), ("delta rule", delta_tests), ("forced forms", forced_form_tests),
                 ("fast form", fast_form_tests), ("mlstm/lion/softmax", other_tests),
                 ("layouts", layout_tests), ("cu_seqlens", varlen_tests), ("threads", thread_tests), ("bad input", bad_input_tests), ("gate check", gate_check_tests), ("non-finite", nonfinite_tests),
                 ("library", library_missing), ("structures", struct_tests), ("pool", pool_tests)):
    run(name, fn)
harness.finish()
