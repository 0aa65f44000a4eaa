"""Real Redis Stack topologies on loopback for the tests: standalone, sentinel (1 master, 1 replica, 3 sentinels) and
an OSS cluster (3 masters, optional replicas). Start-up is kept fast: sentinels are pre-seeded with each other's ids,
replicas sync diskless with no delay, and the cluster is created with redis-cli in one go."""

from __future__ import annotations

import secrets
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import redis

from llmgw_sidecar.devredis import RedisProcess, free_port, server_args, stack_paths, standalone

__all__ = ["ClusterTopology", "SentinelTopology", "free_port", "standalone", "start_cluster", "start_sentinel"]


@dataclass
class SentinelTopology:
    master: RedisProcess
    replicas: list[RedisProcess]
    sentinels: list[RedisProcess]
    master_name: str = "mymaster"

    @property
    def sentinel_addrs(self) -> list[str]:
        return [s.addr for s in self.sentinels]

    def all(self) -> list[RedisProcess]:
        return [self.master, *self.replicas, *self.sentinels]

    def stop(self) -> None:
        for p in self.all():
            p.kill()

    def current_master_port(self) -> int:
        c = redis.Redis(port=self.sentinels[0].port, decode_responses=True)
        _host, port = c.sentinel_get_master_addr_by_name(self.master_name)
        c.close()
        return int(port)


def start_sentinel(workdir: Path, replicas: int = 1, sentinels: int = 3) -> SentinelTopology:
    fast = ["--repl-diskless-sync", "yes", "--repl-diskless-sync-delay", "0"]
    mport = free_port()
    master = RedisProcess(mport, workdir / "master", server_args(mport, extra=fast)).start(wait=False)
    reps = []
    for i in range(replicas):
        p = free_port()
        reps.append(
            RedisProcess(p, workdir / f"replica{i}", server_args(p, extra=[*fast, "--replicaof", "127.0.0.1", str(mport)]))
        )
    sent = sentinel_set(workdir, sentinels, mport, [r.port for r in reps], lambda port: [f"port {port}"])
    for p in [*reps, *sent]:
        p.start(wait=False)
    from llmgw_sidecar.devredis import wait_port

    for p in [master, *reps, *sent]:
        wait_port(p.port, proc=p.proc)
    topo = SentinelTopology(master, reps, sent)
    # Wait until every replica has finished its first sync, so writes are replicated from the start.
    deadline = time.monotonic() + 10
    for r in reps:
        c = redis.Redis(port=r.port, decode_responses=True)
        while c.info("replication").get("master_link_status") != "up":
            if time.monotonic() > deadline:
                raise TimeoutError("replica did not sync")
            time.sleep(0.02)
        c.close()
    return topo


def sentinel_set(workdir: Path, count: int, master_port: int, replica_ports: list[int],
                 listen: Callable[[int], list[str]], extra: list[str] | None = None) -> list[RedisProcess]:
    """`count` sentinels (not started) monitoring `mymaster`, pre-seeded with each other's ids and the replicas so the
    set is complete from the first second. `listen(port)` gives the port lines (plain or TLS-only)."""
    ports = [free_port() for _ in range(count)]
    ids = [secrets.token_hex(20) for _ in ports]
    out = []
    for i, (port, myid) in enumerate(zip(ports, ids, strict=True)):
        d = workdir / f"sentinel{i}"
        d.mkdir(parents=True, exist_ok=True)
        lines = [*listen(port), "bind 127.0.0.1", "protected-mode no", "daemonize no", f"sentinel myid {myid}",
                 f"sentinel monitor mymaster 127.0.0.1 {master_port} 2", *(extra or []),
                 "sentinel down-after-milliseconds mymaster 1000", "sentinel failover-timeout mymaster 3000",
                 "sentinel parallel-syncs mymaster 1"]
        lines += [f"sentinel known-replica mymaster 127.0.0.1 {r}" for r in replica_ports]
        lines += [f"sentinel known-sentinel mymaster 127.0.0.1 {op} {oid}"
                  for op, oid in zip(ports, ids, strict=True) if op != port]
        conf = d / "sentinel.conf"
        conf.write_text("\n".join(lines) + "\n")
        out.append(RedisProcess(port, d, [str(conf)], binary="redis-sentinel"))
    return out


@dataclass
class ClusterTopology:
    nodes: list[RedisProcess] = field(default_factory=list)

    @property
    def startup_nodes(self) -> list[str]:
        return [n.addr for n in self.nodes]

    @property
    def url(self) -> str:
        return f"redis://{self.nodes[0].addr}/0?cluster=true"

    def stop(self) -> None:
        for n in self.nodes:
            n.kill()


