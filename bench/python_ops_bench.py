#!/usr/bin/python3
"""python_ops_bench.py -- lina.ops from PyTorch against plain-PyTorch chunkwise code.

For each op with flash-linear-attention's name, at B=1 T=4096 H=4 K=V=128 and at a
small training shape (B=8 T=512 H=4 K=V=64), on 1 and 2 threads, in one process:

  - lina: the lina.ops call (checks, autograd Function, ctypes), forward and forward +
    backward (the backward of sum(o * do) to every input);
  - torch: the same function in plain PyTorch, chunkwise: the chunk forms of
    bench/torch_train.py (autograd for the backward): linear attention without a decay
    (la_chunk), retention with its fixed per-head decay (ssd_const_chunk), Simple GLA as
    the scalar-gate form (ssd_chunk), GLA (gla_chunk), the WY delta rules (delta_chunk),
    DeltaProduct as the gated delta rule over the T*n interleaved rows; each at the chunk
    size of 32, 64, 128 and 256 (at most T) whose forward + backward ran fastest in a
    short timing run before the table's (--chunks; column "torch C"), so that the PyTorch
    side is the fastest form of this code for the shape (at K = V = 128 and T = 4096 that
    is 128 or 256, where chunk 64 took 1.5-1.7x as long);
  - C: the kernel called directly through ctypes on prepared buffers (lina_dd_* or
    lina_delta_*), which is what the lina.ops wrapper adds its overhead to.

Reports the best of --repeat runs after one warm-up, in wall-clock time and in process CPU
time (the CPU time of the fastest-in-CPU run; on a shared machine it is the steadier
figure), the torch / lina ratios and the wrapper overhead (lina / C - 1). Both use the same
threads (torch.set_num_threads; lina follows torch.get_num_threads()). OpenMP's idle
threads spin only briefly (GOMP_SPINCOUNT=10000 unless set), as the lina tool does, so
that CPU time counts work rather than waiting.

How the overhead is measured: --reps pairs of one lina call and one C call, adjacent and
alternating in order; the overhead is the median of the paired CPU-time differences, with
their quartiles. The C call writes into buffers it made once; a second column pairs the lina
call with a C call into an output and gradients made for the call, as lina.ops makes them
(and as any PyTorch op makes its outputs): a kernel's time can move by a few per cent with
where fresh tensors land, and that column leaves only the wrapper's own work (Python,
checks, autograd) in the difference. At 2 threads an idle OpenMP thread that spins adds CPU
time that depends on how the other jobs on the machine happen to wake it, not on the code,
which swamps a difference of 1 %; --passive sets OMP_WAIT_POLICY=PASSIVE (for lina, C and PyTorch alike:
one OpenMP runtime) so that an idle thread sleeps at once and the CPU time counts work
only. Read the 2-thread overhead from a run with --passive and --reps 61 or more.

--breakdown prints, instead of the tables, where the overhead of a lina.ops call goes for
each op and shape: the Python work (the call at B=1 T=16 H=1 K=V=16, where the kernel
takes a few microseconds, less the bare C call; mean CPU time of 1000 calls), the output
probe that proves the inputs finite (Args.verify: lina.ops with and without it, paired),
and for the gates that the kernel checks, the chunk form's check of the gate (the C call
with and without LINA_GATE_CHECKED, paired).

  /usr/bin/python3 bench/python_ops_bench.py [--repeat 3] [--threads 1,2] [--shapes long,train]
      [--ops OP,...] [--quick] [--passive] [--reps N] [--breakdown] [--out FILE]
"""
import argparse
import ctypes
import os
import resource
import statistics
import sys
import time

if "--passive" in sys.argv:
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"  # read when libgomp starts: before torch
if "OMP_WAIT_POLICY" not in os.environ:
    os.environ.setdefault("GOMP_SPINCOUNT", "10000")  # read when libgomp starts: before torch
import torch  # noqa: E402
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "python"))
sys.path.insert(0, HERE)
import lina  # noqa: E402
from lina import _lib as L, ops  # noqa: E402
from torch_train import CHUNKS, delta_chunk, gla_chunk, la_chunk, ssd_chunk, ssd_const_chunk  # noqa: E402

