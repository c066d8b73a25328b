"""lina's mixer kernels as PyTorch ops, named and called like flash-linear-attention's.

`from lina.ops import chunk_gla` works where `from fla.ops.gla import chunk_gla` did,
on the CPU: the same argument names, defaults, layouts ([B, T, H, ...], states
[B, H, K, V]) and return values ``(o, final_state)``. Every op has a backward
(``torch.autograd``) with gradients for every tensor input, the initial state included.

Inputs are CPU float32 ``torch.Tensor``s or NumPy arrays (NumPy in, NumPy out).
Non-contiguous tensors are copied to a contiguous buffer before the call (that copy
is the only one: outputs are written in place by the C kernels). ``cu_seqlens`` (N
documents packed into a batch of one) runs each document as its own sequence, with
initial and final states [N, ...]. What lina cannot
honour raises instead of computing something else:

- tensors on another device, or of another floating dtype (bfloat16, float16,
  float64) -> NotImplementedError naming the argument; non-float dtypes -> TypeError
- wrong shapes, NaN/Inf, log decays > 0 -> ValueError naming the argument

``chunk_*`` and ``fused_recurrent_*`` of one family compute the same function (FLA's
names tell its two algorithms apart). lina has both forms, exact alike (the tests hold
each to the same float64 reference), and runs the one that is faster for the call's
shape with its backward (lina_dd_fast_form / lina_delta_fast_form in include/lina.h; the
same choice with and without autograd, so that a forward gives the same output either
way): the chunk form for the delta-rule family from two chunks of rows on
(so ``fused_recurrent_delta_rule`` at T = 512 runs it: its recurrent form takes 1.6-3x
longer there), the recurrent form for single tokens and at K = V = 64 (so ``chunk_gla`` at a
training shape runs it: 0.7-0.8x of the chunk form's time; the other diagonal-decay ops
0.9x), else the chunk form. The number of threads is lina.get_num_threads().
"""

import functools
import inspect

import torch

from ._core import _np
from ._core import (CHUNK, FAST, RECURRENT, DD, Delta, GateError, Lion, Mlstm, Softmax, Args, apply,
                    check_log_gate, check_scale)

__all__ = [
    "chunk_linear_attn", "fused_recurrent_linear_attn", "chunk_retention", "chunk_simple_gla",
    "chunk_gla", "fused_recurrent_gla", "chunk_delta_rule", "fused_recurrent_delta_rule",
    "chunk_gated_delta_rule", "fused_recurrent_gated_delta_rule", "chunk_gated_delta_product",
    "mlstm", "lion", "softmax_attn",
]


def _flag(a, name, value, supported=False):
    if bool(value) != supported:
        raise a.err(NotImplementedError, f"{name}={value!r} is not supported by lina")


def _varlen(fn):
    """cu_seqlens: the B = 1 batch packs N documents at offsets cu_seqlens[0..N] (FLA's
    convention); each is run as its own sequence with its own initial and final state
    ([N, ...]), and the outputs are concatenated along T again."""
    sig = inspect.signature(fn)
    pos = list(sig.parameters).index("cu_seqlens")

    @functools.wraps(fn)
    def op(*args, **kwargs):
        if len(args) <= pos and kwargs.get("cu_seqlens") is None:
            return fn(*args, **kwargs)  # no documents: no binding of the arguments
        ba = sig.bind(*args, **kwargs)
        if ba.arguments.get("cu_seqlens") is None:
            return fn(*args, **kwargs)
        return _per_document(fn, ba)
    return op


