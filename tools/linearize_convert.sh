#!/bin/sh
# linearize_convert.sh -- the conversion half of results/LINEARIZE.md: the teacher turned
# into linearized attention by `lina linearize` (LoLCATs, Liger), the same linear models
# trained from scratch on the same number of tokens, a recall probe beyond the window,
# and decode speed and memory at two context lengths. Run by tools/linearize_report.sh
# (make linearize); writes its raw outputs into $WORK.
set -eu
LINA=${LINA:-build/lina}
RUN=${RUN:-runs/teacher}
WORK=${WORK:-runs/linearize}
S1=${S1:-100}            # LoLCATs attention-transfer updates
S2=${S2:-200}            # LoRA updates (both methods)
EVAL=${EVAL:-16384}      # validation tokens per perplexity
TH=${TH:-1}
mkdir -p "$WORK"
for m in lolcats liger; do
    [ -f "$WORK/$m/linearize.json" ] && continue
    s1=0
    [ "$m" = lolcats ] && s1=$S1
    "$LINA" linearize --teacher "$RUN" --out "$WORK/$m" --method "$m" --stage1-steps "$s1" --stage2-steps "$S2" \
        --eval-tokens "$EVAL" --threads "$TH" > "$WORK/$m.txt" 2> "$WORK/$m.log"
done
# the same linear models from scratch: every parameter trained, the tokens of both stages
for m in lolcats liger; do
    [ -f "$WORK/$m-scratch.txt" ] && continue
    s1=0
    [ "$m" = lolcats ] && s1=$S1
    steps=$((s1 + S2))
    sed '/"lora_rank"/d; /"lora_alpha"/d' "$WORK/$m/config.json" > "$WORK/$m-scratch.json"
    t0=$(date +%s)
    "$LINA" train --config "$WORK/$m-scratch.json" --data data/train.tok --out "$WORK/$m-scratch" --steps "$steps" \
        --batch 8 --seq-len 128 --lr 2e-3 --warmup $((steps / 10)) --threads "$TH" --quiet 2> "$WORK/$m-scratch.log"
    t1=$(date +%s)
    "$LINA" eval --model "$WORK/$m-scratch" --data data/val.tok --seq-len 128 --max-tokens "$EVAL" --threads "$TH" \
        > "$WORK/$m-scratch.txt"
    echo "steps $steps tokens $((steps * 1024)) wall $((t1 - t0)) s" >> "$WORK/$m-scratch.txt"
done
