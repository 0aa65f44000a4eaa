#!/usr/bin/env bash
# System packages: libssl1.1 for the Redis Stack binaries (from Debian bullseye, derived from the machine's own Debian
# source entry, never a typed host); with --test (make test, CI) also PostgreSQL for the spend sink tests and
# the shellcheck linter (tests/e2e/test_kind_script.py lints kind.sh with it).
set -euo pipefail
for_tests=0
[ "${1:-}" = "--test" ] && for_tests=1
# CI runs `.ci/system-deps.sh` before `make test`: install the test packages there too.
[ -n "${CI:-}" ] && for_tests=1
need_ssl=1
ldconfig -p | grep -q 'libssl.so.1.1' && need_ssl=0
need_pg=0
need_sc=0
if [ "$for_tests" = 1 ]; then
  ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || need_pg=1
  command -v shellcheck >/dev/null 2>&1 || need_sc=1
fi
[ "$need_ssl$need_pg$need_sc" = "000" ] && exit 0
SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
if [ "$need_ssl" = 1 ]; then
  src=$(find /etc/apt/sources.list.d -maxdepth 1 -name '*.sources' 2>/dev/null | sort | head -n1)
  if [ -n "$src" ] && ! [ -f /etc/apt/sources.list.d/bullseye.sources ]; then
    sed -e 's/^Suites:.*bookworm-security.*$/Suites: bullseye-security/' \
        -e 's/^Suites:.*bookworm.*$/Suites: bullseye/' "$src" | $SUDO tee /etc/apt/sources.list.d/bullseye.sources >/dev/null
  elif [ -f /etc/apt/sources.list ] && ! [ -f /etc/apt/sources.list.d/bullseye.list ]; then
    grep -E '^deb ' /etc/apt/sources.list | sed -e 's/bookworm-security/bullseye-security/; s/ bookworm\([ -]\)/ bullseye\1/' \
      | $SUDO tee /etc/apt/sources.list.d/bullseye.list >/dev/null
  fi
fi
pkgs=()
[ "$need_ssl" = 1 ] && pkgs+=(libssl1.1)
[ "$need_pg" = 1 ] && pkgs+=(postgresql)
[ "$need_sc" = 1 ] && pkgs+=(shellcheck)
echo "==> apt-get install ${pkgs[*]}"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
