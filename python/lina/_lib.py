"""Loading liblina.so through ctypes: the C structures, error handling, threads
and the per-thread workspace that every call into the library uses."""

import ctypes
import os
import threading

_HERE = os.path.dirname(os.path.abspath(__file__))


def _candidates():
    env = os.environ.get("LINA_LIBRARY")
    if env:
        return [env], True
    here = [os.path.join(_HERE, n) for n in sorted(os.listdir(_HERE)) if n.startswith("liblina.so")]
    # the checkout this package sits in: python/lina -> build/liblina.so
    repo = os.path.join(os.path.dirname(os.path.dirname(_HERE)), "build", "liblina.so")
    return here + [repo], False


def _load():
    paths, forced = _candidates()
    for p in paths:
        if os.path.exists(p):
            try:
                return ctypes.CDLL(p), p
            except OSError as e:
                raise ImportError(f"lina: cannot load {p}: {e}") from None
    if forced:
        raise ImportError(f"lina: LINA_LIBRARY={paths[0]} does not exist")
    raise ImportError(
        "lina: liblina.so not found (looked in " + ", ".join(paths or [_HERE]) +
        "); build it with `make` in the lina repository (then `make python`), "
        "or set LINA_LIBRARY to its path")


lib, path = _load()

c_float_p = ctypes.POINTER(ctypes.c_float)
c_int32_p = ctypes.POINTER(ctypes.c_int32)
vp = ctypes.c_void_p


class LinaError(RuntimeError):
    """An error reported by liblina that is not a bad argument (I/O, memory)."""


class MixDims(ctypes.Structure):
    _fields_ = [("B", ctypes.c_int), ("T", ctypes.c_int), ("H", ctypes.c_int), ("K", ctypes.c_int),
                ("V", ctypes.c_int), ("chunk", ctypes.c_int), ("scale", ctypes.c_float)]


def _ptrs(*names):
    return [(n, vp) for n in names]


class DDIn(ctypes.Structure):
    _fields_ = _ptrs("q", "k", "v") + [("gate", ctypes.c_int)] + _ptrs("g", "h0")


class DDOut(ctypes.Structure):
    _fields_ = _ptrs("o", "ht", "states", "finite")


class DDGradIn(ctypes.Structure):
    _fields_ = _ptrs("do_", "dht", "states")


class DDGradOut(ctypes.Structure):
    _fields_ = _ptrs("dq", "dk", "dv", "dg", "dh0")


class DeltaIn(ctypes.Structure):
    _fields_ = _ptrs("q", "k", "v", "beta", "g", "h0") + [("n", ctypes.c_int)] + _ptrs("gk")


class DeltaOut(ctypes.Structure):
    _fields_ = _ptrs("o", "ht", "cache", "finite")


class DeltaGradIn(ctypes.Structure):
    _fields_ = _ptrs("do_", "dht", "cache")


class DeltaGradOut(ctypes.Structure):
    _fields_ = _ptrs("dq", "dk", "dv", "dbeta", "dg", "dh0", "dgk")


class MlstmIn(ctypes.Structure):
    _fields_ = _ptrs("q", "k", "v", "i", "f", "h0", "n0", "m0")


class MlstmOut(ctypes.Structure):
    _fields_ = _ptrs("o", "ht", "nt", "mt")


class MlstmGradIn(ctypes.Structure):
    _fields_ = _ptrs("do_", "dht", "dnt", "dmt")


class MlstmGradOut(ctypes.Structure):
    _fields_ = _ptrs("dq", "dk", "dv", "di", "df", "dh0", "dn0", "dm0")


class SoftmaxIn(ctypes.Structure):
    _fields_ = (_ptrs("q", "k", "v") + [("window", ctypes.c_int), ("non_causal", ctypes.c_int)] + _ptrs("g") +
                [("q_from", ctypes.c_int)])


class SoftmaxOut(ctypes.Structure):
    _fields_ = _ptrs("o", "stat")


class SoftmaxGradIn(ctypes.Structure):
    _fields_ = _ptrs("do_", "stat")


class SoftmaxGradOut(ctypes.Structure):
    _fields_ = _ptrs("dq", "dk", "dv", "dg")


class LionIn(ctypes.Structure):
    _fields_ = _ptrs("q", "k", "v", "g") + [("normalize", ctypes.c_int)]


class LionOut(ctypes.Structure):
    _fields_ = _ptrs("o")


class LionGradIn(ctypes.Structure):
    _fields_ = _ptrs("do_")


class LionGradOut(ctypes.Structure):
    _fields_ = _ptrs("dq", "dk", "dv", "dg")


class Ws(ctypes.Structure):
    _fields_ = [("blocks", vp), ("sizes", vp), ("nblocks", ctypes.c_int)]



