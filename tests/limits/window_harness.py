"""One replica driving the governor hard for a while: `python -m tests.limits.window_harness URL PREFIX SECONDS`.
Prints a JSON list of the Redis-clock times (ms) of its admitted requests, and how many decisions were local."""

from __future__ import annotations

import asyncio
import sys
import time

import orjson

from llmgw_sidecar.errors import ApiError
from llmgw_sidecar.ratelimit import build_governor
from tests.limits.helpers import client, config, ctx, metrics


async def main(url: str, prefix: str, seconds: float) -> None:
    cfg = config({"url": url, "key_prefix": prefix}, {"rpm": 20}, limits={"window_s": 1.0})
    m = metrics()
    g = build_governor(cfg, client(cfg), m)
    assert g is not None
    admitted: list[int] = []
    end = time.monotonic() + seconds

    async def worker() -> None:
        while time.monotonic() < end:
            c = ctx(cfg)
            try:
                await g.admit(c)
            except ApiError:
                await asyncio.sleep(0.01)
                continue
            admitted.append(c.state["ratelimit"].at_ms)

    await asyncio.gather(*(worker() for _ in range(4)))
    local = m.ratelimit_decisions.labels("redis", "fail_open")._value.get()
    print(orjson.dumps({"admitted": admitted, "local": local}).decode(), flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], float(sys.argv[3])))
