"""cluster mode: one StatefulSet of shards x (1 + replicasPerShard) cluster-enabled nodes.

Pod ordinal i belongs to shard i // (1 + replicasPerShard); adding shards appends pods, so existing pods keep their
shard. Nodes announce their stable DNS name (cluster-announce-hostname, cluster-preferred-endpoint-type hostname):
clients are redirected to names, never to pod IPs that change on restart. The operator joins, assigns slots and
heals the cluster (cluster_bootstrap.py); the pods only start empty nodes.
"""

from __future__ import annotations

from .meta import Manifest, content_hash, drop_none
from .redis_conf import SCRIPTS_DIR, ping_script, redis_base_conf
from .spec import REDIS_PORT, Gateway
from .standalone import redis_configmap, start_script
from .workload import config_volumes, data_volumes, pdb, redis_container, service, statefulset, volume_claim_templates

COMPONENT = "redis"
BUS_PORT = REDIS_PORT + 10000
NODE_TIMEOUT_MS = 5000


def node_count(gw: Gateway) -> int:
    shards: int = gw.redis["shards"]
    replicas: int = gw.redis["replicasPerShard"]
    return shards * (1 + replicas)


def shard_of(ordinal: int, replicas_per_shard: int) -> int:
    return ordinal // (1 + replicas_per_shard)


def cluster_conf(gw: Gateway) -> list[str]:
    conf = [
        *redis_base_conf(gw),
        "cluster-enabled yes",
        "cluster-config-file /data/nodes.conf",
        f"cluster-node-timeout {NODE_TIMEOUT_MS}",
        f"cluster-port {BUS_PORT}",
        "cluster-preferred-endpoint-type hostname",
        # A cache keeps serving the shards that are up while another one fails over.
        "cluster-require-full-coverage no",
        "cluster-allow-reads-when-down no",
        "cluster-replica-validity-factor 0",
    ]
    if gw.tls:
        conf.append("tls-cluster yes")
    return conf


def build(gw: Gateway) -> list[Manifest]:
    extra = ['echo "cluster-announce-hostname $POD_FQDN" >> "$conf"']
    cm = redis_configmap(gw, cluster_conf(gw), {"start.sh": start_script(extra), "ping.sh": ping_script(gw, REDIS_PORT)})
    bus = {"name": "cluster-bus", "containerPort": BUS_PORT, "protocol": "TCP"}
    container = redis_container(gw, name="redis", headless=gw.headless_name,
                                command=["sh", f"{SCRIPTS_DIR}/start.sh"], extra_ports=[bus])
    sts = statefulset(
        gw, name=gw.redis_name, component=COMPONENT, replicas=node_count(gw), headless=gw.headless_name,
        containers=[container], volumes=[*config_volumes(gw), *data_volumes(gw)],
        claims=volume_claim_templates(gw, COMPONENT), config_hash=content_hash(cm["data"]),
    )
    bus_port = {"name": "cluster-bus", "port": BUS_PORT, "targetPort": "cluster-bus", "protocol": "TCP"}
    return drop_none([
        cm,
        service(gw, gw.headless_name, COMPONENT, REDIS_PORT, headless=True, extra_ports=[bus_port]),
        service(gw, gw.redis_name, COMPONENT, REDIS_PORT, headless=False),
        sts,
        pdb(gw, gw.redis_name, COMPONENT),
    ])