NH = 2  # Householder steps of the DeltaProduct inputs


def inputs(op, B, T, H, K, V, gen):
    r = lambda *s: torch.randn(s, generator=gen)  # noqa: E731
    q, k, v = r(B, T, H, K), r(B, T, H, K), r(B, T, H, V)
    x = dict(q=q, k=k, v=v)
    if op in ("chunk_simple_gla",):
        x["g"] = F.logsigmoid(r(B, T, H)) / 16
    if op in ("chunk_gla", "fused_recurrent_gla"):
        x["g"] = F.logsigmoid(r(B, T, H, K)) / 16
    if "delta" in op:
        n = NH if op == "chunk_gated_delta_product" else 1
        x["q"] = F.normalize(q, dim=-1)
        x["k"] = F.normalize(r(B, T * n, H, K), dim=-1)
        x["v"] = r(B, T * n, H, V)
        x["beta"] = torch.rand(B, T * n, H, generator=gen) * (2 if n > 1 else 1)
        if "gated" in op:
            x["g"] = F.logsigmoid(r(B, T, H)) / 4
    return x


def lina_call(op, x):
    q, k, v = x["q"], x["k"], x["v"]
    if op in ("chunk_linear_attn", "fused_recurrent_linear_attn"):
        return getattr(ops, op)(q, k, v, normalize=False)[0]
    if op == "chunk_retention":
        return ops.chunk_retention(q, k, v)[0]
    if op == "chunk_simple_gla":
        return ops.chunk_simple_gla(q, k, v, g=x["g"])[0]
    if op in ("chunk_gla", "fused_recurrent_gla"):
        return getattr(ops, op)(q, k, v, x["g"])[0]
    if op in ("chunk_delta_rule", "fused_recurrent_delta_rule"):
        return getattr(ops, op)(q, k, v, x["beta"])[0]
    if op in ("chunk_gated_delta_rule", "fused_recurrent_gated_delta_rule"):
        return getattr(ops, op)(q, k, v, x["g"], beta=x["beta"])[0]
    return ops.chunk_gated_delta_product(q, k, v, x["g"], x["beta"], NH)[0]


def torch_call(op, x, C=64):
    q, k, v = x["q"], x["k"], x["v"]
    B, T, H, K = q.shape
    s = K ** -0.5
    if "linear_attn" in op:
        return la_chunk(q, k, v, s, C)
    if op == "chunk_retention":
        gam = torch.log1p(-torch.pow(2.0, -5.0 - torch.arange(H, dtype=torch.float64))).float()
        return ssd_const_chunk(q, k, v, gam, s, C)
    if op == "chunk_simple_gla":
        return ssd_chunk(q, k, v, x["g"], s, C)
    if "gla" in op:
        return gla_chunk(q, k, v, x["g"], s, C)
    if op == "chunk_gated_delta_product":
        # the T*n rows as one gated delta rule: the gate on each token's first row, the
        # query on its last row, the output of that row
        n = NH
        gr = q.new_zeros(B, T, n, H)
        gr[:, :, 0] = x["g"]
        qr = q.new_zeros(B, T, n, H, K)
        qr = torch.cat([qr[:, :, :n - 1], q[:, :, None]], 2)
        o = delta_chunk(qr.reshape(B, T * n, H, K), k, v, x["beta"], gr.reshape(B, T * n, H), s, C)
        return o.view(B, T, n, H, -1)[:, :, -1]
    return delta_chunk(q, k, v, x["beta"], x.get("g"), s, C)


def best_chunk(op, x, do, chunks):
    """The chunk size of `chunks` (at most T) whose plain-PyTorch forward + backward runs
    fastest here: each timed twice after a warm-up, by the lesser CPU time."""
    T = x["q"].shape[1]
    cands = [C for C in chunks if C <= T] or [min(chunks)]
    if len(cands) == 1:
        return cands[0]
    cpu = {}
    for C in cands:
        r = runner(lambda xs, C=C: torch_call(op, xs, C), x, do, True)
        r()
        cpu[C] = min(timed(r)[1] for _ in range(2))
    return min(cands, key=lambda C: cpu[C])


