"""torch.autograd.Functions around lina's C kernels, and input checking.

Every Function takes contiguous float32 CPU tensors that were checked by
`Args.tensor` and calls the typed kernel API of liblina (lina_dd_*, lina_delta_*,
lina_mlstm_*, lina_softmax_attn_*, lina_lion_*) on their memory: outputs and
gradients are written straight into new torch tensors, nothing is copied. What the
forward keeps for the backward (chunk-start states, the delta rule's chunk cache)
comes from a pool of buffers that the autograd graph gives back when it is freed.
"""

import ctypes
import math
import weakref

import torch

from . import _lib as L

try:
    import numpy as _np
except ImportError:  # NumPy is optional
    _np = None

RECURRENT, CHUNK, FAST = 0, 1, -1

# The form that FAST resolves to: None lets the library pick the faster one for the call's
# shape (lina_dd_fast_form, lina_delta_fast_form), as for a call with a backward whether or
# not autograd records it, so that a forward gives the same output with and without
# gradients; RECURRENT or CHUNK runs that one (the tests use this to run both forms).
forced_form = None
_F32 = torch.float32


def _p(t):
    return None if t is None else t.data_ptr()


def _empty(*shape):
    return torch.empty(shape, dtype=_F32)


class _Pool:
    """Float32 buffers that a forward keeps for its backward, reused across calls.

    A fresh buffer of several MiB costs a page fault per 4 KiB page on its first
    touch (glibc returns freed memory of that size to the system), which at a
    training shape is a tenth of the kernel's time. A buffer taken here is tied to
    the autograd node (ctx) that saved it and comes back to the pool when that node
    is freed (after backward, or when the graph is dropped), never earlier: a graph
    kept with retain_graph=True keeps its buffers. At most `limit` bytes are kept
    idle; `lina.empty_cache()` releases them."""

    def __init__(self, limit=1 << 30):
        self.limit = limit
        self.idle = {}  # numel -> [tensor]
        self.idle_bytes = 0

    def take(self, ctx, n):
        free = self.idle.get(n)
        if free:
            t = free.pop()
            self.idle_bytes -= 4 * n
        else:
            t = torch.empty(n, dtype=_F32)
        f = weakref.finalize(ctx, self._give_back, t)
        f.atexit = False
        return t

    def _give_back(self, t):
        n = t.numel()
        if self.idle_bytes + 4 * n <= self.limit:
            self.idle.setdefault(n, []).append(t)
            self.idle_bytes += 4 * n

    def clear(self):
        self.idle, self.idle_bytes = {}, 0


pool = _Pool()


def _all_finite(x):
    """One pass: a finite sum proves every element finite (NaN and +-Inf propagate into
    it); a non-finite sum is either a NaN/Inf or an overflow, told apart by min and max."""
    if math.isfinite(float(x.sum())):
        return True
    lo, hi = torch.aminmax(x)
    return bool(torch.isfinite(lo)) and bool(torch.isfinite(hi))


