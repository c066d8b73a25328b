#!/bin/sh
# linearize_convert.sh -- the conversion half of results/LINEARIZE.md: the teacher turned
# into linearized attention by `lina linearize` (LoLCATs, Liger), the same linear models
# trained from scratch on the same number of tokens, the copy-recall probe, and decode
# speed and memory at two context lengths. Run by tools/linearize_report.sh (make
# linearize) after the teacher exists; every step is skipped when its output is there, so
# an interrupted run continues. Raw outputs go to $WORK.
set -eu
LINA=${LINA:-build/lina}
RUN=${RUN:-runs/teacher}
WORK=${WORK:-runs/linearize}
S1=${S1:-50}             # LoLCATs attention-transfer updates
S2=${S2:-100}            # LoRA updates (both methods)
EVAL=${EVAL:-16384}      # validation tokens per perplexity
TH=${TH:-1}
CTX=${CTX:-"256 16384"}  # decode contexts
mkdir -p "$WORK"
for m in lolcats liger; do
    s1=0
    [ "$m" = lolcats ] && s1=$S1
    if [ ! -f "$WORK/$m/linearize.json" ]; then
        "$LINA" linearize --teacher "$RUN" --out "$WORK/$m" --method "$m" --stage1-steps "$s1" --stage2-steps "$S2" \
            --eval-tokens "$EVAL" --threads "$TH" > "$WORK/$m.txt" 2> "$WORK/$m.log"
    fi
    # the same linear model from scratch: every parameter trained, the tokens of both stages
    steps=$((s1 + S2))
    if [ ! -f "$WORK/$m-scratch.txt" ]; then
        sed '/"lora_rank"/d; /"lora_alpha"/d' "$WORK/$m/config.json" > "$WORK/$m-scratch.json"
        t0=$(date +%s)
        "$LINA" train --config "$WORK/$m-scratch.json" --data data/train.tok --out "$WORK/$m-scratch" \
            --steps "$steps" --batch 8 --seq-len 128 --lr 2e-3 --warmup $((steps / 10)) --threads "$TH" --quiet \
            2> "$WORK/$m-scratch.log"
        t1=$(date +%s)
        "$LINA" eval --model "$WORK/$m-scratch" --data data/val.tok --seq-len 128 --max-tokens "$EVAL" \
            --threads "$TH" > "$WORK/$m-scratch.txt.tmp"
        echo "steps $steps tokens $((steps * 1024)) wall $((t1 - t0)) s" >> "$WORK/$m-scratch.txt.tmp"
        mv "$WORK/$m-scratch.txt.tmp" "$WORK/$m-scratch.txt"
    fi
done
# copy recall beyond the window: [A | filler | A], A 24 tokens, the second copy 96 (gap 72) or
# 24 (gap 0) tokens after the first
for m in teacher lolcats liger; do
    dir="$WORK/$m"
    [ "$m" = teacher ] && dir="$RUN"
    for g in 0 72; do
        f="$WORK/recall-$m-$g.txt"
        [ -f "$f" ] || { "$LINA" analyze recall --model "$dir" --data data/val.tok --gap "$g" --samples 64 \
            --threads "$TH" > "$f.tmp" && mv "$f.tmp" "$f"; }
    done
done
# decode tokens/s and resident memory after a context (random weights of each config)
cfg_teacher="$RUN/config.json"
[ -f "$cfg_teacher" ] || cfg_teacher="$RUN/checkpoint/config.json"
for m in teacher lolcats liger; do
    cfg="$cfg_teacher"
    [ "$m" = teacher ] || cfg="$WORK/$m/config.json"
    for c in $CTX; do
        f="$WORK/decode-$m-$c.json"
        [ -f "$f" ] || { "$LINA" bench --model "$cfg" --only decode --context "$c" --decode-steps 32 \
            --threads "$TH" --json > "$f.tmp" && mv "$f.tmp" "$f"; }
    done
done
