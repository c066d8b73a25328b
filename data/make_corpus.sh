#!/bin/sh
# make_corpus.sh -- the default text corpus: the King James Bible from Debian's
# bible-kjv package (public domain; nothing is downloaded from anywhere else).
#
#   sh data/make_corpus.sh        (what `make data` runs)
#
# Writes, next to this script (none of it committed):
#   kjv.txt          the whole text: one verse a line, references stripped,
#                    chapters separated by a blank line (~4.1 MB)
#   kjv_train.txt    every chapter except each 20th one, each chapter ending
#                    with <|endoftext|>: the documents of `lina train --pack`
#   kjv_val.txt      each 20th chapter (~5 %), the same way
#   tokenizer.json   byte-level BPE trained on kjv_train.txt (HF format)
#   train.tok, val.tok   the two splits as lina token files
# Environment: LINA (the lina binary, default build/lina), VOCAB (default 4096).
set -eu
dir=$(dirname "$0")
LINA=${LINA:-build/lina}
VOCAB=${VOCAB:-4096}

if ! command -v bible >/dev/null 2>&1; then
    echo "make_corpus: installing Debian's bible-kjv" >&2
    SUDO=""
    if [ "$(id -u)" != 0 ]; then
        SUDO=sudo
    fi
    $SUDO apt-get install -y bible-kjv || { $SUDO apt-get update && $SUDO apt-get install -y bible-kjv; }
fi
if [ ! -x "$LINA" ]; then
    echo "make_corpus: $LINA not found (run make first)" >&2
    exit 1
fi

# `bible -l100000` prints "Book N" headings, blank lines and "  V text" verses
# one a line; keep the verse text, a blank line after each chapter in kjv.txt and
# the tokenizer's <|endoftext|> (the document separator) after each chapter in the
# splits, which the tokenizer encodes as its one special token.
bible -l100000 "gen1:1-rev22:21" </dev/null | awk '
    /^ +[0-9]+ / { sub(/^ +[0-9]+ /, ""); sub(/ +$/, ""); print > out; print > all; nverse++; next }
    /^[^ ]/      { if (nch > 0) { printf "<|endoftext|>" > out; print "" > all }
                   nch++; out = (nch % 20 == 0) ? val : train; next }
    END          { if (nch > 0) { printf "<|endoftext|>" > out }
                   if (nverse < 31000) { print "make_corpus: only " nverse " verses" > "/dev/stderr"; exit 1 } }
' all="$dir/kjv.txt.tmp" train="$dir/kjv_train.txt.tmp" val="$dir/kjv_val.txt.tmp"
mv "$dir/kjv.txt.tmp" "$dir/kjv.txt"
mv "$dir/kjv_train.txt.tmp" "$dir/kjv_train.txt"
mv "$dir/kjv_val.txt.tmp" "$dir/kjv_val.txt"
echo "make_corpus: $dir/kjv.txt: $(wc -c < "$dir/kjv.txt") bytes, $(wc -l < "$dir/kjv.txt") lines" >&2

"$LINA" tokenizer train --in "$dir/kjv_train.txt" --vocab "$VOCAB" --out "$dir/tokenizer.json"
"$LINA" tokenizer encode --tokenizer "$dir/tokenizer.json" --in "$dir/kjv_train.txt" --out "$dir/train.tok"
"$LINA" tokenizer encode --tokenizer "$dir/tokenizer.json" --in "$dir/kjv_val.txt" --out "$dir/val.tok"
