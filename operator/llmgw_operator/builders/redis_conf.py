"""What runs inside the Redis pods: redis.conf lines, the ping probe script, redis-cli flags, module loading."""

from __future__ import annotations

from typing import Any

from .spec import REDIS_PORT, Gateway

DATA_DIR = "/data"
CONF_DIR = "/conf"
SCRIPTS_DIR = CONF_DIR
TLS_DIR = "/tls"
# The Redis Stack image keeps its binaries in /opt/redis-stack/bin, which is not on every PATH; harmless elsewhere.
PATH_LINE = 'export PATH="/opt/redis-stack/bin:$PATH"'
# Where images keep the search and JSON modules: Redis Stack server, then Redis 8 (whose own entrypoint would load them,
# but the pods exec redis-server directly). The start script loads them from the first folder that has RediSearch.
MODULE_DIRS = ("/opt/redis-stack/lib", "/usr/local/lib/redis/modules")
MODULES = ("redisearch.so", "rejson.so")


def module_lines() -> list[str]:
    """Start-script lines that append `loadmodule` for the modules the image has (to "$conf")."""
    return [
        "found=''",
        f"for dir in {' '.join(MODULE_DIRS)}; do",
        '  [ -f "$dir/redisearch.so" ] || continue',
        f"  for m in {' '.join(MODULES)}; do",
        '    [ -f "$dir/$m" ] && echo "loadmodule $dir/$m" >> "$conf"',
        "  done",
        '  found="$dir"',
        "  break",
        "done",
        '[ -n "$found" ] || echo "no RediSearch module in this image (looked in'
        f' {" ".join(MODULE_DIRS)}): the semantic cache will not work" >&2',
    ]


def cli_flags(gw: Gateway) -> str:
    """redis-cli flags for probes and scripts: TLS files and the password from the environment."""
    flags = ""
    if gw.tls:
        flags += f" --tls --cacert {TLS_DIR}/ca.crt --cert {TLS_DIR}/tls.crt --key {TLS_DIR}/tls.key"
    return flags


def ping_script(gw: Gateway, port: int) -> str:
    # REDISCLI_AUTH keeps the password out of the process list; LOADING counts as alive for liveness only.
    return "\n".join([
        "#!/bin/sh",
        PATH_LINE,
        'export REDISCLI_AUTH="${REDIS_PASSWORD:-}"',
        f'out=$(timeout 4 redis-cli -h 127.0.0.1 -p {port}{cli_flags(gw)} ping 2>&1)',
        'case "$out" in PONG) exit 0;; *LOADING*) [ "${1:-}" = live ] && exit 0;; esac',
        'echo "$out"; exit 1',
        "",
    ])


def redis_base_conf(gw: Gateway) -> list[str]:
    """Directives every data node shares: persistence (AOF), memory policy, TLS, modules."""
    r = gw.redis
    lines = [
        f"dir {DATA_DIR}",
        "appendonly yes",
        "appendfsync everysec",
        "save 3600 1 300 100",
        "protected-mode no",
        f"maxmemory-policy {r['maxmemoryPolicy']}",
        "tcp-keepalive 60",
        "repl-diskless-sync yes",
    ]
    maxmem = r.get("maxmemory") or _maxmemory_from_limit(r.get("resources", {}))
    if maxmem:
        lines.append(f"maxmemory {maxmem}")
    if gw.tls:
        lines += [
            "port 0",
            f"tls-port {REDIS_PORT}",
            f"tls-cert-file {TLS_DIR}/tls.crt",
            f"tls-key-file {TLS_DIR}/tls.key",
            f"tls-ca-cert-file {TLS_DIR}/ca.crt",
            "tls-auth-clients optional",
            "tls-replication yes",
        ]
    else:
        lines.append(f"port {REDIS_PORT}")
    # Modules are not listed here: start.sh finds them in the image (Redis Stack or Redis 8 layout), see module_lines.
    return lines


_UNITS = {"Ki": 1024, "Mi": 1024**2, "Gi": 1024**3, "Ti": 1024**4, "K": 1000, "k": 1000, "M": 1000**2,
          "G": 1000**3, "T": 1000**4}


def _maxmemory_from_limit(res: dict[str, Any]) -> str | None:
    """80% of the memory limit: Redis needs headroom for fork (AOF rewrite) and buffers before the OOM killer."""
    limit = (res.get("limits") or {}).get("memory")
    if limit is None:
        return None
    s = str(limit)
    for unit in sorted(_UNITS, key=len, reverse=True):
        if s.endswith(unit) and s[: -len(unit)].replace(".", "", 1).isdigit():
            return str(int(float(s[: -len(unit)]) * _UNITS[unit] * 0.8))
    return str(int(float(s) * 0.8)) if s.replace(".", "", 1).isdigit() else None