# The C name of every structure mirrored above; _check_layout compares each with the
# library's own table (lina_abi_layout), so a library whose structures differ from this
# mirror is refused when the package loads, not misread on the first call.
_MIRRORS = {
    "lina_ws": Ws, "lina_mix_dims": MixDims,
    "lina_dd_in": DDIn, "lina_dd_out": DDOut, "lina_dd_grad_in": DDGradIn, "lina_dd_grad_out": DDGradOut,
    "lina_delta_in": DeltaIn, "lina_delta_out": DeltaOut, "lina_delta_grad_in": DeltaGradIn,
    "lina_delta_grad_out": DeltaGradOut,
    "lina_mlstm_in": MlstmIn, "lina_mlstm_out": MlstmOut, "lina_mlstm_grad_in": MlstmGradIn,
    "lina_mlstm_grad_out": MlstmGradOut,
    "lina_softmax_in": SoftmaxIn, "lina_softmax_out": SoftmaxOut, "lina_softmax_grad_in": SoftmaxGradIn,
    "lina_softmax_grad_out": SoftmaxGradOut,
    "lina_lion_in": LionIn, "lina_lion_out": LionOut, "lina_lion_grad_in": LionGradIn,
    "lina_lion_grad_out": LionGradOut,
}


def layout_mismatches(table, mirrors=_MIRRORS):
    """Differences between the C layout table (lines "name size field:offset ...") and
    the ctypes mirrors, one sentence each; empty when they agree."""
    c = {}
    for line in table.splitlines():
        parts = line.split()
        if len(parts) >= 2:
            c[parts[0]] = (int(parts[1]), [tuple(f.split(":")) for f in parts[2:]])
    bad = []
    for name, cls in mirrors.items():
        if name not in c:
            bad.append(f"the library does not describe {name}")
            continue
        size, fields = c[name]
        py = [(f[0], str(getattr(cls, f[0]).offset)) for f in cls._fields_]
        cf = [(f, o) for f, o in fields]
        if [f for f, _ in py] != [f for f, _ in cf]:
            bad.append(f"{name} has fields {[f for f, _ in cf]} in the library, "
                       f"{[f for f, _ in py]} in this package")
        elif py != cf:
            diff = next(f"{a[0]} at byte {b[1]} (package: {a[1]})" for a, b in zip(py, cf) if a != b)
            bad.append(f"{name} has {diff}")
        elif ctypes.sizeof(cls) != size:
            bad.append(f"{name} is {size} bytes in the library, {ctypes.sizeof(cls)} in this package")
    return bad


def _check_layout():
    try:
        fn = lib.lina_abi_layout
    except AttributeError:
        raise ImportError(f"lina: {path} is older than this package (no lina_abi_layout); "
                          "rebuild it with `make` (and `make python`)") from None
    fn.restype, fn.argtypes = ctypes.c_char_p, []
    bad = layout_mismatches(fn().decode())
    if bad:
        raise ImportError(f"lina: {path} does not match this package's structures: {bad[0]}"
                          + (f" (and {len(bad) - 1} more)" if len(bad) > 1 else "")
                          + "; rebuild both with `make` and `make python` (a structure changed in "
                          "include/lina.h is mirrored in python/lina/_lib.py and listed in src/ops/abi.c)")


_check_layout()