def _ptr(t):
    return None if t is None else t.data_ptr()


class Raw:
    """The op's kernel called directly (ctypes), outputs and gradients preallocated, in the
    form that lina.ops runs for the call (lina_dd_fast_form / lina_delta_fast_form for a
    call with a backward, which lina.ops uses with and without autograd)."""

    def __init__(self, op, x):
        q, k, v = x["q"], x["k"], x["v"]
        B, T, H, K = q.shape
        V = v.shape[-1]
        self.d = L.MixDims(B, T, H, K, V, 0, K ** -0.5)
        self.o, self.ht, self.do = torch.empty(B, T, H, V), torch.empty(B, H, K, V), torch.randn(B, T, H, V)
        self.grads = [torch.empty_like(x[n]) for n in ("q", "k", "v")]
        p = _ptr
        self.gb = self.fresh = None  # fresh: the last fwd_bwd_fresh call's tensors
        self.delta = "delta" in op
        if self.delta:
            n = NH if op == "chunk_gated_delta_product" else 1
            g = x.get("g")
            self.forms = [L.lib.lina_delta_fast_form(ctypes.byref(self.d), n, 1)] * 2
            self.gb, self.gg = torch.empty_like(x["beta"]), None if g is None else torch.empty_like(g)
            self.cache = torch.empty(L.lib.lina_delta_cache_floats(ctypes.byref(self.d), n)) \
                if self.forms[1] == 1 else None
            self.inp = L.DeltaIn(p(q), p(k), p(v), p(x["beta"]), p(g), None, n)
            self.gin = L.DeltaGradIn(p(self.do), None, p(self.cache))
            self.f, self.b = L.lib.lina_delta_fwd, L.lib.lina_delta_bwd
        else:
            g = x.get("g")
            gate = 0
            if op == "chunk_retention":
                g = torch.log1p(-torch.pow(2.0, -5.0 - torch.arange(H, dtype=torch.float64))).float()
                gate = 1
            elif g is not None:
                gate = 2 if g.dim() == 3 else 3
            self.g = g
            self.forms = [L.lib.lina_dd_fast_form(ctypes.byref(self.d), gate, 1)] * 2
            self.gg = None if g is None or gate == 1 else torch.empty_like(g)
            # chunk-start states for the chunk backward (the recurrent one does not read them)
            self.states = torch.empty(L.lib.lina_dd_states_size(ctypes.byref(self.d))) \
                if self.forms[1] == 1 else None
            self.inp = L.DDIn(p(q), p(k), p(v), gate, p(g), None)
            self.gin = L.DDGradIn(p(self.do), None, p(self.states))
            self.f, self.b = L.lib.lina_dd_fwd, L.lib.lina_dd_bwd
        self._bind()

    def _bind(self):
        """the kernel's output structs for the tensors self.o, self.grads, self.gb, self.gg"""
        p, gr = _ptr, [_ptr(t) for t in self.grads]
        if self.delta:
            self.out = L.DeltaOut(p(self.o), p(self.ht), p(self.cache))
            self.out_fwd = L.DeltaOut(p(self.o), p(self.ht), None)
            self.gout = L.DeltaGradOut(*gr, p(self.gb), p(self.gg), None)
        else:
            self.out = L.DDOut(p(self.o), p(self.ht), p(self.states))
            self.out_fwd = L.DDOut(p(self.o), p(self.ht), None)
            self.gout = L.DDGradOut(*gr, p(self.gg), None)

    def fwd(self, out=None, form=None):
        """forward only (nothing kept for a backward, as lina.ops without gradients)"""
        with L.threads_scope():
            L.check(self.f(ctypes.byref(self.d), ctypes.byref(self.inp), ctypes.byref(out or self.out_fwd),
                           self.forms[0] if form is None else form, L.workspace()))

    def fwd_bwd(self):
        self.fwd(self.out, self.forms[1])  # keeping the chunk states / cache for the backward, as lina.ops does
        with L.threads_scope():
            L.check(self.b(ctypes.byref(self.d), ctypes.byref(self.inp), ctypes.byref(self.gin),
                           ctypes.byref(self.gout), self.forms[1], L.workspace()))

    def fwd_bwd_fresh(self):
        """fwd_bwd into output and gradient tensors made for the call, as lina.ops makes them
        (torch.empty, freed when the next call's are made, as a training loop frees the last
        step's gradients): the C call with the memory behaviour of the lina.ops call. A
        memory-bound backward's time moves with where such fresh tensors land, which the
        column "fresh" isolates from the wrapper's own work."""
        keep = self.o, self.grads, self.gb, self.gg, self.out, self.out_fwd, self.gout
        self.fresh = None  # the last call's tensors go before this call's are made
        self.o = torch.empty_like(self.o)
        self.grads = [torch.empty_like(t) for t in self.grads]
        self.gb = None if self.gb is None else torch.empty_like(self.gb)
        self.gg = None if self.gg is None else torch.empty_like(self.gg)
        self._bind()
        try:
            self.fwd_bwd()
            consumer(self.grads[0])
        finally:
            self.fresh = (self.o, self.grads, self.gb, self.gg)
            self.o, self.grads, self.gb, self.gg, self.out, self.out_fwd, self.gout = keep

    def fwd_read(self):
        self.fwd()
        consumer(self.o)

    def fwd_bwd_read(self):
        self.fwd_bwd()
        consumer(self.grads[0])