def _per_document(fn, ba):
    a = Args(fn.__name__)
    p = {k: v for k, v in ba.arguments.items() if k != "kwargs"}
    p.update(ba.arguments.get("kwargs", {}))
    cu = p.pop("cu_seqlens")
    p.pop("cu_seqlens_cpu", None)
    if p.get("head_first"):
        raise a.err(NotImplementedError, "cu_seqlens with head_first=True")
    numpy = False
    for name in ("q", "k", "v", "g", "gk", "beta", "i", "f", "initial_state"):
        x = p.get(name)
        if _np is not None and isinstance(x, _np.ndarray):
            p[name], numpy = torch.from_numpy(x), True
    q = p["q"]
    if not isinstance(q, torch.Tensor) or q.dim() != 4 or q.shape[0] != 1:
        raise a.err(ValueError, "cu_seqlens needs q of shape [1, T, H, K] (the documents packed "
                                f"into one sequence), got {list(getattr(q, 'shape', []))}")
    T = q.shape[1]
    if _np is not None and isinstance(cu, _np.ndarray):
        cu = torch.from_numpy(cu)
    if isinstance(cu, (list, tuple)):
        cu = torch.tensor(cu)
    if not isinstance(cu, torch.Tensor) or cu.dim() != 1 or cu.is_floating_point() or cu.numel() < 2:
        raise a.err(ValueError, "cu_seqlens must be a 1-D integer tensor of N + 1 >= 2 offsets")
    cu = [int(c) for c in cu]
    if cu[0] != 0 or cu[-1] != T or any(e <= s for s, e in zip(cu, cu[1:])):
        raise a.err(ValueError, f"cu_seqlens must rise strictly from 0 to T={T}, got {cu}")
    N = len(cu) - 1
    h0 = p.get("initial_state")
    parts = h0 if isinstance(h0, tuple) else (h0,)
    for x in parts:
        if x is not None and (not isinstance(x, torch.Tensor) or x.dim() < 1 or x.shape[0] != N):
            raise a.err(ValueError, f"initial_state must hold one state per document ({N}), got "
                                    f"{list(getattr(x, 'shape', []))}")
    rows = p.get("num_householder", 1)
    outs, finals = [], []
    for i, (s, e) in enumerate(zip(cu, cu[1:])):
        d = dict(p)
        for name in ("q", "k", "v", "g", "gk", "beta", "i", "f"):
            x = p.get(name)
            if isinstance(x, torch.Tensor):
                r = rows if name in ("k", "v", "beta") else 1
                d[name] = x[:, s * r:e * r]
        if h0 is not None:
            d["initial_state"] = tuple(None if x is None else x[i:i + 1] for x in parts) \
                if isinstance(h0, tuple) else h0[i:i + 1]
        res = fn(**d)
        o, ht = res if isinstance(res, tuple) else (res, None)
        outs.append(o)
        finals.append(ht)
    o = torch.cat(outs, 1)
    if not isinstance(res, tuple):  # lion, softmax_attn: the output alone
        return o.detach().numpy() if numpy else o
    ht = None
    if p.get("output_final_state"):
        if isinstance(finals[0], tuple):
            ht = tuple(torch.cat(z, 0) for z in zip(*finals))
        else:
            ht = torch.cat(finals, 0)
    if numpy:
        return o.detach().numpy(), None if ht is None else (
            tuple(z.detach().numpy() for z in ht) if isinstance(ht, tuple) else ht.detach().numpy())
    return o, ht


def _layout(a, head_first, *xs):
    """head_first=True: inputs are [B, H, T, ...] (older FLA releases); viewed as [B, T, H, ...]."""
    if not head_first:
        return xs
    return tuple(None if x is None or not isinstance(x, torch.Tensor) or x.dim() < 3
                 else x.transpose(1, 2) for x in xs)


def _flip(reverse, *xs):
    if not reverse:
        return xs
    return tuple(None if x is None or x.dim() < 3 else x.flip(1) for x in xs)


def _finish(a, o, state, output_final_state, head_first=False, reverse=False, extra=()):
    a.verify(o, state, extra)  # o as the kernel wrote it
    if reverse:
        o = o.flip(1)
    if head_first:
        o = o.transpose(1, 2)
    return a.out(o), a.out(state if output_final_state else None)


def _state(a, name, h0, state_v_first=False, heads="H"):
    if h0 is None:
        return None
    if state_v_first:
        h0 = a.tensor(name, h0, "B" + heads + "VK")
        return h0.transpose(-1, -2).contiguous()
    return a.tensor(name, h0, "B" + heads + "KV")


def _state_out(ht, state_v_first):
    return ht.transpose(-1, -2).contiguous() if state_v_first and ht is not None else ht


_STATE_ARGS = """\
        scale: query scale; None means K ** -0.5.
        initial_state: [B, H, K, V] (None: zeros).
        output_final_state: also return h_T.
        state_v_first: states are [B, H, V, K] instead of [B, H, K, V].
        cu_seqlens: offsets [N + 1] of N documents packed into a B = 1 batch (states [N, ...]).

    Returns:
        (o [B, T, H, V], h_T or None).
"""


