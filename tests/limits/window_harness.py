"""One replica driving the governor hard for a while: `python -m tests.limits.window_harness URL PREFIX SECONDS`.
Default deadlines (redis.op_timeout_ms, limits.decision_timeout_ms). Signals readiness with INCR PREFIX:ready, waits
for a token on PREFIX:go (so every replica runs in the same seconds), then prints one JSON line: the Redis-clock times
(ms) of its admitted requests, how many decisions were local, refused by the limit, and timed out."""

from __future__ import annotations

import asyncio
import sys
import time

import orjson

from llmgw_sidecar.errors import ApiError
from llmgw_sidecar.ratelimit import build_governor
from tests.limits.helpers import client, config, ctx, metrics


async def main(url: str, prefix: str, seconds: float) -> None:
    cfg = config({"url": url, "key_prefix": prefix}, {"rpm": 20},
                 limits={"window_s": 1.0, "decision_timeout_ms": 250})  # the default deadline
    m = metrics()
    r = client(cfg)
    g = build_governor(cfg, r, m)
    assert g is not None
    await g.replicas.beat()  # connection and scripts ready before the start
    await r.incr(f"{prefix}:ready")
    deadline = time.monotonic() + 60
    while not await r.lpop(f"{prefix}:go"):  # polled: a blocking pop would outlive the client's socket timeout
        assert time.monotonic() < deadline, "no start signal"
        await asyncio.sleep(0.01)
    admitted: list[int] = []
    timeouts = refused = 0
    end = time.monotonic() + seconds

    async def worker() -> None:
        nonlocal timeouts, refused
        while time.monotonic() < end:
            c = ctx(cfg)
            try:
                await g.admit(c)
            except ApiError as e:
                timeouts += e.code == "rate_limiter_timeout"
                refused += e.code == "rate_limit_exceeded"
                await asyncio.sleep(0.01)
                continue
            admitted.append(c.state["ratelimit"].at_ms)

    await asyncio.gather(*(worker() for _ in range(4)))
    local = sum(m.ratelimit_decisions.labels("redis", x)._value.get() for x in ("fail_open", "local_rejected"))
    print(orjson.dumps({"admitted": admitted, "local": local, "timeouts": timeouts,
                       "refused": refused}).decode(), flush=True)
    await g.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], float(sys.argv[3])))
