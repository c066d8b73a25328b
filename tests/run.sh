#!/bin/sh
# Runs every test binary given on the command line; each prints "ok ..." or
# "FAIL ..." lines. Ends with "N passed, M failed" and exits non-zero on any
# failure or crash.
pass=0; fail=0
log=$(mktemp)
for t in "$@"; do
    start=$(date +%s)
    "$t" >"$log" 2>&1
    rc=$?
    cat "$log"
    p=$(grep -c '^ok ' "$log")
    f=$(grep -c '^FAIL ' "$log")
    pass=$((pass + p)); fail=$((fail + f))
    if [ $rc -ne 0 ] && [ $f -eq 0 ]; then
        echo "FAIL $(basename "$t"): exited with status $rc"
        fail=$((fail + 1))
    fi
    echo "# $(basename "$t"): $p passed, $f failed ($(( $(date +%s) - start ))s)"
done
rm -f "$log"
echo "$pass passed, $fail failed"
[ $fail -eq 0 ]
