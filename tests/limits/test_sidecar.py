"""Through a real sidecar process: headers on every answer, streams settled with their real usage, GET /spend."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp

from tests.spend.procs import sidecar_config, start_sidecars, stop_all


async def test_headers_stream_settlement_and_spend_endpoint(redis_standalone: str, tmp_path: Path) -> None:
    cfg = sidecar_config({"url": redis_standalone})
    cfg["models"][0]["limits"] = {"rpm": 50, "tpm": 5000}
    cfg["budgets"] = [{"scope": "namespace", "period": "month", "max_usd": 10}]
    cfg["cache"] = {"exact": {"enabled": True}}
    [car] = start_sidecars(tmp_path, cfg)
    try:
        async with aiohttp.ClientSession() as s:
            body = {"model": "m", "messages": [{"role": "user", "content": "stream me"}], "max_tokens": 1000,
                    "stream": True}
            async with s.post(car.url + "/v1/chat/completions", json=body) as r:
                assert r.status == 200
                reserved_left = int(r.headers["x-ratelimit-remaining-tokens"])
                assert r.headers["x-llmgw-budget-remaining"] == "10.000000"
                text = await r.text()
            assert '"usage"' not in text  # the client did not ask: the usage chunk is stripped
            assert reserved_left <= 5000 - 1000
            await asyncio.sleep(0.1)  # settlements are batched for ~5 ms
            plain = {"model": "m", "messages": [{"role": "user", "content": "plain"}], "max_tokens": 1000}
            async with s.post(car.url + "/v1/chat/completions", json=plain) as r:
                assert r.status == 200
                usage = (await r.json())["usage"]
                # the stream's ~1000-token reservation was replaced by its real usage (~25 tokens): without that
                # settlement two reservations would leave < 3000
                assert int(r.headers["x-ratelimit-remaining-tokens"]) > 5000 - 1000 - 100
                assert r.headers["x-ratelimit-limit-requests"] == "50"
            async with s.post(car.url + "/v1/chat/completions", json=plain) as r:  # exact hit: saved, cost 0
                assert r.headers.get("x-llmgw-cache") == "hit-exact"
            deadline = time.monotonic() + 15
            while True:
                async with s.get(car.url + "/spend") as r:
                    assert r.status == 200
                    out = await r.json()
                if out["totals"].get("requests") == 3:
                    break
                assert time.monotonic() < deadline, out
                await asyncio.sleep(0.1)
        t = out["totals"]
        assert t["hits"] == 1 and t["estimated"] == 0
        assert t["saved_usd"] == round((usage["prompt_tokens"] * 1 + usage["completion_tokens"] * 3) / 1e6, 9)
        assert t["cost_usd"] > t["saved_usd"]  # the stream and the plain miss
        assert out["days"][0]["by_scope_model"][0]["model"] == "m"
    finally:
        stop_all([car])


async def test_upstream_without_usage_is_estimated_never_zero(redis_standalone: str, tmp_path: Path) -> None:
    from tests.fake_upstream import FakeUpstream
    from tests.servers import ThreadServer

    fu = FakeUpstream()
    srv = ThreadServer(fu.app).start()
    cfg = sidecar_config({"url": redis_standalone})
    cfg["models"] = [{"name": "no-usage", "provider": "openai", "base_url": srv.url + "/v1", "api_key": "x",
                      "pricing": {"input_per_1m": 1.0, "output_per_1m": 3.0}}]
    [car] = start_sidecars(tmp_path, cfg)
    try:
        async with aiohttp.ClientSession() as s:
            for stream in (False, True):
                body = {"model": "no-usage", "messages": [{"role": "user", "content": "count yourself"}],
                        "stream": stream}
                async with s.post(car.url + "/v1/chat/completions", json=body) as r:
                    assert r.status == 200
                    await r.read()
            deadline = time.monotonic() + 15
            while True:
                async with s.get(car.url + "/spend") as r:
                    out = await r.json()
                if out["totals"].get("requests") == 2:
                    break
                assert time.monotonic() < deadline, out
                await asyncio.sleep(0.1)
        t = out["totals"]
        assert t["estimated"] == 2 and t["cost_usd"] > 0 and t["prompt_tokens"] > 0
    finally:
        stop_all([car])
        srv.stop()


async def test_budget_exceeded_through_sidecars(redis_standalone: str, tmp_path: Path) -> None:
    cfg = sidecar_config({"url": redis_standalone})
    cfg["budgets"] = [{"scope": "namespace", "period": "day", "max_usd": 0.0001}]  # ~2 mock calls
    cars = start_sidecars(tmp_path, cfg, n=2)
    try:
        codes: list[str] = []
        async with aiohttp.ClientSession() as s:
            deadline = time.monotonic() + 20
            while not codes or codes[-1] != "budget_exceeded":
                assert time.monotonic() < deadline, codes
                body = {"model": "m", "messages": [{"role": "user", "content": f"spend {len(codes)}"}]}
                async with s.post(cars[len(codes) % 2].url + "/v1/chat/completions", json=body) as r:
                    data = await r.json()
                    if r.status == 503 and data["error"]["code"] == "rate_limiter_timeout":
                        pass  # undecided (a stalled machine): nothing was spent, ask again
                    elif r.status == 429:
                        codes.append(data["error"]["code"])
                        assert r.headers["x-llmgw-budget-remaining"] == "0.000000"
                        assert int(r.headers["Retry-After"]) > 0
                    else:
                        assert r.status == 200
                        assert float(r.headers["x-llmgw-budget-remaining"]) > 0
                        codes.append("ok")
                await asyncio.sleep(0.05)
        # spent becomes visible after hand-off + commit (~2 flush intervals): a few calls may pass meanwhile
        assert 2 <= codes.count("ok") <= 12, codes
    finally:
        stop_all(cars)


async def test_cache_hit_served_past_exhausted_model_rpm_but_scope_limit_refuses(redis_standalone: str,
                                                                                  tmp_path: Path) -> None:
    """Model limits protect the upstream: a request the exact cache answers is served although the model's rpm is
    used up (they are decided only on the way upstream). Scope limits count every request, hits too."""
    cfg = sidecar_config({"url": redis_standalone}, cache={"exact": {"enabled": True}})
    cfg["models"][0]["limits"] = {"rpm": 2}
    cfg["limits"] = {"scopes": [{"scope": "pod", "rpm": 5}]}
    [car] = start_sidecars(tmp_path, cfg)

    async def ask(s: aiohttp.ClientSession, q: str) -> tuple[int, dict[str, str], dict]:
        body = {"model": "m", "messages": [{"role": "user", "content": q}], "max_tokens": 16}
        async with s.post(car.url + "/v1/chat/completions", json=body) as r:
            return r.status, dict(r.headers), await r.json()

    try:
        async with aiohttp.ClientSession() as s:
            status, h, _ = await ask(s, "cached question")  # model 1/2, pod 1/5
            assert status == 200 and h["x-llmgw-cache"] == "miss"
            assert h["x-ratelimit-limit-requests"] == "2" and h["x-ratelimit-remaining-requests"] == "1"
            await asyncio.sleep(0.3)  # the answer is stored in the background
            status, h, _ = await ask(s, "another question")  # model 2/2, pod 2/5
            assert status == 200 and h["x-ratelimit-remaining-requests"] == "0"
            status, h, err = await ask(s, "a third question")  # a miss: the model limit refuses it
            assert status == 429 and "model:rpm" in err["error"]["message"]
            await asyncio.sleep(0.05)  # its pod request is given back (settlements are batched for ~5 ms)
            for used in (3, 4, 5):
                status, h, _ = await ask(s, "cached question")  # served from the cache past the model limit
                assert status == 200 and h["x-llmgw-cache"] == "hit-exact"
                # truthful: the limit that decided a hit is the pod's, the model's was not asked
                assert h["x-ratelimit-limit-requests"] == "5", h
                assert h["x-ratelimit-remaining-requests"] == str(5 - used)
            status, h, err = await ask(s, "cached question")  # the scope limit counts hits: refused
            assert status == 429 and "pod:rpm" in err["error"]["message"] and h["x-ratelimit-remaining-requests"] == "0"
    finally:
        stop_all([car])
