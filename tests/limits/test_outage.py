"""Redis SIGKILLed in the middle of a window: 4 sidecar processes that know of each other (heartbeats) each admit only
their share of what the window still allows, so together they admit about 1x the limit, not 4x.
Bound (docs/limits-and-spend.md): limit + admissions a process had not seen when Redis went away; here <= L x 1.1 + 1
per process."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmgw_sidecar.devredis import RedisProcess
from tests.limits.burst import burst, local_decisions, wait_replicas
from tests.spend.procs import metric_value, sidecar_config, start_sidecars, stop_all

L = 20


@pytest.mark.timeout(180)  # start 30 s + replicas 20 s + 2 bursts of at most 33 s each
async def test_redis_sigkill_admits_about_the_limit_across_replicas(redis_own: RedisProcess, tmp_path: Path) -> None:
    cfg = sidecar_config({"url": redis_own.url}, limits={"heartbeat_interval_s": 0.5})
    cfg["models"][0]["limits"] = {"rpm": L}
    cars = start_sidecars(tmp_path, cfg, n=4)
    try:
        wait_replicas(cars, 4)
        before = await burst(cars, per_car=3)  # 12 through Redis, in the same window
        assert before["ok"] == 12 and local_decisions(cars) == 0, before
        redis_own.kill()  # SIGKILL
        after = await burst(cars, per_car=L - 3)  # the rest of 4L
        total = before["ok"] + after["ok"]
        print(f"Redis SIGKILLed after {before['ok']} admissions: {after['ok']} more admitted locally, total {total} "
              f"of {4 * L} offered (limit {L})")
        assert after["ok"] > 0 and local_decisions(cars) > 0
        assert L - 4 <= total <= L * 1.1 + 4, (before, after)  # not 4 x L: each process kept to its share
        assert all(metric_value(c.metrics_text(), "llmgw_ratelimit_replicas") == 4 for c in cars)  # last count kept
    finally:
        for c in cars:
            c.kill()  # SIGKILL: nothing to hand off to a dead Redis
    stop_all(cars)
