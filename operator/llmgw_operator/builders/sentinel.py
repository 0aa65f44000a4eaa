"""sentinel mode: a data StatefulSet (pod 0 starts as master, the others as its replicas) and a sentinel StatefulSet.

Every member announces its stable DNS name (replica-announce-ip takes a hostname since Redis 7; sentinels use
resolve-hostnames + announce-hostnames), so a restarted pod with a new IP is found again. On start, a data pod asks the
sentinels who the master is and follows it; only when no sentinel knows a master (first start) does pod 0 become one.
Sidecars discover the master through the sentinels (redis-py Sentinel), never through a fixed address.
"""

from __future__ import annotations

from typing import Any

from .meta import Manifest, content_hash, drop_none
from .redis_conf import CONF_DIR, DATA_DIR, PATH_LINE, SCRIPTS_DIR, TLS_DIR, cli_flags, ping_script, redis_base_conf
from .sidecar_config import SENTINEL_MASTER_NAME
from .spec import REDIS_PORT, SENTINEL_PORT, Gateway
from .standalone import redis_configmap, start_script
from .workload import (
    config_volumes,
    container_security_context,
    data_volumes,
    exec_probe,
    password_env,
    pdb,
    pod_identity_env,
    redis_container,
    resources,
    service,
    statefulset,
    volume_claim_templates,
)

DATA = "redis"
SENTINEL = "sentinel"


def _find_master_lines(gw: Gateway) -> list[str]:
    """Shell that sets $master to the current master's host as the sentinels report it (empty if none knows)."""
    hosts = " ".join(gw.sentinel_pod_hosts())
    return [
        'export REDISCLI_AUTH="${REDIS_PASSWORD:-}"',
        'master=""',
        f"for s in {hosts}; do",
        '  [ "$s" = "${POD_FQDN:-}" ] && continue',
        f'  m=$(timeout 3 redis-cli -h "$s" -p {SENTINEL_PORT}{cli_flags(gw)} --raw '
        f'sentinel get-master-addr-by-name {SENTINEL_MASTER_NAME} 2>/dev/null | head -n1) || true',
        '  case "$m" in ""|*ERR*|*NOAUTH*|*WRONGPASS*) ;; *) master="$m"; break;; esac',
        "done",
    ]


def data_start_script(gw: Gateway) -> str:
    master0 = gw.redis_pod_hosts(1)[0]
    extra = [
        'echo "replica-announce-ip $POD_FQDN" >> "$conf"',
        f'echo "replica-announce-port {REDIS_PORT}" >> "$conf"',
        *_find_master_lines(gw),
        f'[ -z "$master" ] && master="{master0}"',
        f'[ "$master" != "$POD_FQDN" ] && echo "replicaof $master {REDIS_PORT}" >> "$conf"',
    ]
    return start_script(extra)


def sentinel_start_script(gw: Gateway) -> str:
    s = gw.redis["sentinel"]
    master0 = gw.redis_pod_hosts(1)[0]
    name = SENTINEL_MASTER_NAME
    conf = [
        "protected-mode no",
        "sentinel resolve-hostnames yes",
        "sentinel announce-hostnames yes",
        f"sentinel monitor {name} $master {REDIS_PORT} {s['quorum']}",
        f"sentinel down-after-milliseconds {name} {s['downAfterMilliseconds']}",
        f"sentinel failover-timeout {name} {s['failoverTimeoutMilliseconds']}",
        f"sentinel parallel-syncs {name} 1",
    ]
    if gw.tls:
        conf += ["port 0", f"tls-port {SENTINEL_PORT}", f"tls-cert-file {TLS_DIR}/tls.crt",
                 f"tls-key-file {TLS_DIR}/tls.key", f"tls-ca-cert-file {TLS_DIR}/ca.crt",
                 "tls-auth-clients optional", "tls-replication yes"]
    else:
        conf.append(f"port {SENTINEL_PORT}")
    lines = [
        "#!/bin/sh",
        PATH_LINE,
        "set -eu",
        f"conf={DATA_DIR}/sentinel.conf",
        *_find_master_lines(gw),
        f'[ -z "$master" ] && master="{master0}"',
        # Sentinel refuses a monitor target it cannot resolve: wait (bounded) for the master's DNS record.
        'i=0; until getent ahosts "$master" >/dev/null 2>&1 || [ $i -ge 120 ]; do i=$((i+1)); sleep 1; done',
        # Sentinel rewrites its config file, so it lives in the writable volume and is regenerated on each start.
        'cat > "$conf" <<EOF',
        *conf,
        "sentinel announce-ip $POD_FQDN",
        f"sentinel announce-port {SENTINEL_PORT}",
        "EOF",
        'if [ -n "${REDIS_PASSWORD:-}" ]; then',
        f'  printf \'requirepass "%s"\\nsentinel auth-pass {name} "%s"\\nsentinel sentinel-pass "%s"\\n\' '
        '"$REDIS_PASSWORD" "$REDIS_PASSWORD" "$REDIS_PASSWORD" >> "$conf"',
        "fi",
        'exec redis-server "$conf" --sentinel',
        "",
    ]
    return "\n".join(lines)


