"""Bursts of concurrent requests against several sidecar processes, counted by outcome."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections import Counter
from typing import Any

import aiohttp
import redis

from tests.spend.procs import Sidecar, metric_value

RETRY_ROUNDS = 3  # a 503 rate_limiter_timeout is "undecided": the client retries it after Retry-After (as the
# openai client would), by when what the timed-out decision may have reserved has been given back
REQUEST_TIMEOUT_S = 10.0


async def _post(s: aiohttp.ClientSession, url: str, content: str) -> tuple[int, str, float]:
    body = {"model": "m", "messages": [{"role": "user", "content": content}], "max_tokens": 16}
    async with s.post(url + "/v1/chat/completions", json=body) as r:
        data = await r.json()
        return r.status, (data.get("error") or {}).get("code") or "", float(r.headers.get("Retry-After", 0))


async def burst(cars: list[Sidecar], per_car: int) -> Counter[str]:
    """per_car distinct requests to every sidecar, all at once. Requests answered 503 rate_limiter_timeout are sent
    again (at most RETRY_ROUNDS rounds). Returns counts: "ok", the 4xx/5xx codes, and "timeout_retried".
    At most RETRY_ROUNDS x (REQUEST_TIMEOUT_S + 1) seconds: callers keep that under their pytest timeout."""
    tag = uuid.uuid4().hex[:8]
    todo = [(c.url, f"{tag} question {i} to {j}") for i in range(per_car) for j, c in enumerate(cars)]
    out: Counter[str] = Counter()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)) as s:
        for _ in range(RETRY_ROUNDS):
            results = await asyncio.gather(*(_post(s, u, q) for u, q in todo))
            retry = []
            wait = 0.0
            for (u, q), (status, code, after) in zip(todo, results, strict=True):
                if status == 503 and code == "rate_limiter_timeout":
                    retry.append((u, q))
                    wait = max(wait, after)
                    out["timeout_retried"] += 1
                else:
                    out["ok" if status == 200 else code or str(status)] += 1
            if not retry:
                break
            await asyncio.sleep(wait)
            todo = retry
        else:
            out["undecided"] += len(todo)
    return out


def local_decisions(cars: list[Sidecar]) -> float:
    """Decisions any sidecar made without Redis (admitted or refused locally)."""
    return sum(metric_value(c.metrics_text(), "llmgw_ratelimit_decisions_total", limit="redis", result=r)
               for c in cars for r in ("fail_open", "local_rejected"))


def wait_replicas(cars: list[Sidecar], n: int, timeout_s: float = 20.0) -> None:
    """Until every sidecar's heartbeat has seen all n replicas."""
    deadline = time.monotonic() + timeout_s
    while True:
        seen = [metric_value(c.metrics_text(), "llmgw_ratelimit_replicas") for c in cars]
        if all(x == n for x in seen):
            return
        assert time.monotonic() < deadline, f"replica counts {seen}, want {n}"
        time.sleep(0.1)


class RedisPauser:
    """Makes Redis slow, not down: DEBUG SLEEP `pause_s` every `every_s` (Redis answers nothing while it sleeps)."""

    def __init__(self, url: str, pause_s: float = 0.06, every_s: float = 0.1) -> None:
        self.client = redis.Redis.from_url(url, socket_timeout=5)
        self.pause_s, self.every_s = pause_s, every_s
        self.stop = threading.Event()
        self.pauses = 0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.is_set():
            t0 = time.monotonic()
            self.client.execute_command("DEBUG", "SLEEP", self.pause_s)
            self.pauses += 1
            time.sleep(max(0.0, self.every_s - (time.monotonic() - t0)))

    def __enter__(self) -> RedisPauser:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop.set()
        self.thread.join(5)
        self.client.close()
