#!/bin/sh
# small_model_profile.sh -- where lina's training step of the MQAR-sized models
# spends its time: `perf record` of STEPS training steps on one thread, self
# time grouped into parts (OpenBLAS kernel / packing, lina_mm, short convolution, scalar
# libm exp/log, vector exp and sigmoid, mixer kernels, norms, MLP, loss,
# memset/memcpy and the kernel's page faults, the rest). Prints one line per
# model: model, training tokens/s of the profiled run, then part=percent.
#
#   sh bench/small_model_profile.sh [LINA_BIN]
#
# PARTS=1: per part of the step instead: `perf record` with frame-pointer call
# chains of STEPS training steps on one thread; each sample goes to the part of
# the first function on its chain (from the sampled function outwards) that
# names one: short convolution, projections (Linear, the fused q/k/v products,
# lm_head), norms (RMSNorm, gated and L2 norms, in the mixers too), loss,
# optimiser (AdamW, gradient norm), and the rest of the model's forward or
# backward: the mixer (the token-mixing kernel, RoPE, gates, ...); the
# embedding, the residual adds, the set-up (model creation, random weights) and
# what no chain names are "other".
# Prints per model the CPU ms of a step (as the bench measured it) and each
# part's CPU ms per step (its samples at 1000 per CPU second over the steps run,
# the warm-up step included) and share of the samples.
#
# With PARTS=1, LINA_BIN must be built with frame pointers, e.g.
#   make BUILD=build-fp EXTRA_CFLAGS="-fno-omit-frame-pointer -mno-omit-leaf-frame-pointer" build-fp/lina
# (OpenBLAS's own routines have none: a sample inside OpenBLAS is placed by the
# lina frames the chain still shows, else counted as "blas (caller unknown)").
# Environment: MIXER_TYPES (transformer gla delta_net gated_deltanet mamba2),
# D (64), T (128), BATCH (64), STEPS (20), PYTHON (/usr/bin/python3), PARTS. Needs perf.
set -e
LINA=${1:-build/lina}
MIXER_TYPES=${MIXER_TYPES:-"transformer gla delta_net gated_deltanet mamba2"}
D=${D:-64}
T=${T:-128}
BATCH=${BATCH:-64}
STEPS=${STEPS:-20}
PYTHON=${PYTHON:-/usr/bin/python3}
[ -x "$LINA" ] || { echo "small_model_profile.sh: $LINA not found (make first)" >&2; exit 1; }
command -v perf >/dev/null || { echo "small_model_profile.sh: perf not found" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for m in $MIXER_TYPES; do
    cfg="$tmp/$m.json"
    "$LINA" task mqar --mixer "$m" --d-model "$D" --seq-len "$T" --write-config "$cfg"
    if [ -n "${PARTS:-}" ]; then
        perf record -q -g -o "$tmp/perf.data" -F 1000 "$LINA" bench --model "$cfg" --batch "$BATCH" --seq-len "$T" \
            --threads 1 --only train --steps "$STEPS" --lr 3e-3 --beta2 0.999 --clip 1 --json >"$tmp/out" 2>/dev/null
        perf script -i "$tmp/perf.data" -F ip,sym 2>/dev/null >"$tmp/script"
        "$PYTHON" - "$m" "$tmp/out" "$tmp/script" "$((STEPS + 1))" <<'PY'
import json, re, sys
name, out, script, nsteps = sys.argv[1:]
step = json.load(open(out))["train_cpu_ms_per_step"]
parts = ["mixer fwd", "mixer bwd", "mixer (fwd or bwd)", "projections", "conv", "norms", "loss", "optimiser",
         "blas (caller unknown)", "other"]
rules = [("conv", r"conv"), ("projections", r"^lina_(linear|proj)_|^lina_sgemm_layer|^mm_rows"),
         ("norms", r"^rms_|rmsnorm|layernorm|l2norm"), ("loss", r"cross_entropy|^ce_rows|^row_lse|^row_grad"),
         ("optimiser", r"adamw|grad_norm|clip_factor"), ("other", r"^lina_embedding|^lina_model_create|^model_init")]
# memset / memcpy and the kernel's page-fault handling count for the lina function that called them
helper_rx = r"^(__mem(set|move|cpy)|(asm_)?exc_|handle_mm|do_|__handle|clear_page|lock_vma|_raw_spin|get_page|" \
            r"__alloc|alloc_|vma_|__lruvec|__mem_cgroup|charge_memcg|irqentry|finish_task|__list_del|unmap|" \
            r"free_pages|___pte|__x64|entry_SYSCALL|do_syscall|__vm_|vms_|__GI_)"
# the token mixer: its kernels (src/ops) and layer code; OpenMP's runtime has no frame
# pointers, so a chain from inside a parallel region ends at GOMP_parallel and the
# direction is read from the names (fwd / bwd, forward / backward) or, when the chain
# reaches it, from model_forward / model_backward
# (the kernels' own prefixes: softmax attention sa_, diagonal decay dd_ / rb_ / rec_ / chunk, delta
# rule dl_ / bk_ / ck_, Mamba2's layer m2_, and the other ops' gs_ hg_ li_ mb_ ml_ rw_ rk_)
mixer_rx = r"^(sa_|dd_|rb_|dl_|bk_|ck_|m2_|gs_|hg_|li_|mb_|ml_|rw_|rk_|chunk|rec_|tile_|ssd|rope" \
           r"|lina_(gla|delta|mamba|attn|softmax|vexp|vsigmoid|vlogsigmoid|dd|kda)" \
           r"|gla|delta|mamba|attn|intra|offdiag|decay|heads|gate)"
tot = dict.fromkeys(parts, 0)
def direction(syms):
    if any(x == "model_backward" for x in syms):
        return "mixer bwd"
    if any(x == "model_forward" for x in syms):
        return "mixer fwd"
    for x in syms:
        if re.search(r"bwd|backward", x):
            return "mixer bwd"
        if re.search(r"fwd|forward", x):
            return "mixer fwd"
    return "mixer (fwd or bwd)"
def place(frames):
    syms = [f for f in frames if f and f != "[unknown]" and not re.match(helper_rx, f)]
    for s in syms:
        for part, rx in rules:
            if re.search(rx, s):
                return part
    user = syms
    if user and re.match(r"sgemm_|cblas_|blas_|s?gemv", user[0]) and not any(re.search(mixer_rx, x) for x in user):
        return "blas (caller unknown)"
    if user and user[0] in ("model_forward", "model_backward"):
        return "other"  # the residual adds and copies of the model itself
    if any(re.search(mixer_rx, x) for x in user) or any(x in ("model_forward", "model_backward") for x in user):
        return direction(user)
    return "other"
frames = []
for line in open(script).read().split("\n") + [""]:
    line = line.strip()
    if not line:
        if frames:
            tot[place(frames)] += 1
        frames = []
        continue
    f = line.split(None, 1)
    frames.append(re.sub(r"\+0x[0-9a-f]+$", "", f[1]).split(" (")[0] if len(f) > 1 else "")
n = sum(tot.values()) or 1
# 1000 samples per CPU second: a part's samples over the steps run (timed + warm-up) are its ms per step
# ("other" also holds the set-up, spread over the steps)
print("%s: %.1f CPU ms per step (bench); per step: " % (name, step) +
      ", ".join("%s %.1f ms (%.0f%%)" % (p, tot[p] / float(nsteps), 100.0 * tot[p] / n) for p in parts))
PY
        continue
    fi
    perf record -q -o "$tmp/perf.data" -F 1500 "$LINA" bench --model "$cfg" --batch "$BATCH" --seq-len "$T" \
        --threads 1 --only train --steps "$STEPS" --lr 3e-3 --beta2 0.999 --clip 1 >"$tmp/out" 2>&1
    perf report -i "$tmp/perf.data" --no-children --sort symbol -q 2>/dev/null >"$tmp/rep"
    printf "%s %s " "$m" "$(awk '/tokens\/s/ {print $2}' "$tmp/out")"
    "$PYTHON" - "$tmp/rep" <<'PY'
import re, sys
parts = ["blas_kernel", "blas_pack", "lina_mm", "conv", "scalar_exp", "vexp", "mixer", "norm", "mlp", "loss", "mem",
         "other"]
tot = dict.fromkeys(parts, 0.0)
def part(sym, kernel):
    if kernel or sym.startswith(("__memset", "__memmove", "__memcpy")):
        return "mem"
    if sym.startswith(("sgemm_kernel", "sgemm_beta")):
        return "blas_kernel"
    if sym.startswith("sgemm_"):
        return "blas_pack"
    if sym.startswith(("mm_", "lina_mm", "lina_sgemm_sm")):
        return "lina_mm"  # lina's own register-tiled products (layers' projections, attention tiles, chunk forms)
    if "conv" in sym:
        return "conv"
    if sym.startswith(("__exp", "__log", "expf", "logf", "log1pf", "__ieee754")) or "softplus" in sym:
        return "scalar_exp"
    if "vexp" in sym or "vsigmoid" in sym or "vlogsigmoid" in sym:
        return "vexp"
    if "rms" in sym or "norm" in sym:
        return "norm"
    if "mlp" in sym or "swiglu" in sym or "silu" in sym:
        return "mlp"
    if "cross_entropy" in sym:
        return "loss"
    if re.search(r"chunk|dd_|dl_|ck_|sa_|gla|delta|mamba|rope|intra|offdiag|attn|heads|decay", sym):
        return "mixer"
    return "other"
for line in open(sys.argv[1]):
    m = re.match(r"\s*([\d.]+)%\s+\[(.)\]\s+(\S+)", line)
    if m:
        tot[part(m.group(3), m.group(2) == "k")] += float(m.group(1))
print(" ".join("%s=%.1f" % (k, tot[k]) for k in parts))
PY
done
