#!/bin/sh
# Kernel table per instruction-set path: the GLA and delta-rule ops, both
# forms, forward and forward+backward, on 1 (and 2) threads, once per path
# this CPU supports (LINA_ISA forces each), at B=1 T=4096 H=4 K=V=128. The
# rates are per second of CPU time (least CPU time over the runs; SGEMM
# likewise), which other processes on a shared machine disturb much less than
# wall time. A forward+backward pass is counted as 3 times the forward's FLOPs
# (the backward of each product is two products of the same size).
#   [THREADS="1 2"] [REPEAT=5] [ISAS="avx2 ..."] [APPEND=1] sh bench/isa.sh build/lina results/bench_isa.md [op ...]
# ISAS: the paths to run (default: every one this CPU has); APPEND=1 adds to the
# JSON lines of an earlier run instead of starting over (the table shows both).
set -eu
LINA=${1:-build/lina}
OUT=${2:-results/bench_isa.md}
shift 2 2>/dev/null || true
OPS=${*:-gla simple_gla gated_delta_rule delta_rule}
REPEAT=${REPEAT:-5}
THREADS=${THREADS:-1}
ISAS=${ISAS:-$($LINA version | sed -n 's/.*this CPU: *\([^)]*\)).*/\1/p')}
ISAS=${ISAS:-portable}
mkdir -p "$(dirname "$OUT")"
JSON="${OUT%.md}.jsonl"
[ "${APPEND:-0}" = 1 ] || : > "$JSON"
for isa in $ISAS; do
    for th in $THREADS; do
        for op in $OPS; do
            for form in chunk recurrent; do
                for pass in "" --backward; do
                    LINA_ISA=$isa $LINA bench "$op" --form "$form" $pass --threads "$th" --repeat "$REPEAT" \
                        --json >> "$JSON"
                done
            done
        done
    done
done
{
    echo "# lina kernel benchmark per instruction-set path"
    echo
    echo "Machine: $( (grep -m1 'model name' /proc/cpuinfo || lscpu 2>/dev/null | grep -m1 'Model name') | cut -d: -f2 | sed 's/^ *//'), $(nproc) cores; paths: $ISAS."
    echo "Command: \`THREADS=\"$THREADS\" REPEAT=$REPEAT sh bench/isa.sh $LINA $OUT $*\`, B=1 T=4096 H=4 K=V=128;"
    echo "load average at the end: $(cut -d' ' -f1 /proc/loadavg)."
    echo "GFLOP/s per second of CPU time (least over the runs; all threads' CPU time) with the forward FLOP"
    echo "count of each op and form (README); fwd+bwd rows count 3 times that (the backward of each product"
    echo "is two products of its size; the backward's recomputation is not counted). SGEMM: OpenBLAS"
    echo "n=1024 in the same process at the same thread count, per second of CPU time (best of 7)."
    echo
    echo "| path | threads | op | form | pass | CPU ms | GFLOP/s | SGEMM GFLOP/s | % of SGEMM |"
    echo "|---|---|---|---|---|---|---|---|---|"
    awk -F'[:,}]' '{
        for (i = 1; i < NF; i++) { gsub(/[{" ]/, "", $i); v[$i] = $(i+1); gsub(/[" ]/, "", v[$i]) }
        f = v["pass"] == "fwdbwd" ? 3 : 1
        printf "| %s | %s | %s | %s | %s | %.2f | %.1f | %.1f | %.0f%% |\n",
            v["isa"], v["threads"], v["op"], v["form"], v["pass"], v["cpu_ms"], f * v["cpu_gflops"],
            v["sgemm_cpu_gflops"], 100 * f * v["cpu_gflops"] / v["sgemm_cpu_gflops"]
    }' "$JSON"
} > "$OUT"
cat "$OUT"
