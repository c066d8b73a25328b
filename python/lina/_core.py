"""torch.autograd.Functions around lina's C kernels, and input checking.

Every Function takes contiguous float32 CPU tensors that were checked by
`Args.tensor` and calls the typed kernel API of liblina (lina_dd_*, lina_delta_*,
lina_mlstm_*, lina_softmax_attn_*, lina_lion_*) on their memory: outputs and
gradients are written straight into new torch tensors, nothing is copied.
"""

import ctypes
import math

import torch

from . import _lib as L

try:
    import numpy as _np
except ImportError:  # NumPy is optional
    _np = None

RECURRENT, CHUNK = 0, 1
_F32 = torch.float32


def _p(t):
    return None if t is None else t.data_ptr()


def _empty(*shape):
    return torch.empty(shape, dtype=_F32)


def _all_finite(x):
    """One pass: a finite sum proves every element finite (NaN and +-Inf propagate into
    it); a non-finite sum is either a NaN/Inf or an overflow, told apart by min and max."""
    if torch.isfinite(x.sum()):
        return True
    lo, hi = torch.aminmax(x)
    return bool(torch.isfinite(lo)) and bool(torch.isfinite(hi))


class Args:
    """Checks the inputs of one call: type, device, dtype, shape (dimensions bound by
    letter across arguments), finiteness; returns contiguous tensors. Remembers
    whether NumPy arrays came in, so that NumPy arrays go out."""

    def __init__(self, op, defer=True):
        self.op = op
        self.defer = defer  # False: check every input before the call (see verify)
        self.bind = {}
        self.numpy = False
        self.checked = {}  # id -> tensor this call already checked (kept alive)
        self.deferred = []  # (name, tensor) whose finiteness verify() proves from the outputs

    def err(self, exc, msg):
        return exc(f"{self.op}: {msg}")

    def tensor(self, name, x, spec, optional=False, finite=True):
        if x is None:
            if optional:
                return None
            raise self.err(ValueError, f"{name} is required")
        if _np is not None and isinstance(x, _np.ndarray):
            self.numpy = True
            if x.dtype == _np.float32:
                x = torch.from_numpy(_np.ascontiguousarray(x))
            else:
                x = torch.from_numpy(x)
        if not isinstance(x, torch.Tensor):
            raise self.err(TypeError, f"{name} must be a torch.Tensor or numpy.ndarray, "
                                      f"not {type(x).__name__}")
        if x.device.type != "cpu":
            raise self.err(NotImplementedError, f"{name} is on {x.device}; lina runs on the CPU "
                                                f"(move it with .cpu())")
        if x.dtype != _F32:
            if x.is_floating_point():
                raise self.err(NotImplementedError, f"{name} is {x.dtype}; lina computes in "
                                                    f"float32 (convert with .float())")
            raise self.err(TypeError, f"{name} has dtype {x.dtype} but must be torch.float32")
        shape = tuple(x.shape)
        if x.dim() != len(spec):
            raise self.err(ValueError, f"{name} has shape {list(shape)} but must be "
                                       f"[{', '.join(spec)}] ({len(spec)} dims)")
        for i, c in enumerate(spec):
            if c == "_":
                continue
            if c in self.bind and self.bind[c][0] != shape[i]:
                raise self.err(ValueError, f"{name} has shape {list(shape)}: dim {i} ({c}) is "
                                           f"{shape[i]} but {self.bind[c][1]} gives {c}={self.bind[c][0]}")
            self.bind.setdefault(c, (shape[i], name))
        if id(x) in self.checked:
            return x
        x = x.contiguous()
        self.checked[id(x)] = x
        if finite and x.numel():
            if not self.defer:
                if not _all_finite(x):
                    raise self.err(ValueError, f"{name} contains NaN or Inf")
            else:
                self.deferred.append((name, x))
        return x

    def verify(self, *outs):
        """Finiteness of the inputs, proved from the outputs: every input element reaches
        some output element through products and sums, and IEEE arithmetic carries a NaN or
        an Inf through both (0 * NaN and 0 * Inf are NaN), so finite outputs prove finite
        inputs. That is one pass over the outputs instead of one per input. Only when an
        output is not finite are the inputs searched, to name the one at fault; outputs
        that overflowed from finite inputs are returned as they are."""
        def flat(xs):
            for x in xs:
                if isinstance(x, (tuple, list)):
                    yield from flat(x)
                elif x is not None:
                    yield x
        if all(_all_finite(x.detach()) for x in flat(outs) if x.numel()):
            return
        for name, x in self.deferred:
            if not _all_finite(x):
                raise self.err(ValueError, f"{name} contains NaN or Inf")

    def dim(self, c):
        return self.bind[c][0]

    def out(self, x):
        if not self.numpy or x is None:
            return x
        if isinstance(x, tuple):
            return tuple(self.out(e) for e in x)
        return x.detach().numpy()


