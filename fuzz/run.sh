#!/bin/sh
# run.sh -- run each libFuzzer target for a bounded time (what `make fuzz` does):
#   sh fuzz/run.sh BUILD_DIR SECONDS TARGET...
# Seeds come from fuzz/corpus/TARGET/ (read only); new inputs go to
# BUILD_DIR/corpus/TARGET/. A crash or sanitizer report leaves the input in
# BUILD_DIR/crash-TARGET-* and fails; copy it into fuzz/corpus/TARGET/ with the
# fix so the corpus replay in `make test` keeps it fixed.
set -u
dir=$1; secs=$2; shift 2
fail=0
for t in "$@"; do
    mkdir -p "$dir/corpus/$t"
    log="$dir/fuzz_$t.log"
    "$dir/fuzz_$t" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -max_len=65536 \
        -artifact_prefix="$dir/crash-$t-" -print_final_stats=1 "$dir/corpus/$t" "fuzz/corpus/$t" >"$log" 2>&1
    rc=$?
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
    if [ $rc -eq 0 ]; then
        echo "ok fuzz $t: ${runs:-?} inputs in ${secs} s, no crash"
    else
        echo "FAIL fuzz $t: exit $rc after ${runs:-?} inputs; input in $dir/crash-$t-*"
        grep -E "ERROR|runtime error|SUMMARY" "$log" | head -5
        fail=1
    fi
done
exit $fail
