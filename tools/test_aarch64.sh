#!/bin/sh
# test_aarch64.sh -- the whole test suite on ARM64 (aarch64) under user-mode
# emulation, on an x86-64 Debian machine (what `make test-aarch64` runs):
#   1. install what it needs if missing (root or sudo): Debian's cross compiler
#      (gcc-aarch64-linux-gnu), qemu-user, and the arm64 libraries through
#      multiarch (dpkg --add-architecture arm64; libc6, libgomp1,
#      libopenblas-openmp-dev, libcjson-dev, all :arm64),
#   2. cross-build lina and the tests into build-aarch64/ (generic armv8-a:
#      the portable kernels, NEON through the compiler),
#   3. run tests/run.sh on them, each binary (and the `lina` the tests call)
#      through qemu-aarch64.
# The programs run on the arm64 packages' own loader and libraries
# (/lib/ld-linux-aarch64.so.1, /usr/lib/aarch64-linux-gnu), so the loader and
# libc always come from one glibc build. Where binfmt_misc runs aarch64 programs
# directly, the wrappers are harmless. Set QEMU (default qemu-aarch64, else
# qemu-aarch64-static) to choose the emulator.
# Ends with the suite's "N passed, M failed" line; exits non-zero on a failure.
set -eu
cd "$(dirname "$0")/.."
B=${BUILD:-build-aarch64}
CROSS=aarch64-linux-gnu-gcc
# the cross compiler, the emulator and the arm64 libraries (multiarch), installed
# by tools/deps.sh when missing (with the native build dependencies)
if ! dpkg --print-foreign-architectures 2>/dev/null | grep -qx arm64; then
    SUDO=""
    [ "$(id -u)" = 0 ] || SUDO=sudo
    echo "test-aarch64: adding the arm64 architecture to dpkg" >&2
    $SUDO dpkg --add-architecture arm64
fi
sh tools/deps.sh gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user \
    libc6:arm64 libgomp1:arm64 libopenblas-openmp-dev:arm64 libcjson-dev:arm64

QEMU=${QEMU:-$(command -v qemu-aarch64 || command -v qemu-aarch64-static || echo qemu-aarch64)}

# Debian bookworm's aarch64 gcc 12.2 stops with an internal compiler error
# (vect_transform_reduction) when it vectorises an fmax/fmin reduction of float
# values into a double, as the tests' error measures do; as library calls the
# two functions give the same results.
WORKAROUND="-fno-builtin-fmax -fno-builtin-fmin"
# TESTS (names, e.g. "test_kern test_dd"): only these programs; default all.
# ISA_TESTS (names): run again on the portable path (LINA_ISA=portable) after the
# suite on the neon path; default the kernel tests that `make test` runs per path.
if [ -n "${TESTS:-}" ]; then
    TESTS=$(for t in $TESTS; do echo "$B/tests/$t"; done)
else
    TESTS=$(for f in tests/test_*.c; do echo "$f"; done | sed "s|tests/\(.*\)\.c|$B/tests/\1|")
fi
ISA_TESTS=${ISA_TESTS-$(sed -n 's/^ISA_TESTS = $(addprefix $(BUILD)\/tests\/,\(.*\))$/\1/p' Makefile)}
echo "== cross-build ($CROSS) into $B/" >&2
# MPI=0: the host's mpicc names x86-64 Open MPI headers and libraries, which an
# arm64 link cannot use (there is no arm64 Open MPI here); the ARM build is the
# single-process one, and the distributed tests check that path.
# shellcheck disable=SC2086
make -j2 CC="$CROSS" BUILD="$B" ARCH= MPI=0 EXTRA_CFLAGS="$WORKAROUND" \
    BLAS_INC=/usr/include/aarch64-linux-gnu/openblas-openmp all $TESTS >/dev/null

# one wrapper per program: run.sh and the tests' own system()/exec calls go
# through the emulator
W=$B/qemu
rm -rf "$W"
mkdir -p "$W"
for p in "$B/lina" $TESTS; do
    printf '#!/bin/sh\nexec "%s" "%s" "$@"\n' "$QEMU" "$(pwd)/$p" >"$W/$(basename "$p")"
    chmod +x "$W/$(basename "$p")"
done
# libgomp's long default spin costs ten times more under emulation; the short
# one the lina tool sets for itself (README, Dependencies)
# test_lib reads the cross build's library with the cross tools and runs its
# user program under the emulator
export LINA_BUILD_DIR="$B" LINA_TEST_NM="${CROSS%gcc}nm" LINA_TEST_CC="$CROSS" LINA_TEST_RUN="$QEMU"
export LINA_TEST_MAKEFLAGS="CC=$CROSS ARCH= MPI=0 EXTRA_CFLAGS='$WORKAROUND' BLAS_INC=/usr/include/aarch64-linux-gnu/openblas-openmp"
if [ -z "${OMP_WAIT_POLICY:-}" ] && [ -z "${GOMP_SPINCOUNT:-}" ]; then
    export GOMP_SPINCOUNT=10000
fi
echo "== test suite under $($QEMU --version | head -n 1)" >&2
start=$(date +%s)
rc=0
# shellcheck disable=SC2046
LINA_BIN=$W/lina ISA_TESTS="$(for t in $ISA_TESTS; do [ -x "$W/$t" ] && echo "$W/$t"; done)" \
    sh tests/run.sh $(for t in $TESTS; do echo "$W/$(basename "$t")"; done) || rc=$?
echo "# aarch64 suite under emulation: $(( $(date +%s) - start )) s wall; CPU time (user, system) of the tests:" >&2
times | tail -n 1 >&2
exit $rc
