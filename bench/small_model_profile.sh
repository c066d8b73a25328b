#!/bin/sh
# small_model_profile.sh -- where lina's training step of the MQAR-sized models
# spends its time: `perf record` of STEPS training steps on one thread, self
# time grouped into parts (OpenBLAS kernel / packing, short convolution, scalar
# libm exp/log, vector exp and sigmoid, mixer kernels, norms, MLP, loss,
# memset/memcpy and the kernel's page faults, the rest). Prints one line per
# model: model, training tokens/s of the profiled run, then part=percent.
#
#   sh bench/small_model_profile.sh [LINA_BIN]
#
# Environment: MIXER_TYPES (transformer gla delta_net gated_deltanet mamba2),
# D (64), T (128), BATCH (64), STEPS (20), PYTHON (/usr/bin/python3). Needs perf.
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
    perf record -q -o "$tmp/perf.data" -F 1500 "$LINA" bench --model "$cfg" --batch "$BATCH" --seq-len "$T" \
        --threads 1 --only train --steps "$STEPS" --lr 3e-3 --beta2 0.999 --clip 1 >"$tmp/out" 2>&1
    perf report -i "$tmp/perf.data" --no-children --sort symbol -q 2>/dev/null >"$tmp/rep"
    printf "%s %s " "$m" "$(awk '/tokens\/s/ {print $2}' "$tmp/out")"
    "$PYTHON" - "$tmp/rep" <<'PY'
import re, sys
parts = ["blas_kernel", "blas_pack", "conv", "scalar_exp", "vexp", "mixer", "norm", "mlp", "loss", "mem", "other"]
tot = dict.fromkeys(parts, 0.0)
def part(sym, kernel):
    if kernel or sym.startswith(("__memset", "__memmove", "__memcpy")):
        return "mem"
    if sym.startswith(("sgemm_kernel", "sgemm_beta")):
        return "blas_kernel"
    if sym.startswith("sgemm_"):
        return "blas_pack"
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
