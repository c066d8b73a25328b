#!/bin/sh
# varlen_bench.sh -- packed-document training against the same documents padded to the
# longest, and batched generation of unequal prompts at several batch sizes with the peak
# resident memory of each (bench/varlen_bench.c, one process per generation row), into a
# Markdown file.
#
#   sh bench/varlen_bench.sh [OUT.md] [CONFIG...]
#
# Builds bench/varlen_bench.c against build/liblina.a (run `make` first). Environment:
# T (row length, 512), NDOCS (documents, 32), REPS (timed rounds after one warm-up, 3),
# THREADS (OMP threads, 2), GEN_CONFIGS (gla-small and the two 10M configs), BATCHES
# ("1 4 16 64"), NEW (tokens generated per row, 32).
set -e
OUT=${1:-results/varlen_bench.md}
[ $# -gt 0 ] && shift
CONFIGS=${*:-"configs/gla-small.json configs/gated_deltanet-small.json configs/transformer-small.json"}
T=${T:-512}
NDOCS=${NDOCS:-32}
REPS=${REPS:-3}
THREADS=${THREADS:-2}
GEN_CONFIGS=${GEN_CONFIGS:-"configs/gla-small.json configs/gla-10m.json configs/gated_deltanet-10m.json"}
BATCHES=${BATCHES:-"1 4 16 64"}
NEW=${NEW:-32}
BIN=build/varlen_bench
CC=${CC:-cc}
OPENBLAS_INC=$(pkg-config --cflags openblas 2>/dev/null || echo "-I/usr/include/x86_64-linux-gnu/openblas-openmp")
$CC -std=c11 -O2 -fopenmp -Iinclude $OPENBLAS_INC bench/varlen_bench.c build/liblina.a -lopenblas -lcjson -fopenmp \
    -lm -o "$BIN"
tmp=$(mktemp)
{
    echo "# Packed documents vs padding (training step)"
    echo
    echo "\`sh bench/varlen_bench.sh\` on $(date -u +%Y-%m-%d), $(build/lina version | sed -n 's/^kernel path: //p' | head -1),"
    echo "OMP_NUM_THREADS=$THREADS; one forward + backward (no optimiser) per step, best of $REPS after a warm-up."
    echo "Real tokens/s counts only document tokens (no padding); every mode trains on the same tokens."
    echo
    for c in $CONFIGS; do
        OMP_NUM_THREADS=$THREADS "$BIN" "$c" "$T" "$NDOCS" "$REPS"
        echo
    done
    echo "## Batched generation of unequal prompts"
    echo
    echo "Prompts of 8..64 random tokens (log-uniform), one left-padded batch (\`lina_model_decode_rows\`), then"
    echo "$NEW greedy tokens per row; decode tokens/s summed over the rows; peak resident memory (VmHWM) of"
    echo "the process, one process per row."
    echo
    echo "| config | batch | prompt tokens | prefill tokens/s | decode tokens/s | peak RSS MiB |"
    echo "|---|---|---|---|---|---|"
    for c in $GEN_CONFIGS; do
        for b in $BATCHES; do
            OMP_NUM_THREADS=$THREADS "$BIN" gen "$c" "$b" "$NEW"
        done
    done
} >"$tmp"
mv "$tmp" "$OUT"
cat "$OUT"
