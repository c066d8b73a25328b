#!/bin/sh
# test.sh -- the test suite from a fresh clone, also on a Debian without make:
#   sh tools/test.sh
# installs the build dependencies if missing (tools/deps.sh, make included),
# builds, and runs `make test` (ends with "N passed, M failed").
set -eu
cd "$(dirname "$0")/.."
sh tools/deps.sh
THREADS=$(nproc 2>/dev/null || echo 2)
make -j"$THREADS" all
exec make test