def check_scale(a, scale, K):
    if scale is None:
        return K ** -0.5
    scale = float(scale)
    if not (scale == scale) or scale in (float("inf"), float("-inf")) or scale == 0.0:
        raise a.err(ValueError, f"scale must be finite and non-zero, got {scale}")
    return scale


def check_log_gate(a, name, g):
    """Log decays must be finite and <= 0 (decay = exp(g) in (0, 1]); one pass (min and
    max) checks both, so the gate leaves verify()'s list."""
    if g is not None and g.numel():
        lo, hi = (float(x) for x in torch.aminmax(g))
        if not (math.isfinite(lo) and math.isfinite(hi)):
            raise a.err(ValueError, f"{name} contains NaN or Inf")
        if hi > 0:
            raise a.err(ValueError, f"{name} must hold log decays <= 0 (found {hi:g})")
        a.deferred = [(n, x) for n, x in a.deferred if x is not g]


def _dims(q, v, scale, chunk):
    B, T, H, K = q.shape
    return L.MixDims(B, T, H, K, v.shape[-1], chunk, scale)


def _needs(ctx, n):
    return any(ctx.needs_input_grad[:n])


def _grad(x):
    return None if x is None else x.contiguous()


def _call(fn, *args):
    with L.threads_scope():
        rc = fn(*args)
    L.check(rc)


# ---------------------------------------------------------- diagonal decay

_GATE = {None: 0, 1: 1, 3: 2, 4: 3}


class DD(torch.autograd.Function):
    """o, ht = diagonal-decay linear attention (lina_dd_*); g None, [H], [B,T,H] or [B,T,H,K]."""

    @staticmethod
    def forward(ctx, q, k, v, g, h0, scale, form, chunk):
        d = _dims(q, v, scale, chunk)
        B, T, H, K = q.shape
        o, ht = _empty(B, T, H, d.V), _empty(B, H, K, d.V)
        states = None
        if _needs(ctx, 5):
            states = _empty(L.lib.lina_dd_states_size(ctypes.byref(d)))
        inp = L.DDIn(_p(q), _p(k), _p(v), _GATE[None if g is None else g.dim()], _p(g), _p(h0))
        out = L.DDOut(_p(o), _p(ht), _p(states))
        _call(L.lib.lina_dd_fwd, ctypes.byref(d), ctypes.byref(inp), ctypes.byref(out), form,
              L.workspace())
        ctx.save_for_backward(q, k, v, g, h0, states)
        ctx.cfg = (scale, form, chunk)
        ctx.set_materialize_grads(False)
        return o, ht

    @staticmethod
    def backward(ctx, do, dht):
        q, k, v, g, h0, states = ctx.saved_tensors
        if do is None and dht is None:
            return (None,) * 8
        scale, form, chunk = ctx.cfg
        do, dht = _grad(do), _grad(dht)
        d = _dims(q, v, scale, chunk)
        dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
        dg = torch.empty_like(g) if g is not None and ctx.needs_input_grad[3] else None
        dh0 = torch.empty_like(h0) if h0 is not None and ctx.needs_input_grad[4] else None
        inp = L.DDIn(_p(q), _p(k), _p(v), _GATE[None if g is None else g.dim()], _p(g), _p(h0))
        gin = L.DDGradIn(_p(do), _p(dht), _p(states))
        gout = L.DDGradOut(_p(dq), _p(dk), _p(dv), _p(dg), _p(dh0))
        _call(L.lib.lina_dd_bwd, ctypes.byref(d), ctypes.byref(inp), ctypes.byref(gin),
              ctypes.byref(gout), form, L.workspace())
        return dq, dk, dv, dg, dh0, None, None, None