def _probes_finite(o, extra):
    """Whether o's column 0 and its last token, and the small tensors `extra`, are all
    finite (see Args.verify): one pass in C (lina_mix_out_finite) for o [B,T,H,V] as the
    kernel wrote it. Right after a kernel of several milliseconds the interpreter's and
    PyTorch's code is out of the caches, so one foreign call costs less than the slicing and
    reductions of the same probes in PyTorch or NumPy. Only when a probe is not finite do
    the full checks decide (see verify)."""
    if o.dim() == 4 and o.is_contiguous():
        B, T, H, V = o.shape
        if not L.lib.lina_mix_out_finite(o.data_ptr(), B, T, H, V):
            return False
    elif not all(_all_finite(x.detach()) for x in (o.select(-1, 0), o.select(1, -1)) if x.numel()):
        return False
    return all(_all_finite(x.detach()) for x in extra)


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
        self.named = {}  # name -> the tensor tensor() returned for it (taken again as it is)
        self.deferred = []  # (name, tensor) whose finiteness verify() proves from the outputs
        self.probe = None  # a ctypes.c_int the kernel set to its output probe (see kernel_probe)

    def err(self, exc, msg):
        return exc(f"{self.op}: {msg}")

    def tensor(self, name, x, spec, optional=False, finite=True):
        if x is not None and self.named.get(name) is x:
            return x  # this call's own checked tensor, passed on under its name
        if x.__class__ is not torch.Tensor or x.dtype is not _F32 or not x.is_cpu:
            x = self._convert(name, x)
            if x is None:
                if optional:
                    return None
                raise self.err(ValueError, f"{name} is required")
        shape = x.shape
        if len(shape) != len(spec):
            raise self.err(ValueError, f"{name} has shape {list(shape)} but must be "
                                       f"[{', '.join(spec)}] ({len(spec)} dims)")
        bind = self.bind
        for c, n in zip(spec, shape):
            have = bind.get(c)
            if have is None:
                if c != "_":
                    bind[c] = (n, name)
            elif have[0] != n:
                i = spec.index(c)
                raise self.err(ValueError, f"{name} has shape {list(shape)}: dim {i} ({c}) is "
                                           f"{n} but {have[1]} gives {c}={have[0]}")
        if id(x) in self.checked:
            self.named[name] = x
            return x
        x = x.contiguous()  # the tensor itself when it is contiguous already
        self.checked[id(x)] = x
        self.named[name] = x
        if finite and x.numel():
            if not self.defer:
                if not _all_finite(x):
                    raise self.err(ValueError, f"{name} contains NaN or Inf")
            else:
                self.deferred.append((name, x))
        return x

    def _convert(self, name, x):
        """Everything but a CPU float32 torch.Tensor: None, NumPy arrays (converted without
        a copy), subclasses (nn.Parameter), and what is refused, with the reason."""
        if x is None:
            return None
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
        return x

    def verify(self, o, state=None, extra=()):
        """Finiteness of the inputs, proved from a few elements of the output o [B,T,H,V]
        as the kernel wrote it (before any flip or transpose). Every input element reaches
        them through products and sums, and IEEE arithmetic carries a NaN or an Inf through
        both (0 * NaN and 0 * Inf are NaN, Inf - Inf is NaN):

        - a non-finite q_t poisons every column of o_t (o_t = h_t^T q_t sums over all of
          q_t), so o's column 0 (B*T*H values) covers q;
        - a non-finite k_s, v_s, beta_s or initial-state element enters the state, which
          every later step carries (a decay multiplies, a delta-rule step adds), so the last
          token's output o_{T-1} (B*H*V values) covers them.

        That reads a V-th of o instead of all of it, and nothing of the inputs. `extra`
        are small tensors checked whole (linear attention's normalizer state, which
        only divides). When o is empty (T = 0) the state is checked instead. Only when a
        probe is not finite are the inputs searched, to name the one at fault; outputs
        that overflowed from finite inputs are returned as they are."""
        if not self.deferred:
            return
        extra = [x for x in extra if x is not None and x.numel()]
        if o.numel():
            if self.probe is not None:  # the kernel probed o as it wrote it
                if self.probe.value == 1 and all(_all_finite(x.detach()) for x in extra):
                    return
            elif _probes_finite(o, extra):
                return
        elif all(_all_finite(x.detach()) for x in (state if isinstance(state, tuple) else (state,))
                 if x is not None and x.numel()):
            return
        for name, x in self.deferred:
            if not _all_finite(x):
                raise self.err(ValueError, f"{name} contains NaN or Inf")

    def kernel_probe(self):
        """A ctypes.c_int for the forward to set to the output probe, checked by the kernel's
        tasks on the rows they write while those are in cache (lina_dd_out.finite): verify()
        then reads no part of o. None when nothing is left to verify."""
        if not self.deferred:
            return None
        self.probe = ctypes.c_int(-1)
        return self.probe

    def check_now(self, name, x):
        """Checks x (a tensor this call took) for NaN and Inf now, for an input that passes
        through a function that can map them to finite values before the kernel."""
        if not _all_finite(x):
            raise self.err(ValueError, f"{name} contains NaN or Inf")
        self.deferred = [(n, y) for n, y in self.deferred if y is not x]

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
    """Log decays must be finite and <= 0 (decay = exp(g) in (0, 1]): one vectorised pass
    in C (lina_check_log_gates, the maximum of g's bits read as int32) decides. g is a
    contiguous float32 tensor that Args.tensor returned. The gate leaves verify()'s list."""
    if g is not None and g.numel():
        worst = ctypes.c_float()
        rc = L.lib.lina_check_log_gates(g.data_ptr(), g.numel(), ctypes.byref(worst))
        if rc == 1:
            raise a.err(ValueError, f"{name} contains NaN or Inf")
        if rc:
            raise a.err(ValueError, f"{name} must hold log decays <= 0 (found {worst.value:g})")
        a.deferred = [(n, x) for n, x in a.deferred if x is not g]


_DIMS = {}


def _dims(q, v, scale, chunk):
    """The lina_mix_dims of a call, one ctypes structure per distinct shape and scale (the
    kernels only read it)."""
    key = (q.shape, v.shape[-1], chunk, scale)
    d = _DIMS.get(key)
    if d is None:
        if len(_DIMS) >= 256:
            _DIMS.clear()
        B, T, H, K = q.shape
        d = _DIMS[key] = L.MixDims(B, T, H, K, v.shape[-1], chunk, scale)
    return d


def _probe_ptr(probe):
    """The address of the int that the forward sets to its output probe (lina_dd_out.finite,
    lina_delta_out.finite), or None: see Args.probe."""
    return None if probe is None else ctypes.addressof(probe)


def _needs(ctx, n):
    return ctx is not None and any(ctx.needs_input_grad[:n])


