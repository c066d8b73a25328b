#!/bin/sh
# Benchmark table: every op (or those named after the output file), both
# forms, forward and forward+backward, 1 and 2 threads, at B=1 T=4096 H=4
# K=V=128. Writes a Markdown table and the raw JSON lines next to it.
#   sh bench/run.sh build/lina results/bench.md [op ...]
set -eu
LINA=${1:-build/lina}
OUT=${2:-results/bench.md}
shift 2 2>/dev/null || true
OPS=${*:-$($LINA ops | awk '{print $1}')}
REPEAT=${REPEAT:-10}
mkdir -p "$(dirname "$OUT")"
JSON="${OUT%.md}.jsonl"
: > "$JSON"
for op in $OPS; do
    for form in chunk recurrent; do
        for pass in "" --backward; do
            for th in 1 2; do
                $LINA bench "$op" --form "$form" $pass --threads "$th" --repeat "$REPEAT" --json >> "$JSON"
            done
        done
    done
done
{
    echo "# lina kernel benchmark"
    echo
    echo "Machine: $( (grep -m1 'model name' /proc/cpuinfo || lscpu 2>/dev/null | grep -m1 'Model name') | cut -d: -f2 | sed 's/^ *//'), $(nproc) cores."
    echo "Command: \`sh bench/run.sh $LINA $OUT $*\` (REPEAT=$REPEAT; median of the runs after one warm-up)."
    echo "GFLOP/s use the forward FLOP count of each op and form (see README); SGEMM is OpenBLAS n=1024"
    echo "measured in the same process with the same thread count (best of 7)."
    echo
    echo "| op | form | pass | threads | ms | tokens/s | GFLOP/s | SGEMM GFLOP/s | % of SGEMM |"
    echo "|---|---|---|---|---|---|---|---|---|"
    awk -F'[:,}]' '{
        for (i = 1; i < NF; i++) { gsub(/[{" ]/, "", $i); v[$i] = $(i+1); gsub(/[" ]/, "", v[$i]) }
        printf "| %s | %s | %s | %s | %.2f | %.0f | %.1f | %.1f | %.0f%% |\n",
            v["op"], v["form"], v["pass"], v["threads"], v["ms"], v["tokens_per_s"], v["gflops"],
            v["sgemm_gflops"], 100 * v["gflops"] / v["sgemm_gflops"]
    }' "$JSON"
} > "$OUT"
cat "$OUT"
