"""Exact cache through the real sidecar, driven by the official openai client against a real fake upstream."""

from __future__ import annotations

import asyncio

import redis

from tests.fake_upstream import FakeUpstream
from tests.integration.conftest import Gateway

MSG = [{"role": "user", "content": "What is the capital of France?"}]


def test_sync_client_miss_then_exact_hit(gateway: Gateway, fake_upstream: FakeUpstream) -> None:
    c = gateway.client()
    before = fake_upstream.count("ok")
    r1 = c.chat.completions.with_raw_response.create(model="ok", messages=MSG)
    r2 = c.chat.completions.with_raw_response.create(model="ok", messages=MSG)
    assert r1.headers["x-llmgw-cache"] == "miss"
    assert r2.headers["x-llmgw-cache"] == "hit-exact"
    assert "age" in r2.headers
    assert r1.content == r2.content  # stored bytes returned as stored
    assert r2.parse().choices[0].message.content == "echo: What is the capital of France?"
    assert fake_upstream.count("ok") - before == 1
    # keys live with the app: upstream got its own key, never the app's
    assert fake_upstream.calls[-1]["headers"]["Authorization"] == "Bearer sk-upstream"
    assert gateway.sample("llmgw_requests_total", cache="hit-exact", model="ok") == 1
    assert gateway.sample("llmgw_cache_lookups_total", cache="exact", result="miss") == 1
    assert gateway.sample("llmgw_cache_tokens_saved_total", model="ok", kind="prompt") == 11


async def test_async_stream_miss_then_replay_same_chunks(gateway: Gateway, fake_upstream: FakeUpstream) -> None:
    c = gateway.async_client()
    msgs = [{"role": "user", "content": "stream me three words"}]

    async def run() -> tuple[str, list[dict], str]:
        raw = await c.chat.completions.with_raw_response.create(model="ok", messages=msgs, stream=True)
        chunks = [ch.model_dump(exclude_none=True) async for ch in raw.parse()]
        return raw.headers["x-llmgw-cache"], chunks, "".join(
            ch["choices"][0]["delta"].get("content", "") for ch in chunks if ch["choices"])

    h1, chunks1, text1 = await run()
    h2, chunks2, text2 = await run()
    assert (h1, h2) == ("miss", "hit-exact")
    assert text1 == text2 == "echo: stream me three words"
    assert chunks1 == chunks2  # same chunk structure, ids and all
    assert all(ch["choices"] for ch in chunks2)  # client did not ask for usage: no usage-only chunk
    assert fake_upstream.calls[-1]["body"]["stream_options"] == {"include_usage": True}  # but we asked upstream
    # a non-streamed request is served from the stored stream
    raw = await c.chat.completions.with_raw_response.create(model="ok", messages=msgs)
    assert raw.headers["x-llmgw-cache"] == "hit-exact"
    assert raw.parse().choices[0].message.content == text1
    assert raw.parse().usage.completion_tokens == 5
    await c.close()


async def test_stream_usage_chunk_only_when_asked(gateway: Gateway) -> None:
    c = gateway.async_client()
    msgs = [{"role": "user", "content": "usage please"}]
    for expect in ("miss", "hit-exact"):
        raw = await c.chat.completions.with_raw_response.create(
            model="ok", messages=msgs, stream=True, stream_options={"include_usage": True})
        chunks = [ch async for ch in raw.parse()]
        assert raw.headers["x-llmgw-cache"] == expect
        assert chunks[-1].choices == [] and chunks[-1].usage.prompt_tokens == 11
    await c.close()


def test_stream_request_served_from_non_stream_entry(gateway: Gateway) -> None:
    c = gateway.client()
    msgs = [{"role": "user", "content": "first plain, then streamed"}]
    plain = c.chat.completions.create(model="ok", messages=msgs)
    raw = c.chat.completions.with_raw_response.create(model="ok", messages=msgs, stream=True)
    assert raw.headers["x-llmgw-cache"] == "hit-exact"
    text = "".join(ch.choices[0].delta.content or "" for ch in raw.parse() if ch.choices)
    assert text == plain.choices[0].message.content


def test_tool_calls_stream_assembled_and_replayed(gateway: Gateway) -> None:
    c = gateway.client()
    msgs = [{"role": "user", "content": "weather in Paris?"}]
    list(c.chat.completions.create(model="tools", messages=msgs, stream=True))
    r = c.chat.completions.with_raw_response.create(model="tools", messages=msgs)
    assert r.headers["x-llmgw-cache"] == "hit-exact"
    call = r.parse().choices[0].message.tool_calls[0]
    assert (call.function.name, call.function.arguments) == ("get_weather", '{"city": "Paris"}')
    assert r.parse().choices[0].finish_reason == "tool_calls"


def test_broken_stream_is_not_stored(gateway: Gateway, fake_upstream: FakeUpstream) -> None:
    c = gateway.client()
    msgs = [{"role": "user", "content": "this will break midway"}]
    for _ in range(2):
        try:
            list(c.chat.completions.create(model="broken-stream", messages=msgs, stream=True))
        except Exception:  # noqa: BLE001 - the client may or may not notice the cut; either way nothing is cached
            pass
    assert fake_upstream.seen["broken-stream|this will break midway"] == 2