def steady_malloc():
    """glibc's malloc hands a block above its mmap threshold (128 KiB in a new process) to
    the system when it is freed, and raises the threshold to the size of such a block (up
    to 32 MiB) and the trim threshold, the free memory at the heap's top that it keeps, to
    twice that. A new process has not freed such a block yet, and there every new output or
    gradient tensor of a few MiB is page-faulted in again (about 1 us per 4 KiB page), which
    depends on the process's history rather than on the code measured. One tensor of 31 MiB
    freed here puts both lina and PyTorch in the state of a process that has run for a while
    with tensors of that size: blocks to 31 MiB come from the heap, and up to 62 MiB freed
    at its top stay for reuse. (At 16 MiB, as before, the trim threshold was 32 MiB, under
    the 40 MiB that a chunk_gla call at B=1 T=4096 K=V=128 frees at once: in some runs
    that call page-faulted its output and gradients in on every call, 6144 faults, 6 ms.)
    --fresh-malloc skips it."""
    t = torch.empty(31 << 18)
    del t


def clock():
    return time.perf_counter(), time.process_time(), resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def since(t):
    """(wall seconds, CPU seconds, page faults) since clock() gave t"""
    return tuple(b - a for a, b in zip(t, clock()))


def best(fn, repeat):
    """(median wall-clock seconds, median CPU seconds) of repeat runs after a warm-up."""
    fn()
    runs = []
    for _ in range(repeat):
        runs.append(timed(fn))
    return tuple(statistics.median(r[i] for r in runs) for i in (0, 1, 2))


def paired(fa, fb, reps):
    """fa and fb run alternately, reps times each (fa first on even repetitions, fb first on
    odd ones, so that neither always follows the other) after a warm-up of each. Returns
    (median of fa, median of fb, median of the paired differences fa - fb, their lower and
    upper quartiles), each as (wall seconds, CPU seconds, page faults). Paired differences of adjacent
    calls cancel the slow drifts of a shared machine that separate medians keep."""
    fa(), fb()
    ra, rb = [], []
    for i in range(reps):
        for f, r in ((fa, ra), (fb, rb)) if i % 2 == 0 else ((fb, rb), (fa, ra)):
            r.append(timed(f))

    def q(xs, f):
        xs = sorted(xs)
        return xs[min(len(xs) - 1, int(f * len(xs)))]

    out = []
    for fn in (statistics.median, lambda xs: q(xs, 0.25), lambda xs: q(xs, 0.75)):
        out.append(tuple(fn([a[i] - b[i] for a, b in zip(ra, rb)]) for i in (0, 1, 2)))
    med = lambda r: tuple(statistics.median(x[i] for x in r) for i in (0, 1, 2))  # noqa: E731
    return (med(ra), med(rb)) + tuple(out)


