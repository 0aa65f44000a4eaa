"""Model limits protect the upstream: a request the SEMANTIC cache answers is never refused by them (issue 11), while
scope limits still count it. Through a real sidecar process with the real local model and a real Redis Stack; the exact
cache is off, so every hit here is a semantic one (the exact case: tests/limits/test_sidecar.py)."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import aiohttp

from tests.spend.procs import Sidecar, metric_value, sidecar_config, start_sidecars, stop_all

QUESTION = "What's the capital of France?"
PARAPHRASES = ["Which city is the capital of France?", "Which city is France's capital?",
               "What city is the capital of France?"]


async def _semantic_stores(car: Sidecar, at_least: int) -> None:
    """The answer is stored in the background: wait until the sidecar has stored `at_least` semantic entries."""
    deadline = time.monotonic() + 20
    while metric_value(await asyncio.to_thread(car.metrics_text), "llmgw_cache_stores_total", cache="semantic",
                       result="stored") < at_least:
        assert time.monotonic() < deadline, "semantic entry not stored"
        await asyncio.sleep(0.05)


async def test_semantic_hit_served_past_exhausted_model_rpm_but_scope_limit_refuses(
        redis_standalone: str, model_dir: Path, tmp_path: Path) -> None:
    cfg = sidecar_config({"url": redis_standalone}, cache={
        "exact": {"enabled": False},
        # a generous embedding deadline: a busy 2-core machine must not turn the hits into misses
        "semantic": {"enabled": True, "embedding": {"model_dir": str(model_dir), "timeout_ms": 5000}}})
    cfg["models"][0]["limits"] = {"rpm": 2}
    cfg["limits"] = {"scopes": [{"scope": "pod", "rpm": 6}]}
    [car] = start_sidecars(tmp_path, cfg, timeout=60)

    async def ask(s: aiohttp.ClientSession, q: str, **kw: Any) -> tuple[int, dict[str, str], str]:
        body = {"model": "m", "messages": [{"role": "user", "content": q}], "max_tokens": 16, **kw}
        async with s.post(car.url + "/v1/chat/completions", json=body) as r:
            return r.status, dict(r.headers), await r.text()

    try:
        async with aiohttp.ClientSession() as s:
            status, h, first = await ask(s, QUESTION)  # model 1/2, pod 1/6
            assert status == 200 and h["x-llmgw-cache"] == "miss"
            answer_id = json.loads(first)["id"]  # the mock's id hashes the request: a hit replays this one
            assert h["x-ratelimit-limit-requests"] == "2" and h["x-ratelimit-remaining-requests"] == "1"
            await _semantic_stores(car, 1)
            status, h, _ = await ask(s, "Explain the rules of cricket to a child.")  # model 2/2, pod 2/6
            assert status == 200 and h["x-llmgw-cache"] == "miss" and h["x-ratelimit-remaining-requests"] == "0"
            status, h, err = await ask(s, "How do I bake sourdough bread at home?")  # a miss: model limit refuses
            assert status == 429 and "model:rpm" in err, err
            await asyncio.sleep(0.05)  # its pod request is given back (settlements are batched for ~5 ms)
            for used, (q, stream) in enumerate(zip(PARAPHRASES, (False, True, False), strict=True), 3):
                status, h, text = await ask(s, q, stream=stream)  # served from the semantic cache past the model rpm
                assert status == 200 and h["x-llmgw-cache"] == "hit-semantic", (q, status, h.get("x-llmgw-cache"))
                assert answer_id in text  # the stored answer to the original question (streamed: in every chunk)
                # truthful: the limit that decided a hit is the pod's, the model's was not asked
                assert h["x-ratelimit-limit-requests"] == "6", h
                assert h["x-ratelimit-remaining-requests"] == str(6 - used)
            await asyncio.sleep(0.05)
            text = await asyncio.to_thread(car.metrics_text)
            assert metric_value(text, "llmgw_cache_lookups_total", cache="semantic", result="hit") == 3
            # the model limit refused only the one miss; the hits never reached it
            assert metric_value(text, "llmgw_ratelimit_decisions_total", limit="model:rpm", result="rejected") == 1
            status, h, _ = await ask(s, PARAPHRASES[0])  # pod 6/6: still a semantic hit, admitted
            assert status == 200 and h["x-llmgw-cache"] == "hit-semantic" and h["x-ratelimit-remaining-requests"] == "0"
            status, h, err = await ask(s, PARAPHRASES[1])  # the scope limit counts hits: refused
            assert status == 429 and "pod:rpm" in err and h["x-ratelimit-remaining-requests"] == "0", err
    finally:
        stop_all([car])