def _sentinel_container(gw: Gateway) -> dict[str, Any]:
    r = gw.redis
    mounts: list[dict[str, Any]] = [{"name": "data", "mountPath": DATA_DIR},
                                    {"name": "config", "mountPath": CONF_DIR, "readOnly": True}]
    if gw.tls:
        mounts.append({"name": "tls", "mountPath": TLS_DIR, "readOnly": True})
    return {
        "name": "sentinel",
        "image": r["image"],
        "imagePullPolicy": r["imagePullPolicy"],
        "command": ["sh", f"{SCRIPTS_DIR}/sentinel-start.sh"],
        "env": [*pod_identity_env(gw, gw.sentinel_headless_name), *password_env(gw)],
        "ports": [{"name": "sentinel", "containerPort": SENTINEL_PORT, "protocol": "TCP"}],
        "readinessProbe": exec_probe("sentinel-ping.sh", initial=5, period=10),
        "livenessProbe": exec_probe("sentinel-ping.sh", initial=30, period=15, failures=5),
        "resources": resources(r["sentinel"].get("resources")),
        "securityContext": container_security_context(),
        "volumeMounts": mounts,
    }


def build(gw: Gateway) -> list[Manifest]:
    r = gw.redis
    conf = [*redis_base_conf(gw), "replica-read-only yes", "min-replicas-to-write 0"]
    scripts = {
        "start.sh": data_start_script(gw),
        "ping.sh": ping_script(gw, REDIS_PORT),
        "sentinel-start.sh": sentinel_start_script(gw),
        "sentinel-ping.sh": ping_script(gw, SENTINEL_PORT),
    }
    cm = redis_configmap(gw, conf, scripts)
    chash = content_hash(cm["data"])
    data = statefulset(
        gw, name=gw.redis_name, component=DATA, replicas=1 + r["replicas"], headless=gw.headless_name,
        containers=[redis_container(gw, name="redis", headless=gw.headless_name,
                                    command=["sh", f"{SCRIPTS_DIR}/start.sh"])],
        volumes=[*config_volumes(gw), *data_volumes(gw)],
        claims=volume_claim_templates(gw, DATA), config_hash=chash,
    )
    sentinels = statefulset(
        gw, name=gw.sentinel_name, component=SENTINEL, replicas=r["sentinel"]["count"],
        headless=gw.sentinel_headless_name, containers=[_sentinel_container(gw)],
        volumes=[*config_volumes(gw), {"name": "data", "emptyDir": {}}], claims=[], config_hash=chash,
    )
    return drop_none([
        cm,
        service(gw, gw.headless_name, DATA, REDIS_PORT, headless=True),
        service(gw, gw.sentinel_headless_name, SENTINEL, SENTINEL_PORT, headless=True, port_name="sentinel"),
        service(gw, gw.sentinel_name, SENTINEL, SENTINEL_PORT, headless=False, port_name="sentinel"),
        data,
        sentinels,
        pdb(gw, gw.redis_name, DATA),
        pdb(gw, gw.sentinel_name, SENTINEL),
    ])
