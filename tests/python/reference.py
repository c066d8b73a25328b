"""Plain float64 PyTorch references of lina's ops, written step by step from the
recurrences (autograd gives their gradients)."""

import torch
import torch.nn.functional as F


def dd(q, k, v, g=None, gate=None, scale=None, h0=None, reverse=False):
    """h_t = decay_t * h_{t-1} + k_t v_t^T, o_t = scale h_t^T q_t; gate None, 'head' [H],
    'scalar' [B,T,H] or 'vector' [B,T,H,K] log decays."""
    B, T, H, K = q.shape
    V = v.shape[-1]
    scale = K ** -0.5 if scale is None else scale
    h = torch.zeros(B, H, K, V, dtype=q.dtype) if h0 is None else h0
    o = [None] * T
    for t in (reversed(range(T)) if reverse else range(T)):
        if gate == "head":
            h = torch.exp(g)[None, :, None, None] * h
        elif gate == "scalar":
            h = torch.exp(g[:, t])[..., None, None] * h
        elif gate == "vector":
            h = torch.exp(g[:, t])[..., None] * h
        h = h + k[:, t, :, :, None] * v[:, t, :, None, :]
        o[t] = scale * torch.einsum("bhk,bhkv->bhv", q[:, t], h)
    return torch.stack(o, 1), h


def normalize(o, q, k, scale, z0=None, reverse=False):
    """Linear attention's normaliser: o / (scale q . z_t + 1e-10), z_t = z0 + running key sum."""
    kc = k.flip(1).cumsum(1).flip(1) if reverse else k.cumsum(1)
    if z0 is not None:
        kc = kc + z0
    den = (q * scale * kc).sum(-1, keepdim=True) + 1e-10
    return o / den, (kc[:, :1] if reverse else kc[:, -1:])


def l2norm(x):
    return x / torch.sqrt((x * x).sum(-1, keepdim=True) + 1e-6)


def delta(q, k, v, beta, g=None, n=1, scale=None, h0=None):
    """Per token: h <- exp(g_t) h, then n steps u = v - h^T k, h <- h + beta k u^T; o_t = scale h^T q_t."""
    B, T, H, K = q.shape
    V = v.shape[-1]
    scale = K ** -0.5 if scale is None else scale
    h = torch.zeros(B, H, K, V, dtype=q.dtype) if h0 is None else h0
    o = []
    for t in range(T):
        if g is not None:
            h = torch.exp(g[:, t])[..., None, None] * h
        for j in range(n):
            r = t * n + j
            kk = k[:, r]
            u = v[:, r] - torch.einsum("bhk,bhkv->bhv", kk, h)
            h = h + beta[:, r, :, None, None] * kk[..., None] * u[:, :, None, :]
        o.append(scale * torch.einsum("bhk,bhkv->bhv", q[:, t], h))
    return torch.stack(o, 1), h


def mlstm(q, k, v, i, f, scale=None, state=None):
    B, T, H, K = q.shape
    V = v.shape[-1]
    scale = K ** -0.5 if scale is None else scale
    if state is None:
        C = torch.zeros(B, H, K, V, dtype=q.dtype)
        n = torch.zeros(B, H, K, dtype=q.dtype)
        m = torch.zeros(B, H, dtype=q.dtype)
    else:
        C, n, m = state
    o = []
    for t in range(T):
        lf = F.logsigmoid(f[:, t])
        mn = torch.maximum(lf + m, i[:, t])
        fp = torch.exp(lf + m - mn)
        ip = torch.exp(i[:, t] - mn)
        ks = scale * k[:, t]
        C = fp[..., None, None] * C + (ip[..., None] * ks)[..., None] * v[:, t, :, None, :]
        n = fp[..., None] * n + ip[..., None] * ks
        qt = q[:, t]
        num = torch.einsum("bhk,bhkv->bhv", qt, C)
        den = torch.maximum((qt * n).sum(-1).abs(), torch.exp(-mn)) + 1e-6
        o.append(num / den[..., None])
        m = mn
    return torch.stack(o, 1), (C, n, m)


def softmax_attn(q, k, v, scale=None, causal=True, window=0):
    B, T, H, K = q.shape
    scale = K ** -0.5 if scale is None else scale
    s = torch.einsum("bihk,bjhk->bhij", q, k) * scale
    i = torch.arange(T)[:, None]
    j = torch.arange(T)[None, :]
    mask = torch.zeros(T, T, dtype=torch.bool)
    if causal:
        mask = j > i
        if window:
            mask = mask | (j <= i - window)
    s = s.masked_fill(mask, float("-inf"))
    return torch.einsum("bhij,bjhv->bihv", torch.softmax(s, -1), v)


def lion(q, k, v, g, scale=None, normalize=False):
    B, T, H, K = q.shape
    scale = K ** -0.5 if scale is None else scale
    L = torch.cumsum(g, 1)                                        # [B,T,H]
    Lp = torch.cat([torch.zeros_like(L[:, :1]), L[:, :-1]], 1)    # sum of g before t
    i = torch.arange(T)[:, None]
    j = torch.arange(T)[None, :]
    # i > j: g_j .. g_{i-1} = Lp_i - Lp_j; i < j: g_{i+1} .. g_j = L_j - L_i
    fwd = Lp[:, :, None, :] - Lp[:, None, :, :]                   # [B,i,j,H]
    bwd = L[:, None, :, :] - L[:, :, None, :]
    logm = torch.where((i > j)[None, :, :, None], fwd, torch.where((i < j)[None, :, :, None], bwd,
                                                                   torch.zeros_like(fwd)))
    A = torch.einsum("bihk,bjhk->bijh", q, k) * torch.exp(logm)
    num = torch.einsum("bijh,bjhv->bihv", A, v)
    if normalize:
        return num / A.sum(2)[..., None]
    return scale * num
