"""A flusher process that stops between move and commit: `python -m tests.spend.flusher_harness URL PREFIX`.
It takes the lock (1 s lifetime, no renewal), moves one batch to processing, says "moved" and waits to be killed."""

from __future__ import annotations

import asyncio
import sys
import time

from llmgw_sidecar.metrics import Metrics
from llmgw_sidecar.redis_topology import make_client
from llmgw_sidecar.spend.flusher import Flusher
from llmgw_sidecar.spend.keys import spend_base
from tests.limits.helpers import config


async def main(url: str, prefix: str) -> None:
    cfg = config({"url": url, "key_prefix": prefix})
    r = make_client(cfg.redis)
    f = Flusher(r, spend_base(prefix, "team-a", "gw"), prefix, "team-a", "gw", Metrics(), lock_ttl_s=1.0)
    deadline = time.monotonic() + 10
    while not await f.acquire():
        if time.monotonic() > deadline:
            raise SystemExit("no lock")
        await asyncio.sleep(0.05)
    element = await f.move()
    print("moved" if element else "empty", flush=True)
    await asyncio.sleep(60)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
