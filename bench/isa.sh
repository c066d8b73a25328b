#!/bin/sh
# Kernel table per instruction-set path: the GLA and delta-rule ops, both
# forms, forward and forward+backward, 1 thread, once per path this CPU
# supports (LINA_ISA forces each), at B=1 T=4096 H=4 K=V=128. The rates are
# per second of CPU time (least CPU time over the runs; SGEMM likewise), which
# other processes on a shared machine disturb much less than wall time.
#   sh bench/isa.sh build/lina results/bench_isa.md [op ...]
set -eu
LINA=${1:-build/lina}
OUT=${2:-results/bench_isa.md}
shift 2 2>/dev/null || true
OPS=${*:-gla simple_gla gated_delta_rule delta_rule}
REPEAT=${REPEAT:-5}
ISAS=$($LINA version | sed -n 's/.*this CPU: *\([^)]*\)).*/\1/p')
ISAS=${ISAS:-portable}
mkdir -p "$(dirname "$OUT")"
JSON="${OUT%.md}.jsonl"
: > "$JSON"
for isa in $ISAS; do
    for op in $OPS; do
        for form in chunk recurrent; do
            for pass in "" --backward; do
                LINA_ISA=$isa $LINA bench "$op" --form "$form" $pass --threads 1 --repeat "$REPEAT" --json >> "$JSON"
            done
        done
    done
done
{
    echo "# lina kernel benchmark per instruction-set path"
    echo
    echo "Machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores; paths: $ISAS."
    echo "Command: \`sh bench/isa.sh $LINA $OUT $*\` (REPEAT=$REPEAT), 1 thread, B=1 T=4096 H=4 K=V=128."
    echo "GFLOP/s per second of CPU time (least over the runs) with the forward FLOP count of each op and"
    echo "form (README); fwd+bwd rows divide the same forward count by the forward+backward time. SGEMM:"
    echo "OpenBLAS n=1024 in the same process, per second of CPU time (best of 7)."
    echo
    echo "| path | op | form | pass | CPU ms | GFLOP/s | SGEMM GFLOP/s | % of SGEMM |"
    echo "|---|---|---|---|---|---|---|---|"
    awk -F'[:,}]' '{
        for (i = 1; i < NF; i++) { gsub(/[{" ]/, "", $i); v[$i] = $(i+1); gsub(/[" ]/, "", v[$i]) }
        printf "| %s | %s | %s | %s | %.2f | %.1f | %.1f | %.0f%% |\n",
            v["isa"], v["op"], v["form"], v["pass"], v["cpu_ms"], v["cpu_gflops"],
            v["sgemm_cpu_gflops"], 100 * v["cpu_gflops"] / v["sgemm_cpu_gflops"]
    }' "$JSON"
} > "$OUT"
cat "$OUT"