def _doc(fn):
    """Fill the argument lines shared by the gated linear-attention ops into fn's docstring."""
    fn.__doc__ = fn.__doc__.replace("{state_args}", _STATE_ARGS)
    return fn


def _kwargs(a, kwargs, allowed=()):
    for key in kwargs:
        if key not in allowed:
            raise a.err(TypeError, f"unexpected keyword argument {key!r}")


# ------------------------------------------------------ diagonal decay family

def _dd(a, q, k, v, g, gspec, scale, initial_state, form, want_ht, state_v_first=False):
    """Checks the inputs (q, k, v may already be checked tensors) and runs the engine;
    the final state is computed only when want_ht (else it is None). gspec None with a
    gate g: a gate of the package's own (retention's), taken unchecked."""
    q = a.tensor("q", q, "BTHK")
    k = a.tensor("k", k, "BTHK")
    v = a.tensor("v", v, "BTHV")
    check_g = False
    if gspec is not None:
        name, spec = gspec
        g = a.tensor(name, g, spec)
        # the kernel checks the gate as it reads it (LINA_GATE_CHECKED); named below if bad
        check_g = g.numel() > 0
        a.deferred = [(n, x) for n, x in a.deferred if x is not g]
    h0 = _state(a, "initial_state", initial_state, state_v_first)
    scale = check_scale(a, scale, q.shape[-1])
    try:
        o, ht = apply(DD, q, k, v, g, h0, scale, form, 0, bool(want_ht), check_g, a.kernel_probe())
    except GateError:
        check_log_gate(a, name, g)  # raises the error that names the argument
        raise a.err(ValueError, f"{name} was refused by the kernel") from None
    return q, k, scale, o, _state_out(ht, state_v_first)


def _normalize(a, o, q, k, scale, z0, form):
    """o / (scale q_t . z_t + 1e-10) with z_t = z0 + the running sum of the keys. The
    denominator is linear attention with one value column of ones (state z, [B,H,K,1]),
    run by the same engine with its backward: at B=8 T=512 H=4 K=64 about 1 ms, where a
    cumulative sum over T in PyTorch took 5 ms and its product with q 4 ms more."""
    B, T, H, K = q.shape
    h0 = None
    if z0 is not None:
        z0 = a.tensor("initial_state[1]", z0, "B_HK")
        if z0.shape[1] != 1:
            raise a.err(ValueError, f"initial_state[1] has shape {list(z0.shape)} but must be [B, 1, H, K]")
        h0 = z0.reshape(B, H, K, 1)  # [B,1,H,K] and [B,H,K,1] hold the same row-major order
    den, zt = apply(DD, q, k, q.new_ones(B, T, H, 1), None, h0, scale, form, 0, True, False, None)
    return o / (den + 1e-10), zt.reshape(B, 1, H, K)


def _linear_attn(op, q, k, v, scale, initial_state, output_final_state, normalize, cu_seqlens,
                 reverse, form, head_first):
    a = Args(op)
    kv0, z0 = initial_state, None
    if normalize and isinstance(initial_state, tuple):
        kv0, z0 = initial_state
    q, k, v = _layout(a, head_first, q, k, v)
    q, k, v = _flip(reverse, *(a.tensor(n, x, s) for n, x, s in
                               (("q", q, "BTHK"), ("k", k, "BTHK"), ("v", v, "BTHV"))))
    q, k, scale, o, ht = _dd(a, q, k, v, None, None, scale, kv0, form, output_final_state)
    state, z = ht, None
    if normalize:
        o, z = _normalize(a, o, q, k, scale, z0, form)
        state = (ht, z)
    return _finish(a, o, state, output_final_state, head_first, reverse, (z,))


@_varlen
def chunk_linear_attn(q, k, v, scale=None, initial_state=None, output_final_state=False,
                      normalize=True, cu_seqlens=None, head_first=False):
    """Linear attention, chunkwise: h_t = h_{t-1} + k_t v_t^T, o_t = scale * h_t^T q_t.

    Args:
        q, k: queries and keys, [B, T, H, K].
        v: values, [B, T, H, V].
        scale: query scale; None means K ** -0.5.
        initial_state: h_0, [B, H, K, V] (None: zeros). With normalize=True it may also
            be a tuple (h_0, z_0), z_0 [B, 1, H, K] the running key sum of the denominator.
        output_final_state: also return the state after the last token.
        normalize: divide each output by scale * q_t . z_t + 1e-10, z_t = z_0 + sum_{s<=t} k_s.
        cu_seqlens: offsets [N + 1] of N documents packed into a B = 1 batch (states [N, ...]).
        head_first: True when q, k, v are [B, H, T, ...] (o is then returned that way too).

    Returns:
        (o [B, T, H, V], final_state): final_state is h_T [B, H, K, V], or with
        normalize=True the tuple (h_T, z_T [B, 1, H, K]); None unless output_final_state.
    """
    return _linear_attn("chunk_linear_attn", q, k, v, scale, initial_state, output_final_state,
                        normalize, cu_seqlens, False, FAST, head_first)