def apply(fn, *args):
    """fn.apply(*args) when autograd records the call (grad mode on and a tensor argument
    requiring a gradient); else fn.forward(None, *args): the forward alone, without the
    autograd Function's machinery (no graph node, nothing kept for a backward)."""
    if torch.is_grad_enabled():
        for x in args:
            if isinstance(x, torch.Tensor) and x.requires_grad:
                return fn.apply(*args)
    return fn.forward(None, *args)


def _grad(x):
    return None if x is None else x.contiguous()


def _call(fn, *args):
    rc = L.run(fn, *args)
    if rc:
        L.check(rc)


# ---------------------------------------------------------- diagonal decay

_GATE = {None: 0, 1: 1, 3: 2, 4: 3}
_GATE_CHECKED = 0x100  # LINA_GATE_CHECKED: the kernel refuses a gate that is not a log decay


class GateError(ValueError):
    """The forward refused its gate (LINA_GATE_CHECKED); the caller names what is wrong."""


class DD(torch.autograd.Function):
    """o, ht = diagonal-decay linear attention (lina_dd_*); g None, [H], [B,T,H] or [B,T,H,K].
    check_g: the kernel checks that g holds finite log decays <= 0 as it reads it (the
    recurrent form, no pass of its own) or in one pass first (the chunk form), and the forward
    raises GateError when it does not."""

    @staticmethod
    def forward(ctx, q, k, v, g, h0, scale, form, chunk, want_ht, check_g=False, probe=None):
        d = _dims(q, v, scale, chunk)
        B, T, H, K = q.shape
        gate = _GATE[None if g is None else g.dim()]
        if form == FAST:
            form = forced_form if forced_form is not None else \
                L.lib.lina_dd_fast_form(ctypes.byref(d), gate, 1)
        o, ht = _empty(B, T, H, d.V), _empty(B, H, K, d.V) if want_ht else None
        states = None
        if form == CHUNK and _needs(ctx, 5):  # the recurrent backward does not read them
            states = pool.take(ctx, L.lib.lina_dd_states_size(ctypes.byref(d)))
        inp = L.DDIn(_p(q), _p(k), _p(v), gate | _GATE_CHECKED if check_g else gate, _p(g), _p(h0))
        out = L.DDOut(_p(o), _p(ht), _p(states), _probe_ptr(probe))
        rc = L.run(L.lib.lina_dd_fwd, ctypes.byref(d), ctypes.byref(inp), ctypes.byref(out), form,
                   L.workspace())
        if rc:
            if rc == L.LINA_ENONFINITE and check_g:
                raise GateError("gate")
            L.check(rc)
        if ctx is not None:
            ctx.save_for_backward(q, k, v, g, h0, states)
            ctx.cfg = (scale, form, chunk)
            ctx.set_materialize_grads(False)
        return o, ht

    @staticmethod
    def backward(ctx, do, dht):
        q, k, v, g, h0, states = ctx.saved_tensors
        if do is None and dht is None:
            return (None,) * 11
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
        return dq, dk, dv, dg, dh0, None, None, None, None, None, None


# ------------------------------------------------------------- delta rule

class Delta(torch.autograd.Function):
    """o, ht = delta rule with n sub-steps per token and an optional log gate (lina_delta_*)."""

    @staticmethod
    def forward(ctx, q, k, v, beta, g, h0, n, scale, form, chunk, want_ht, probe=None):
        d = _dims(q, v, scale, chunk)
        B, T, H, K = q.shape
        if form == FAST:
            form = forced_form if forced_form is not None else \
                L.lib.lina_delta_fast_form(ctypes.byref(d), n, 1)
        o, ht = _empty(B, T, H, d.V), _empty(B, H, K, d.V) if want_ht else None
        cache = None
        if form == CHUNK and _needs(ctx, 6):
            cache = pool.take(ctx, L.lib.lina_delta_cache_floats(ctypes.byref(d), n))
        inp = L.DeltaIn(_p(q), _p(k), _p(v), _p(beta), _p(g), _p(h0), n)
        out = L.DeltaOut(_p(o), _p(ht), _p(cache), _probe_ptr(probe))
        _call(L.lib.lina_delta_fwd, ctypes.byref(d), ctypes.byref(inp), ctypes.byref(out), form,
              L.workspace())
        if ctx is not None:
            ctx.save_for_backward(q, k, v, beta, g, h0, cache)
            ctx.cfg = (n, scale, form, chunk)
            ctx.set_materialize_grads(False)
        return o, ht

    @staticmethod
    def backward(ctx, do, dht):
        q, k, v, beta, g, h0, cache = ctx.saved_tensors
        if do is None and dht is None:
            return (None,) * 12
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
        return dq, dk, dv, db, dg, dh0, None, None, None, None, None, None


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
        if ctx is not None:
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
        if ctx is not None:
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
        if ctx is not None:
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