# ------------------------------------------------------------- delta rule

class Delta(torch.autograd.Function):
    """o, ht = delta rule with n sub-steps per token and an optional log gate (lina_delta_*)."""

    @staticmethod
    def forward(ctx, q, k, v, beta, g, h0, n, scale, form, chunk):
        d = _dims(q, v, scale, chunk)
        B, T, H, K = q.shape
        o, ht = _empty(B, T, H, d.V), _empty(B, H, K, d.V)
        cache = None
        if form == CHUNK and _needs(ctx, 6):
            cache = _empty(L.lib.lina_delta_cache_floats(ctypes.byref(d), n))
        inp = L.DeltaIn(_p(q), _p(k), _p(v), _p(beta), _p(g), _p(h0), n)
        out = L.DeltaOut(_p(o), _p(ht), _p(cache))
        _call(L.lib.lina_delta_fwd, ctypes.byref(d), ctypes.byref(inp), ctypes.byref(out), form,
              L.workspace())
        ctx.save_for_backward(q, k, v, beta, g, h0, cache)
        ctx.cfg = (n, scale, form, chunk)
        ctx.set_materialize_grads(False)
        return o, ht

    @staticmethod
    def backward(ctx, do, dht):
        q, k, v, beta, g, h0, cache = ctx.saved_tensors
        if do is None and dht is None:
            return (None,) * 10
        n, scale, form, chunk = ctx.cfg
        do, dht = _grad(do), _grad(dht)
        d = _dims(q, v, scale, chunk)
        dq, dk, dv, db = (torch.empty_like(x) for x in (q, k, v, beta))
        dg = torch.empty_like(g) if g is not None and ctx.needs_input_grad[4] else None
        dh0 = torch.empty_like(h0) if h0 is not None and ctx.needs_input_grad[5] else None
        inp = L.DeltaIn(_p(q), _p(k), _p(v), _p(beta), _p(g), _p(h0), n)
        gin = L.DeltaGradIn(_p(do), _p(dht), _p(cache))
        gout = L.DeltaGradOut(_p(dq), _p(dk), _p(dv), _p(db), _p(dg), _p(dh0))
        _call(L.lib.lina_delta_bwd, ctypes.byref(d), ctypes.byref(inp), ctypes.byref(gin),
              ctypes.byref(gout), form, L.workspace())
        return dq, dk, dv, db, dg, dh0, None, None, None, None


# ------------------------------------------------------------------ mLSTM

class Mlstm(torch.autograd.Function):
    """o, C_T, n_T, m_T = the stabilised mLSTM cell (lina_mlstm_*)."""

    @staticmethod
    def forward(ctx, q, k, v, i, f, h0, n0, m0, scale, form, chunk):
        d = _dims(q, v, scale, chunk)
        B, T, H, K = q.shape
        o, ht, nt, mt = _empty(B, T, H, d.V), _empty(B, H, K, d.V), _empty(B, H, K), _empty(B, H)
        inp = L.MlstmIn(_p(q), _p(k), _p(v), _p(i), _p(f), _p(h0), _p(n0), _p(m0))
        out = L.MlstmOut(_p(o), _p(ht), _p(nt), _p(mt))
        _call(L.lib.lina_mlstm_fwd, ctypes.byref(d), ctypes.byref(inp), ctypes.byref(out), form,
              L.workspace())
        ctx.save_for_backward(q, k, v, i, f, h0, n0, m0)
        ctx.cfg = (scale, form, chunk)
        ctx.set_materialize_grads(False)
        return o, ht, nt, mt

    @staticmethod
    def backward(ctx, do, dht, dnt, dmt):
        q, k, v, i, f, h0, n0, m0 = ctx.saved_tensors
        if do is None and dht is None and dnt is None and dmt is None:
            return (None,) * 11
        scale, form, chunk = ctx.cfg
        do, dht, dnt, dmt = (_grad(x) for x in (do, dht, dnt, dmt))
        d = _dims(q, v, scale, chunk)
        dq, dk, dv, di, df = (torch.empty_like(x) for x in (q, k, v, i, f))
        dh0, dn0, dm0 = (None if x is None else torch.empty_like(x) for x in (h0, n0, m0))
        inp = L.MlstmIn(_p(q), _p(k), _p(v), _p(i), _p(f), _p(h0), _p(n0), _p(m0))
        gin = L.MlstmGradIn(_p(do), _p(dht), _p(dnt), _p(dmt))
        gout = L.MlstmGradOut(_p(dq), _p(dk), _p(dv), _p(di), _p(df), _p(dh0), _p(dn0), _p(dm0))
        _call(L.lib.lina_mlstm_bwd, ctypes.byref(d), ctypes.byref(inp), ctypes.byref(gin),
              ctypes.byref(gout), form, L.workspace())
        return dq, dk, dv, di, df, dh0, dn0, dm0, None, None, None


