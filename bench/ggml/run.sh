#!/bin/sh
# run.sh -- llama.cpp's ggml CPU ops next to lina's kernels (ggml_bench.c),
# written to results/ggml_bench.md. Needs a local ggml build (bench/README.md):
#   GGML_DIR=/path/to/ggml [GGML_BUILD=$GGML_DIR/build] sh bench/ggml/run.sh [ggml_bench options]
# GGML_DIR is a ggml source tree (its include/), GGML_BUILD the cmake build
# directory holding src/libggml*.so. ggml is linked only into this driver,
# never into lina. Options go to ggml_bench (--T, --threads 1,2, --repeat,
# --cases gla,gdn,..., --check-only); OUT sets the output file.
set -eu
cd "$(dirname "$0")/../.."
: "${GGML_DIR:?set GGML_DIR to a ggml source tree (see bench/README.md)}"
GGML_BUILD=${GGML_BUILD:-$GGML_DIR/build}
OUT=${OUT:-results/ggml_bench.md}
LIB=$GGML_BUILD/src
for f in "$GGML_DIR/include/ggml.h" "$GGML_DIR/include/ggml-cpu.h" "$LIB/libggml-cpu.so" "$LIB/libggml-base.so"; do
    [ -e "$f" ] || { echo "ggml_bench: $f not found (GGML_DIR=$GGML_DIR GGML_BUILD=$GGML_BUILD)" >&2; exit 1; }
done
make -j2 build/liblina.a >/dev/null
BLAS_INC=${BLAS_INC:-/usr/include/x86_64-linux-gnu/openblas-openmp}
mkdir -p build/bench
cc -std=c11 -O2 -Wall -Wextra -fopenmp -D_DEFAULT_SOURCE -Iinclude -I"$GGML_DIR/include" -I"$BLAS_INC" \
    bench/ggml/ggml_bench.c -o build/bench/ggml_bench build/liblina.a \
    -L"$LIB" -lggml -lggml-base -lggml-cpu -Wl,-rpath,"$LIB" -lopenblas -lcjson -lm

rev=$(git -C "$GGML_DIR" log -1 --format='%h (%cs)' 2>/dev/null || echo unknown)
tmp=$OUT.tmp.$$
trap 'rm -f "$tmp"' EXIT
{
    echo "# lina next to llama.cpp's ggml CPU ops"
    echo
    echo "ggml $rev, built with \`-DGGML_NATIVE=ON\` (CPU backend only); lina $(git rev-parse --short HEAD);"
    echo "$(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //'), $(nproc) cores;"
    echo "\`sh bench/ggml/run.sh $*\` on $(date -u +%Y-%m-%d); load average at the start: $(cut -d' ' -f1 /proc/loadavg)."
    echo
    ./build/bench/ggml_bench "$@"
    echo
    echo "Load average at the end: $(cut -d' ' -f1 /proc/loadavg)."
} >"$tmp"
mv "$tmp" "$OUT"
cat "$OUT"