@_varlen
def fused_recurrent_linear_attn(q, k, v, scale=None, initial_state=None, output_final_state=False,
                                reverse=False, normalize=False, cu_seqlens=None, head_first=False):
    """Linear attention, token by token (see chunk_linear_attn; normalize defaults to False here).

    reverse=True scans from the last token to the first: h_t = h_{t+1} + k_t v_t^T and the
    final state is the one after token 0.
    """
    return _linear_attn("fused_recurrent_linear_attn", q, k, v, scale, initial_state,
                        output_final_state, normalize, cu_seqlens, reverse, FAST, head_first)


@_varlen
def chunk_retention(q, k, v, scale=None, initial_state=None, output_final_state=False,
                    cu_seqlens=None, head_first=False):
    """RetNet retention, chunkwise: h_t = gamma_h h_{t-1} + k_t v_t^T, o_t = scale * h_t^T q_t,
    with the fixed per-head decay gamma_h = 1 - 2^(-5-h), h = 0..H-1.

    Args and returns as chunk_simple_gla (no gate argument: the decays are fixed and get
    no gradient).
    """
    a = Args("chunk_retention")
    q, k, v = _layout(a, head_first, q, k, v)
    q = a.tensor("q", q, "BTHK")
    _, _, _, o, ht = _dd(a, q, k, v, _retention_gates(q.shape[2]), None, scale, initial_state,
                         FAST, output_final_state)
    return _finish(a, o, ht, output_final_state, head_first)


_GAMMA = {}


def _retention_gates(H):
    """log(1 - 2^(-5-h)), h = 0..H-1, made once per H (the kernels only read it)."""
    g = _GAMMA.get(H)
    if g is None:
        g = _GAMMA[H] = torch.log1p(-torch.pow(2.0, -5.0 - torch.arange(H, dtype=torch.float64))).float()
    return g


@_varlen
@_doc
def chunk_simple_gla(q, k, v, g=None, g_gamma=None, scale=None, initial_state=None,
                     output_final_state=False, state_v_first=False, cu_seqlens=None,
                     head_first=False, **kwargs):
    """Linear attention with one scalar log decay per head (and step), chunkwise:
    h_t = exp(g_t) h_{t-1} + k_t v_t^T, o_t = scale * h_t^T q_t.

    Args:
        q, k: [B, T, H, K]; v: [B, T, H, V].
        g: log decays per step and head, [B, T, H], each <= 0; or None.
        g_gamma: log decays per head constant over time, [H], each <= 0 (instead of g).
{state_args}    """
    a = Args("chunk_simple_gla")
    _kwargs(a, kwargs, ("cu_seqlens_cpu",))
    if g is not None and g_gamma is not None:
        raise a.err(ValueError, "give g or g_gamma, not both")
    q, k, v, g = _layout(a, head_first, q, k, v, g)
    gate = None
    if g is not None:
        gate = ("g", "BTH")
    elif g_gamma is not None:
        g, gate = g_gamma, ("g_gamma", "H")
    _, _, _, o, ht = _dd(a, q, k, v, g, gate, scale, initial_state, FAST, output_final_state,
                         state_v_first)
    return _finish(a, o, ht, output_final_state, head_first)


def _gla(op, q, k, v, g, scale, initial_state, output_final_state, reverse, state_v_first,
         cu_seqlens, form, head_first):
    a = Args(op)
    q, k, v, g = _layout(a, head_first, q, k, v, g)
    q, k, v, g = _flip(reverse, q, k, v, g)
    _, _, _, o, ht = _dd(a, q, k, v, g, None if g is None else ("g" if op == "chunk_gla" else "gk", "BTHK"),
                         scale, initial_state, form, output_final_state, state_v_first)
    return _finish(a, o, ht, output_final_state, head_first, reverse)


