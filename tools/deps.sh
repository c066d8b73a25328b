#!/bin/sh
# deps.sh -- install the Debian packages lina needs, if any are missing.
#   sh tools/deps.sh [EXTRA_PACKAGE...]
# Checks the build and test dependencies (and any extra packages named) with
# dpkg-query; installs the missing ones with apt-get as root, or with sudo (when it
# needs no password, or can ask for one on a terminal); otherwise prints the
# command to run and exits 1. On a system without dpkg (not Debian) it does
# nothing.
set -eu
PKGS="make gcc libc6-dev libopenblas-openmp-dev libcjson-dev pkg-config openmpi-bin libopenmpi-dev"
command -v dpkg-query >/dev/null 2>&1 || exit 0
need=""
for p in $PKGS "$@"; do
    # installed for any architecture (dpkg -s fails when several are)
    dpkg-query -W -f='${db:Status-Abbrev}\n' "$p" 2>/dev/null | grep -q '^ii' || need="$need $p"
done
[ -n "$need" ] || exit 0
if [ "$(id -u)" = 0 ]; then
    SUDO=""
elif command -v sudo >/dev/null 2>&1 && { [ -t 0 ] || sudo -n true 2>/dev/null; }; then
    SUDO="sudo"
else
    echo "lina: missing Debian packages:$need; install them with: sudo apt-get install$need" >&2
    exit 1
fi
echo "lina: installing$need" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# shellcheck disable=SC2086
$SUDO apt-get install -y -qq --no-install-recommends $need >/dev/null
