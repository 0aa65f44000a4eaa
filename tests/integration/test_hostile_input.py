"""Hostile and malformed input: never a 5xx, every 4xx OpenAI-style JSON, at most one quiet log line, no traceback."""

from __future__ import annotations

import json
import logging
import socket
import time
from typing import Any

import pytest

from tests.fake_upstream import FakeUpstream
from tests.integration.conftest import Gateway, gateway_config
from tests.integration.rawhttp import Answer, read_answer, request, send

CHAT = b"/v1/chat/completions"
JSONH = (b"Content-Type", b"application/json")


def chat_body(content: str = "hostile", **extra: Any) -> bytes:
    return json.dumps({"model": "ok", "messages": [{"role": "user", "content": content}], **extra}).encode()


def nested(depth: int) -> Any:
    v: Any = "x"
    for i in range(depth - 1):
        v = [v] if i % 2 else {"k": v}
    return v


CASES: list[tuple[str, bytes, list[tuple[bytes, bytes]], bytes, int]] = [
    # (name, path, headers, body, expected status)
    ("depth limit", CHAT, [JSONH], json.dumps({"model": "ok", "messages": [{"role": "user", "content": "x"}],
                                               "metadata": nested(100)}).encode(), 400),
    ("depth beyond orjson", CHAT, [JSONH], b'{"model":"ok","x":' + b"[" * 2000 + b"]" * 2000 + b"}", 400),
    ("non-utf8 header value", CHAT, [JSONH, (b"X-Custom", b"\xff\xfe\xfd")], chat_body("non-utf8 header"), 200),
    ("non-utf8 authorization", CHAT, [JSONH, (b"Authorization", b"Bearer \xff\xfe")], chat_body("auth bytes"), 200),
    ("non-ascii request id", CHAT, [JSONH, (b"x-request-id", "r\u00e9q".encode())], chat_body("rid"), 200),
    ("superscript digits in max-age", CHAT, [JSONH, (b"Cache-Control", "max-age=\u00b2".encode())], chat_body(), 400),
    ("arabic digits in s-maxage", CHAT, [JSONH, (b"Cache-Control", "s-maxage=\u0661\u0662".encode())],
     chat_body(), 400),
    ("huge max-age is clamped", CHAT, [JSONH, (b"Cache-Control", b"max-age=99999999999999999999999")],
     chat_body("clamped"), 200),
    ("bad content-encoding", CHAT, [JSONH, (b"Content-Encoding", b"gzip")], chat_body(), 400),
    ("unknown content-type", CHAT, [(b"Content-Type", b"text/\xff")], chat_body(), 415),
    ("ttl far too large", CHAT, [JSONH], chat_body(cache={"ttl": 10**16}), 400),
    ("ttl not finite", CHAT, [JSONH], b'{"model":"ok","messages":[{"role":"user","content":"x"}],"cache":{"ttl":1e999}}',
     400),
    ("s-maxage huge is clamped", CHAT, [JSONH], chat_body("age clamp", cache={"s-maxage": 10**16}), 200),
    ("token-id prompt", b"/v1/completions", [JSONH], json.dumps({"model": "ok", "prompt": [1212, 318]}).encode(), 200),
    ("token-id arrays prompt", b"/v1/completions", [JSONH], json.dumps({"model": "ok", "prompt": [[1, 2], [3]]}).encode(),
     200),
    ("token-id input", b"/v1/embeddings", [JSONH], json.dumps({"model": "ok", "input": [[1, 2], [3]]}).encode(), 200),
    ("mixed prompt array", b"/v1/completions", [JSONH], json.dumps({"model": "ok", "prompt": [1, "a"]}).encode(), 400),
    ("invalid utf-8 body", CHAT, [JSONH], b'{"model":"ok","messages":"\xff"}', 400),
    ("lone surrogate escape", CHAT, [JSONH], b'{"model":"ok","messages":[{"role":"user","content":"\\ud800"}]}', 400),
]


@pytest.mark.parametrize(("name", "path", "headers", "body", "status"), CASES, ids=[c[0] for c in CASES])
def test_hostile_requests(gateway: Gateway, caplog: pytest.LogCaptureFixture, name: str, path: bytes,
                          headers: list[tuple[bytes, bytes]], body: bytes, status: int) -> None:
    caplog.set_level(logging.INFO)
    ans = request(gateway.server.port, b"POST", path, headers, body)
    assert ans is not None, "connection closed without an answer"
    assert ans.status == status, ans.body
    if status >= 400:
        assert ans.is_openai_error(), ans.body
    assert_quiet(caplog)


def assert_quiet(caplog: pytest.LogCaptureFixture, max_lines: int = 1) -> None:
    noisy = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert not noisy, [r.getMessage() for r in noisy]
    info = [r for r in caplog.records if r.levelno >= logging.INFO
            and (r.name in ("llmgw", "llmgw.http") or r.name.startswith("aiohttp"))]
    assert len(info) <= max_lines, [r.getMessage() for r in info]