@_varlen
@_doc
def chunk_gla(q, k, v, g, scale=None, initial_state=None, output_final_state=False,
              state_v_first=False, cu_seqlens=None, head_first=False, **kwargs):
    """Gated linear attention, chunkwise: a log decay per step, head and key channel,
    h_t = diag(exp(g_t)) h_{t-1} + k_t v_t^T, o_t = scale * h_t^T q_t.

    Args:
        q, k: [B, T, H, K]; v: [B, T, H, V].
        g: log decays, [B, T, H, K], each <= 0 (e.g. F.logsigmoid(x) / 16).
{state_args}    """
    a = Args("chunk_gla")
    _kwargs(a, kwargs, ("cu_seqlens_cpu",))
    if g is None:
        raise a.err(ValueError, "g is required")
    return _gla("chunk_gla", q, k, v, g, scale, initial_state, output_final_state, False,
                state_v_first, cu_seqlens, FAST, head_first)


@_varlen
def fused_recurrent_gla(q, k, v, gk=None, gv=None, scale=None, initial_state=None,
                        output_final_state=False, reverse=False, state_v_first=False,
                        cu_seqlens=None, head_first=False, **kwargs):
    """Gated linear attention, token by token (see chunk_gla; the key gate is called gk here
    and may be None, which is plain linear attention).

    gv (a value-channel gate) is not supported (NotImplementedError). reverse=True scans
    from the last token to the first.
    """
    a = Args("fused_recurrent_gla")
    _kwargs(a, kwargs)
    if gv is not None:
        raise a.err(NotImplementedError, "gv (value-channel gates) is not supported by lina")
    return _gla("fused_recurrent_gla", q, k, v, gk, scale, initial_state, output_final_state,
                reverse, state_v_first, cu_seqlens, FAST, head_first)


# ------------------------------------------------------------ delta-rule family

def _l2norm(x):
    return x * torch.rsqrt((x * x).sum(-1, keepdim=True) + 1e-6)


def _delta(a, q, k, v, beta, g, n, scale, initial_state, output_final_state, l2norm, form,
           head_first, state_v_first=False, beta_sigmoid=False, neg_eigval=False):
    q, k, v, beta, g = _layout(a, head_first, q, k, v, beta, g)
    q = a.tensor("q", q, "BTHK")
    prod = n > 1
    # W: value heads (v, beta, g, states); W = G * H shares each q/k head among G value heads
    k = a.tensor("k", k, "BNHK" if prod else "BTHK")
    v = a.tensor("v", v, "BNWV" if prod else "BTWV")
    beta = a.tensor("beta", beta, "BNW" if prod else "BTW")
    if prod and a.dim("N") != n * a.dim("T"):
        raise a.err(ValueError, f"k has {a.dim('N')} rows per sequence but must have "
                                f"num_householder * T = {n} * {a.dim('T')}")
    if a.dim("W") % a.dim("H"):
        raise a.err(ValueError, f"v has {a.dim('W')} heads, not a multiple of q's {a.dim('H')}")
    if g is not None:
        g = a.tensor("g", g, "BTW")
        check_log_gate(a, "g", g)
    h0 = _state(a, "initial_state", initial_state, state_v_first, "W")
    scale = check_scale(a, scale, q.shape[-1])
    if l2norm:
        q, k = _l2norm(q), _l2norm(k)
    if a.dim("W") != a.dim("H"):
        G = a.dim("W") // a.dim("H")
        q, k = q.repeat_interleave(G, dim=2), k.repeat_interleave(G, dim=2)
    if beta_sigmoid:
        # sigmoid(+-Inf) is finite: the logits are checked here, not proved from o
        a.check_now("beta", beta)
        beta = torch.sigmoid(beta) * (2.0 if neg_eigval else 1.0)
    o, ht = apply(Delta, q, k, v, beta, g, h0, n, scale, form, 0, bool(output_final_state), a.kernel_probe())
    return _finish(a, o, _state_out(ht, state_v_first), output_final_state, head_first)


