#!/usr/bin/env bash
# Make sure the server binaries the tests start privately exist: PostgreSQL (the main test
# database), Redis (shared rate limits across replicas) and rsyslog with its GnuTLS driver
# (the syslog forwarding tests' receiver) and Chromium (the admin console's browser tests drive
# Debian's /usr/bin/chromium through Playwright; no browser is downloaded). Installs Debian's
# packages when they are missing; the tests start and stop their own throwaway servers from them.
set -euo pipefail
missing=()
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && ! command -v initdb >/dev/null 2>&1; then
    missing+=(postgresql postgresql-contrib)
fi
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
if ! command -v rsyslogd >/dev/null 2>&1 && [ ! -x /usr/sbin/rsyslogd ]; then
    missing+=(rsyslog rsyslog-gnutls)
elif ! compgen -G "/usr/lib/*/rsyslog/lmnsd_gtls.so" >/dev/null && [ ! -e /usr/lib/rsyslog/lmnsd_gtls.so ]; then
    missing+=(rsyslog-gnutls)
fi
command -v chromium >/dev/null 2>&1 || [ -x /usr/bin/chromium ] || missing+=(chromium)
[ ${#missing[@]} -eq 0 ] && exit 0
echo "installing Debian packages the tests need: ${missing[*]}" >&2
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
