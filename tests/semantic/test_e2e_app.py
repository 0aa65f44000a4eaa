"""The semantic cache through the real sidecar app, driven by the official openai client (sync and async, streamed
and not), with the real local model and a real Redis Stack."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import openai

from tests.fake_upstream import FakeUpstream
from tests.integration.conftest import Gateway, fake_upstream, gateway_config, make_gateway  # noqa: F401 - fixtures


def semantic_gateway(make: Callable[[dict[str, Any]], Gateway], redis_url: str, upstream_url: str,
                     model_dir: Path) -> Gateway:
    cfg = gateway_config({"url": redis_url}, upstream_url)
    cfg["cache"] = {"semantic": {"enabled": True, "embedding": {"model_dir": str(model_dir)}}}
    return make(cfg)


def ask(c: openai.OpenAI, q: str, **kw: Any) -> Any:
    return c.chat.completions.with_raw_response.create(model="ok", messages=[{"role": "user", "content": q}], **kw)


def until_semantic_hit(c: openai.OpenAI, q: str, **kw: Any) -> Any:
    """The first answer is stored in the background: ask until it is there (bounded)."""
    deadline = time.monotonic() + 10
    while True:
        r = ask(c, q, **kw)
        if r.headers["x-llmgw-cache"] == "hit-semantic" or time.monotonic() > deadline:
            return r
        time.sleep(0.05)


def test_paraphrase_answered_from_semantic_cache(make_gateway, redis_standalone: str,  # noqa: F811
                                                 fake_upstream: FakeUpstream, model_dir: Path) -> None:  # noqa: F811
    gw = semantic_gateway(make_gateway, redis_standalone, fake_upstream.url, model_dir)  # type: ignore[attr-defined]
    c = gw.client()
    first = ask(c, "What's the capital of France?")
    assert first.headers["x-llmgw-cache"] == "miss"
    calls = fake_upstream.count("ok")
    r = until_semantic_hit(c, "Which city is the capital of France?")
    assert r.headers["x-llmgw-cache"] == "hit-semantic"
    assert 0 < float(r.headers["x-llmgw-cache-distance"]) <= 0.35  # the first stage's distance
    assert 0.5 <= float(r.headers["x-llmgw-cache-score"]) <= 1  # the pair model's probability, which decided
    # the stored answer to the ORIGINAL question, and the upstream was not called again
    assert r.parse().choices[0].message.content == "echo: What's the capital of France?"
    assert fake_upstream.count("ok") == calls
    # streamed paraphrase: SSE replay of the stored answer
    s = until_semantic_hit(c, "Which city is France's capital?", stream=True)
    assert s.headers["x-llmgw-cache"] == "hit-semantic"
    text = "".join(ch.choices[0].delta.content or "" for ch in s.parse() if ch.choices)
    assert text == "echo: What's the capital of France?"
    # a near miss goes upstream
    ask(c, "What is 2+2?")
    near = ask(c, "What is 2+3?")
    assert near.headers["x-llmgw-cache"] == "miss"
    assert near.parse().choices[0].message.content == "echo: What is 2+3?"
    assert gw.sample("llmgw_semantic_lookups_total", result="hit") >= 2
    assert gw.sample("llmgw_semantic_guard_rejections_total") >= 1
    # the static first stage and the pair model decided: the full model never ran
    assert gw.sample("llmgw_embedding_duration_seconds_count", provider="local") == 0


def test_examples_local_yaml_answers_a_paraphrase(make_gateway, redis_standalone: str,  # noqa: F811
                                                   model_dir: Path) -> None:
    """What `make run` serves: examples/local.yaml as shipped (mock model, semantic cache on with the local model)."""
    import uuid

    import yaml

    cfg = yaml.safe_load((Path(__file__).resolve().parents[2] / "examples" / "local.yaml").read_text())
    assert cfg["cache"]["semantic"]["enabled"] is True
    # The folder `make model` (run by `make run`) exports into; the tests load their own export of the same model.
    assert cfg["cache"]["semantic"]["embedding"]["model_dir"] == ".cache/models/all-MiniLM-L6-v2-onnx"
    cfg["cache"]["semantic"]["embedding"]["model_dir"] = str(model_dir)
    cfg["redis"] = {"url": redis_standalone, "key_prefix": f"t{uuid.uuid4().hex[:8]}"}
    cfg["models"][0]["mock"]["latency_ms"] = 20
    gw = make_gateway(cfg)
    c = gw.client()
    model = cfg["models"][0]["name"]
    first = c.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": "How do I reverse a list in Python?"}])
    assert first.headers["x-llmgw-cache"] == "miss"
    deadline = time.monotonic() + 10
    while True:
        r = c.chat.completions.with_raw_response.create(
            model=model, messages=[{"role": "user", "content": "What's the way to reverse a Python list?"}])
        if r.headers["x-llmgw-cache"] == "hit-semantic" or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert r.headers["x-llmgw-cache"] == "hit-semantic"
    assert r.parse().choices[0].message.content == first.parse().choices[0].message.content