@_varlen
def chunk_delta_rule(q, k, v, beta, scale=None, initial_state=None, output_final_state=False,
                     use_qk_l2norm_in_kernel=False, cu_seqlens=None, head_first=False, **kwargs):
    """DeltaNet, chunkwise: h_t = (I - beta_t k_t k_t^T) h_{t-1} + beta_t k_t v_t^T,
    o_t = scale * h_t^T q_t.

    Args:
        q, k: [B, T, H, K] (k should be L2-normalised, or set use_qk_l2norm_in_kernel).
        v: [B, T, H, V].
        beta: writing strengths, [B, T, H] (in (0, 2) for a stable recurrence).
        scale: query scale; None means K ** -0.5.
        initial_state: [B, H, K, V] (None: zeros).
        output_final_state: also return h_T.
        use_qk_l2norm_in_kernel: L2-normalise q and k over K first (x / sqrt(|x|^2 + 1e-6)),
            with the gradient through it.
        cu_seqlens: offsets [N + 1] of N documents packed into a B = 1 batch (states [N, ...]).

    Returns:
        (o [B, T, H, V], h_T or None).
    """
    a = Args("chunk_delta_rule")
    _kwargs(a, kwargs, ("cu_seqlens_cpu",))
    return _delta(a, q, k, v, beta, None, 1, scale, initial_state, output_final_state,
                  use_qk_l2norm_in_kernel, FAST, head_first)


@_varlen
def fused_recurrent_delta_rule(q, k, v, beta=None, scale=None, initial_state=None,
                               output_final_state=False, use_qk_l2norm_in_kernel=False,
                               cu_seqlens=None, head_first=False):
    """DeltaNet, token by token (see chunk_delta_rule). beta=None means beta = 1."""
    a = Args("fused_recurrent_delta_rule")
    if beta is None and isinstance(q, torch.Tensor):
        beta = torch.ones(q.shape[:-1], dtype=q.dtype, device=q.device)
    return _delta(a, q, k, v, beta, None, 1, scale, initial_state, output_final_state,
                  use_qk_l2norm_in_kernel, FAST, head_first)


@_varlen
def chunk_gated_delta_rule(q, k, v, g, beta, scale=None, initial_state=None,
                           output_final_state=False, use_qk_l2norm_in_kernel=False,
                           use_beta_sigmoid_in_kernel=False, allow_neg_eigval=False,
                           state_v_first=False, cu_seqlens=None, head_first=False, **kwargs):
    """Gated DeltaNet, chunkwise: h_t = exp(g_t) (I - beta_t k_t k_t^T) h_{t-1} + beta_t k_t v_t^T,
    o_t = scale * h_t^T q_t.

    Args:
        q, k: [B, T, H, K]; v: [B, T, HV, V] with HV a multiple of H (grouped value heads:
            value head j reads q/k head j // (HV / H)); states and o have HV heads.
        g: log decays, [B, T, HV], each <= 0 (e.g. F.logsigmoid(x)).
        beta: writing strengths, [B, T, HV].
        scale: query scale; None means K ** -0.5.
        initial_state: [B, H, K, V] (None: zeros).
        output_final_state: also return h_T.
        use_qk_l2norm_in_kernel: L2-normalise q and k over K first.
        use_beta_sigmoid_in_kernel: beta holds logits; sigmoid(beta) is used.
        allow_neg_eigval: with use_beta_sigmoid_in_kernel, 2 * sigmoid(beta) is used.
        state_v_first: states are [B, H, V, K] instead of [B, H, K, V].
        cu_seqlens: offsets [N + 1] of N documents packed into a B = 1 batch (states [N, ...]).

    Returns:
        (o [B, T, H, V], h_T or None).
    """
    a = Args("chunk_gated_delta_rule")
    _kwargs(a, kwargs, ("cu_seqlens_cpu", "chunk_indices", "cp_context"))
    if kwargs.get("cp_context") is not None:
        raise a.err(NotImplementedError, "cp_context (context parallelism) is not supported by lina")
    if allow_neg_eigval and not use_beta_sigmoid_in_kernel:
        raise a.err(ValueError, "allow_neg_eigval=True needs use_beta_sigmoid_in_kernel=True")
    if g is None:
        raise a.err(ValueError, "g is required")
    return _delta(a, q, k, v, beta, g, 1, scale, initial_state, output_final_state,
                  use_qk_l2norm_in_kernel, FAST, head_first, state_v_first,
                  use_beta_sigmoid_in_kernel, allow_neg_eigval)


