#!/bin/sh
# dist_bench.sh -- distributed training on one machine: 1 rank x 2 threads against
# 2 ranks x 1 thread (Open MPI), data parallel and sequence parallel (LASP-2).
#   sh bench/dist_bench.sh [LINA] [OUT.md] [STEPS]
# Trains configs/gla-small.json (4 layers, H 4, K = V = 64) on a random token file for STEPS
# updates per run and writes a table: training tokens/s (median of the per-update rates
# after the first two updates), bytes each rank put into collectives per update (the gradient
# all-reduce; with --sp the all-gathers per layer and pass too) and the share of the run spent
# inside MPI calls (rank 0; from `lina train`'s "mpi:" line), and the overlap of the gradient
# all-reduce with the backward: the share of its bytes whose MPI_Iallreduce started while the
# backward was still running (bucket by bucket, as the layers finished) and the time per update
# spent waiting for it after the backward.
set -eu
LINA=${1:-build/lina}
OUT=${2:-results/dist_bench.md}
STEPS=${3:-12}
CONFIG=configs/gla-small.json
LAYERS=4
command -v mpirun >/dev/null || { echo "dist_bench: mpirun not found (apt-get install openmpi-bin libopenmpi-dev)" >&2; exit 1; }
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
# 200k random tokens below 4096
awk 'BEGIN { srand(1); for (i = 0; i < 200000; i++) print int(rand() * 4096) }' | \
    "$LINA" data pack --vocab 4096 --in - --out "$dir/train.tok" >/dev/null

# run ID NAME NP THREADS SP BATCH SEQ
run() {
    id=$1 name=$2 np=$3 th=$4 sp=$5 b=$6 t=$7
    out="$dir/$id"
    args="train --config $CONFIG --data $dir/train.tok --out $out --steps $STEPS --batch $b --seq-len $t \
          --threads $th --lr 1e-3 --save-every 0 --save-minutes 0"
    if [ "$np" -eq 1 ]; then
        # shellcheck disable=SC2086
        "$LINA" $args >"$out.err" 2>&1 || { cat "$out.err" >&2; exit 1; }
    else
        # shellcheck disable=SC2086
        mpirun --oversubscribe --bind-to none -np "$np" "$LINA" $args --sp "$sp" >"$out.err" 2>&1 ||
            { cat "$out.err" >&2; exit 1; }
    fi
    tps=$(sed -n 's/.*"tokens_per_s":\([0-9.]*\).*/\1/p' "$out/log.jsonl" | tail -n +3 | sort -g | \
          awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }')
    line=$(grep '^mpi: rank 0:' "$out.err" || true)
    if [ -n "$line" ]; then
        mb=$(echo "$line" | sed -n 's/^mpi: rank 0: \([0-9.e+]*\) MB into collectives (\([0-9.e+]*\) MB all-gathers), \([0-9.]*\) s of \([0-9.]*\) s.*/\1 \2 \3 \4/p')
        set -- $mb
        per_step=$(awk -v a="$1" -v s="$STEPS" 'BEGIN { printf "%.2f MB", a / s }')
        per_layer=$(awk -v g="$2" -v s="$STEPS" -v l="$LAYERS" 'BEGIN { if (g > 0) printf "%.1f KB", g * 1e3 / s / l / 2; else printf "-" }')
        share=$(awk -v m="$3" -v w="$4" 'BEGIN { printf "%.1f%%", 100 * m / w }')
        ov=$(echo "$line" | sed -n 's/.*gradient all-reduce: \([0-9.]*\)% of its bytes started during the backward, \([0-9.]*\) s waiting.*/\1 \2/p')
        set -- $ov
        early="$1%"
        wait_ms=$(awk -v w="$2" -v s="$STEPS" 'BEGIN { printf "%.1f ms", 1e3 * w / s }')
    else
        per_step="-" per_layer="-" share="-" early="-" wait_ms="-"
    fi
    echo "| $name | $np x $th | $b x $t | $tps | $per_step | $per_layer | $share | $early | $wait_ms |" >>"$dir/table"
}

: >"$dir/table"
run dp1 "data parallel, 1 rank" 1 2 1 8 512
run dp2 "data parallel, 2 ranks" 2 1 1 8 512
run sp1 "sequence parallel, 1 rank" 1 2 1 1 4096
run sp2 "sequence parallel, 2 ranks" 2 1 2 1 4096
{
    echo "# Distributed training on one machine"
    echo
    echo "\`sh bench/dist_bench.sh\` ($(date -u +%Y-%m-%d), $(nproc) cores, kernel path $("$LINA" version | sed -n 's/^kernel path: \([a-z0-9]*\).*/\1/p'), load $(cut -d' ' -f1 /proc/loadavg)); $CONFIG, $STEPS updates per run."
    echo
    echo "| run | ranks x threads | batch x seq | train tokens/s | bytes into collectives per update (rank 0) | all-gather per layer per pass (rank 0) | time in MPI calls (rank 0) | gradient bytes started during the backward | wait for the all-reduce after the backward, per update |"
    echo "|---|---|---|---|---|---|---|---|---|"
    cat "$dir/table"
} >"$OUT"
cat "$OUT"
