"""What one Redis Cluster member sees: CLUSTER NODES parsed into `NodeLine`s, a `Member` (its client and view), slot
arithmetic. Pure data and parsing; the actions that change a cluster are in cluster_bootstrap.py."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import redis

SLOTS = 16384
FAILED_FLAGS = frozenset({"fail", "noaddr", "handshake"})


@dataclass(frozen=True)
class NodeLine:
    """One line of CLUSTER NODES, as seen by some node."""

    id: str
    ip: str
    port: int
    bus_port: int
    flags: frozenset[str]
    master_id: str | None
    connected: bool
    slots: tuple[tuple[int, int], ...]
    importing_or_migrating: bool

    @property
    def is_master(self) -> bool:
        return "master" in self.flags

    @property
    def failed(self) -> bool:
        return bool(self.flags & FAILED_FLAGS) or "fail?" in self.flags

    @property
    def slot_count(self) -> int:
        return sum(b - a + 1 for a, b in self.slots)


def parse_nodes(text: str) -> dict[str, NodeLine]:
    """Parse CLUSTER NODES output (address field `ip:port@cport[,hostname]`)."""
    out: dict[str, NodeLine] = {}
    for line in text.strip().splitlines():
        parts = line.split()
        if len(parts) < 8:
            continue
        node_id, addr, flags, master = parts[0], parts[1], parts[2], parts[3]
        hostport, _, rest = addr.partition("@")
        ip, _, port = hostport.rpartition(":")
        bus = rest.split(",", 1)[0]
        slots: list[tuple[int, int]] = []
        moving = False
        for s in parts[8:]:
            if s.startswith("["):
                moving = True
            elif "-" in s:
                a, b = s.split("-")
                slots.append((int(a), int(b)))
            else:
                slots.append((int(s), int(s)))
        out[node_id] = NodeLine(
            id=node_id, ip=ip, port=int(port or 0), bus_port=int(bus or 0), flags=frozenset(flags.split(",")),
            master_id=None if master == "-" else master, connected=parts[7] == "connected",
            slots=tuple(slots), importing_or_migrating=moving,
        )
    return out


@dataclass
class Member:
    ordinal: int
    host: str
    port: int
    shard: int
    client: redis.Redis
    id: str = ""
    view: dict[str, NodeLine] = field(default_factory=dict)

    @property
    def addr(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def me(self) -> NodeLine:
        return self.view[self.id]


def slot_ranges(slots: list[int]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for s in sorted(slots):
        if out and out[-1][1] == s - 1:
            out[-1] = (out[-1][0], s)
        else:
            out.append((s, s))
    return out


def even_split(n_masters: int) -> list[tuple[int, int]]:
    """The slot range of each of n masters, as redis-cli --cluster create does it."""
    per, extra = divmod(SLOTS, n_masters)
    out, start = [], 0
    for i in range(n_masters):
        size = per + (1 if i < extra else 0)
        out.append((start, start + size - 1))
        start += size
    return out


def text(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def my_epoch(info: Any) -> int:
    for line in text(info).splitlines():
        if line.startswith("cluster_my_epoch:"):
            return int(line.split(":", 1)[1])
    return 0
