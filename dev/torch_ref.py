#!/usr/bin/python3
"""torch_ref.py -- independent PyTorch reference for lina's causal LMs.

Written from docs/mixers.md (sections 2, 3.5, 4.1, 4.2, 6, 9, 9.2, 12, 13, 14, 15.1, 16.1) and docs/checkpoints.md, not from
lina's C sources. For each test case it writes, under tests/ref/torch/<case>/:

  config.json        the FLA-style config (model_type, sizes, options)
  model.safetensors  random float32 weights under FLA's state-dict names
  tokens.npy         [B, T] input ids (stored as float32; exact integers)
  targets.npy        [B, T] next-token targets, -100 = ignored (float32)
  logits.npy         [B, T, vocab] reference logits (float32 of a float64 run)
  loss.npy           [1] mean cross-entropy over the counted targets (float64)
  grads.safetensors  d loss / d parameter for every parameter (float32 of float64),
                     same names as model.safetensors (a tied lm_head is folded
                     into model.embeddings.weight, as lina keeps it)

The forward pass is computed in float64 from the float32 weights with the
mixers in their per-token recurrent form; gradients come from torch autograd.
tests/test_torch_ref.c compares lina against these files (no python needed at
test time).

Regenerate:   /usr/bin/python3 dev/torch_ref.py [--out tests/ref/torch] [--check]
  --check additionally compares every recurrent mixer here against a chunkwise
  torch form (bench/torch_train.py) in float64.
"""
import argparse
import json
import math
import os
import struct
import sys

import numpy as np
import torch

F64 = torch.float64


# ------------------------------------------------------------------ blocks (docs/mixers.md 2)

def softplus(x):
    # log(1 + e^x), x itself above 20
    return torch.where(x > 20, x, torch.log1p(torch.exp(torch.clamp(x, max=20.0))))


def logsigmoid(x):
    return -softplus(-x)


def silu(x):
    return x * torch.sigmoid(x)


