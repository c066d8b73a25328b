#!/bin/sh
# Softmax attention vs linear attention (simple_gla, chunk form) at growing T:
# where linear attention becomes faster on this machine.
#   sh bench/crossover.sh build/lina results/crossover.md
set -eu
LINA=${1:-build/lina}
OUT=${2:-results/crossover.md}
THREADS=${THREADS:-2}
mkdir -p "$(dirname "$OUT")"
ms() { "$LINA" bench "$@" --threads "$THREADS" --json | sed 's/.*"ms":\([0-9.]*\).*/\1/'; }
{
    echo "# softmax attention vs simple_gla (chunk), B=1 H=4 K=V=128, $THREADS threads"
    echo
    echo "Command: \`sh bench/crossover.sh $LINA $OUT\`; median ms of R runs after a warm-up."
    echo
    echo "| T | softmax fwd ms | simple_gla fwd ms | softmax/simple_gla | softmax fwd+bwd ms | simple_gla fwd+bwd ms | softmax/simple_gla |"
    echo "|---|---|---|---|---|---|---|"
    for T in 128 256 512 1024 4096 16384; do
        R=9
        [ "$T" -ge 4096 ] && R=3
        a=$(ms softmax_attn --T "$T" --repeat $R)
        b=$(ms simple_gla --T "$T" --repeat $R)
        c=$(ms softmax_attn --T "$T" --repeat $R --backward)
        d=$(ms simple_gla --T "$T" --repeat $R --backward)
        awk -v T="$T" -v a="$a" -v b="$b" -v c="$c" -v d="$d" \
            'BEGIN { printf "| %d | %.2f | %.2f | %.2f | %.2f | %.2f | %.2f |\n", T, a, b, a / b, c, d, c / d }'
    done
} > "$OUT"
cat "$OUT"
