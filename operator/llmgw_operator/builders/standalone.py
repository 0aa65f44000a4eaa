"""standalone mode: one Redis (AOF on) in a StatefulSet of 1, a headless and a client Service, its config, a PDB."""

from __future__ import annotations

from .meta import Manifest, content_hash, drop_none, metadata
from .redis_conf import CONF_DIR, DATA_DIR, PATH_LINE, SCRIPTS_DIR, module_lines, ping_script, redis_base_conf
from .spec import REDIS_PORT, Gateway
from .workload import config_volumes, data_volumes, pdb, redis_container, service, statefulset, volume_claim_templates

COMPONENT = "redis"


def start_script(extra_lines: list[str] | None = None) -> str:
    """Compose the runtime config in the data volume (the ConfigMap is read-only) and exec redis-server.
    The password is appended from the environment so it never sits in a ConfigMap."""
    lines = [
        "#!/bin/sh",
        PATH_LINE,
        "set -eu",
        f"conf={DATA_DIR}/redis-runtime.conf",
        f"cp {CONF_DIR}/redis.conf \"$conf\"",
        *module_lines(),
        'if [ -n "${REDIS_PASSWORD:-}" ]; then',
        '  printf \'requirepass "%s"\\nmasterauth "%s"\\n\' "$REDIS_PASSWORD" "$REDIS_PASSWORD" >> "$conf"',
        "fi",
        *(extra_lines or []),
        'exec redis-server "$conf"',
        "",
    ]
    return "\n".join(lines)


def redis_configmap(gw: Gateway, conf: list[str], scripts: dict[str, str]) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata(gw, gw.redis_config_name, "redis-config"),
        "data": {"redis.conf": "\n".join(conf) + "\n", **scripts},
    }


def build(gw: Gateway) -> list[Manifest]:
    cm = redis_configmap(gw, redis_base_conf(gw), {"start.sh": start_script(), "ping.sh": ping_script(gw, REDIS_PORT)})
    container = redis_container(gw, name="redis", headless=gw.headless_name, command=["sh", f"{SCRIPTS_DIR}/start.sh"])
    sts = statefulset(
        gw, name=gw.redis_name, component=COMPONENT, replicas=1, headless=gw.headless_name,
        containers=[container], volumes=[*config_volumes(gw), *data_volumes(gw)],
        claims=volume_claim_templates(gw, COMPONENT), config_hash=content_hash(cm["data"]),
    )
    return drop_none([
        cm,
        service(gw, gw.headless_name, COMPONENT, REDIS_PORT, headless=True),
        service(gw, gw.redis_name, COMPONENT, REDIS_PORT, headless=False),
        sts,
        pdb(gw, gw.redis_name, COMPONENT),
    ])
