"""The local limiter: decisions while Redis is unreachable, each process limited to its share.

Every process keeps, per limit key, what Redis told it at its latest decision (the global usage, and when) and its own
calls in flight. While Redis is unreachable it admits on its own, at most its share of what the window still allows:

    share = floor((limit - carried) / replicas)      (at least 1 request per window when nothing is carried)

`carried` is the latest global usage this process saw; it is assumed to stay in the window until one full window after
it was seen (every entry in it leaves earlier: conservative). `replicas` is the last heartbeat count (replicas.py). So N
processes that lose Redis together admit about 1x the limit per window, not N x. The bound is in docs/limits-and-spend.md.
max_parallel: at most max(1, floor(limit / replicas)) of this process's own calls in flight (those admitted through
Redis before the outage included).
"""

from __future__ import annotations

import heapq
import time
from collections import deque
from typing import Any

from .ratelimit_keys import LimitSpec

_MAX_KEYS = 10_000  # bounded: caller subjects come and go


class LocalLimiter:
    def __init__(self, window_s: float, lease_s: float) -> None:
        self.window = window_s
        self.lease = lease_s
        self.seen: dict[str, tuple[int, float]] = {}  # key -> (global used after the latest Redis decision, when)
        self.logs: dict[str, deque[list[Any]]] = {}  # key -> local admissions [monotonic time, member, cost]
        self.sums: dict[str, int] = {}
        self.inflight: dict[str, dict[str, float]] = {}  # key -> own calls in flight: member -> lease end

    # --- always: follow what Redis decided ---
    def observe(self, specs: list[LimitSpec], used: list[tuple[int, float]], member: str, admitted: bool) -> None:
        now = time.monotonic()
        if len(self.seen) > _MAX_KEYS:
            self.seen.clear()
        for s, (u, _reset) in zip(specs, used, strict=True):
            if s.kind != "p":
                self.seen[s.keys[0]] = (u, now)
            elif admitted:
                self._inflight(s.keys[0], now)[member] = now + self.lease

    def hot_keys(self, most: int = 64) -> list[tuple[str, str, str]]:
        """The request/token keys with usage seen within the last window, most recent first: (limit key, key to
        read, kind), for the heartbeat to refresh (a key drops out once its window is seen empty)."""
        now = time.monotonic()
        recent = heapq.nlargest(most, ((t, k) for k, (u, t) in self.seen.items() if u > 0 and t > now - self.window))
        return [(k, k, "r") if k.endswith(":rpm") else (k, k + ":amt", "t") for _, k in recent]

    def refresh(self, keys: list[str], usage: list[int]) -> None:
        """Usage read by the heartbeat: the view stays fresh even for keys this process has not decided on lately."""
        now = time.monotonic()
        for k, u in zip(keys, usage, strict=True):
            self.seen[k] = (u, now)

    def _inflight(self, key: str, now: float) -> dict[str, float]:
        d = self.inflight.get(key)
        if d is None:
            if len(self.inflight) > _MAX_KEYS:
                self.inflight.clear()
            d = self.inflight[key] = {}
        elif len(d) > 1000:  # a lost settle must not grow this forever: drop expired leases now and then
            self.inflight[key] = d = {m: t for m, t in d.items() if t > now}
        return d

    def release(self, specs: list[LimitSpec], member: str) -> None:
        """A call admitted through Redis ended: its max_parallel slots are no longer ours."""
        for s in specs:
            if s.kind == "p":
                d = self.inflight.get(s.keys[0])
                if d is not None:
                    d.pop(member, None)

    # --- Redis unreachable: decide here ---
    def _prune(self, key: str, now: float) -> deque[list[Any]]:
        q = self.logs.get(key)
        if q is None:
            q = self.logs[key] = deque()
        while q and q[0][0] <= now - self.window:
            self.sums[key] = self.sums.get(key, 0) - q.popleft()[2]
        return q

    def _carried(self, key: str, now: float) -> tuple[int, float]:
        """(global usage last seen, seconds until it has surely left the window)."""
        seen = self.seen.get(key)
        if seen is None or now >= seen[1] + self.window:
            return 0, 0.0
        return seen[0], seen[1] + self.window - now

    def admit(self, specs: list[LimitSpec], member: str, replicas: int) -> tuple[int, float, list[tuple[int, float]]]:
        """(index of the blocking limit, 0 = admitted; retry-after seconds; (estimated global used, reset ms) per
        limit, for the x-ratelimit-* headers)."""
        now = time.monotonic()
        n = max(1, replicas)
        blocked, retry = 0, 0.0
        used: list[tuple[int, float]] = []
        for i, s in enumerate(specs, 1):
            key = s.keys[0]
            if s.kind == "p":
                live = {m: d for m, d in self.inflight.get(key, {}).items() if d > now}
                self.inflight[key] = live
                used.append((min(s.limit, len(live) * n), 0.0))
                if not blocked and len(live) + 1 > max(1, s.limit // n):
                    blocked, retry = i, 1.0
                continue
            carried, gone_in = self._carried(key, now)
            q = self._prune(key, now)
            mine = len(q) if s.kind == "r" else self.sums.get(key, 0)
            share = (s.limit - carried) // n
            oldest = q[0][0] + self.window - now if q else 0.0
            reset = max(oldest, gone_in)
            used.append((min(s.limit, carried + mine * n), reset * 1000))
            if blocked:
                continue
            if s.kind == "r":
                ok = mine + 1 <= (max(share, 1) if carried == 0 else share)
            else:  # a request bigger than the share still runs when nothing is counted (it could never run otherwise)
                ok = (carried == 0 and mine == 0) or mine + s.cost <= share
            if not ok:
                blocked = i
                waits = [w for w in (oldest, gone_in) if w > 0]
                retry = max(0.001, min(waits) if waits else self.window)
        if blocked:
            return blocked, retry, used
        for s in specs:
            key = s.keys[0]
            if s.kind == "p":
                self._inflight(key, now)[member] = now + self.lease
            else:
                self.logs[key].append([now, member, s.cost])
                self.sums[key] = self.sums.get(key, 0) + s.cost
        step = [(min(s.limit, u + (n if s.kind != "t" else s.cost * n)), r) for s, (u, r) in zip(specs, used, strict=True)]
        return 0, 0.0, step

    def settle(self, specs: list[LimitSpec], member: str, tokens: int, refund: bool) -> None:
        """A locally admitted call ended: release its slots, keep its request (unless refunded), charge real tokens."""
        for s in specs:
            key = s.keys[0]
            if s.kind == "p":
                self.inflight.get(key, {}).pop(member, None)
                continue
            q = self.logs.get(key) or deque()
            for j, entry in enumerate(q):
                if entry[1] == member:
                    new = 0 if refund else (tokens if s.kind == "t" else entry[2])
                    self.sums[key] = self.sums.get(key, 0) + new - entry[2]
                    if new == 0:
                        del q[j]
                    else:
                        entry[2] = new
                    break
