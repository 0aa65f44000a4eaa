"""One rpm limit L shared by 4 sidecar processes, 4L distinct requests at once, 20 trials, default redis.op_timeout_ms:
exactly L admitted in every trial, with Redis healthy and with Redis slowed by a scripted pause (DEBUG SLEEP 60 ms
every 100 ms). No decision is ever made without Redis. The window is reset between trials by deleting its key."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.limits.burst import RedisPauser, burst, local_decisions
from tests.spend.procs import sidecar_config, start_sidecars, stop_all

L = 20
TRIALS = 20


async def _trials(url: str, tmp_path: Path, cfg: dict[str, Any], budget_s: float) -> list[int]:
    """Each trial's retries are bounded (burst); all trials together stay within budget_s (under the test timeout)."""
    deadline = time.monotonic() + budget_s
    cfg["models"][0]["limits"] = {"rpm": L}
    cars = start_sidecars(tmp_path, cfg, n=4)
    r = redis.Redis.from_url(url, socket_timeout=5)
    key = f"{cfg['redis']['key_prefix']}:rl:{{team-a/gw}}:model:m:rpm"
    admitted = []
    retried = 0
    try:
        for _ in range(TRIALS):
            assert time.monotonic() < deadline, f"out of time after {len(admitted)} trials: {admitted}"
            r.delete(key)
            out = await burst(cars, per_car=L)
            assert out["undecided"] == 0, out
            assert out["ok"] + out["rate_limit_exceeded"] == 4 * L, out
            admitted.append(out["ok"])
            retried += out["timeout_retried"]
        assert local_decisions(cars) == 0
        print(f"admitted per trial {admitted}; decisions retried after rate_limiter_timeout: {retried}")
    finally:
        stop_all(cars)
        r.close()
    return admitted


@pytest.mark.timeout(180)
async def test_exactly_the_limit_in_every_trial(redis_standalone: str, tmp_path: Path) -> None:
    admitted = await _trials(redis_standalone, tmp_path, sidecar_config({"url": redis_standalone}), 100)
    assert admitted == [L] * TRIALS, admitted


@pytest.mark.timeout(240)
async def test_exactly_the_limit_while_redis_is_slow(redis_debug: Any, tmp_path: Path) -> None:
    # The exact cache is on, with its default 50 ms deadline: its calls time out during the pauses and its breaker
    # opens; the limit decisions have their own deadline and stay exact.
    cfg = sidecar_config({"url": redis_debug.url}, cache={"exact": {"enabled": True}})
    with RedisPauser(redis_debug.url) as pauser:
        admitted = await _trials(redis_debug.url, tmp_path, cfg, 160)
    assert pauser.pauses > 10
    assert admitted == [L] * TRIALS, admitted
