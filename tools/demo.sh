#!/bin/sh
# demo.sh -- lina's main job from a fresh clone (what `make demo` runs):
#   1. install the build dependencies and Debian's bible-kjv if missing
#      (tools/deps.sh),
#   2. build lina,
#   3. prepare the corpus: the King James Bible, a 4096-token BPE tokenizer,
#      train / validation token files (data/, `make data`),
#   4. train the built-in GLA language model (4 layers, hidden 256, 4.29M
#      parameters) with a progress line; checkpoint, tokenizer and loss plot in
#      runs/gla-small/ (an existing complete run there is kept, not retrained;
#      a run stopped by Ctrl-C is continued from its last checkpoint),
#   5. print a few generated samples.
# Environment: THREADS (default: all cores), STEPS (default 600).
set -eu
cd "$(dirname "$0")/.."
THREADS=${THREADS:-$(nproc 2>/dev/null || echo 2)}
STEPS=${STEPS:-600}
RUN=runs/gla-small

sh tools/deps.sh bible-kjv

echo "== build" >&2
make -j"$THREADS" all >/dev/null

if [ ! -f data/train.tok ] || [ ! -f data/val.tok ] || [ ! -f data/tokenizer.json ]; then
    echo "== corpus (make data)" >&2
    make data
fi

if [ -f "$RUN/checkpoint/trainer.json" ] && [ -f "$RUN/loss.png" ] &&
   grep -Eq "\"step\":[[:space:]]*$STEPS," "$RUN/checkpoint/trainer.json" 2>/dev/null; then
    echo "== $RUN already holds a trained model (remove it to train again)" >&2
else
    if [ -f "$RUN/checkpoint/trainer.json" ]; then
        echo "demo: $RUN holds an unfinished run; continuing it from its checkpoint (--resume)" >&2
        resume=--resume
    else
        # nothing checkpointed yet (stopped within its first checkpoint interval): start afresh
        resume=
    fi
    echo "== train the built-in GLA model on data/train.tok ($STEPS steps, $THREADS threads)" >&2
    ./build/lina train --out "$RUN" --steps "$STEPS" --threads "$THREADS" $resume
fi

echo "== samples (lina generate --model $RUN/checkpoint)" >&2
seed=1
for prompt in "In the beginning" "And the LORD said unto Moses," "Blessed are"; do
    echo
    ./build/lina generate --model "$RUN/checkpoint" --prompt "$prompt" --max-tokens 60 \
        --temperature 0.8 --top-k 40 --seed "$seed" --threads "$THREADS"
    seed=$((seed + 1))
done
echo
echo "demo: model, tokenizer and loss plot in $RUN/ (checkpoint/, loss.png, log.jsonl)" >&2
