#!/usr/bin/env bash
# Install hoopd. With --dev, also the system packages the test suite drives
# (real PostgreSQL and OpenSSH servers and clients, curl), what building the
# optional accelerators needs (the recorder's C one: gcc, Python's and
# OpenSSL's headers; the masking scan's C++ one: g++ and RE2's library and
# headers; without them pip skips them) and the Python test dependencies.
# Idempotent; safe to run again.
set -euo pipefail
cd "$(dirname "$0")"

dev=0
[ "${1:-}" = "--dev" ] && dev=1

if [ "$dev" = 1 ] && command -v apt-get >/dev/null 2>&1; then
    sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo"
    # Debian's packages start their services on install; the tests start their
    # own servers with their own configs, so keep apt from starting any.
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' | $sudo tee /usr/sbin/policy-rc.d >/dev/null
        $sudo chmod +x /usr/sbin/policy-rc.d
    fi
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get update -qq
    $sudo apt-get install -y -qq --no-install-recommends \
        postgresql-15 postgresql-client-15 pgbouncer openssh-server openssh-client sshpass rsync git curl procps \
        gcc g++ libc6-dev libssl-dev libre2-dev python3-dev >/dev/null
fi

if [ "$dev" = 1 ]; then
    python3 -m pip install -q -e '.[test]'
else
    python3 -m pip install -q .
fi
