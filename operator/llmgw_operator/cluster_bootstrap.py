"""Bootstrap and heal a Redis Cluster: pure logic over redis-py clients (no Kubernetes), so it runs against local
processes in tests exactly as against pods.

Members are given by stable DNS name and port (pod ordinal order). Ordinal i belongs to shard i // (1 + replicas).
Each pass, idempotently:
  1. connect to every member (all must answer; otherwise nothing is changed and the pass reports "pending"),
  2. fresh cluster only: distinct config epochs,
  3. CLUSTER MEET members that others do not know, or know under a stale address: the DNS name is resolved NOW, so
     a pod that came back with a new IP is met at its new IP (never at an IP remembered from before),
  4. CLUSTER FORGET ghosts (node ids no member has any more: a pod restarted with an empty disk gets a new id),
     except a slot owner whose replica is about to take over (we wait for that failover instead),
  5. per shard: pick the master (the member owning slots), make the other members of the shard its replicas,
  6. assign unowned slots (all of them on a fresh cluster; a lost shard's slots otherwise),
  7. rebalance when a shard owns far less than its share (shards were added): MIGRATE keys slot by slot with
     SETSLOT IMPORTING/MIGRATING/NODE,
  8. report health: every member sees cluster_state ok, all slots owned, one master + replicas per shard.
A second pass over a healthy cluster changes nothing (`Report.actions` is empty).
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import redis

from .cluster_view import SLOTS, Member, NodeLine, even_split, my_epoch, parse_nodes, slot_ranges, text

log = logging.getLogger(__name__)
MOVE_BATCH = 512
MIGRATE_KEYS = 100


@dataclass
class Report:
    healthy: bool
    state: str
    actions: list[str] = field(default_factory=list)


class ClusterPending(Exception):
    """The cluster cannot be acted on yet (a member is down, a failover is under way); try again on the next pass."""


def resolve_host(host: str) -> str:
    return socket.gethostbyname(host)


class ClusterReconciler:
    def __init__(
        self,
        addrs: list[str],
        replicas_per_shard: int,
        connect: Callable[[str, int], redis.Redis],
        *,
        resolve: Callable[[str], str] = resolve_host,
        password: str | None = None,
        timeout_s: float = 20.0,
        poll_s: float = 0.05,
    ) -> None:
        self.addrs = addrs
        self.r = replicas_per_shard
        self.connect = connect
        self.resolve = resolve
        self.password = password
        self.timeout_s = timeout_s
        self.poll_s = poll_s
        self.actions: list[str] = []
        self.members: list[Member] = []

    # -- plumbing -------------------------------------------------------------------------------------------------
    def _cmd(self, m: Member, *args: Any) -> Any:
        return m.client.execute_command(*args)

    def _act(self, m: Member, *args: Any) -> Any:
        self.actions.append(f"{m.addr}: {' '.join(map(str, args))}")
        return self._cmd(m, *args)

    def _refresh(self) -> None:
        for m in self.members:
            m.view = parse_nodes(text(self._cmd(m, "CLUSTER", "NODES")))

    def _wait(self, what: str, cond: Callable[[], bool]) -> None:
        deadline = time.monotonic() + self.timeout_s
        while True:
            self._refresh()
            if cond():
                return
            if time.monotonic() > deadline:
                raise ClusterPending(f"timed out waiting for {what}")
            time.sleep(self.poll_s)

    def _connect_all(self) -> None:
        down = []
        for i, addr in enumerate(self.addrs):
            host, _, port = addr.rpartition(":")
            try:
                client = self.connect(host, int(port))
                myid = text(client.execute_command("CLUSTER", "MYID"))
            except (redis.RedisError, OSError) as e:
                down.append(f"{addr} ({type(e).__name__})")
                continue
            self.members.append(Member(i, host, int(port), i // (1 + self.r), client, myid))
        if down:
            raise ClusterPending("members not reachable: " + ", ".join(down))
        self._refresh()

    # -- steps ----------------------------------------------------------------------------------------------------
    def _fresh_epochs(self) -> None:
        fresh = all(len(m.view) == 1 and not m.me.slots for m in self.members)
        if not fresh:
            return
        for m in self.members:
            if my_epoch(self._cmd(m, "CLUSTER", "INFO")) == 0:
                self._act(m, "CLUSTER", "SET-CONFIG-EPOCH", m.ordinal + 1)

    def _meet(self) -> None:
        ids = {m.id for m in self.members}
        anchor = max(self.members, key=lambda m: (sum(n.slot_count for n in m.view.values() if n.id in ids),
                                                  len(ids & m.view.keys()), -m.ordinal))
        ip_of = {m.id: self.resolve(m.host) for m in self.members}
        for m in self.members:
            if m is anchor:
                continue
            seen = anchor.view.get(m.id)
            back = m.view.get(anchor.id)
            stale = seen is None or seen.ip != ip_of[m.id] or seen.failed or not seen.connected
            stale_back = back is None or back.ip != ip_of[anchor.id] or back.failed
            if stale:
                # The bus port as the node itself reports it (it need not be port + 10000).
                self._act(anchor, "CLUSTER", "MEET", ip_of[m.id], m.port, m.me.bus_port)
            if stale_back and not stale:
                self._act(m, "CLUSTER", "MEET", ip_of[anchor.id], anchor.port, anchor.me.bus_port)

        def everyone_knows_everyone() -> bool:
            for m in self.members:
                for other in ids:
                    n = m.view.get(other)
                    if n is None or "handshake" in n.flags or n.failed:
                        return False
            return True

        self._wait("all members to know each other", everyone_knows_everyone)

    def _forget_ghosts(self) -> None:
        ids = {m.id for m in self.members}
        ghosts: dict[str, NodeLine] = {}
        for m in self.members:
            for n in m.view.values():
                if n.id not in ids and "handshake" not in n.flags:
                    ghosts[n.id] = n
        for gid, g in ghosts.items():
            if g.is_master and g.slots:
                replicas = [m for m in self.members if m.me.master_id == gid]
                if replicas:
                    # The ghost's id belongs to no pod any more: it will never come back, so promote its replica
                    # now instead of waiting for the failure detector (FORCE: no handshake with the dead master).
                    heir = replicas[0]
                    self._act(heir, "CLUSTER", "FAILOVER", "FORCE")

                    def took_over(h: Member = heir) -> bool:
                        return h.me.is_master and bool(h.me.slots)

                    self._wait(f"{heir.addr} to take over from lost master {gid[:8]}", took_over)
            for m in self.members:
                if gid in m.view:
                    try:
                        self._act(m, "CLUSTER", "FORGET", gid)
                    except redis.ResponseError as e:
                        raise ClusterPending(f"cannot forget {gid[:8]} on {m.addr} yet: {e}") from None
        if ghosts:
            self._refresh()

    def _shard_masters(self) -> dict[int, Member]:
        masters: dict[int, Member] = {}
        for shard in sorted({m.shard for m in self.members}):
            group = [m for m in self.members if m.shard == shard]
            owners = [m for m in group if m.me.is_master and m.me.slots]
            if owners:
                masters[shard] = max(owners, key=lambda m: m.me.slot_count)
            else:
                plain = [m for m in group if m.me.is_master]
                masters[shard] = plain[0] if plain else group[0]
        return masters

    def _replicate(self, masters: dict[int, Member]) -> None:
        todo = []
        for m in self.members:
            master = masters[m.shard]
            if m is master or m.me.master_id == master.id:
                continue
            if m.me.is_master and m.me.slots:
                continue  # owns slots in the wrong shard (manual change?): never demote a slot owner blindly
            todo.append((m, master))
        if not todo:
            return
        # A node refuses to follow what it still believes is a replica (gossip lags a failover): wait until it agrees.
        self._wait("replicas-to-be to see their master as master",
                   lambda: all((n := m.view.get(master.id)) is not None and n.is_master for m, master in todo))
        for m, master in todo:
            try:
                self._act(m, "CLUSTER", "REPLICATE", master.id)
            except redis.ResponseError as e:
                raise ClusterPending(f"{m.addr} cannot replicate {master.addr} yet: {e}") from None
        changed = True
        if changed:
            self._wait("replicas to attach",
                       lambda: all(m is masters[m.shard] or m.me.master_id == masters[m.shard].id
                                   or (m.me.is_master and m.me.slots) for m in self.members))

    def _owners(self) -> dict[int, str]:
        """slot -> owner id, merged from every member's view (a member that owns a slot is authoritative)."""
        owner: dict[int, str] = {}
        for m in self.members:
            for n in m.view.values():
                if n.is_master and not n.failed:
                    for a, b in n.slots:
                        for s in range(a, b + 1):
                            owner.setdefault(s, n.id)
        return owner

    def _assign_slots(self, masters: dict[int, Member]) -> None:
        owner = self._owners()
        unowned = [s for s in range(SLOTS) if s not in owner]
        if not unowned:
            return
        ordered = [masters[s] for s in sorted(masters)]
        if len(unowned) == SLOTS:
            for m, (a, b) in zip(ordered, even_split(len(ordered)), strict=True):
                self._act(m, "CLUSTER", "ADDSLOTSRANGE", a, b)
        else:
            # A shard lost its master and every replica: its slots go to a slot-less master (the restarted one).
            empty = [m for m in ordered if not m.me.slots] or [min(ordered, key=lambda m: m.me.slot_count)]
            target = empty[0]
            for a, b in slot_ranges(unowned):
                self._act(target, "CLUSTER", "ADDSLOTSRANGE", a, b)
        self._wait("every member to see every slot owned", self._all_see_all_slots)

    def _rebalance(self, masters: dict[int, Member]) -> None:
        ordered = [masters[s] for s in sorted(masters)]
        share = SLOTS // len(ordered)
        # Only act when some shard has less than half its share: a new shard. Small drifts are left alone, so
        # passes stay idempotent and never shuffle data back and forth.
        if min(m.me.slot_count for m in ordered) >= share // 2:
            return
        # A member that just joined answers CLUSTERDOWN (and refuses MIGRATE's RESTORE) until it has the slot map:
        # cluster_state:ok is not enough (it once reported ok and then refused "Hash slot not served"), so each
        # member's own view must also cover every slot.
        self._wait("every member to see cluster_state ok and every slot owned before moving slots",
                   lambda: self._all_ok() and self._all_see_all_slots())
        targets = even_split(len(ordered))
        want = {m.id: b - a + 1 for m, (a, b) in zip(ordered, targets, strict=True)}
        by_id = {m.id: m for m in ordered}
        surplus: list[tuple[Member, list[int]]] = []
        for m in ordered:
            mine = sorted(s for a, b in m.me.slots for s in range(a, b + 1))
            extra = len(mine) - want[m.id]
            if extra > 0:
                surplus.append((m, mine[-extra:]))
        donors = [(src, s) for src, slots in surplus for s in slots]
        moves: dict[tuple[str, str], list[int]] = {}
        for dst_id, need in want.items():
            have = by_id[dst_id].me.slot_count
            while have < need and donors:
                src, slot = donors.pop()
                moves.setdefault((src.id, dst_id), []).append(slot)
                have += 1
        for (src_id, dst_id), slots in moves.items():
            for i in range(0, len(slots), MOVE_BATCH):
                self._move_slots(by_id[src_id], by_id[dst_id], slots[i:i + MOVE_BATCH])
        self._wait("slot moves to propagate",
                   lambda: all(masters[s].me.slot_count == want[masters[s].id] for s in masters))

    def _pipe(self, m: Member, commands: list[tuple[Any, ...]]) -> list[Any]:
        p = m.client.pipeline(transaction=False)
        for c in commands:
            p.execute_command(*c)
        return p.execute()

    def _move_slots(self, src: Member, dst: Member, slots: list[int]) -> None:
        """Move slots src -> dst the way redis-cli does (IMPORTING on dst, MIGRATING on src, MIGRATE the keys, then
        NODE on dst, src and the other masters), pipelined per batch: thousands of slots move in a few round trips."""
        self.actions.append(f"move {len(slots)} slots {src.addr} -> {dst.addr} ({slot_ranges(slots)[0][0]}..)")
        self._pipe(dst, [("CLUSTER", "SETSLOT", s, "IMPORTING", src.id) for s in slots])
        self._pipe(src, [("CLUSTER", "SETSLOT", s, "MIGRATING", dst.id) for s in slots])
        dst_ip = self.resolve(dst.host)
        auth = ["AUTH", self.password] if self.password else []
        pending = list(slots)
        while pending:
            keys_per_slot = self._pipe(src, [("CLUSTER", "GETKEYSINSLOT", s, MIGRATE_KEYS) for s in pending])
            with_keys = [(s, k) for s, k in zip(pending, keys_per_slot, strict=True) if k]
            for _s, keys in with_keys:
                self._act(src, "MIGRATE", dst_ip, dst.port, "", 0, 5000, "REPLACE", *auth, "KEYS", *keys)
            pending = [s for s, _k in with_keys]
        # The destination first, then the source (redis-cli's order: never a window with two owners).
        self._pipe(dst, [("CLUSTER", "SETSLOT", s, "NODE", dst.id) for s in slots])
        self._pipe(src, [("CLUSTER", "SETSLOT", s, "NODE", dst.id) for s in slots])
        for m in self.members:
            if m.me.is_master and m not in (src, dst):
                self._pipe(m, [("CLUSTER", "SETSLOT", s, "NODE", dst.id) for s in slots])

    def _all_see_all_slots(self) -> bool:
        """Each member's OWN view covers all slots (cluster_state:ok alone is not enough: with
        cluster-require-full-coverage no, a node reports ok while it still misses another shard's slots)."""
        return all(sum(n.slot_count for n in m.view.values() if n.is_master and not n.failed) == SLOTS
                   for m in self.members)

    def _views_agree(self) -> bool:
        """Every member sees every other member in the role that member reports for itself."""
        for m in self.members:
            for x in self.members:
                seen = m.view.get(x.id)
                if seen is None or seen.master_id != x.me.master_id or seen.is_master != x.me.is_master:
                    return False
        return True

    def _all_ok(self) -> bool:
        return all("cluster_state:ok" in text(self._cmd(m, "CLUSTER", "INFO")) for m in self.members)

    def _health(self, masters: dict[int, Member]) -> Report:
        problems = []
        for m in self.members:
            info = text(self._cmd(m, "CLUSTER", "INFO"))
            if "cluster_state:ok" not in info:
                problems.append(f"{m.addr} cluster_state not ok")
        if len(self._owners()) != SLOTS:
            problems.append(f"{SLOTS - len(self._owners())} slots unowned")
        elif not self._all_see_all_slots():
            problems.append("slot map still propagating")
        if not problems and not self._views_agree():
            problems.append("roles still propagating")
        for shard, master in masters.items():
            reps = [m for m in self.members if m.shard == shard and m.me.master_id == master.id]
            if len(reps) != self.r:
                problems.append(f"shard {shard}: {len(reps)}/{self.r} replicas")
        n = len(masters)
        if problems:
            return Report(False, "; ".join(problems), self.actions)
        return Report(True, f"ok: {n} shards x {1 + self.r} nodes, all {SLOTS} slots served", self.actions)

    def run(self) -> Report:
        try:
            self._connect_all()
            self._fresh_epochs()
            self._meet()
            self._forget_ghosts()
            self._wait("own view", lambda: True)
            masters = self._shard_masters()
            self._assign_slots(masters)
            masters = self._shard_masters()
            self._replicate(masters)
            self._rebalance(masters)
            deadline = time.monotonic() + self.timeout_s
            while True:
                self._refresh()
                report = self._health(self._shard_masters())
                if report.healthy or time.monotonic() > deadline:
                    return report
                time.sleep(self.poll_s)
        except ClusterPending as e:
            return Report(False, f"pending: {e}", self.actions)
        except (redis.RedisError, OSError) as e:
            # A member died mid-pass or refused a step: report it; the next pass starts over from what it sees.
            return Report(False, f"error: {type(e).__name__}: {e}", self.actions)
        finally:
            for m in self.members:
                m.client.close()


def reconcile_cluster(addrs: list[str], replicas_per_shard: int, connect: Callable[[str, int], redis.Redis],
                      **kw: Any) -> Report:
    """One bootstrap/heal pass over the members `addrs` (host:port in pod ordinal order)."""
    return ClusterReconciler(addrs, replicas_per_shard, connect, **kw).run()