def cluster_node(workdir: Path, port: int | None = None) -> RedisProcess:
    port = port or free_port()
    extra = [
        "--cluster-enabled", "yes",
        "--cluster-config-file", f"nodes-{port}.conf",
        "--cluster-node-timeout", "2000",
        "--cluster-port", str(free_port()),
        "--cluster-require-full-coverage", "no",
        "--repl-diskless-sync", "yes", "--repl-diskless-sync-delay", "0",
    ]
    return RedisProcess(port, workdir / f"node{port}", server_args(port, extra=extra))


def wait_cluster_ok(ports: list[int], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    for port in ports:
        c = redis.Redis(port=port, decode_responses=True)
        while True:
            info = c.cluster("INFO")
            if isinstance(info, dict) and info.get("cluster_state") == "ok":
                break
            if isinstance(info, str) and "cluster_state:ok" in info:
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"cluster node {port} not ok: {info}")
            time.sleep(0.05)
        c.close()


def start_cluster(workdir: Path, masters: int = 3, replicas_per_master: int = 0) -> ClusterTopology:
    nodes = [cluster_node(workdir) for _ in range(masters * (1 + replicas_per_master))]
    for n in nodes:
        n.start(wait=False)
    from llmgw_sidecar.devredis import wait_port

    for n in nodes:
        wait_port(n.port, proc=n.proc)
    bin_dir, _ = stack_paths()
    subprocess.run(
        [str(bin_dir / "redis-cli"), "--cluster", "create", *[n.addr for n in nodes],
         "--cluster-replicas", str(replicas_per_master), "--cluster-yes"],
        check=True, capture_output=True, timeout=60,
    )
    wait_cluster_ok([n.port for n in nodes])
    return ClusterTopology(nodes)


@dataclass
class TlsCerts:
    ca: str
    cert: str
    key: str


def make_certs(workdir: Path) -> TlsCerts:
    """A throwaway CA and a server certificate for 127.0.0.1/localhost (trustme)."""
    import trustme

    workdir.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    certs = TlsCerts(str(workdir / "ca.pem"), str(workdir / "server.pem"), str(workdir / "server.key"))
    ca.cert_pem.write_to_path(certs.ca)
    server.cert_chain_pems[0].write_to_path(certs.cert)
    server.private_key_pem.write_to_path(certs.key)
    return certs


def _tls_lines(port: int, certs: TlsCerts) -> list[str]:
    # TLS only (port 0), replication and sentinel-to-node links over TLS too: as the operator's pods run with tls on.
    return ["port 0", f"tls-port {port}", f"tls-cert-file {certs.cert}", f"tls-key-file {certs.key}",
            f"tls-ca-cert-file {certs.ca}", "tls-auth-clients no", "tls-replication yes"]


def wait_tls_ready(port: int, certs: TlsCerts, password: str | None, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        c = redis.Redis(port=port, ssl=True, ssl_ca_certs=certs.ca, password=password, socket_timeout=1,
                        socket_connect_timeout=1)
        try:
            if c.ping():
                return
        except (redis.ConnectionError, redis.TimeoutError, redis.ResponseError):
            if time.monotonic() > deadline:
                raise
        finally:
            c.close()
        time.sleep(0.05)


def start_tls_sentinel(workdir: Path, certs: TlsCerts, password: str, sentinels: int = 3) -> SentinelTopology:
    """Master, one replica and `sentinels` sentinels, every one of them on a TLS-only port, all with `password`."""
    auth = ["--requirepass", password, "--masterauth", password]
    mport, rport = free_port(), free_port()

    def node_args(port: int, extra: list[str]) -> list[str]:
        tls = [a for line in _tls_lines(port, certs) for a in (f"--{line.split(' ', 1)[0]}", line.split(" ", 1)[1])]
        return server_args(port, modules=False, extra=[*tls, *auth, "--repl-diskless-sync", "yes",
                                                        "--repl-diskless-sync-delay", "0", *extra])

    master = RedisProcess(mport, workdir / "master", node_args(mport, [])).start(wait=False)
    replica = RedisProcess(rport, workdir / "replica", node_args(rport, ["--replicaof", "127.0.0.1", str(mport)]))
    replica.start(wait=False)
    sent = sentinel_set(workdir, sentinels, mport, [rport], lambda port: _tls_lines(port, certs),
                        [f"requirepass {password}", f"sentinel auth-pass mymaster {password}"])
    for s in sent:
        s.start(wait=False)
    topo = SentinelTopology(master, [replica], sent)
    try:
        for p in topo.all():
            wait_tls_ready(p.port, certs, password)
    except BaseException:
        topo.stop()
        raise
    return topo


def wait_started(c: redis.Redis, proc: subprocess.Popen[bytes], log: Path, timeout: float = 15.0) -> None:
    """Wait until a Redis started by a (pod) script answers PING; fail with its log if the script exits first."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            c.ping()
            return
        except redis.ConnectionError:
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "redis did not start"
            time.sleep(0.05)