@_varlen
def fused_recurrent_gated_delta_rule(q, k, v, g=None, gk=None, gv=None, beta=None, scale=None,
                                     initial_state=None, output_final_state=False,
                                     use_qk_l2norm_in_kernel=False, use_gate_in_kernel=False,
                                     A_log=None, dt_bias=None, use_beta_sigmoid_in_kernel=False,
                                     allow_neg_eigval=False, state_v_first=False,
                                     cu_seqlens=None, head_first=False, **kwargs):
    """Gated DeltaNet, token by token (see chunk_gated_delta_rule). g=None drops the decay
    (plain delta rule); beta=None means beta = 1. The per-channel gates gk / gv and the
    in-kernel gate (use_gate_in_kernel, A_log, dt_bias) are not supported
    (NotImplementedError)."""
    a = Args("fused_recurrent_gated_delta_rule")
    _kwargs(a, kwargs)
    for name, val in (("gk", gk), ("gv", gv), ("A_log", A_log), ("dt_bias", dt_bias)):
        if val is not None:
            raise a.err(NotImplementedError, f"{name} is not supported by lina")
    _flag(a, "use_gate_in_kernel", use_gate_in_kernel)
    if allow_neg_eigval and not use_beta_sigmoid_in_kernel:
        raise a.err(ValueError, "allow_neg_eigval=True needs use_beta_sigmoid_in_kernel=True")
    if beta is None and isinstance(q, torch.Tensor):
        beta = torch.ones(q.shape[:-1], dtype=q.dtype, device=q.device)
    return _delta(a, q, k, v, beta, g, 1, scale, initial_state, output_final_state,
                  use_qk_l2norm_in_kernel, FAST, head_first, state_v_first,
                  use_beta_sigmoid_in_kernel, allow_neg_eigval)


@_varlen
def chunk_gated_delta_product(q, k, v, g, beta, num_householder, scale=None, initial_state=None,
                              output_final_state=False, use_qk_l2norm_in_kernel=False,
                              cu_seqlens=None, head_first=False, **kwargs):
    """Gated DeltaProduct, chunkwise: each token applies num_householder delta-rule steps
    (after one decay exp(g_t)); the output reads the state after the last one.

    Args:
        q: [B, T, H, K].
        k: [B, T * n, H, K], v: [B, T * n, H, V], beta: [B, T * n, H] with n = num_householder;
            rows t*n .. t*n+n-1 are the steps of token t.
        g: log decays, [B, T, H], each <= 0; or None (no decay).
        num_householder: n >= 1.
        scale, initial_state, output_final_state, use_qk_l2norm_in_kernel: as chunk_delta_rule.

    Returns:
        (o [B, T, H, V], h_T or None).
    """
    a = Args("chunk_gated_delta_product")
    _kwargs(a, kwargs, ("cu_seqlens_cpu",))
    if not isinstance(num_householder, int) or num_householder < 1:
        raise a.err(ValueError, f"num_householder must be an int >= 1, got {num_householder!r}")
    return _delta(a, q, k, v, beta, g, num_householder, scale, initial_state, output_final_state,
                  use_qk_l2norm_in_kernel, FAST, head_first)


# ------------------------------------------------------------- lina's own ops

_FORMS = {"chunk": CHUNK, "recurrent": RECURRENT, "fused_recurrent": RECURRENT}


def _form(a, form):
    if form not in _FORMS:
        raise a.err(ValueError, f"form must be 'chunk' or 'recurrent', got {form!r}")
    return _FORMS[form]


