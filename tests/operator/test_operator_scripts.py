"""The rendered redis.conf, start.sh and ping.sh run for real: a Redis Stack process from the pod's own start script.

Only what a laptop cannot have is substituted: the pod's directories (/data, /conf), the port, and the image's
binary and module paths. Everything else (password from the environment, AOF, eviction policy, modules, the probe's
authentication) is exactly what the pod runs.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import redis

from llmgw_operator.builders import Gateway, build_all
from llmgw_sidecar.devredis import free_port, stack_paths
from tests.redis_servers import wait_started

pytestmark = pytest.mark.timeout(60)


def localise(text: str, tmp: Path, port: int) -> str:
    bin_dir, lib_dir = stack_paths()
    return (text.replace("/opt/redis-stack/bin", str(bin_dir)).replace("/opt/redis-stack/lib", str(lib_dir))
            .replace("/data", str(tmp / "data")).replace("/conf", str(tmp / "conf"))
            .replace("port 6379", f"port {port}").replace("-p 6379", f"-p {port}")
            + ("\nbind 127.0.0.1\n" if text.startswith("dir ") else ""))


def test_standalone_pod_scripts_start_an_authenticated_persistent_redis(tmp_path: Path) -> None:
    gw = Gateway.from_spec("gw", "ns", {"models": [{"name": "m", "provider": "mock"}],
                                        "redis": {"resources": {"limits": {"memory": "256Mi"}}}})
    cm = next(o for o in build_all(gw, "unused") if o["metadata"]["name"] == "gw-redis-config")
    port = free_port()
    (tmp_path / "conf").mkdir()
    (tmp_path / "data").mkdir()
    for key, text in cm["data"].items():
        (tmp_path / "conf" / key).write_text(localise(text, tmp_path, port))
    env = {**os.environ, "REDIS_PASSWORD": "pod-secret", "POD_NAME": "gw-redis-0",
           "POD_FQDN": "gw-redis-0.gw-redis-headless.ns.svc.cluster.local"}
    log = open(tmp_path / "redis.log", "wb")
    proc = subprocess.Popen(["sh", str(tmp_path / "conf" / "start.sh")], env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    log.close()
    c = redis.Redis(port=port, password="pod-secret", decode_responses=True)
    try:
        wait_started(c, proc, tmp_path / "redis.log")
        assert c.config_get("appendonly") == {"appendonly": "yes"}
        assert c.config_get("maxmemory-policy")["maxmemory-policy"] == "volatile-lru"
        assert int(c.config_get("maxmemory")["maxmemory"]) == int(256 * 1024**2 * 0.8)
        assert {m["name"] for m in c.module_list()} >= {"search", "ReJSON"}
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(port=port, password="wrong").ping()
        # The password reached the runtime config in the data volume, never the ConfigMap.
        assert "pod-secret" not in "".join(cm["data"].values())
        probe = tmp_path / "conf" / "ping.sh"
        ok = subprocess.run(["sh", str(probe)], env=env, capture_output=True, text=True, timeout=10, check=False)
        assert ok.returncode == 0, ok.stdout + ok.stderr
        bad = subprocess.run(["sh", str(probe)], env={**env, "REDIS_PASSWORD": "wrong"}, capture_output=True,
                             text=True, timeout=10, check=False)
        assert bad.returncode == 1
    finally:
        c.close()
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)


def start_pod(cm_data: dict[str, str], tmp: Path, port: int, env: dict[str, str]) -> subprocess.Popen[bytes]:
    (tmp / "conf").mkdir(parents=True)
    (tmp / "data").mkdir()
    bus = free_port()
    for key, text in cm_data.items():
        (tmp / "conf" / key).write_text(localise(text, tmp, port).replace("cluster-port 16379", f"cluster-port {bus}"))
    log = open(tmp / "redis.log", "wb")
    proc = subprocess.Popen(["sh", str(tmp / "conf" / "start.sh")], env={**os.environ, **env}, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    log.close()
    return proc


@pytest.mark.timeout(90)  # its own waits add up to 3 x 15 s + a 20 s reconcile: past those, its messages say why
def test_cluster_pod_scripts_plus_bootstrap_announce_hostnames(tmp_path: Path) -> None:
    from llmgw_operator.cluster_bootstrap import reconcile_cluster

    gw = Gateway.from_spec("gw", "ns", {"models": [{"name": "m", "provider": "mock"}],
                                        "redis": {"mode": "cluster", "shards": 3, "replicasPerShard": 0}})
    cm = next(o for o in build_all(gw, "unused") if o["metadata"]["name"] == "gw-redis-config")
    ports = [free_port() for _ in range(3)]
    # Each "pod" announces its own stable name (POD_FQDN, as the StatefulSet's env sets it).
    procs = [start_pod(cm["data"], tmp_path / f"pod{i}", p,
                       {"REDIS_PASSWORD": "pw", "POD_NAME": f"gw-redis-{i}", "POD_FQDN": f"gw-redis-{i}.example"})
             for i, p in enumerate(ports)]
    try:
        for p in ports:
            c = redis.Redis(port=p, password="pw")
            deadline = time.monotonic() + 15
            while True:
                try:
                    c.ping()
                    break
                except redis.ConnectionError:
                    assert time.monotonic() < deadline
                    time.sleep(0.05)
            c.close()
        report = reconcile_cluster(
            [f"localhost:{p}" for p in ports], 0,
            lambda host, port: redis.Redis(host=host, port=port, password="pw", decode_responses=True),
            password="pw", timeout_s=20)
        assert report.healthy, report
        c = redis.Redis(port=ports[0], password="pw", decode_responses=True)
        endpoints = {n["endpoint"] for shard in c.execute_command("CLUSTER", "SHARDS") for n in shard["nodes"]}
        c.close()
        # Clients are sent to the stable names the pods announce, never to IPs.
        assert endpoints == {"gw-redis-0.example", "gw-redis-1.example", "gw-redis-2.example"}
    finally:
        for proc in procs:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


def _wait_ping(host: str, port: int, password: str, timeout: float = 15) -> None:
    c = redis.Redis(host=host, port=port, password=password, socket_connect_timeout=0.5)
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                if c.ping():
                    return
            except redis.ConnectionError:
                pass
            assert time.monotonic() < deadline, f"{host}:{port} did not answer"
            time.sleep(0.05)
    finally:
        c.close()


@pytest.mark.timeout(200)  # its own waits add up to ~160 s: past those, its messages say why
def test_sentinel_pod_scripts_fail_over_and_the_old_master_rejoins_as_replica(tmp_path: Path) -> None:
    """Data pods and sentinels from the rendered scripts. Pods get distinct loopback IPs (127.0.0.2x data,
    127.0.0.1x sentinels) on the real ports, standing in for their DNS names."""
    from redis.sentinel import Sentinel

    # down-after 2 s, not 1 s: with 1 s a sentinel that had just switched to the promoted replica sometimes saw it
    # silent for 1 s and failed over back to the restarted old master (one run in six, logs read).
    gw = Gateway.from_spec("gw", "ns", {"models": [{"name": "m", "provider": "mock"}], "redis": {
        "mode": "sentinel", "replicas": 1,
        "sentinel": {"count": 3, "quorum": 2, "downAfterMilliseconds": 2000, "failoverTimeoutMilliseconds": 6000}}})
    data = next(o for o in build_all(gw, "unused") if o["metadata"]["name"] == "gw-redis-config")["data"]
    data_ips = {f"gw-redis-{i}.gw-redis-headless.ns.svc.cluster.local": f"127.0.0.2{i}" for i in range(2)}
    sent_ips = {f"gw-sentinel-{i}.gw-sentinel-headless.ns.svc.cluster.local": f"127.0.0.1{i}" for i in range(3)}
    bin_dir, lib_dir = stack_paths()

    def render(text: str, pod: Path) -> str:
        for name, ip in {**data_ips, **sent_ips}.items():
            text = text.replace(name, ip)
        text = (text.replace("/opt/redis-stack/bin", str(bin_dir)).replace("/opt/redis-stack/lib", str(lib_dir))
                .replace("/data", str(pod / "data")).replace("/conf", str(pod / "conf")))
        # Each pod listens on its own address (in a pod, the pod IP is the only one there is).
        return text.replace('exec redis-server "$conf"', 'echo "bind $POD_FQDN" >> "$conf"\nexec redis-server "$conf"')

    procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(name: str, ip: str, script: str) -> None:
        pod = tmp_path / name
        for d in ("conf", "data"):
            (pod / d).mkdir(parents=True, exist_ok=True)
        for key, text in data.items():
            (pod / "conf" / key).write_text(render(text, pod))
        log = open(pod / "log", "ab")
        procs[name] = subprocess.Popen(["sh", str(pod / "conf" / script)], stdout=log, stderr=subprocess.STDOUT,
                                       env={**os.environ, "REDIS_PASSWORD": "pw", "POD_NAME": name, "POD_FQDN": ip},
                                       cwd=pod / "data", start_new_session=True)
        log.close()

    def stop(name: str) -> None:
        if procs[name].poll() is None:
            os.killpg(procs[name].pid, signal.SIGKILL)
            procs[name].wait(5)

    try:
        start("redis-0", "127.0.0.20", "start.sh")
        _wait_ping("127.0.0.20", 6379, "pw")
        start("redis-1", "127.0.0.21", "start.sh")
        # Replica synced before the sentinels start: their first INFO of the master lists it (otherwise they learn
        # of it at the next 10 s INFO refresh, which only makes the test slower).
        replica = redis.Redis(host="127.0.0.21", port=6379, password="pw", decode_responses=True)
        deadline = time.monotonic() + 15
        while True:
            try:
                if replica.info("replication").get("master_link_status") == "up":
                    break
            except redis.ConnectionError:
                pass
            assert time.monotonic() < deadline, "replica did not sync"
            time.sleep(0.05)
        for i in range(3):
            start(f"sentinel-{i}", f"127.0.0.1{i}", "sentinel-start.sh")
        for i in range(3):
            _wait_ping(f"127.0.0.1{i}", 26379, "pw")
        sentinel = Sentinel([(f"127.0.0.1{i}", 26379) for i in range(3)], sentinel_kwargs={"password": "pw"},
                            password="pw", socket_timeout=1)

        def master() -> tuple[str, int] | None:
            try:
                return sentinel.discover_master("llmgw")
            except redis.RedisError:
                return None

        deadline = time.monotonic() + 15
        while master() != ("127.0.0.20", 6379):  # first start: no sentinel knew a master, so pod 0 became it
            assert time.monotonic() < deadline, f"master is {master()}"
            time.sleep(0.05)
        m = sentinel.master_for("llmgw")
        m.set("k", "v")
        deadline = time.monotonic() + 15
        while replica.info("replication").get("master_link_status") != "up" or replica.get("k") != "v":
            assert time.monotonic() < deadline, "replica did not sync"
            time.sleep(0.05)

        # Sentinels learn about replicas from the master's INFO (every 10 s): a failover needs a known replica.
        deadline = time.monotonic() + 20
        for i in range(3):
            s = redis.Redis(host=f"127.0.0.1{i}", port=26379, password="pw", decode_responses=True)
            while not s.sentinel_slaves("llmgw"):
                assert time.monotonic() < deadline, "sentinels never learned about the replica"
                time.sleep(0.1)
            assert s.sentinel_slaves("llmgw")[0]["ip"] == "127.0.0.21", "the replica announces its stable name"
            s.close()
        stop("redis-0")  # the master's pod dies
        deadline = time.monotonic() + 20
        while master() != ("127.0.0.21", 6379):
            assert time.monotonic() < deadline, f"no failover, master is {master()}"
            time.sleep(0.1)
        start("redis-0", "127.0.0.20", "start.sh")  # the pod comes back: it must follow, not claim, the master
        old = redis.Redis(host="127.0.0.20", port=6379, password="pw", decode_responses=True)
        deadline = time.monotonic() + 15
        while True:
            try:
                info = old.info("replication")
                if info.get("role") == "slave" and info.get("master_link_status") == "up":
                    break
            except redis.ConnectionError:
                pass
            assert time.monotonic() < deadline, "the old master did not rejoin as a replica"
            time.sleep(0.05)
        assert info["master_host"] == "127.0.0.21" and old.get("k") == "v"
        old.close()
        replica.close()
    finally:
        for name in list(procs):
            stop(name)
