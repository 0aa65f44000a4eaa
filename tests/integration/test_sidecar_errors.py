"""Bad input and upstream trouble: OpenAI-style errors with the right status, and the process keeps serving."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import openai
import pytest

from tests.fake_upstream import FakeUpstream
from tests.integration.conftest import Gateway, gateway_config

MSG = [{"role": "user", "content": "hello"}]


def post(gw: Gateway, path: str, data: bytes, ctype: str = "application/json") -> tuple[int, dict]:
    req = urllib.request.Request(gw.url + path, data=data, headers={"Content-Type": ctype}, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


@pytest.mark.parametrize(("path", "data", "ctype", "status", "needle"), [
    ("/v1/chat/completions", b"{not json", "application/json", 400, "not valid JSON"),
    ("/v1/chat/completions", b"[1,2]", "application/json", 400, "JSON object"),
    ("/v1/chat/completions", b'{"model":"ok"}', "application/json", 400, "'messages'"),
    ("/v1/chat/completions", b'{"model":"ok","messages":[{"content":"x"}]}', "application/json", 400, "messages[0]"),
    ("/v1/chat/completions", b'{"messages":[{"role":"user","content":"x"}]}', "application/json", 400, "'model'"),
    ("/v1/chat/completions", b'{"model":"ok","messages":[{"role":"user"}],"stream":"yes"}', "application/json", 400,
     "'stream'"),
    ("/v1/chat/completions", b'{"model":"ok","messages":[{"role":"user"}],"max_tokens":-1}', "application/json", 400,
     "max_tokens"),
    ("/v1/chat/completions", b'{"model":"ok","messages":[{"role":"user"}],"cache":{"ttl":"x"}}', "application/json",
     400, "cache.ttl"),
    ("/v1/chat/completions", b'{"model":"nope","messages":[{"role":"user"}]}', "application/json", 404, "available:"),
    ("/v1/chat/completions", b'{"model":"ok"}', "text/plain", 415, "application/json"),
    ("/v1/embeddings", b'{"model":"ok","input":[]}', "application/json", 400, "'input'"),
    ("/v1/completions", b'{"model":"ok"}', "application/json", 400, "'prompt'"),
    ("/v1/nothing-here", b"{}", "application/json", 404, "Not Found"),
])
def test_bad_requests(gateway: Gateway, path: str, data: bytes, ctype: str, status: int, needle: str) -> None:
    code, body = post(gateway, path, data, ctype)
    assert code == status
    assert set(body["error"]) >= {"message", "type", "code"}
    assert needle in body["error"]["message"]


def test_unknown_model_lists_models_and_param(gateway: Gateway) -> None:
    with pytest.raises(openai.NotFoundError) as e:
        gateway.client().chat.completions.create(model="gpt-9", messages=MSG)
    assert e.value.body["param"] == "model" and "ok" in e.value.body["message"]


def test_body_over_limit_is_413(make_gateway, redis_standalone: str, fake_upstream: FakeUpstream) -> None:
    cfg = gateway_config({"url": redis_standalone}, fake_upstream.url, listen={"max_body_bytes": 2048})
    gw = make_gateway(cfg)
    code, body = post(gw, "/v1/chat/completions", json.dumps(
        {"model": "ok", "messages": [{"role": "user", "content": "x" * 5000}]}).encode())
    assert code == 413 and body["error"]["code"] == "request_too_large"
    # and the gateway still serves
    assert gw.client().chat.completions.create(model="ok", messages=MSG).choices[0].message.content == "echo: hello"


def test_upstream_4xx_relayed_without_retry(gateway: Gateway, fake_upstream: FakeUpstream) -> None:
    before = fake_upstream.count("bad-400")
    with pytest.raises(openai.BadRequestError) as e:
        gateway.client().chat.completions.create(model="bad-400", messages=MSG)
    assert e.value.body["code"] == "bad_temperature" and e.value.body["param"] == "temperature"
    assert fake_upstream.count("bad-400") - before == 1


@pytest.mark.parametrize("model", ["flaky-429", "flaky-500"])
def test_retries_on_429_and_5xx(gateway: Gateway, fake_upstream: FakeUpstream, model: str) -> None:
    msgs = [{"role": "user", "content": f"retry {model}"}]
    r = gateway.client().chat.completions.create(model=model, messages=msgs)
    assert r.choices[0].message.content == f"echo: retry {model}"
    assert fake_upstream.seen[f"{model}|retry {model}"] == 2
    assert gateway.sample("llmgw_upstream_retries_total", model=model) == 1


def test_upstream_timeout_is_504(gateway: Gateway, fake_upstream: FakeUpstream) -> None:
    with pytest.raises(openai.APIStatusError) as e:
        gateway.client().chat.completions.create(model="slow", messages=MSG)
    assert e.value.status_code == 504 and e.value.body["code"] == "upstream_timeout"


def test_upstream_unreachable_is_502(make_gateway, redis_standalone: str) -> None:
    from llmgw_sidecar.devredis import free_port

    gw = make_gateway(gateway_config({"url": redis_standalone}, f"http://127.0.0.1:{free_port()}/v1"))
    with pytest.raises(openai.APIStatusError) as e:
        gw.client().chat.completions.create(model="ok", messages=MSG)
    assert e.value.status_code == 502 and e.value.body["code"] == "upstream_unreachable"
    assert gw.sample("llmgw_upstream_errors_total", kind="connect") == 3  # first try + 2 retries


def test_models_health_ready_metrics(gateway: Gateway) -> None:
    ids = [m.id for m in gateway.client().models.list()]
    assert "ok" in ids and "tools" in ids
    for path in ("/healthz", "/readyz", "/models"):
        with urllib.request.urlopen(gateway.url + path, timeout=5) as r:
            assert r.status == 200
    with urllib.request.urlopen(gateway.url + "/metrics", timeout=5) as r:
        assert b"llmgw_requests_total" in r.read()


def test_metrics_only_listener(make_gateway, redis_standalone: str, fake_upstream: FakeUpstream) -> None:
    from llmgw_sidecar.devredis import free_port

    port = free_port()
    gw = make_gateway(gateway_config({"url": redis_standalone}, fake_upstream.url,
                                     metrics={"port": port, "host": "127.0.0.1"}))
    gw.client().chat.completions.create(model="ok", messages=[{"role": "user", "content": "scrape me"}])
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        assert b'llmgw_requests_total{cache="miss"' in r.read()
    code, _ = post(gw, "/v1/chat/completions", b"{}")  # the API is still on its own port
    assert code == 400
    with pytest.raises(urllib.error.HTTPError) as e:  # and the metrics port serves nothing else
        urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{port}/v1/models"), timeout=5)
    assert e.value.code == 404 and json.loads(e.value.read())["error"]["code"] == "not_found"  # in OpenAI's format


def test_refused_requests_are_labelled_none_not_miss(gateway: Gateway) -> None:
    with pytest.raises(openai.NotFoundError):
        gateway.client().chat.completions.create(model="gpt-9", messages=MSG)
    post(gateway, "/v1/chat/completions", b"{bad")
    assert gateway.sample("llmgw_requests_total", cache="none") == 2
    assert gateway.sample("llmgw_requests_total", cache="miss") == 0
