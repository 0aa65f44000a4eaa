"""Cluster bootstrap and heal against real cluster-enabled Redis Stack processes that start EMPTY (no redis-cli)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from redis.backoff import NoBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.retry import Retry

from llmgw_operator.cluster_bootstrap import reconcile_cluster
from llmgw_operator.cluster_view import SLOTS, parse_nodes
from tests.redis_servers import RedisProcess, cluster_node

pytestmark = pytest.mark.timeout(90)  # > 20 s first reconcile + HEAL_BUDGET_S + process start-up


# Test DNS: a member's stable name -> its current IP. Pods that come back get a new IP (127.0.0.2 here), exactly the
# case where an IP remembered from before would be stale.
DNS: dict[str, str] = {}


PASSWORDS: dict[int, str] = {}  # port -> requirepass of that node


def connect(host: str, port: int) -> redis.Redis:
    # No client-side retries: the reconciler decides what an unreachable member means.
    return redis.Redis(host=DNS.get(host, host), port=port, decode_responses=True, socket_timeout=5,
                       socket_connect_timeout=2, retry=Retry(NoBackoff(), 0), password=PASSWORDS.get(port))


def start_nodes(workdir: Path, n: int, password: str | None = None) -> list[RedisProcess]:
    nodes = [cluster_node(workdir) for _ in range(n)]
    for node in nodes:
        # The pods' node timeout (5 s, builders.cluster): with the fixtures' 2 s a loaded CI machine flags live nodes
        # "fail?" now and then, and a heal that waits for a clean view of every member never sees one.
        node.args[node.args.index("--cluster-node-timeout") + 1] = "5000"
    for node in nodes:
        if password:
            # As the pods run: clients and replicas (masterauth) authenticate.
            node.args += ["--requirepass", password, "--masterauth", password]
            PASSWORDS[node.port] = password
        node.start(wait=False)
        DNS[name(node)] = "127.0.0.1"
    for node in nodes:
        wait_up(node)
    return nodes


def wait_up(node: RedisProcess) -> None:
    deadline = time.monotonic() + 10
    while True:
        try:
            if connect(name(node), node.port).ping():
                return
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def name(node: RedisProcess) -> str:
    return f"node-{node.port}.redis-headless"


def addrs(nodes: list[RedisProcess]) -> list[str]:
    return [f"{name(n)}:{n.port}" for n in nodes]


def reconcile(nodes: list[RedisProcess], replicas: int, timeout_s: float = 20):
    return reconcile_cluster(addrs(nodes), replicas, connect, resolve=lambda h: DNS[h], timeout_s=timeout_s,
                             password=PASSWORDS.get(nodes[0].port))


def restart_empty(node: RedisProcess, new_ip: str = "127.0.0.2") -> None:
    """A pod rescheduled without its volume: same name, new IP, no nodes.conf, no data, so a new node id."""
    node.kill()
    for f in node.workdir.glob("nodes-*.conf"):
        f.unlink()
    i = node.args.index("--bind")
    node.args[i + 1] = new_ip
    node.start(wait=False)
    DNS[name(node)] = new_ip
    wait_up(node)


# The whole heal must fit in the module's pytest timeout together with the test's own set-up and first reconcile (up
# to 20 s), so a slow heal ends in this message rather than a thread dump.
HEAL_BUDGET_S = 50.0


def heal(nodes: list[RedisProcess], replicas: int, budget_s: float = HEAL_BUDGET_S):
    deadline = time.monotonic() + budget_s
    report, passes = None, 0
    while (left := deadline - time.monotonic()) > 1:
        passes += 1
        report = reconcile(nodes, replicas, timeout_s=min(15.0, left))
        if report.healthy:
            return report
        time.sleep(0.5)  # the operator's timer interval, shortened
    raise AssertionError(f"not healed after {passes} passes in {budget_s:.0f} s: {report}")


def myid(node: RedisProcess) -> str:
    c = connect(name(node), node.port)
    try:
        return c.execute_command("CLUSTER", "MYID")
    finally:
        c.close()


def cluster_client(nodes: list[RedisProcess]) -> RedisCluster:
    return RedisCluster(startup_nodes=[ClusterNode(DNS[name(n)], n.port) for n in nodes], decode_responses=True,
                        password=PASSWORDS.get(nodes[0].port))


def views(nodes: list[RedisProcess], i: int = 0):
    """CLUSTER NODES as node i sees it (a node's view of itself is authoritative; others learn by gossip)."""
    c = connect(name(nodes[i]), nodes[i].port)
    try:
        return parse_nodes(c.execute_command("CLUSTER", "NODES"))
    finally:
        c.close()


@pytest.fixture
def six(tmp_path: Path) -> Iterator[list[RedisProcess]]:
    nodes = start_nodes(tmp_path, 6)
    yield nodes
    for n in nodes:
        n.kill()


def test_parse_nodes_reads_slots_flags_and_hostnames() -> None:
    text = (
        "aaa 10.0.0.1:6379@16379,gw-redis-0.gw-redis-headless myself,master - 0 0 1 connected 0-5460 7000\n"
        "bbb 10.0.0.2:6379@16379,gw-redis-1.gw-redis-headless slave aaa 0 1 1 connected\n"
        "ccc :0@0 master,fail,noaddr - 1 1 2 disconnected [5461->-aaa]\n"
    )
    nodes = parse_nodes(text)
    assert nodes["aaa"].slots == ((0, 5460), (7000, 7000)) and nodes["aaa"].slot_count == 5462
    assert nodes["bbb"].master_id == "aaa" and not nodes["bbb"].is_master
    assert nodes["ccc"].failed and nodes["ccc"].importing_or_migrating and not nodes["ccc"].connected


def test_bootstrap_from_empty_nodes_then_rerun_changes_nothing(six: list[RedisProcess]) -> None:
    report = reconcile(six, 1, timeout_s=20)
    assert report.healthy, report
    assert any("ADDSLOTSRANGE" in a for a in report.actions)
    view = views(six)
    masters = [n for n in view.values() if n.is_master]
    assert len(masters) == 3 and sum(m.slot_count for m in masters) == SLOTS
    # Ordinals 0,2,4 are the shard masters; 1,3,5 their replicas (shard = ordinal // 2).
    by_port = {n.port: n for n in view.values()}
    for master, replica in ((six[0], six[1]), (six[2], six[3]), (six[4], six[5])):
        assert by_port[replica.port].master_id == by_port[master.port].id
    rc = cluster_client(six)
    for i in range(50):
        rc.set(f"k{i}", i)
    assert rc.get("k7") == "7"
    rc.close()

    again = reconcile(six, 1, timeout_s=20)
    assert again.healthy and again.actions == []


def test_replica_restarted_empty_is_healed(six: list[RedisProcess]) -> None:
    assert reconcile(six, 1, timeout_s=20).healthy
    old_id = myid(six[3])
    restart_empty(six[3], new_ip="127.0.0.1")  # same IP too: must work either way
    report = heal(six, 1)
    new_id = myid(six[3])
    assert new_id != old_id
    assert all(old_id not in views(six, i) for i in range(6)), "the ghost of the old node must be forgotten"
    view = views(six, 3)
    assert view[new_id].master_id == view[myid(six[2])].id
    assert report.healthy


def test_master_restarted_empty_fails_over_and_rejoins_as_replica(six: list[RedisProcess]) -> None:
    assert reconcile(six, 1, timeout_s=20).healthy
    rc = cluster_client(six)
    for i in range(100):
        rc.set(f"key:{i}", i)
    rc.close()
    # Replication is asynchronous: let the replica catch up first, so the test measures healing, not a lag race.
    master, replica = connect(name(six[0]), six[0].port), connect(name(six[1]), six[1].port)
    target = master.info("replication")["master_repl_offset"]
    deadline = time.monotonic() + 5
    while replica.info("replication").get("slave_repl_offset", 0) < target and time.monotonic() < deadline:
        time.sleep(0.02)
    master.close()
    replica.close()
    restart_empty(six[0])  # shard 0's master loses its disk; its replica (ordinal 1) must take over
    heal(six, 1)
    view = views(six, 0)
    replica_id = myid(six[1])
    new0 = myid(six[0])
    assert view[replica_id].is_master and view[replica_id].slot_count > 0
    assert view[new0].master_id == replica_id
    rc = cluster_client(six)
    assert [rc.get(f"key:{i}") for i in range(100)] == [str(i) for i in range(100)], "no data lost on failover"
    rc.close()


def test_lost_shard_without_replica_gets_its_slots_back(tmp_path: Path) -> None:
    nodes = start_nodes(tmp_path, 3)
    try:
        assert reconcile(nodes, 0, timeout_s=20).healthy
        restart_empty(nodes[1])
        report = heal(nodes, 0)
        view = views(nodes)
        new1 = myid(nodes[1])
        assert view[new1].slot_count > 0 and report.healthy
        assert sum(n.slot_count for n in view.values() if n.is_master and not n.failed) == SLOTS
    finally:
        for n in nodes:
            n.kill()


@pytest.mark.parametrize("password", [None, "cluster-pw"], ids=["no-auth", "auth"])
def test_added_shard_gets_slots_and_keys_move(tmp_path: Path, password: str | None) -> None:
    nodes = start_nodes(tmp_path, 3, password)
    try:
        assert reconcile(nodes, 0, timeout_s=20).healthy
        rc = cluster_client(nodes)
        for i in range(300):
            rc.set(f"doc:{i}", i)
        rc.close()
        nodes += start_nodes(tmp_path, 1, password)  # MIGRATE must authenticate at the new node
        report = reconcile(nodes, 0, timeout_s=30)
        assert report.healthy, report
        assert any(a.split(": ", 1)[-1].startswith("MIGRATE") for a in report.actions), "keys of moved slots must be migrated"
        view = views(nodes)
        counts = sorted(n.slot_count for n in view.values() if n.is_master)
        assert counts == [4096, 4096, 4096, 4096]
        rc = cluster_client(nodes)
        assert [rc.get(f"doc:{i}") for i in range(300)] == [str(i) for i in range(300)]
        rc.close()
        assert reconcile(nodes, 0, timeout_s=20).actions == []
    finally:
        for n in nodes:
            n.kill()


def test_unreachable_member_means_pending_and_no_changes(tmp_path: Path) -> None:
    nodes = start_nodes(tmp_path, 3)
    try:
        nodes[2].kill()
        report = reconcile(nodes, 0, timeout_s=5)
        assert not report.healthy and report.state.startswith("pending") and report.actions == []
        assert "not reachable" in report.state
    finally:
        for n in nodes:
            n.kill()