@_varlen
def mlstm(q, k, v, i, f, scale=None, initial_state=None, output_final_state=False, form="chunk", cu_seqlens=None):
    """xLSTM's mLSTM cell with its max stabiliser (exponential input gate, sigmoid forget gate):

        m_t = max(logsigmoid(f_t) + m_{t-1}, i_t)
        C_t = exp(logsigmoid(f_t) + m_{t-1} - m_t) C_{t-1} + exp(i_t - m_t) scale k_t v_t^T
        n_t = (the same recurrence with scale k_t in place of scale k_t v_t^T)
        o_t = C_t^T q_t / (max(|q_t . n_t|, exp(-m_t)) + 1e-6)

    Args:
        q, k: [B, T, H, K]; v: [B, T, H, V].
        i, f: input and forget gate pre-activations, [B, T, H].
        scale: KEY scale; None means K ** -0.5 (q is not scaled).
        initial_state: None (zeros) or the tuple (C_0 [B, H, K, V], n_0 [B, H, K], m_0 [B, H]).
        output_final_state: also return (C_T, n_T, m_T).
        form: 'chunk' (default) or 'recurrent'.
        cu_seqlens: offsets [N + 1] of N documents packed into a B = 1 batch (states [N, ...]).

    Returns:
        (o [B, T, H, V], (C_T, n_T, m_T) or None).
    """
    a = Args("mlstm", defer=False)
    fm = _form(a, form)
    q, k, v = a.tensor("q", q, "BTHK"), a.tensor("k", k, "BTHK"), a.tensor("v", v, "BTHV")
    i, f = a.tensor("i", i, "BTH"), a.tensor("f", f, "BTH")
    h0 = n0 = m0 = None
    if initial_state is not None:
        if not isinstance(initial_state, (tuple, list)) or len(initial_state) != 3:
            raise a.err(ValueError, "initial_state must be a tuple (C_0, n_0, m_0)")
        h0 = a.tensor("initial_state[0]", initial_state[0], "BHKV")
        n0 = a.tensor("initial_state[1]", initial_state[1], "BHK")
        m0 = a.tensor("initial_state[2]", initial_state[2], "BH")
    scale = check_scale(a, scale, q.shape[-1])
    o, ht, nt, mt = apply(Mlstm, q, k, v, i, f, h0, n0, m0, scale, fm, 0)
    return _finish(a, o, (ht, nt, mt), output_final_state)


@_varlen
def lion(q, k, v, g, scale=None, normalize=False, form="chunk", cu_seqlens=None):
    """LION-S: bidirectional (non-causal) linear attention with selective decay.

        o_i = scale * sum_j M_ij (q_i . k_j) v_j, M_ij = prod of exp(g) between j and i
        (exp(g_j..g_{i-1}) for j < i, 1 for i = j, exp(g_{i+1}..g_j) for j > i);
        normalize=True divides by sum_j M_ij (q_i . k_j) instead of scaling.

    Args:
        q, k: [B, T, H, K]; v: [B, T, H, V]; g: log decays [B, T, H], each <= 0.
        scale: None means K ** -0.5. form: 'chunk' (default) or 'recurrent' (the two scans).
        cu_seqlens: offsets [N + 1] of N documents packed into a B = 1 batch; neither direction
            crosses a document's ends.

    Returns:
        o [B, T, H, V] (there is no recurrent state to return).
    """
    a = Args("lion", defer=False)
    fm = _form(a, form)
    q, k, v = a.tensor("q", q, "BTHK"), a.tensor("k", k, "BTHK"), a.tensor("v", v, "BTHV")
    g = a.tensor("g", g, "BTH")
    check_log_gate(a, "g", g)
    scale = check_scale(a, scale, q.shape[-1])
    o = apply(Lion, q, k, v, g, scale, int(bool(normalize)), fm, 0)
    a.verify(o)
    return a.out(o)


@_varlen
def softmax_attn(q, k, v, scale=None, causal=True, window_size=None, cu_seqlens=None):
    """Exact softmax attention, tiled (memory O(T), never the T x T matrix).

        o_i = sum_j softmax_j(scale * q_i . k_j) v_j over j <= i (causal), over
        i - window_size < j <= i (causal with a window), or over every j (causal=False).

    Args:
        q, k: [B, T, H, K]; v: [B, T, H, V].
        scale: None means K ** -0.5.
        causal: mask future keys (default True).
        window_size: keys per query in a causal sliding window (None: no window).
        cu_seqlens: offsets [N + 1] of N documents packed into a B = 1 batch; no query attends
            to a key of another document.

    Returns:
        o [B, T, H, V].
    """
    a = Args("softmax_attn", defer=False)
    q, k, v = a.tensor("q", q, "BTHK"), a.tensor("k", k, "BTHK"), a.tensor("v", v, "BTHV")
    window = 0
    if window_size is not None:
        if not causal:
            raise a.err(ValueError, "window_size needs causal=True")
        if not isinstance(window_size, int) or window_size < 1:
            raise a.err(ValueError, f"window_size must be an int >= 1, got {window_size!r}")
        window = window_size
    scale = check_scale(a, scale, q.shape[-1])
    o = apply(Softmax, q, k, v, scale, window, int(not causal))
    a.verify(o)
    return a.out(o)
