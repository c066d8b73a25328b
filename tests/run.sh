#!/bin/sh
# Runs every test binary given on the command line; each prints "ok ..." or
# "FAIL ..." lines. Then runs the kernel tests named in ISA_TESTS once more per
# other instruction-set path this CPU supports (LINA_ISA=..., as `$LINA_BIN
# version` lists them), so every path is checked against the references.
# Ends with "N passed, M failed" and exits non-zero on any failure or crash.
# every layer backward reads only scratch it wrote (src/model/model.c, scratch_poison)
LINA_POISON_SCRATCH=1; export LINA_POISON_SCRATCH
pass=0; fail=0
log=$(mktemp)
run() { # run BINARY LABEL
    start=$(date +%s)
    "$1" >"$log" 2>&1
    rc=$?
    cat "$log"
    p=$(grep -c '^ok ' "$log")
    f=$(grep -c '^FAIL ' "$log")
    pass=$((pass + p)); fail=$((fail + f))
    if [ $rc -ne 0 ] && [ $f -eq 0 ]; then
        echo "FAIL $2: exited with status $rc"
        fail=$((fail + 1))
    fi
    echo "# $2: $p passed, $f failed ($(( $(date +%s) - start ))s)"
}
paths=""
if [ -n "${LINA_BIN:-}" ] && [ -x "$LINA_BIN" ]; then
    paths=$("$LINA_BIN" version | sed -n 's/^kernel path: \([a-z0-9]*\) (this CPU: \(.*\))$/\1|\2/p')
    echo "# kernel path: ${paths%%|*} (this CPU: ${paths#*|})"
fi
for t in "$@"; do
    run "$t" "$(basename "$t")"
done
for isa in ${paths#*|}; do
    [ "$isa" = "${paths%%|*}" ] && continue
    for t in ${ISA_TESTS:-}; do
        LINA_ISA=$isa; export LINA_ISA
        run "$t" "$(basename "$t") [$isa]"
        unset LINA_ISA
    done
done
rm -f "$log"
echo "$pass passed, $fail failed"
[ $fail -eq 0 ]
