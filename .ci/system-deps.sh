#!/usr/bin/env bash
# System packages the tests need: libssl1.1 for the Redis Stack binaries (from Debian bullseye, derived from the
# machine's own Debian source entry, never a typed host) and PostgreSQL for the spend sink tests.
set -euo pipefail
need_ssl=1
ldconfig -p | grep -q 'libssl.so.1.1' && need_ssl=0
need_pg=1
ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 && need_pg=0
[ "$need_ssl$need_pg" = "00" ] && exit 0
SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
if [ "$need_ssl" = 1 ]; then
  src=$(ls /etc/apt/sources.list.d/*.sources 2>/dev/null | head -n1 || true)
  if [ -n "$src" ] && ! [ -f /etc/apt/sources.list.d/bullseye.sources ]; then
    sed -e 's/^Suites:.*bookworm-security.*$/Suites: bullseye-security/' \
        -e 's/^Suites:.*bookworm.*$/Suites: bullseye/' "$src" | $SUDO tee /etc/apt/sources.list.d/bullseye.sources >/dev/null
  elif [ -f /etc/apt/sources.list ] && ! [ -f /etc/apt/sources.list.d/bullseye.list ]; then
    grep -E '^deb ' /etc/apt/sources.list | sed -e 's/bookworm-security/bullseye-security/; s/ bookworm\([ -]\)/ bullseye\1/' \
      | $SUDO tee /etc/apt/sources.list.d/bullseye.list >/dev/null
  fi
fi
$SUDO apt-get update -qq
pkgs=()
[ "$need_ssl" = 1 ] && pkgs+=(libssl1.1)
[ "$need_pg" = 1 ] && pkgs+=(postgresql)
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