def rmsnorm(x, w, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def l2norm(x):
    return x / torch.sqrt((x * x).sum(-1, keepdim=True) + 1e-6)


def linear(x, w, b=None):
    y = x @ w.t()
    return y + b if b is not None else y


def short_conv(x, w, act):
    """Depthwise causal conv. x [B,T,C], w [C,1,W]; w[:,0,W-1] multiplies the current token.
    (A sum of W shifted products: in bench/torch_train.py's training steps it ran faster than
    torch's depthwise conv1d, 167-190 against 180-206 CPU ms per step of GLA at d 64.)"""
    Bsz, T, C = x.shape
    W = w.shape[2]
    xp = torch.cat([x.new_zeros(Bsz, W - 1, C), x], dim=1)
    y = sum(w[:, 0, j] * xp[:, j:j + T, :] for j in range(W))
    return silu(y) if act else y


def gated_rmsnorm(o, w, gate, eps):
    """FusedRMSNormGated: RMSNorm(o) * w * SiLU(gate), per head over the last axis."""
    return rmsnorm(o, w, eps) * silu(gate)


def mlp(x, p, pre):
    return linear(silu(linear(x, p[pre + "gate_proj.weight"])) * linear(x, p[pre + "up_proj.weight"]),
                  p[pre + "down_proj.weight"])


def heads(x, h):
    Bsz, T, F = x.shape
    return x.view(Bsz, T, h, F // h)


# ---------------------------------------------------------------- recurrent mixers

def gla_recurrent(q, k, v, g, scale):
    """q,k,g [B,T,H,K], v [B,T,H,V]: S_t = diag(exp g_t) S_{t-1} + k_t v_t^T, o_t = S_t^T (s q_t)."""
    Bsz, T, H, K = q.shape
    S = q.new_zeros(Bsz, H, K, v.shape[-1])
    out = []
    for t in range(T):
        S = torch.exp(g[:, t])[..., None] * S + k[:, t, :, :, None] * v[:, t, :, None, :]
        out.append(torch.einsum("bhk,bhkv->bhv", q[:, t] * scale, S))
    return torch.stack(out, dim=1)


def delta_recurrent(q, k, v, beta, g, scale):
    """Gated delta rule (g None: plain DeltaNet). q,k [B,T,H,K], v [B,T,H,V], beta,g [B,T,H].
    S' = exp(g_t) S_{t-1}; u_t = v_t - S'^T k_t; S_t = S' + beta_t k_t u_t^T; o_t = S_t^T (s q_t)."""
    Bsz, T, H, K = q.shape
    S = q.new_zeros(Bsz, H, K, v.shape[-1])
    out = []
    for t in range(T):
        if g is not None:
            S = torch.exp(g[:, t])[..., None, None] * S
        kt = k[:, t]
        u = v[:, t] - torch.einsum("bhk,bhkv->bhv", kt, S)
        S = S + beta[:, t, :, None, None] * kt[..., None] * u[..., None, :]
        out.append(torch.einsum("bhk,bhkv->bhv", q[:, t] * scale, S))
    return torch.stack(out, dim=1)


def ssd_recurrent(q, k, v, g, scale, neg=False):
    """Mamba2 / SSD as scalar-gated linear attention (docs/mixers.md 6): q = C, k = B [B,T,H,N],
    v = delta x [B,T,H,P], g = delta A [B,T,H]; decay a_t = exp(g_t), or 2 exp(g_t) - 1 with
    negative eigenvalues. S_t = a_t S_{t-1} + k_t v_t^T, o_t = S_t^T (s q_t)."""
    Bsz, T, H, N = q.shape
    S = q.new_zeros(Bsz, H, N, v.shape[-1])
    out = []
    for t in range(T):
        a = torch.exp(g[:, t])
        if neg:
            a = 2.0 * a - 1.0
        S = a[..., None, None] * S + k[:, t, :, :, None] * v[:, t, :, None, :]
        out.append(torch.einsum("bhk,bhkv->bhv", q[:, t] * scale, S))
    return torch.stack(out, dim=1)


def rope(x, theta):
    """Rotate-half RoPE over the head axis of x [B,T,H,d], positions 0..T-1."""
    T, d = x.shape[1], x.shape[-1]
    half = d // 2
    inv = theta ** (-torch.arange(0, half, dtype=x.dtype) * 2.0 / d)
    ang = torch.arange(T, dtype=x.dtype)[:, None] * inv[None, :]  # [T, half]
    cos = torch.cat([torch.cos(ang), torch.cos(ang)], dim=-1)[None, :, None, :]
    sin = torch.cat([torch.sin(ang), torch.sin(ang)], dim=-1)[None, :, None, :]
    rot = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos + rot * sin


def softmax_attention(q, k, v, scale, window=0, f=None):
    """q [B,T,Hq,d], k,v [B,T,Hkv,d]; query head j reads kv head j // (Hq/Hkv); causal.
    f [B,T,Hq]: log forget gates (Forgetting Transformer, docs/mixers.md 9.1): logit_ij += c_i - c_j,
    c the cumulative sum of f over time."""
    Hq, Hkv = q.shape[2], k.shape[2]
    G = Hq // Hkv
    k = k.repeat_interleave(G, dim=2)
    v = v.repeat_interleave(G, dim=2)
    T = q.shape[1]
    logits = torch.einsum("bihd,bjhd->bhij", q, k) * scale
    if f is not None:
        cs = torch.cumsum(f, dim=1).transpose(1, 2)  # [B,Hq,T]
        logits = logits + cs[:, :, :, None] - cs[:, :, None, :]
    i = torch.arange(T)[:, None]
    j = torch.arange(T)[None, :]
    allowed = j <= i
    if window:
        allowed = allowed & (j >= i - window + 1)
    logits = logits.masked_fill(~allowed, float("-inf"))
    p = torch.softmax(logits, dim=-1)
    return torch.einsum("bhij,bjhd->bihd", p, v)


# -------------------------------------------------------------------- layers

def gla_layer(x, p, pre, c, mix=gla_recurrent):
    D, H = c["hidden_size"], c["num_heads"]
    Hkv = c.get("num_kv_heads") or H
    G = H // Hkv
    q = linear(x, p[pre + "q_proj.weight"])
    k = linear(x, p[pre + "k_proj.weight"])
    v = linear(x, p[pre + "v_proj.weight"])
    if c.get("use_short_conv", False):
        q = short_conv(q, p[pre + "q_conv1d.weight"], True)
        k = short_conv(k, p[pre + "k_conv1d.weight"], True)
        v = short_conv(v, p[pre + "v_conv1d.weight"], True)
    gk = linear(linear(x, p[pre + "gk_proj.0.weight"]), p[pre + "gk_proj.1.weight"], p[pre + "gk_proj.1.bias"])
    g = logsigmoid(gk) / 16.0
    if c.get("clamp_min") is not None:
        g = torch.clamp(g, min=c["clamp_min"])
    q, k, v, g = heads(q, H), heads(k, Hkv), heads(v, Hkv), heads(g, Hkv)
    if G > 1:
        k, v, g = (t.repeat_interleave(G, dim=2) for t in (k, v, g))
    K = q.shape[-1]
    o = mix(q, k, v, g, K ** -0.5)
    eps = c.get("norm_eps", 1e-6)
    if c.get("use_output_gate", True):
        o = gated_rmsnorm(o, p[pre + "g_norm_swish_gate.weight"], heads(linear(x, p[pre + "g_proj.weight"]), H), eps)
    else:
        o = rmsnorm(o, p[pre + "g_norm.weight"], eps)
    return linear(o.reshape(x.shape[0], x.shape[1], -1), p[pre + "o_proj.weight"])


def delta_layer(x, p, pre, c, gated, mix=delta_recurrent):
    H = c["num_heads"]
    q = linear(x, p[pre + "q_proj.weight"])
    k = linear(x, p[pre + "k_proj.weight"])
    v = linear(x, p[pre + "v_proj.weight"])
    qk_act = gated or c.get("qk_activation", "silu") == "silu"
    if c.get("use_short_conv", True):
        q = short_conv(q, p[pre + "q_conv1d.weight"], qk_act)
        k = short_conv(k, p[pre + "k_conv1d.weight"], qk_act)
        v = short_conv(v, p[pre + "v_conv1d.weight"], True)
    else:
        if qk_act:
            q, k = silu(q), silu(k)
        v = silu(v)
    HV = (c.get("num_v_heads") or H) if gated else H
    q, k, v = heads(q, H), heads(k, H), heads(v, HV)
    q, k = l2norm(q), l2norm(k)
    if HV > H:
        q = q.repeat_interleave(HV // H, dim=2)
        k = k.repeat_interleave(HV // H, dim=2)
    if gated or c.get("use_beta", True):
        beta = torch.sigmoid(linear(x, p[pre + "b_proj.weight"]))
    else:
        beta = x.new_ones(x.shape[0], x.shape[1], HV)
    if c.get("allow_neg_eigval", False):
        beta = beta * 2.0
    g = None
    if gated:
        a = linear(x, p[pre + "a_proj.weight"])
        g = -torch.exp(p[pre + "A_log"]) * softplus(a + p[pre + "dt_bias"])
    K = q.shape[-1]
    o = mix(q, k, v, beta, g, K ** -0.5)
    eps = c.get("norm_eps", 1e-6)
    if c.get("use_gate", gated):
        o = gated_rmsnorm(o, p[pre + "o_norm.weight"], heads(linear(x, p[pre + "g_proj.weight"]), HV), eps)
    else:
        o = rmsnorm(o, p[pre + "o_norm.weight"], eps)
    return linear(o.reshape(x.shape[0], x.shape[1], -1), p[pre + "o_proj.weight"])


def mamba2_layer(x, p, pre, c, mix=ssd_recurrent):
    """FLA's Mamba2 mixer (docs/mixers.md 6): in_proj -> [z | xBC | dt], conv + SiLU on xBC, softplus
    time steps, SSD, D skip, gated grouped RMSNorm, out_proj."""
    Bsz, T = x.shape[0], x.shape[1]
    H, P, N, G = c["num_heads"], c["head_dim"], c["state_size"], c.get("n_groups", 1)
    E = H * P
    bias = c.get("use_bias", False)
    zxd = linear(x, p[pre + "in_proj.weight"], p[pre + "in_proj.bias"] if bias else None)
    z, xbc, dt = zxd[..., :E], zxd[..., E:2 * E + 2 * G * N], zxd[..., 2 * E + 2 * G * N:]
    xbc = short_conv(xbc, p[pre + "conv1d.weight"], False)
    if c.get("use_conv_bias", True):
        xbc = xbc + p[pre + "conv1d.bias"]
    xbc = silu(xbc)
    xs = xbc[..., :E].reshape(Bsz, T, H, P)
    Bm = xbc[..., E:E + G * N].reshape(Bsz, T, G, N).repeat_interleave(H // G, dim=2)
    Cm = xbc[..., E + G * N:].reshape(Bsz, T, G, N).repeat_interleave(H // G, dim=2)
    delta = softplus(dt + p[pre + "dt_bias"])  # [B,T,H]
    g = delta * -torch.exp(p[pre + "A_log"])
    neg = c.get("allow_neg_eigval", False)
    y = mix(Cm, Bm, delta[..., None] * xs, g, 1.0, neg) if neg else mix(Cm, Bm, delta[..., None] * xs, g, 1.0)
    Dk = p[pre + "D"]
    y = y + (Dk.view(H, P) if c.get("D_has_hdim", False) else Dk[:, None]) * xs
    y = y.reshape(Bsz, T, E)
    eps = c.get("norm_eps", 1e-5)
    if c.get("rmsnorm", True):
        w = p[pre + "norm.weight"]
        yg = y if c.get("norm_before_gate", False) else y * silu(z)
        yn = rmsnorm(yg.view(Bsz, T, G, E // G), w.view(G, E // G), eps).reshape(Bsz, T, E)
        if c.get("norm_before_gate", False):
            yn = yn * silu(z)
    else:
        yn = y * silu(z)
    return linear(yn, p[pre + "out_proj.weight"], p[pre + "out_proj.bias"] if bias else None)


def attn_layer(x, p, pre, a):
    H = a["num_heads"]
    Hkv = a.get("num_kv_heads") or H
    bias = a.get("qkv_bias", False)
    q = linear(x, p[pre + "q_proj.weight"], p[pre + "q_proj.bias"] if bias else None)
    k = linear(x, p[pre + "k_proj.weight"], p[pre + "k_proj.bias"] if bias else None)
    v = linear(x, p[pre + "v_proj.weight"], p[pre + "v_proj.bias"] if bias else None)
    if a.get("use_short_conv"):
        q, k, v = (short_conv(t, p[pre + n + "_conv1d.weight"], True) for t, n in ((q, "q"), (k, "k"), (v, "v")))
    q, k, v = heads(q, H), heads(k, Hkv), heads(v, Hkv)
    theta = a.get("rope_theta") or 10000.0
    q, k = rope(q, theta), rope(k, theta)
    d = q.shape[-1]
    o = softmax_attention(q, k, v, d ** -0.5, a.get("window_size") or 0)
    return linear(o.reshape(x.shape[0], x.shape[1], -1), p[pre + "o_proj.weight"])


def fox_layer(x, p, pre, c):
    """FLA's ForgettingAttention (docs/mixers.md 9.2)."""
    H = c["num_heads"]
    Hkv = c.get("num_kv_heads") or H
    bias = c.get("qkv_bias", False)
    q = linear(x, p[pre + "q_proj.weight"], p[pre + "q_proj.bias"] if bias else None)
    k = linear(x, p[pre + "k_proj.weight"], p[pre + "k_proj.bias"] if bias else None)
    v = linear(x, p[pre + "v_proj.weight"], p[pre + "v_proj.bias"] if bias else None)
    f = logsigmoid(linear(x, p[pre + "f_proj.weight"], p[pre + "f_proj.bias"]))
    q, k, v = heads(q, H), heads(k, Hkv), heads(v, Hkv)
    if c.get("qk_norm", False):  # RMSNorm per head, weights over the full width
        d = q.shape[-1]
        q = rmsnorm(q, p[pre + "q_norm.weight"].reshape(H, d), 1e-5)
        k = rmsnorm(k, p[pre + "k_norm.weight"].reshape(Hkv, d), 1e-5)
    o = softmax_attention(q, k, v, q.shape[-1] ** -0.5, c.get("window_size") or 0, f)
    o = o.reshape(x.shape[0], x.shape[1], -1)
    if c.get("use_output_gate", False):
        o = torch.sigmoid(linear(x, p[pre + "g_proj.weight"])) * o
    return linear(o, p[pre + "o_proj.weight"])


def hgrn_layer(x, p, pre, c, i):
    """FLA's HGRNAttention (docs/mixers.md 15.1): element-wise recurrence, token by token."""
    ii = linear(x, p[pre + "i_proj.weight"])
    f = linear(x, p[pre + "f_proj.weight"])
    if c.get("use_short_conv", False):
        ii = short_conv(ii, p[pre + "i_conv1d.weight"], False)
        f = short_conv(f, p[pre + "f_conv1d.weight"], False)
    g = logsigmoid(f)
    if c.get("use_lower_bound", True) and i > 0:
        P = torch.softmax(p["model.lower_bounds"], dim=0)  # over the layers
        lam = torch.cumsum(P, dim=0)[i] - P[0]
        g = torch.log(lam + (1.0 - lam) * torch.sigmoid(f))
    xin = silu(ii) * (1.0 - torch.exp(g))
    h = xin.new_zeros(x.shape[0], xin.shape[-1])
    outs = []
    for t in range(x.shape[1]):
        h = torch.exp(g[:, t]) * h + xin[:, t]
        outs.append(h)
    o = torch.stack(outs, dim=1)
    w = p.get(pre + "g_norm.weight")
    y = gated_rmsnorm(o, w if w is not None else 1.0, linear(x, p[pre + "g_proj.weight"]), c.get("norm_eps", 1e-6))
    return linear(y, p[pre + "o_proj.weight"])


def gsa_layer(x, p, pre, c):
    """FLA's GatedSlotAttention (docs/mixers.md 16.1): two slot states read through a softmax, token by token."""
    D, H = c["hidden_size"], c["num_heads"]
    Hkv = c.get("num_kv_heads") or H
    K, V = int(D * c.get("expand_k", 1)) // H, int(D * c.get("expand_v", 1)) // H
    M = c.get("num_slots") or K
    fm = c.get("feature_map", "swish")
    q, k, v = (linear(x, p[pre + n + "_proj.weight"]) for n in "qkv")
    f = linear(x, p[pre + "f_proj.weight"])
    if c.get("use_short_conv", False):
        q, k, v = (short_conv(t, p[pre + n + "_conv1d.weight"], True) for t, n in ((q, "q"), (k, "k"), (v, "v")))
    q, k, v, f = heads(q, H), heads(k, Hkv), heads(silu(v), Hkv), heads(f, Hkv)

    def phi(t):
        if fm == "t2r":
            return torch.relu(linear(t, p[pre + "feature_map.layer.weight"]))
        return silu(t) if fm == "swish" else torch.relu(t)
    q, k = phi(q), phi(k)
    g = logsigmoid(f) / c.get("gate_logit_normalizer", 8)
    s = 1.0 - torch.exp(g)
    G = H // Hkv
    k, v, g, s = (t.repeat_interleave(G, dim=2) for t in (k, v, g, s))
    Bsz, T = x.shape[0], x.shape[1]
    hk = x.new_zeros(Bsz, H, K, M)
    hv = x.new_zeros(Bsz, H, M, V)
    outs = []
    for t in range(T):
        a = torch.exp(g[:, t])  # [B, H, M]
        hk = hk * a[:, :, None, :] + k[:, t, :, :, None] * s[:, t, :, None, :]
        hv = hv * a[..., None] + s[:, t, :, :, None] * v[:, t, :, None, :]
        pr = torch.softmax(torch.einsum("bhk,bhkm->bhm", q[:, t], hk), dim=-1)  # scale 1
        outs.append(torch.einsum("bhm,bhmv->bhv", pr, hv))
    o = silu(torch.stack(outs, dim=1).reshape(Bsz, T, H * V))
    w = p.get(pre + "g_norm.weight")
    y = rmsnorm(o, w if w is not None else 1.0, 1e-5)  # FLA's fused norm + o_proj default eps
    return linear(y, p[pre + "o_proj.weight"])


def attn_cfg(c):
    """The softmax-attention settings of layer kinds: transformer or the hybrid 'attn' key."""
    if c["model_type"] == "transformer":
        a = {k: c.get(k) for k in ("num_heads", "num_kv_heads", "qkv_bias", "window_size", "rope_theta")}
        # the optional SiLU short convs on q, k, v (model_type "transformer" only)
        a["use_short_conv"], a["conv_size"] = bool(c.get("use_short_conv", False)), c.get("conv_size", 4)
        return a
    return c["attn"]


def is_attn_layer(c, i):
    if c["model_type"] == "transformer":
        return True
    return c.get("attn") is not None and i in c["attn"]["layers"]


def selective_scan(u, delta, A, Bm, Cm, D):
    """Mamba-1 scan (docs/mixers.md 12), token by token: u, delta [B,T,E]; A [E,N]; Bm, Cm [B,T,N]."""
    Bsz, T, E = u.shape
    h = u.new_zeros(Bsz, E, A.shape[1])
    ys = []
    for t in range(T):
        dt = delta[:, t, :, None]
        h = torch.exp(dt * A) * h + dt * u[:, t, :, None] * Bm[:, t, None, :]
        ys.append((h * Cm[:, t, None, :]).sum(-1) + D * u[:, t])
    return torch.stack(ys, 1)


def mamba_layer(x, p, pre, c):
    """FLA's Mamba mixer (docs/mixers.md 12): in_proj -> [x | z], conv + SiLU, x_proj -> [dt | B | C],
    dt_proj + softplus, the selective scan with A = -exp(A_log), D skip, SiLU(z) gate, out_proj."""
    E, N, R = c["intermediate_size"], c["state_size"], c["dt_rank"]
    bias = c.get("use_bias", False)
    xz = linear(x, p[pre + "in_proj.weight"], p[pre + "in_proj.bias"] if bias else None)
    xs, z = xz[..., :E], xz[..., E:]
    xs = short_conv(xs, p[pre + "conv1d.weight"], False)
    if c.get("use_conv_bias", True):
        xs = xs + p[pre + "conv1d.bias"]
    xs = silu(xs)
    dbc = linear(xs, p[pre + "x_proj.weight"])
    delta = softplus(linear(dbc[..., :R], p[pre + "dt_proj.weight"], p[pre + "dt_proj.bias"]))
    y = selective_scan(xs, delta, -torch.exp(p[pre + "A_log"]), dbc[..., R:R + N], dbc[..., R + N:], p[pre + "D"])
    return linear(y * silu(z), p[pre + "out_proj.weight"], p[pre + "out_proj.bias"] if bias else None)


def layernorm(x, w, b, eps, groups=1):
    """LayerNorm over `groups` equal slices of the last axis (groups = heads: GroupNorm)."""
    sh = x.shape
    y = x.reshape(*sh[:-1], groups, sh[-1] // groups)
    y = (y - y.mean(-1, keepdim=True)) / torch.sqrt(y.var(-1, unbiased=False, keepdim=True) + eps)
    y = y.reshape(sh) * w
    return y + b if b is not None else y


def shift(x):
    """x_{t-1} (zero before the first token), x [B,T,C]."""
    return torch.cat([x.new_zeros(x.shape[0], 1, x.shape[2]), x[:, :-1]], dim=1)


def rwkv7_recurrent(r, w, k, v, a, b):
    """DPLR recurrence (docs/mixers.md 13): S = diag(exp w) S + b (a^T S) + k v^T, o = S^T r; [B,T,H,*]."""
    Bsz, T, H, K = r.shape
    S = r.new_zeros(Bsz, H, K, v.shape[-1])
    os_ = []
    for t in range(T):
        aS = torch.einsum("bhk,bhkv->bhv", a[:, t], S)
        S = torch.exp(w[:, t])[..., None] * S + b[:, t, :, :, None] * aS[:, :, None, :] + \
            k[:, t, :, :, None] * v[:, t, :, None, :]
        os_.append(torch.einsum("bhk,bhkv->bhv", r[:, t], S))
    return torch.stack(os_, 1)


def rwkv7_model_logits(p, c, tokens):
    """FLA's RWKV-7 LM (docs/mixers.md 14): LayerNorm blocks, the attention with token shift, LoRAs,
    v_first, DPLR state, GroupNorm and bonus term, and the token-shift relu^2 feed-forward."""
    D, L, K = c["hidden_size"], c["num_hidden_layers"], c["head_dim"]
    H = D // K
    Vd = c.get("value_dim") or D
    eps = c.get("norm_eps", 1e-5)
    nb = c.get("norm_bias", True)

    def ln(x, name):
        return layernorm(x, p[name + ".weight"], p[name + ".bias"] if nb else None, eps)

    def lora(x, pre, act, bias=True):
        hmid = linear(x, p[pre + "lora.0.weight"])
        hmid = act(hmid) if act else hmid
        return linear(hmid, p[pre + "lora.2.weight"], p[pre + "lora.2.bias"] if bias else None)

    x = p["model.embeddings.weight"][tokens]
    Bsz, T = tokens.shape
    v_first = None
    for i in range(L):
        pre = "model.layers.%d." % i
        if i == 0 and c.get("norm_first", True):
            x = ln(x, pre + "pre_norm")
        u = ln(x, pre + "attn_norm")
        d = shift(u) - u
        a_ = pre + "attn."
        xr, xw, xk, xv, xa, xg = (u + d * p[a_ + "x_" + n].reshape(-1) for n in "rwkvag")
        r = linear(xr, p[a_ + "r_proj.weight"])
        w = -math.exp(-0.5) * torch.sigmoid(lora(xw, a_ + "w_lora.", torch.tanh))
        k = linear(xk, p[a_ + "k_proj.weight"])
        v = linear(xv, p[a_ + "v_proj.weight"])
        if i == 0:
            v_first = v
        else:
            v = v + (v_first - v) * torch.sigmoid(lora(xv, a_ + "v_lora.", None))
        iclr = torch.sigmoid(lora(xa, a_ + "a_lora.", None))
        g = lora(xg, a_ + "g_lora.", torch.sigmoid, bias=False)
        kk = l2norm(heads(k * p[a_ + "k_k"], H))
        k = k * (1 + (iclr - 1) * p[a_ + "k_a"])
        ic = heads(iclr, H)
        o = rwkv7_recurrent(heads(r, H), heads(w, H), heads(k, H), heads(v, H), -kk, kk * ic)
        o = layernorm(o.reshape(Bsz, T, Vd), p[a_ + "g_norm.weight"], p[a_ + "g_norm.bias"], K * eps, H)
        bonus = (heads(r, H) * heads(k, H) * p[a_ + "r_k"]).sum(-1, keepdim=True) * heads(v, H)
        o = (o + bonus.reshape(Bsz, T, Vd)) * g
        h = x + linear(o, p[a_ + "o_proj.weight"])
        f = ln(h, pre + "ffn_norm")
        fm = f + (shift(f) - f) * p[pre + "ffn.x_k"]
        x = h + linear(torch.relu(linear(fm, p[pre + "ffn.key.weight"])) ** 2, p[pre + "ffn.value.weight"])
    x = layernorm(x, p["model.norm.weight"], p["model.norm.bias"] if nb else None, eps)
    w = p["model.embeddings.weight"] if c.get("tie_word_embeddings", False) else p["lm_head.weight"]
    return x @ w.t()


def mixer(x, p, pre, c, i, mixers):
    if is_attn_layer(c, i):
        return attn_layer(x, p, pre, attn_cfg(c))
    t = c["model_type"]
    if t == "gla":
        return gla_layer(x, p, pre, c, mixers["gla"])
    if t == "delta_net":
        return delta_layer(x, p, pre, c, False, mixers["delta"])
    if t == "gated_deltanet":
        return delta_layer(x, p, pre, c, True, mixers["delta"])
    if t == "mamba2":
        return mamba2_layer(x, p, pre, c, mixers.get("ssd", ssd_recurrent))
    if t == "mamba":
        return mamba_layer(x, p, pre, c)
    if t == "forgetting_transformer":
        return fox_layer(x, p, pre, c)
    if t == "hgrn":
        return hgrn_layer(x, p, pre, c, i)
    if t == "gsa":
        return gsa_layer(x, p, pre, c)
    raise ValueError("model_type " + t)


def model_logits(p, c, tokens, mixers=None):
    mixers = mixers or {"gla": gla_recurrent, "delta": delta_recurrent, "ssd": ssd_recurrent}
    eps = c.get("norm_eps", 1e-6)
    if c["model_type"] == "rwkv7":
        return rwkv7_model_logits(p, c, tokens)
    if c["model_type"] in ("mamba2", "mamba"):  # backbone.* names, no MLP (docs/mixers.md 6, 12)
        x = p["backbone.embeddings.weight"][tokens]
        for i in range(c["num_hidden_layers"]):
            pre = "backbone.layers.%d." % i
            x = x + mixer(rmsnorm(x, p[pre + "norm.weight"], eps), p, pre + "mixer.", c, i, mixers)
        x = rmsnorm(x, p["backbone.norm_f.weight"], eps)
        w = p["backbone.embeddings.weight"] if c.get("tie_word_embeddings", False) else p["lm_head.weight"]
        return x @ w.t()
    x = p["model.embeddings.weight"][tokens]
    for i in range(c["num_hidden_layers"]):
        pre = "model.layers.%d." % i
        h = x + mixer(rmsnorm(x, p[pre + "attn_norm.weight"], eps), p, pre + "attn.", c, i, mixers)
        # no_mlp (lina's synthetic-task models): mixer-only blocks
        x = h if c.get("no_mlp") else h + mlp(rmsnorm(h, p[pre + "mlp_norm.weight"], eps), p, pre + "mlp.")
    x = rmsnorm(x, p["model.norm.weight"], eps)
    w = p["model.embeddings.weight"] if c.get("tie_word_embeddings", False) else p["lm_head.weight"]
    return x @ w.t()


def lm_loss(logits, targets):
    V = logits.shape[-1]
    return torch.nn.functional.cross_entropy(logits.reshape(-1, V), targets.reshape(-1), ignore_index=-100,
                                             reduction="mean")


# ------------------------------------------------------- parameter names and shapes (15.2)

def param_shapes(c):
    """Ordered {name: shape} of the model's parameters, from docs/checkpoints.md 2.2."""
    D, L, Vv = c["hidden_size"], c["num_hidden_layers"], c["vocab_size"]
    if c["model_type"] == "mamba2":
        return mamba2_shapes(c)
    if c["model_type"] == "mamba":
        return mamba_shapes(c)
    if c["model_type"] == "rwkv7":
        return rwkv7_shapes(c)
    I = c["intermediate_size"]
    W = c.get("conv_size", 4)
    s = {"model.embeddings.weight": (Vv, D)}
    for i in range(L):
        pre = "model.layers.%d." % i
        s[pre + "attn_norm.weight"] = (D,)
        a = pre + "attn."
        t = c["model_type"]
        if is_attn_layer(c, i):
            ac = attn_cfg(c)
            H = ac["num_heads"]
            Hkv = ac.get("num_kv_heads") or H
            d = D // H
            s[a + "q_proj.weight"] = (H * d, D)
            if ac.get("qkv_bias"):
                s[a + "q_proj.bias"] = (H * d,)
            s[a + "k_proj.weight"] = (Hkv * d, D)
            if ac.get("qkv_bias"):
                s[a + "k_proj.bias"] = (Hkv * d,)
            s[a + "v_proj.weight"] = (Hkv * d, D)
            if ac.get("qkv_bias"):
                s[a + "v_proj.bias"] = (Hkv * d,)
            s[a + "o_proj.weight"] = (D, H * d)
            if ac.get("use_short_conv"):
                Wa = ac.get("conv_size") or 4
                s[a + "q_conv1d.weight"] = (H * d, 1, Wa)
                s[a + "k_conv1d.weight"] = (Hkv * d, 1, Wa)
                s[a + "v_conv1d.weight"] = (Hkv * d, 1, Wa)
        elif t == "gla":
            H = c["num_heads"]
            G = H // (c.get("num_kv_heads") or H)
            kd, vd = int(D * c.get("expand_k", 0.5)), int(D * c.get("expand_v", 1.0))
            s[a + "q_proj.weight"] = (kd, D)
            s[a + "k_proj.weight"] = (kd // G, D)
            s[a + "v_proj.weight"] = (vd // G, D)
            if c.get("use_output_gate", True):
                s[a + "g_proj.weight"] = (vd, D)
            if c.get("use_short_conv", False):
                s[a + "q_conv1d.weight"] = (kd, 1, W)
                s[a + "k_conv1d.weight"] = (kd // G, 1, W)
                s[a + "v_conv1d.weight"] = (vd // G, 1, W)
            s[a + "gk_proj.0.weight"] = (16, D)
            s[a + "gk_proj.1.weight"] = (kd // G, 16)
            s[a + "gk_proj.1.bias"] = (kd // G,)
            s[a + ("g_norm_swish_gate.weight" if c.get("use_output_gate", True) else "g_norm.weight")] = (vd // H,)
            s[a + "o_proj.weight"] = (D, vd)
        elif t in ("delta_net", "gated_deltanet"):
            H = c["num_heads"]
            if t == "delta_net":
                HK = int(D * c.get("expand_k", 1.0))
                HVd = int(D * c.get("expand_v", 1.0))
                NV = H
                Vh = HVd // H
                gated = False
            else:
                K = c["head_dim"]
                NV = c.get("num_v_heads") or H
                Vh = int(K * c.get("expand_v", 2.0))
                HK, HVd = H * K, NV * Vh
                gated = True
            s[a + "q_proj.weight"] = (HK, D)
            s[a + "k_proj.weight"] = (HK, D)
            s[a + "v_proj.weight"] = (HVd, D)
            if gated:
                s[a + "a_proj.weight"] = (NV, D)
            if gated or c.get("use_beta", True):
                s[a + "b_proj.weight"] = (NV, D)
            if gated:
                s[a + "A_log"] = (NV,)
                s[a + "dt_bias"] = (NV,)
            if c.get("use_short_conv", True):
                s[a + "q_conv1d.weight"] = (HK, 1, W)
                s[a + "k_conv1d.weight"] = (HK, 1, W)
                s[a + "v_conv1d.weight"] = (HVd, 1, W)
            if c.get("use_gate", gated):
                s[a + "g_proj.weight"] = (HVd, D)
            s[a + "o_norm.weight"] = (Vh,)
            s[a + "o_proj.weight"] = (D, HVd)
        elif t == "forgetting_transformer":
            H = c["num_heads"]
            Hkv = c.get("num_kv_heads") or H
            d = D // H
            for nm, rows in (("q", H * d), ("k", Hkv * d), ("v", Hkv * d)):
                s[a + nm + "_proj.weight"] = (rows, D)
                if c.get("qkv_bias"):
                    s[a + nm + "_proj.bias"] = (rows,)
            s[a + "f_proj.weight"] = (H, D)
            s[a + "f_proj.bias"] = (H,)
            if c.get("use_output_gate"):
                s[a + "g_proj.weight"] = (H * d, D)
            s[a + "o_proj.weight"] = (D, H * d)
            if c.get("qk_norm"):
                s[a + "q_norm.weight"] = (H * d,)
                s[a + "k_norm.weight"] = (Hkv * d,)
        elif t == "hgrn":
            E = D * c.get("expand_ratio", 1)
            s[a + "i_proj.weight"] = (E, D)
            s[a + "f_proj.weight"] = (E, D)
            s[a + "g_proj.weight"] = (E, D)
            if c.get("use_short_conv", False):
                s[a + "i_conv1d.weight"] = (E, 1, W)
                s[a + "f_conv1d.weight"] = (E, 1, W)
            s[a + "g_norm.weight"] = (E,)
            s[a + "o_proj.weight"] = (D, E)
        elif t == "gsa":
            H = c["num_heads"]
            Hkv = c.get("num_kv_heads") or H
            kd, vd = int(D * c.get("expand_k", 1)), int(D * c.get("expand_v", 1))
            M = c.get("num_slots") or kd // H
            if c.get("feature_map", "swish") == "t2r":
                s[a + "feature_map.layer.weight"] = (kd // H, kd // H)
            s[a + "q_proj.weight"] = (kd, D)
            s[a + "k_proj.weight"] = (kd // H * Hkv, D)
            s[a + "v_proj.weight"] = (vd // H * Hkv, D)
            s[a + "f_proj.weight"] = (Hkv * M, D)
            if c.get("use_short_conv", False):
                s[a + "q_conv1d.weight"] = (kd, 1, W)
                s[a + "k_conv1d.weight"] = (kd // H * Hkv, 1, W)
                s[a + "v_conv1d.weight"] = (vd // H * Hkv, 1, W)
            if c.get("elementwise_affine", True):
                s[a + "g_norm.weight"] = (D,)
            s[a + "o_proj.weight"] = (D, vd)
        else:
            raise ValueError(t)
        if c.get("no_mlp"):
            continue
        s[pre + "mlp_norm.weight"] = (D,)
        s[pre + "mlp.gate_proj.weight"] = (I, D)
        s[pre + "mlp.up_proj.weight"] = (I, D)
        s[pre + "mlp.down_proj.weight"] = (D, I)
    s["model.norm.weight"] = (D,)
    if c["model_type"] == "hgrn" and c.get("use_lower_bound", True):
        s["model.lower_bounds"] = (L, D)
    if not c.get("tie_word_embeddings", False):
        s["lm_head.weight"] = (Vv, D)
    return s


def mamba2_shapes(c):
    """{name: shape} of a Mamba2 LM (docs/checkpoints.md 2.3, prefix backbone.)."""
    D, L, Vv = c["hidden_size"], c["num_hidden_layers"], c["vocab_size"]
    H, P, N, G = c["num_heads"], c["head_dim"], c["state_size"], c.get("n_groups", 1)
    E, W = H * P, c.get("conv_kernel", 4)
    s = {"backbone.embeddings.weight": (Vv, D)}
    for i in range(L):
        pre = "backbone.layers.%d." % i
        s[pre + "norm.weight"] = (D,)
        a = pre + "mixer."
        s[a + "in_proj.weight"] = (2 * E + 2 * G * N + H, D)
        if c.get("use_bias", False):
            s[a + "in_proj.bias"] = (2 * E + 2 * G * N + H,)
        s[a + "conv1d.weight"] = (E + 2 * G * N, 1, W)
        if c.get("use_conv_bias", True):
            s[a + "conv1d.bias"] = (E + 2 * G * N,)
        s[a + "dt_bias"] = (H,)
        s[a + "A_log"] = (H,)
        s[a + "D"] = (E,) if c.get("D_has_hdim", False) else (H,)
        if c.get("rmsnorm", True):
            s[a + "norm.weight"] = (E,)
        s[a + "out_proj.weight"] = (D, E)
        if c.get("use_bias", False):
            s[a + "out_proj.bias"] = (D,)
    s["backbone.norm_f.weight"] = (D,)
    if not c.get("tie_word_embeddings", False):
        s["lm_head.weight"] = (Vv, D)
    return s


def mamba_shapes(c):
    """{name: shape} of a Mamba LM (docs/checkpoints.md 2, prefix backbone.)."""
    D, L, Vv = c["hidden_size"], c["num_hidden_layers"], c["vocab_size"]
    E, N, R, W = c["intermediate_size"], c["state_size"], c["dt_rank"], c.get("conv_kernel", 4)
    s = {"backbone.embeddings.weight": (Vv, D)}
    for i in range(L):
        pre = "backbone.layers.%d." % i
        s[pre + "norm.weight"] = (D,)
        a = pre + "mixer."
        s[a + "in_proj.weight"] = (2 * E, D)
        if c.get("use_bias", False):
            s[a + "in_proj.bias"] = (2 * E,)
        s[a + "conv1d.weight"] = (E, 1, W)
        if c.get("use_conv_bias", True):
            s[a + "conv1d.bias"] = (E,)
        s[a + "x_proj.weight"] = (R + 2 * N, E)
        s[a + "dt_proj.weight"] = (E, R)
        s[a + "dt_proj.bias"] = (E,)
        s[a + "A_log"] = (E, N)
        s[a + "D"] = (E,)
        s[a + "out_proj.weight"] = (D, E)
        if c.get("use_bias", False):
            s[a + "out_proj.bias"] = (D,)
    s["backbone.norm_f.weight"] = (D,)
    if not c.get("tie_word_embeddings", False):
        s["lm_head.weight"] = (Vv, D)
    return s


def rwkv7_shapes(c):
    """{name: shape} of an RWKV-7 LM (docs/mixers.md 14)."""
    D, L, Vv, K = c["hidden_size"], c["num_hidden_layers"], c["vocab_size"], c["head_dim"]
    H, Vd, I = D // K, c.get("value_dim") or D, c["intermediate_size"]
    nb = c.get("norm_bias", True)
    s = {"model.embeddings.weight": (Vv, D)}

    def norm(name, n):
        s[name + ".weight"] = (n,)
        if nb:
            s[name + ".bias"] = (n,)

    for i in range(L):
        pre = "model.layers.%d." % i
        if i == 0 and c.get("norm_first", True):
            norm(pre + "pre_norm", D)
        norm(pre + "attn_norm", D)
        a = pre + "attn."
        for n in "rwkvag":
            s[a + "x_" + n] = (1, 1, D)
        s[a + "k_k"], s[a + "k_a"], s[a + "r_k"] = (D,), (D,), (H, K)
        s[a + "r_proj.weight"], s[a + "k_proj.weight"] = (D, D), (D, D)
        s[a + "v_proj.weight"], s[a + "o_proj.weight"] = (Vd, D), (D, Vd)
        for name, rank, out, bias in (("w_lora", c["decay_low_rank_dim"], D, True),
                                      ("v_lora", c["v_low_rank_dim"], Vd, True),
                                      ("a_lora", c["a_low_rank_dim"], D, True),
                                      ("g_lora", c["gate_low_rank_dim"], Vd, False)):
            if name == "v_lora" and i == 0:
                continue
            s[a + name + ".lora.0.weight"] = (rank, D)
            s[a + name + ".lora.2.weight"] = (out, rank)
            if bias:
                s[a + name + ".lora.2.bias"] = (out,)
        s[a + "g_norm.weight"], s[a + "g_norm.bias"] = (Vd,), (Vd,)
        norm(pre + "ffn_norm", D)
        s[pre + "ffn.x_k"] = (D,)
        s[pre + "ffn.key.weight"], s[pre + "ffn.value.weight"] = (I, D), (D, I)
    norm("model.norm", D)
    if not c.get("tie_word_embeddings", False):
        s["lm_head.weight"] = (Vv, D)
    return s


def init_params(shapes, gen):
    """Random float32 weights scaled so that every path carries signal (not FLA's init)."""
    p = {}
    for name, shp in shapes.items():
        z = torch.randn(shp, generator=gen, dtype=F64)
        if ".x_" in name:  # RWKV-7 token-shift mixes in [0, 1]
            w = torch.rand(shp, generator=gen, dtype=F64)
        elif name.endswith("k_k") or name.endswith("k_a"):
            w = 0.8 + 0.4 * torch.rand(shp, generator=gen, dtype=F64)
        elif name.endswith("norm.weight") or name.endswith("norm_swish_gate.weight"):
            w = 1.0 + 0.2 * z
        elif name.endswith("mixer.D"):
            w = 1.0 + 0.3 * z
        elif name.endswith("embeddings.weight"):
            w = 0.25 * z
        elif name.endswith("dt_proj.bias"):  # softplus^-1 of dt in [1e-3, 0.1], then some spread
            dt = torch.exp(math.log(1e-3) + (math.log(0.1) - math.log(1e-3)) * torch.rand(shp, generator=gen, dtype=F64))
            w = dt + torch.log(-torch.expm1(-dt))
        elif name.endswith(".bias"):
            w = 0.3 * z
        elif name.endswith("A_log"):
            w = torch.log(1.0 + 15.0 * torch.rand(shp, generator=gen, dtype=F64))
        elif name.endswith("dt_bias"):
            dt = torch.exp(math.log(1e-3) + (math.log(0.1) - math.log(1e-3)) * torch.rand(shp, generator=gen, dtype=F64))
            w = dt + torch.log(-torch.expm1(-dt))
        elif name.endswith("conv1d.weight"):
            w = 0.4 * z
        else:  # Linear [out, in]
            w = z / math.sqrt(shp[-1])
        p[name] = w.to(torch.float32)
    return p


# --------------------------------------------------------------------- file writers

def write_safetensors(path, tensors):
    """safetensors: u64 LE header length, JSON header, then F32 data back to back."""
    header, blobs, off = {}, [], 0
    for name, t in tensors.items():
        a = np.ascontiguousarray(t.detach().cpu().numpy().astype("<f4"))
        header[name] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [off, off + a.nbytes]}
        blobs.append(a.tobytes())
        off += a.nbytes
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


# ------------------------------------------------------------------------- cases

BASE = {"hidden_size": 32, "num_hidden_layers": 2, "num_heads": 2, "vocab_size": 64,
        "intermediate_size": 24, "norm_eps": 1e-6, "hidden_act": "swish"}

CASES = {
    "gla": dict(BASE, model_type="gla", expand_k=0.5, expand_v=1.0, use_short_conv=False,
                use_output_gate=True, tie_word_embeddings=True),
    "gated_deltanet": dict(BASE, model_type="gated_deltanet", head_dim=8, expand_v=2.0, use_short_conv=True,
                           conv_size=4, use_gate=True, allow_neg_eigval=False, tie_word_embeddings=False),
    "delta_net": dict(BASE, model_type="delta_net", expand_k=1.0, expand_v=1.0, use_short_conv=True, conv_size=4,
                      use_gate=False, use_beta=True, qk_activation="silu", qk_norm="l2",
                      tie_word_embeddings=False),
    "transformer": dict(BASE, model_type="transformer", num_kv_heads=1, qkv_bias=True, rope_theta=10000.0,
                        tie_word_embeddings=True),
    "hybrid_gla_attn": dict(BASE, model_type="gla", expand_k=0.5, expand_v=1.0, use_short_conv=True, conv_size=4,
                            use_output_gate=True, tie_word_embeddings=False,
                            attn={"layers": [1], "num_heads": 2, "num_kv_heads": 2, "qkv_bias": False,
                                  "window_size": None, "rope_theta": 10000.0}),
    # option variants: grouped value heads (GVA) with negative eigenvalues; GLA with
    # grouped k/v heads, no output gate and a gate floor; DeltaNet with the output gate
    "gated_deltanet_gva": dict(BASE, model_type="gated_deltanet", head_dim=8, expand_v=1.0, num_v_heads=4,
                               use_short_conv=True, conv_size=3, use_gate=True, allow_neg_eigval=True,
                               tie_word_embeddings=True),
    "gla_gqa_nogate": dict(BASE, model_type="gla", num_heads=4, num_kv_heads=2, expand_k=0.5, expand_v=1.0,
                           use_short_conv=False, use_output_gate=False, clamp_min=-0.05,
                           tie_word_embeddings=False),
    "delta_net_gate": dict(BASE, model_type="delta_net", expand_k=0.5, expand_v=1.0, use_short_conv=True,
                           conv_size=4, use_gate=True, use_beta=True, allow_neg_eigval=True,
                           qk_activation="silu", qk_norm="l2", tie_word_embeddings=True),
    "mamba2": dict(BASE, model_type="mamba2", head_dim=32, state_size=8, expand=2, n_groups=1, conv_kernel=4,
                   use_conv_bias=True, use_bias=False, rmsnorm=True, norm_before_gate=False, chunk_size=64,
                   D_has_hdim=False, allow_neg_eigval=False, norm_eps=1e-5, tie_word_embeddings=False),
    "mamba": dict(BASE, model_type="mamba", state_size=8, expand=2, intermediate_size=64, dt_rank=2,
                  conv_kernel=4, use_conv_bias=True, use_bias=True, hidden_act="silu", norm_eps=1e-5,
                  tie_word_embeddings=True),
    "forgetting_transformer": dict(BASE, model_type="forgetting_transformer", num_heads=4, num_kv_heads=2,
                                   qkv_bias=True, qk_norm=True, use_output_gate=True, window_size=None,
                                   tie_word_embeddings=False),
    "forgetting_transformer_window": dict(BASE, model_type="forgetting_transformer", window_size=5,
                                          tie_word_embeddings=True),
    "hgrn": dict(BASE, model_type="hgrn", num_hidden_layers=3, expand_ratio=1, use_short_conv=True, conv_size=3,
                 use_lower_bound=True, tie_word_embeddings=False),
    "rwkv7": dict(BASE, model_type="rwkv7", head_dim=8, num_heads=4, decay_low_rank_dim=6, gate_low_rank_dim=8,
                  a_low_rank_dim=4, v_low_rank_dim=3, value_dim=48, intermediate_size=40, hidden_act="sqrelu",
                  norm_first=True, norm_bias=True, norm_eps=1e-5, num_hidden_layers=3, tie_word_embeddings=False),
    "gsa": dict(BASE, model_type="gsa", num_heads=4, num_kv_heads=2, num_slots=6, feature_map="t2r",
                gate_logit_normalizer=8, use_short_conv=True, conv_size=3, tie_word_embeddings=False),
    # lina's optional SiLU short convs on q, k, v of softmax attention (the MQAR task's transformer)
    "transformer_conv": dict(BASE, model_type="transformer", num_kv_heads=1, qkv_bias=False, rope_theta=10000.0,
                             use_short_conv=True, conv_size=4, tie_word_embeddings=False),
}

B, T = 2, 70  # T > 64 crosses lina's chunk boundary (chunk 64) and is not a multiple of it


def make_case(name, c, outdir, seed):
    gen = torch.Generator().manual_seed(seed)
    shapes = param_shapes(c)
    p32 = init_params(shapes, gen)
    tokens = torch.randint(0, c["vocab_size"], (B, T + 1), generator=gen)
    inp = tokens[:, :T].contiguous()
    tgt = tokens[:, 1:].clone()
    tgt[0, 3] = -100
    tgt[1, 0] = -100
    tgt[1, T - 1] = -100
    p = {k: v.to(F64).requires_grad_(True) for k, v in p32.items()}
    logits = model_logits(p, c, inp)
    loss = lm_loss(logits, tgt)
    loss.backward()
    d = os.path.join(outdir, name)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(c, f, indent=1)
        f.write("\n")
    write_safetensors(os.path.join(d, "model.safetensors"), p32)
    write_safetensors(os.path.join(d, "grads.safetensors"), {k: v.grad for k, v in p.items()})
    np.save(os.path.join(d, "tokens.npy"), inp.numpy().astype("<f4"))
    np.save(os.path.join(d, "targets.npy"), tgt.numpy().astype("<f4"))
    np.save(os.path.join(d, "logits.npy"), logits.detach().numpy().astype("<f4"))
    np.save(os.path.join(d, "loss.npy"), np.array([loss.item()], dtype="<f8"))
    size = sum(os.path.getsize(os.path.join(d, f)) for f in os.listdir(d))
    print("%-18s params %6d  loss %.6f  max|logit| %.3f  %d bytes" %
          (name, sum(v.numel() for v in p32.values()), loss.item(), logits.abs().max().item(), size))
    return p, c, inp


def check_chunk_forms(p, c, inp):
    """The chunkwise torch mixers of bench/torch_train.py against the recurrent ones here."""
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "bench"))
    import torch_train
    with torch.no_grad():
        ref = model_logits(p, c, inp)
        chk = model_logits(p, c, inp, {"gla": lambda *a: torch_train.gla_chunk(*a, C=16),
                                       "delta": lambda *a: torch_train.delta_chunk(*a, C=16),
                                       "ssd": lambda *a: torch_train.ssd_chunk(*a, C=16)})
    return (chk - ref).abs().max().item() / max(1.0, ref.abs().max().item())


def check_op_forms():
    """The special chunk forms of bench/torch_train.py that no model here runs (plain linear
    attention, the fixed per-head decay of retention) against its scalar-gate form, float64,
    at chunk lengths that do and do not divide T."""
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "bench"))
    import torch_train
    gen = torch.Generator().manual_seed(7)
    B, T, H, K = 2, 70, 3, 8
    q, k, v = (torch.randn(B, T, H, K, generator=gen, dtype=torch.float64) for _ in range(3))
    gh = torch.log1p(-torch.pow(2.0, -5.0 - torch.arange(H, dtype=torch.float64)))
    err = 0.0
    for C in (16, 32, 64):
        for a, b in ((torch_train.la_chunk(q, k, v, 0.5, C), torch_train.ssd_chunk(q, k, v, q.new_zeros(B, T, H), 0.5, C)),
                     (torch_train.ssd_const_chunk(q, k, v, gh, 0.5, C),
                      torch_train.ssd_chunk(q, k, v, gh.expand(B, T, H), 0.5, C))):
            err = max(err, (a - b).abs().max().item() / b.abs().max().item())
    return err


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests",
                                                  "ref", "torch"))
    ap.add_argument("--check", action="store_true")
    ap.add_argument("--case", action="append", help="write only this case (repeatable; default: all)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    for i, (name, c) in enumerate(CASES.items()):
        if args.case and name not in args.case:
            continue
        p, c, inp = make_case(name, c, args.out, 1234 + i)
        if args.check:
            print("  chunk form vs recurrent form (float64): rel err %.3e" % check_chunk_forms(p, c, inp))
    if args.check:
        print("la_chunk, ssd_const_chunk vs ssd_chunk (float64): rel err %.3e" % check_op_forms())


if __name__ == "__main__":
    main()
