"""GET /spend (listed in the README): a malformed query is an OpenAI-style 400 naming the parameter."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator

import pytest

from llmgw_sidecar.app import create_app
from llmgw_sidecar.config import parse_config
from llmgw_sidecar.metrics import Metrics
from tests.servers import ThreadServer


@pytest.fixture(scope="module")  # one gateway for the module: start-up is the slow part on a busy machine
def gateway_url(redis_standalone: str) -> Iterator[str]:
    cfg = parse_config({"models": [{"name": "m", "provider": "mock"}],
                        "redis": {"url": redis_standalone, "key_prefix": f"t{uuid.uuid4().hex[:10]}"}})
    srv = ThreadServer(lambda: create_app(cfg, metrics=Metrics())).start()
    yield srv.url
    srv.stop()


def get(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as e:
        return e.code, json.load(e)


@pytest.mark.parametrize(("query", "param"), [("day=notaday", "day"), ("day=20261130", "day"),
                                              ("day=2026-11-30&day=2026-02-30", "day"), ("last=ten", "last")])
def test_malformed_query_is_a_400(gateway_url: str, query: str, param: str) -> None:
    status, body = get(f"{gateway_url}/spend?{query}")
    assert status == 400, body
    assert body["error"]["param"] == param and body["error"]["type"] == "invalid_request_error", body


def test_valid_query_is_answered(gateway_url: str) -> None:
    status, body = get(f"{gateway_url}/spend?day=2026-11-30&last=7")
    assert status == 200, body