def test_output_fields_split_the_key_tracking_fields_do_not(gateway: Gateway) -> None:
    c = gateway.client()
    msgs = [{"role": "user", "content": "key test"}]
    first = c.chat.completions.with_raw_response.create(model="ok", messages=msgs, user="alice")
    same = c.chat.completions.with_raw_response.create(model="ok", messages=msgs, user="bob",
                                                       metadata={"trace": "x"})
    other = c.chat.completions.with_raw_response.create(model="ok", messages=msgs, temperature=0.5)
    assert [first.headers["x-llmgw-cache"], same.headers["x-llmgw-cache"], other.headers["x-llmgw-cache"]] == [
        "miss", "hit-exact", "miss"]


def test_cache_directives(gateway: Gateway, fake_upstream: FakeUpstream, redis_standalone: str) -> None:
    c = gateway.client()
    msgs = [{"role": "user", "content": "directives"}]
    h = lambda r: r.headers["x-llmgw-cache"]  # noqa: E731
    assert h(c.chat.completions.with_raw_response.create(
        model="ok", messages=msgs, extra_headers={"Cache-Control": "no-store"})) == "miss"
    assert h(c.chat.completions.with_raw_response.create(
        model="ok", messages=msgs, extra_headers={"Cache-Control": "max-age=120"})) == "miss"
    assert h(c.chat.completions.with_raw_response.create(model="ok", messages=msgs)) == "hit-exact"
    assert h(c.chat.completions.with_raw_response.create(
        model="ok", messages=msgs, extra_headers={"Cache-Control": "no-cache"})) == "bypass"
    assert h(c.chat.completions.with_raw_response.create(
        model="ok", messages=msgs, extra_body={"cache": {"no-cache": True}})) == "bypass"
    # LiteLLM-style namespace: a separate partition
    assert h(c.chat.completions.with_raw_response.create(
        model="ok", messages=msgs, extra_body={"cache": {"namespace": "exp-1", "ttl": 30}})) == "miss"
    assert h(c.chat.completions.with_raw_response.create(
        model="ok", messages=msgs, extra_body={"cache": {"namespace": "exp-1"}})) == "hit-exact"
    r = redis.Redis.from_url(redis_standalone)
    ttls = sorted(r.ttl(k) for k in r.scan_iter(f"{gateway.prefix}:exact:*"))
    r.close()
    assert len(ttls) == 2 and 0 < ttls[0] <= 30 and 30 < ttls[1] <= 3600
    assert fake_upstream.calls[-1]["body"].get("cache") is None  # gateway-only field never goes upstream


def test_api_key_scope_isolates_tenants(make_gateway, redis_standalone: str, fake_upstream: FakeUpstream) -> None:
    from tests.integration.conftest import gateway_config

    gw = make_gateway(gateway_config({"url": redis_standalone}, fake_upstream.url, cache={"scope": "api_key"}))
    msgs = [{"role": "user", "content": "tenant secret"}]
    a, b = gw.client(api_key="key-a"), gw.client(api_key="key-b")
    assert a.chat.completions.with_raw_response.create(model="ok", messages=msgs).headers["x-llmgw-cache"] == "miss"
    assert b.chat.completions.with_raw_response.create(model="ok", messages=msgs).headers["x-llmgw-cache"] == "miss"
    assert a.chat.completions.with_raw_response.create(model="ok", messages=msgs).headers[
        "x-llmgw-cache"] == "hit-exact"


def test_completions_and_embeddings_are_cached(gateway: Gateway) -> None:
    c = gateway.client()
    r = [c.completions.with_raw_response.create(model="ok", prompt="say hi") for _ in range(2)]
    assert [x.headers["x-llmgw-cache"] for x in r] == ["miss", "hit-exact"]
    assert r[1].parse().choices[0].text == "echo: say hi"
    e = [c.embeddings.with_raw_response.create(model="ok", input=["a", "bb"]) for _ in range(2)]
    assert [x.headers["x-llmgw-cache"] for x in e] == ["miss", "hit-exact"]
    assert e[1].parse().data[1].embedding == [2.0, 0.5, -0.5]


async def test_concurrent_identical_requests_all_answered(gateway: Gateway) -> None:
    c = gateway.async_client()
    msgs = [{"role": "user", "content": "many at once"}]
    res = await asyncio.gather(*[c.chat.completions.create(model="ok", messages=msgs) for _ in range(20)])
    assert {r.choices[0].message.content for r in res} == {"echo: many at once"}
    await c.close()


async def test_client_gone_mid_stream_is_accounted_and_not_stored(gateway: Gateway, fake_upstream: FakeUpstream) -> None:
    import aiohttp

    fake_upstream.chunk_delay_s = 0.05
    body = {"model": "ok", "stream": True, "messages": [{"role": "user", "content": "one two three four five six"}]}
    try:
        async with aiohttp.ClientSession() as s:
            async with s.post(gateway.url + "/v1/chat/completions", json=body) as r:
                assert r.headers["x-llmgw-cache"] == "miss"
                await r.content.readuntil(b"\n\n")  # one chunk, then hang up
        deadline = asyncio.get_running_loop().time() + 5
        while gateway.sample("llmgw_requests_total", status="499") < 1:
            assert asyncio.get_running_loop().time() < deadline, "the abandoned stream was not accounted"
            await asyncio.sleep(0.05)
    finally:
        fake_upstream.chunk_delay_s = 0.0
    c = gateway.async_client()
    raw = await c.chat.completions.with_raw_response.create(model="ok", messages=body["messages"])
    assert raw.headers["x-llmgw-cache"] == "miss"  # the cut stream was not stored
    await c.close()