def sgemm_gflops(n=1024, reps=5):
    """The machine's SGEMM rate in this process, GFLOP per CPU second (median of reps): the
    ceiling that a dense kernel's CPU time is read against."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    _, cpu, _ = best(lambda: torch.mm(a, b), reps)
    return 2 * n ** 3 / cpu / 1e9


class runner:
    """One call of `call` on x (then the backward of sum(o * do) with backward); read: then
    one element of the result is read, see consumer. With backward each call gets fresh
    leaves of x that require gradients, made by prepare() outside the timed region (a
    model's q, k, v are activations that exist already; making leaves is the harness's
    work, about 0.1 ms per call on evicted caches)."""

    def __init__(self, call, x, do, backward, read=False):
        self.call, self.x, self.do, self.backward, self.read = call, x, do, backward, read

    def prepare(self):
        if not self.backward:
            return self.x
        return {n: t.detach().requires_grad_(True) for n, t in self.x.items()}

    def __call__(self, xs=None):
        if xs is None:
            xs = self.prepare()
        o = self.call(xs)
        if self.backward:
            o.backward(self.do)
        if self.read:
            consumer(xs["q"].grad if self.backward else o)


def timed(f):
    """(wall seconds, CPU seconds, page faults) of one call of f; a runner's prepare() runs
    before the clock starts."""
    prep = getattr(f, "prepare", None)
    args = (prep(),) if prep else ()
    t = clock()
    f(*args)
    return since(t)


def consumer(t):
    """The next PyTorch op of a model, as small as one can be: read one element of t. The
    first PyTorch op after a kernel of several milliseconds finds the interpreter's and
    PyTorch's code and data evicted from the caches and pays for refilling them (0.1-0.3
    ms per call on a machine shared with other jobs); the lina.ops call pays it in its own
    PyTorch ops after the kernel, a bare C call leaves it to whatever runs next. Reading
    one element after both puts that cost on the same side of the comparison."""
    float(t.view(-1)[0])


def mean_cpu(f, n=1000):
    """mean CPU seconds of n calls of f after 50 warm-up calls"""
    for _ in range(50):
        f()
    t = time.process_time()
    for _ in range(n):
        f()
    return (time.process_time() - t) / n


def breakdown(op, shape, reps):
    """The parts of the lina.ops overhead (see the module's docstring), one line."""
    from lina import _core
    gen = torch.Generator().manual_seed(0)
    xt = inputs(op, 1, 16, 1, 16, 16, gen)
    rt = Raw(op, xt)
    bt = runner(lambda xs: lina_call(op, xs), xt, rt.do, True)
    xs = bt.prepare()

    def lb():
        for t in xs.values():
            t.grad = None
        bt(xs)
    py_f = mean_cpu(lambda: lina_call(op, xt)) - mean_cpu(rt.fwd)
    py_b = mean_cpu(lb) - mean_cpu(rt.fwd_bwd)
    x = inputs(op, *shape, gen)
    raw = Raw(op, x)
    verify = _core.Args.verify

    class probe_off:
        """a lina.ops call without Args.verify (the probe switched off for the call)"""
        def __init__(self, r):
            self.r, self.prepare = r, r.prepare

        def __call__(self, xs=None):
            _core.Args.verify = lambda *a, **k: None
            try:
                self.r(xs)
            finally:
                _core.Args.verify = verify
    out = [f"| {op} | {1e6 * py_f:.0f} | {1e6 * py_b:.0f}"]
    for bw in (False, True):
        r = runner(lambda xs: lina_call(op, xs), x, raw.do, bw, True)
        p = paired(r, probe_off(r), reps)
        out.append(f"{1e6 * p[2][1]:+.0f} [{1e6 * p[3][1]:+.0f}, {1e6 * p[4][1]:+.0f}]")
    if raw.delta or x.get("g") is None:
        out.append("-")  # no gate, or the delta rules' [B,T,H] gate (lina_check_log_gates in Python)
    elif raw.forms[0] == 1:
        chk = Raw(op, x)
        chk.inp.gate |= 0x100  # LINA_GATE_CHECKED, as lina.ops calls the kernel
        p = paired(chk.fwd_read, raw.fwd_read, reps)
        out.append(f"{1e6 * p[2][1]:+.0f} [{1e6 * p[3][1]:+.0f}, {1e6 * p[4][1]:+.0f}]")
    else:
        out.append("in the recurrence")  # the recurrent form checks each row as it reads it
    return " | ".join(out) + " |"


OPS = ["chunk_linear_attn", "fused_recurrent_linear_attn", "chunk_retention", "chunk_simple_gla", "chunk_gla",
       "fused_recurrent_gla", "chunk_delta_rule", "fused_recurrent_delta_rule", "chunk_gated_delta_rule",
       "fused_recurrent_gated_delta_rule", "chunk_gated_delta_product"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=3, help="runs of each plain-PyTorch call (median)")
    ap.add_argument("--chunks", default=",".join(map(str, CHUNKS)),
                    help="chunk sizes tried for the plain-PyTorch forms (the fastest forward + backward is kept)")
    ap.add_argument("--reps", type=int, default=21, help="interleaved lina / C pairs (median)")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--quick", action="store_true", help="T=512 at the long shape (a smoke run)")
    ap.add_argument("--no-torch", action="store_true", help="lina and C only (the overhead columns)")
    ap.add_argument("--ops", default=",".join(OPS))
    ap.add_argument("--shapes", default="long,train", help="long (B=1 T=4096), train (B=8 T=512)")
    ap.add_argument("--no-read", action="store_true",
                    help="time the lina and C calls without the one-element read after each (see consumer)")
    ap.add_argument("--fresh-malloc", action="store_true",
                    help="leave glibc's malloc in a new process's state (see steady_malloc)")
    ap.add_argument("--passive", action="store_true",
                    help="OMP_WAIT_POLICY=PASSIVE: idle OpenMP threads sleep at once (see the docstring)")
    ap.add_argument("--breakdown", action="store_true",
                    help="where the overhead goes, per op (Python, output probe, gate check) instead of the tables")
    ap.add_argument("--out", help="also write the table (markdown) here")
    a = ap.parse_args()
    if not a.fresh_malloc:
        steady_malloc()
    shapes = {"long": ("B=1 T=4096 H=4 K=V=128", (1, 512 if a.quick else 4096, 4, 128, 128)),
              "train": ("B=8 T=512 H=4 K=V=64", (8, 512, 4, 64, 64))}
    shapes = [shapes[n] for n in a.shapes.split(",")]
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass
    if a.breakdown:
        bd_main(a, shapes)
        return
    lines = [f"lina.ops vs plain-PyTorch chunkwise code; torch {torch.__version__}, lina kernel path "
             f"{lina.isa()}; torch: median of {a.repeat} after a warm-up at the fastest chunk size of {a.chunks}, lina and C: median of {a.reps} "
             "interleaved pairs; ms wall-clock (ms CPU); overhead: median of the paired CPU-time "
             "differences lina - C per call, in microseconds and % of C [quartiles, %] (C into its "
             "preallocated buffers; and into outputs and gradients made for each call, as lina.ops makes "
             "them, Raw.fwd_bwd_fresh); page faults: per lina fwd+bwd call; "
             + f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}; "
             + ("each lina and C call followed by a one-element read of its output" if not a.no_read
                else "no read after the calls") + ("" if a.fresh_malloc else ", malloc in its steady state"), "",
             "| shape | threads | op | form fwd / fwd+bwd | torch C | torch fwd | lina fwd | C fwd | torch fwd+bwd | lina fwd+bwd "
             "| C fwd+bwd | torch / lina fwd | torch / lina fwd+bwd | overhead fwd | overhead fwd+bwd "
             "| overhead fwd+bwd, C into fresh outputs | page faults |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    print("\n".join(lines), flush=True)
    gemm = []
    for sname, (B, T, H, K, V) in shapes:
        for nt in (int(t) for t in a.threads.split(",")):
            torch.set_num_threads(nt)
            if nt not in (n for n, _ in gemm):
                gemm.append((nt, sgemm_gflops()))
            for op in a.ops.split(","):
                gen = torch.Generator().manual_seed(0)
                x = inputs(op, B, T, H, K, V, gen)
                do = torch.randn(B, T, H, V, generator=gen)
                raw = Raw(op, x)
                raw.do.copy_(do)
                r = {}
                tc = None
                if not a.no_torch:
                    tc = best_chunk(op, x, do, [int(c) for c in a.chunks.split(",")])
                    r["tf"] = best(runner(lambda xs: torch_call(op, xs, tc), x, do, False), a.repeat)
                    r["tb"] = best(runner(lambda xs: torch_call(op, xs, tc), x, do, True), a.repeat)
                rd = not a.no_read
                for key, lcall, ccall in (
                        ("f", runner(lambda xs: lina_call(op, xs), x, do, False, rd), raw.fwd_read if rd else raw.fwd),
                        ("b", runner(lambda xs: lina_call(op, xs), x, do, True, rd),
                         raw.fwd_bwd_read if rd else raw.fwd_bwd)):
                    r["l" + key], r["c" + key], r["d" + key], r["q1" + key], r["q3" + key] = \
                        paired(lcall, ccall, a.reps)
                if not a.no_read:  # the control: the C call into fresh outputs, as lina.ops's
                    _, r["cn"], r["dn"], r["q1n"], r["q3n"] = paired(
                        runner(lambda xs: lina_call(op, xs), x, do, True, True), raw.fwd_bwd_fresh, a.reps)

                def ms(key):
                    if key not in r:
                        return "-"
                    return f"{1e3 * r[key][0]:.1f} ({1e3 * r[key][1]:.1f})"

                def ratio(num, den):
                    if num not in r:
                        return "-"
                    return f"{r[num][0] / r[den][0]:.1f}x ({r[num][1] / r[den][1]:.1f}x)"

                def over(k):
                    if "c" + k not in r:
                        return "-"
                    c = r["c" + k][1]
                    return (f"{1e6 * r['d' + k][1]:+.0f} us {100 * r['d' + k][1] / c:+.1f}% "
                            f"[{100 * r['q1' + k][1] / c:+.1f}, {100 * r['q3' + k][1] / c:+.1f}]")
                fm = " / ".join(("recurrent", "chunk")[f] for f in raw.forms)
                line = (f"| {sname} | {nt} | {op} | {fm} | {tc or '-'} | {ms('tf')} | {ms('lf')} | {ms('cf')} | {ms('tb')} | {ms('lb')} | "
                        f"{ms('cb')} | {ratio('tf', 'lf')} | {ratio('tb', 'lb')} | {over('f')} | {over('b')} | {over('n')} | {r['lb'][2]:.0f} |")
                print(line, flush=True)
                lines.append(line)
    line = "SGEMM in this process (torch.mm 1024^3): " + ", ".join(
        f"{g:.0f} GFLOP per CPU second on {n} thread{'s' if n > 1 else ''}" for n, g in gemm)
    print(line)
    lines += ["", line]
    if a.out:
        with open(a.out, "w") as f:
            f.write("\n".join(lines) + "\n")


def bd_main(a, shapes):
    lines = [f"Where the lina.ops overhead goes; torch {torch.__version__}, lina kernel path {lina.isa()}, "
             f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}, load average "
             f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}; CPU microseconds per call. Python: the "
             "lina.ops call less the bare C call at B=1 T=16 H=1 K=V=16 (mean of 1000, caches warm). "
             "Probe: lina.ops with Args.verify less without it, and gate check: the C call with "
             f"LINA_GATE_CHECKED less without it, at the shape, medians of {a.reps} adjacent pairs "
             "[quartiles].", ""]
    print("\n".join(lines), flush=True)
    for sname, shape in shapes:
        for nt in (int(t) for t in a.threads.split(",")):
            torch.set_num_threads(nt)
            head = [f"### {sname}, {nt} thread{'s' if nt > 1 else ''}", "",
                    "| op | Python fwd | Python fwd+bwd | probe fwd | probe fwd+bwd | gate check (chunk form, fwd) |",
                    "|---|---|---|---|---|---|"]
            print("\n".join(head), flush=True)
            lines += head
            for op in a.ops.split(","):
                line = breakdown(op, shape, a.reps)
                print(line, flush=True)
                lines.append(line)
            lines.append("")
    if a.out:
        with open(a.out, "w") as f:
            f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