P = ctypes.POINTER
_sigs = {
    "lina_last_error": (ctypes.c_char_p, []),
    "lina_clear_error": (None, []),
    "lina_set_threads": (None, [ctypes.c_int]),
    "lina_get_threads": (ctypes.c_int, []),
    "lina_isa_name": (ctypes.c_char_p, []),
    "lina_ws_init": (None, [P(Ws)]),
    "lina_ws_free": (None, [P(Ws)]),
    "lina_dd_states_size": (ctypes.c_size_t, [P(MixDims)]),
    "lina_dd_fwd": (ctypes.c_int, [P(MixDims), P(DDIn), P(DDOut), ctypes.c_int, P(Ws)]),
    "lina_dd_bwd": (ctypes.c_int, [P(MixDims), P(DDIn), P(DDGradIn), P(DDGradOut), ctypes.c_int, P(Ws)]),
    "lina_retention_gates": (None, [ctypes.c_int, c_float_p]),
    "lina_check_log_gates": (ctypes.c_int, [vp, ctypes.c_size_t, c_float_p]),
    "lina_mix_out_finite": (ctypes.c_int, [vp, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_int]),
    "lina_delta_cache_floats": (ctypes.c_size_t, [P(MixDims), ctypes.c_int]),
    "lina_dd_fast_form": (ctypes.c_int, [P(MixDims), ctypes.c_int, ctypes.c_int]),
    "lina_delta_fast_form": (ctypes.c_int, [P(MixDims), ctypes.c_int, ctypes.c_int]),
    "lina_cpu_full512": (ctypes.c_int, []),
    "lina_delta_fwd": (ctypes.c_int, [P(MixDims), P(DeltaIn), P(DeltaOut), ctypes.c_int, P(Ws)]),
    "lina_delta_bwd": (ctypes.c_int, [P(MixDims), P(DeltaIn), P(DeltaGradIn), P(DeltaGradOut),
                                      ctypes.c_int, P(Ws)]),
    "lina_mlstm_fwd": (ctypes.c_int, [P(MixDims), P(MlstmIn), P(MlstmOut), ctypes.c_int, P(Ws)]),
    "lina_mlstm_bwd": (ctypes.c_int, [P(MixDims), P(MlstmIn), P(MlstmGradIn), P(MlstmGradOut),
                                      ctypes.c_int, P(Ws)]),
    "lina_softmax_attn_fwd": (ctypes.c_int, [P(MixDims), P(SoftmaxIn), P(SoftmaxOut), P(Ws)]),
    "lina_softmax_attn_bwd": (ctypes.c_int, [P(MixDims), P(SoftmaxIn), P(SoftmaxGradIn),
                                             P(SoftmaxGradOut), P(Ws)]),
    "lina_lion_fwd": (ctypes.c_int, [P(MixDims), P(LionIn), P(LionOut), ctypes.c_int, P(Ws)]),
    "lina_lion_bwd": (ctypes.c_int, [P(MixDims), P(LionIn), P(LionGradIn), P(LionGradOut),
                                     ctypes.c_int, P(Ws)]),
}
for _name, (_res, _args) in _sigs.items():
    _f = getattr(lib, _name)
    _f.restype = _res
    _f.argtypes = _args

LINA_EINVAL = -1
LINA_ENONFINITE = -5


def check(rc):
    """Raise the library's last error message when rc is non-zero."""
    if rc:
        msg = (lib.lina_last_error() or b"").decode("utf-8", "replace") or f"error code {rc}"
        if rc in (LINA_EINVAL, LINA_ENONFINITE):
            raise ValueError(msg)
        if rc == -4:
            raise MemoryError(msg)
        raise LinaError(msg)


# ------------------------------------------------------------------ threads

_threads = [0]  # 0: follow torch.get_num_threads()


def set_num_threads(n):
    """Number of threads lina's kernels use. n <= 0 (or None) returns to the default,
    which is torch.get_num_threads() at each call (os.cpu_count() without torch)."""
    if n is None:
        n = 0
    if not isinstance(n, int):
        raise TypeError(f"set_num_threads: n must be an int, got {type(n).__name__}")
    _threads[0] = max(0, n)


def _torch_threads():
    """torch.get_num_threads, looked up once (os.cpu_count() without PyTorch)."""
    global _torch_threads
    try:
        import torch
        _torch_threads = torch.get_num_threads
    except ImportError:
        _torch_threads = lambda: os.cpu_count() or 1  # noqa: E731
    return _torch_threads()


def get_num_threads():
    """The thread count the next lina call uses."""
    if _threads[0] > 0:
        return _threads[0]
    return _torch_threads()


def _enter():
    """Sets lina's thread count for one call; returns PyTorch's count to restore after it
    (0: nothing to restore). lina and PyTorch share the OpenMP runtime."""
    n = _threads[0]
    if n <= 0:
        lib.lina_set_threads(_torch_threads())
        return 0
    torch_n = 0
    try:
        import torch
        torch_n = torch.get_num_threads()
    except ImportError:
        pass
    lib.lina_set_threads(n)
    return torch_n if torch_n != n else 0


def _leave(torch_n):
    if torch_n:
        import torch
        torch.set_num_threads(torch_n)


def run(fn, *args):
    """fn(*args) (a library function) on lina's thread count, as threads_scope does for a
    block, without the context manager's object per call; returns fn's result."""
    torch_n = _enter()
    if not torch_n:
        return fn(*args)
    try:
        return fn(*args)
    finally:
        _leave(torch_n)


class threads_scope:
    """Sets lina's thread count for one block of calls. lina and PyTorch share the OpenMP
    runtime, so PyTorch's own count is restored afterwards when they differ."""

    def __enter__(self):
        self.torch_n = _enter()
        return self

    def __exit__(self, *exc):
        _leave(self.torch_n)
        return False


# ---------------------------------------------------------------- workspace

_tls = threading.local()


class _Workspace:
    def __init__(self):
        self.ws = Ws()
        lib.lina_ws_init(ctypes.byref(self.ws))
        self._free = lib.lina_ws_free

    def __del__(self):
        try:
            self._free(ctypes.byref(self.ws))
        except Exception:
            pass


def workspace():
    """This thread's scratch arena (grown to the largest call, then reused)."""
    w = getattr(_tls, "ws", None)
    if w is None:
        w = _tls.ws = _Workspace()
    return ctypes.byref(w.ws)
