"""Every Kubernetes API call of the operator and the webhook carries a timeout, and the timeout really bounds a call
to an API server that accepts the connection and never answers (the case that would otherwise hang a worker)."""

from __future__ import annotations

import ast
import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client

from llmgw_operator import apply, webhook_kube

SOURCES = sorted((Path(apply.__file__).parent).rglob("*.py"))
# Every method of the kubernetes client's API classes (CoreV1Api.read_namespaced_secret, ...).
API_METHODS = {m for name in dir(client) if name.endswith("Api") and isinstance(getattr(client, name), type)
               for m in dir(getattr(client, name)) if not m.startswith("_") and "_with_http_info" not in m
               and not m.endswith("_without_preload_content")} - {"api_client", "close"}
DYNAMIC = re.compile(r"^f?['\"](read|list|create|patch|delete|replace)_")  # getattr(api, f"read_namespaced_{...}")


def _api_calls(tree: ast.AST) -> Iterator[ast.Call]:
    """Calls of the kubernetes client's API methods: api.read_namespaced_x(...) and getattr(api, f"read_...")(...)."""
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        f = node.func
        if isinstance(f, ast.Attribute) and f.attr in API_METHODS:
            yield node
        elif isinstance(f, ast.Call) and isinstance(f.func, ast.Name) and f.func.id == "getattr" and \
                len(f.args) > 1 and DYNAMIC.match(ast.unparse(f.args[1])):
            yield node


def test_every_api_call_has_a_request_timeout() -> None:
    missing, seen = [], 0
    for path in SOURCES:
        for call in _api_calls(ast.parse(path.read_text())):
            if "to_thread" in ast.unparse(call.func):
                continue
            seen += 1
            kw = {k.arg for k in call.keywords}
            if "_request_timeout" not in kw:
                missing.append(f"{path.name}:{call.lineno}: {ast.unparse(call)[:100]}")
    # asyncio.to_thread(fn, ..., _request_timeout=...) passes it as a keyword of to_thread: checked separately.
    for path in SOURCES:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and ast.unparse(node.func) == "asyncio.to_thread" and node.args and \
                    isinstance(node.args[0], ast.Attribute) and node.args[0].attr in API_METHODS:
                seen += 1
                if "_request_timeout" not in {k.arg for k in node.keywords}:
                    missing.append(f"{path.name}:{node.lineno}: {ast.unparse(node)[:100]}")
    assert seen > 15, f"found only {seen} API calls: is the scan still right?"
    assert not missing, "API calls without _request_timeout:\n" + "\n".join(missing)


@pytest.fixture
def silent_server() -> Iterator[int]:
    """Accepts TCP connections and never sends a byte."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    conns: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                conns.append(srv.accept()[0])
            except OSError:
                continue

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    yield srv.getsockname()[1]
    stop.set()
    t.join(2)
    for c in conns:
        c.close()
    srv.close()


def test_a_silent_api_server_fails_a_call_within_its_timeout(silent_server: int,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = client.Configuration()
    cfg.host = f"http://127.0.0.1:{silent_server}"
    cfg.retries = False
    monkeypatch.setattr(apply, "REQUEST_TIMEOUT", (1.0, 1.0))
    applier = apply.Applier(client.ApiClient(cfg))
    t0 = time.monotonic()
    with pytest.raises(Exception):  # noqa: B017 -- urllib3's read timeout, whatever the client wraps it in
        applier.read("ConfigMap", "ns", "cm")
    assert time.monotonic() - t0 < 5, "the call was not bounded by its timeout"

    monkeypatch.setattr(webhook_kube, "REQUEST_TIMEOUT", (1.0, 1.0))
    t0 = time.monotonic()
    assert webhook_kube.detect_native_support(client.ApiClient(cfg)) is False  # unknown version: plain containers
    assert time.monotonic() - t0 < 5