RAW_CASES: list[tuple[str, bytes, int]] = [
    ("duplicate content-length", b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
     b"Content-Length: 2\r\nContent-Length: 3\r\n\r\n{}", 400),
    ("content-length and chunked", b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n"
     b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    ("too many headers", b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-H%d: v\r\n" % i for i in range(300))
     + b"\r\n", 431),
    ("header field too large", b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n", 431),
    ("request line too long", b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 431),
    ("garbage request line", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", 400),
    ("bad header name", b"GET /healthz HTTP/1.1\r\nHost: x\r\nBad Header: v\r\n\r\n", 400),
    ("nul in header value", b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n", 400),
    ("bad chunk size", b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
     b"Transfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n", 400),
]


@pytest.mark.parametrize(("name", "raw", "status"), RAW_CASES, ids=[c[0] for c in RAW_CASES])
def test_malformed_http(gateway: Gateway, caplog: pytest.LogCaptureFixture, name: str, raw: bytes,
                        status: int) -> None:
    caplog.set_level(logging.INFO)
    ans = send(gateway.server.port, raw)
    assert ans is not None and ans.status == status, ans
    assert ans.is_openai_error(), ans.body
    assert_quiet(caplog)


@pytest.fixture
def impatient(make_gateway: Any, redis_standalone: str, fake_upstream: FakeUpstream) -> Gateway:
    return make_gateway(gateway_config({"url": redis_standalone}, fake_upstream.url,
                                       listen={"read_timeout_s": 0.5, "keepalive_timeout_s": 0.6}))


def test_slowloris_headers_get_408_and_are_closed(impatient: Gateway, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    t0 = time.monotonic()
    with socket.create_connection(("127.0.0.1", impatient.server.port), timeout=10) as sock:
        for b in b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n":
            try:
                sock.sendall(bytes([b]))
            except OSError:
                break
            time.sleep(0.05)
        ans = read_answer(sock)
    assert ans is not None and ans.status == 408 and ans.is_openai_error()
    assert time.monotonic() - t0 < 3
    assert_quiet(caplog)


def test_slow_body_gets_408(impatient: Gateway, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    with socket.create_connection(("127.0.0.1", impatient.server.port), timeout=10) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 100\r\n\r\n{\"model\"")
        t0 = time.monotonic()
        ans = read_answer(sock)
    assert ans is not None and ans.status == 408 and ans.is_openai_error(), ans
    assert 0.4 < time.monotonic() - t0 < 3
    assert_quiet(caplog)


def test_idle_keepalive_connection_is_closed(impatient: Gateway) -> None:
    with socket.create_connection(("127.0.0.1", impatient.server.port), timeout=10) as sock:
        t0 = time.monotonic()
        assert sock.recv(1) == b""  # closed by the server, nothing sent
    assert time.monotonic() - t0 < 3


def test_client_hanging_up_is_quiet(gateway: Gateway, fake_upstream: FakeUpstream,
                                    caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    for raw in (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Content-Length: 500\r\n\r\n{\"model\": \"ok\"",  # hangs up in the middle of the body
                b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Content-Length: " + str(len(chat_body("slow hang-up"))).encode() + b"\r\n\r\n"
                + chat_body("slow hang-up").replace(b'"ok"', b'"slow"')):  # hangs up while the upstream thinks
        with socket.create_connection(("127.0.0.1", gateway.server.port), timeout=10) as sock:
            sock.sendall(raw)
            time.sleep(0.3)
    time.sleep(fake_upstream.slow_s + 0.5)
    assert_quiet(caplog)
    ok = request(gateway.server.port, b"POST", CHAT, [JSONH], chat_body("after hang-ups"))
    assert isinstance(ok, Answer) and ok.status == 200


def test_request_values_cannot_open_the_shared_breaker(gateway: Gateway) -> None:
    """The attack from issue 10: a burst of requests with an absurd cache TTL used to make Redis refuse each write,
    open the shared breaker and switch the cache off for everyone. Now each is a 400, and Redis never sees them."""
    port = gateway.server.port
    for i in range(30):
        for ttl in (10**16, 10**30, -1, 1e308):
            ans = request(port, b"POST", CHAT, [JSONH], chat_body(f"burst {i}", cache={"ttl": ttl}))
            assert ans is not None and ans.status == 400 and ans.json()["error"]["param"] == "cache.ttl"
    assert gateway.sample("llmgw_redis_circuit_open") == 0
    assert gateway.sample("llmgw_redis_errors_total") == 0
    first = request(port, b"POST", CHAT, [JSONH], chat_body("still cached"))
    assert first is not None and first.headers["x-llmgw-cache"] == "miss"
    deadline = time.monotonic() + 5
    while (again := request(port, b"POST", CHAT, [JSONH], chat_body("still cached"))) is not None and \
            again.headers["x-llmgw-cache"] != "hit-exact":
        assert time.monotonic() < deadline, "normal requests stopped hitting"
        time.sleep(0.02)
