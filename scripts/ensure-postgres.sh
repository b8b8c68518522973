#!/usr/bin/env bash
# Make sure PostgreSQL server binaries exist (the tests start a private throwaway server from
# them). Installs Debian's `postgresql` package when they are missing.
set -euo pipefail
if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1; then
    exit 0
fi
echo "PostgreSQL server binaries not found: installing Debian's postgresql package" >&2
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends postgresql postgresql-contrib