# ------------------------------------------------------ softmax attention

class Softmax(torch.autograd.Function):
    """o = softmax attention, tiled (lina_softmax_attn_*)."""

    @staticmethod
    def forward(ctx, q, k, v, scale, window, non_causal):
        d = _dims(q, v, scale, 0)
        B, T, H, K = q.shape
        o, stat = _empty(B, T, H, d.V), _empty(B, T, H, 2)
        inp = L.SoftmaxIn(_p(q), _p(k), _p(v), window, non_causal)
        out = L.SoftmaxOut(_p(o), _p(stat))
        _call(L.lib.lina_softmax_attn_fwd, ctypes.byref(d), ctypes.byref(inp), ctypes.byref(out),
              L.workspace())
        ctx.save_for_backward(q, k, v, stat)
        ctx.cfg = (scale, window, non_causal)
        return o

    @staticmethod
    def backward(ctx, do):
        q, k, v, stat = ctx.saved_tensors
        scale, window, non_causal = ctx.cfg
        do = do.contiguous()
        d = _dims(q, v, scale, 0)
        dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
        inp = L.SoftmaxIn(_p(q), _p(k), _p(v), window, non_causal)
        gin = L.SoftmaxGradIn(_p(do), _p(stat))
        gout = L.SoftmaxGradOut(_p(dq), _p(dk), _p(dv))
        _call(L.lib.lina_softmax_attn_bwd, ctypes.byref(d), ctypes.byref(inp), ctypes.byref(gin),
              ctypes.byref(gout), L.workspace())
        return dq, dk, dv, None, None, None


# ------------------------------------------------------------------- LION

class Lion(torch.autograd.Function):
    """o = LION-S bidirectional decayed linear attention (lina_lion_*)."""

    @staticmethod
    def forward(ctx, q, k, v, g, scale, normalize, form, chunk):
        d = _dims(q, v, scale, chunk)
        B, T, H, K = q.shape
        o = _empty(B, T, H, d.V)
        inp = L.LionIn(_p(q), _p(k), _p(v), _p(g), normalize)
        out = L.LionOut(_p(o))
        _call(L.lib.lina_lion_fwd, ctypes.byref(d), ctypes.byref(inp), ctypes.byref(out), form,
              L.workspace())
        ctx.save_for_backward(q, k, v, g)
        ctx.cfg = (scale, normalize, form, chunk)
        return o

    @staticmethod
    def backward(ctx, do):
        q, k, v, g = ctx.saved_tensors
        scale, normalize, form, chunk = ctx.cfg
        do = do.contiguous()
        d = _dims(q, v, scale, chunk)
        dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
        dg = torch.empty_like(g) if ctx.needs_input_grad[3] else None
        inp = L.LionIn(_p(q), _p(k), _p(v), _p(g), normalize)
        gin = L.LionGradIn(_p(do))
        gout = L.LionGradOut(_p(dq), _p(dk), _p(dv), _p(dg))
        _call(L.lib.lina_lion_bwd, ctypes.byref(d), ctypes.byref(inp), ctypes.byref(gin),
              ctypes.byref(gout), form, L.workspace())
        return dq, dk, dv, dg, None, None, None, None
