"""The admin HTTP API and LiteLLM's cache/health endpoints on a real sidecar: off without a token, 401 with a wrong
one, and the same invalidation as the CLI (counted in a metric, logged with who asked); /spend/scopes figures."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from llmgw_sidecar.cache.keys import api_key_hash

from .helpers import ADMIN_TOKEN, ask, fresh_prefix, sidecar_config, start_sidecar

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}", "X-LLMGW-Actor": "alice@platform"}


def _wait_hit(srv: Any, model: str, text: str, key: str) -> None:
    deadline = time.monotonic() + 10
    while ask(srv, model, text, key) != "hit-exact":
        assert time.monotonic() < deadline, "entry never became readable"
        time.sleep(0.05)


def test_admin_endpoints_off_without_token(redis_standalone: str) -> None:
    srv, _ = start_sidecar(sidecar_config({"url": redis_standalone}, fresh_prefix(), "team-a", "gw"))
    try:
        for method, path in (("GET", "/admin/cache/entries"), ("POST", "/admin/cache/invalidate"),
                             ("GET", "/cache/ping"), ("POST", "/cache/delete"), ("POST", "/cache/flushall")):
            r = requests.request(method, srv.url + path, headers=AUTH, timeout=5)
            assert r.status_code == 404 and r.json()["error"]["code"] == "admin_disabled", path
        # LiteLLM's health aliases need no token
        r = requests.get(srv.url + "/health/liveliness", timeout=5)
        assert r.status_code == 200 and r.json() == "I'm alive!"
        r = requests.get(srv.url + "/health/readiness", timeout=5)
        assert r.status_code == 200 and r.json()["status"] == "healthy"
    finally:
        srv.stop()


def test_admin_api_and_litellm_endpoints(redis_standalone: str, caplog: pytest.LogCaptureFixture) -> None:
    prefix = fresh_prefix()
    a = sidecar_config({"url": redis_standalone}, prefix, "team-a", "gw", admin={"token": ADMIN_TOKEN})
    b = sidecar_config({"url": redis_standalone}, prefix, "team-b", "gw", admin={"token": ADMIN_TOKEN})
    srv_b, _ = start_sidecar(b)
    srv, metrics = start_sidecar(a)
    try:
        ask(srv_b, "m1", "hello", "k1")
        for model in ("m1", "m2"):
            ask(srv, model, "hello", "k1")
            _wait_hit(srv, model, "hello", "k1")
        ask(srv, "m1", "other", "k2")
        _wait_hit(srv, "m1", "other", "k2")
        _wait_hit(srv_b, "m1", "hello", "k1")

        r = requests.get(srv.url + "/cache/ping", headers={"Authorization": "Bearer wrong"}, timeout=5)
        assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
        r = requests.get(srv.url + "/cache/ping", headers=AUTH, timeout=5)
        assert r.status_code == 200
        assert {k: r.json()[k] for k in ("status", "cache_type", "ping_response", "set_cache_response")} == \
            {"status": "healthy", "cache_type": "redis", "ping_response": True, "set_cache_response": "success"}

        # list, paged
        r = requests.get(srv.url + "/admin/cache/entries", params={"limit": 1}, headers=AUTH, timeout=5)
        assert r.status_code == 200
        page = r.json()
        seen = [e["key"] for e in page["data"]]
        while page["next_cursor"]:
            page = requests.get(srv.url + "/admin/cache/entries", params={"limit": 1, "cursor": page["next_cursor"]},
                                headers=AUTH, timeout=5).json()
            seen += [e["key"] for e in page["data"]]
        assert len(seen) == 3 and all(":exact:gw:team-a/gw|" in k for k in seen)
        by_model = requests.get(srv.url + "/admin/cache/entries", params={"model": "m1"}, headers=AUTH,
                                timeout=5).json()["data"]
        assert {e["model"] for e in by_model} == {"m1"} and len(by_model) == 2
        one = requests.get(srv.url + "/admin/cache/entry", params={"key": by_model[0]["key"]}, headers=AUTH,
                           timeout=5).json()
        assert one["fingerprint"] == by_model[0]["fingerprint"] and one["ttl_s"] > 0 and one["size_bytes"] > 0

        # a client's mistakes are 4xx in OpenAI format
        bad = requests.post(srv.url + "/admin/cache/invalidate", json={}, headers=AUTH, timeout=5)
        assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_selector"
        bad = requests.post(srv.url + "/admin/cache/invalidate", data=b"{nope", headers=AUTH, timeout=5)
        assert bad.status_code == 400
        bad = requests.get(srv.url + "/admin/cache/entries", params={"older_than": "soon"}, headers=AUTH, timeout=5)
        assert bad.status_code == 400
        bad = requests.get(srv.url + "/admin/cache/entries", params={"cursor": "x.y"}, headers=AUTH, timeout=5)
        assert bad.status_code == 400

        # invalidate by scope (team X = this caller scope), dry run first
        scope = f"key:{api_key_hash('Bearer k2')}"
        dry = requests.post(srv.url + "/admin/cache/invalidate", json={"scope": scope, "dry_run": True},
                            headers=AUTH, timeout=5).json()
        assert dry["deleted"] == {"exact": 1, "semantic": 0} and dry["dry_run"]
        with caplog.at_level(logging.INFO, logger="llmgw.admin"):
            done = requests.post(srv.url + "/admin/cache/invalidate", json={"scope": scope}, headers=AUTH,
                                 timeout=5).json()
        assert done["deleted"] == {"exact": 1, "semantic": 0}
        assert any("alice@platform" in r.getMessage() and "scope=" + scope in r.getMessage() for r in caplog.records)
        assert ask(srv, "m1", "other", "k2") == "miss"

        # the key of an answer comes back in x-llmgw-cache-key (LiteLLM: x-litellm-cache-key)
        import openai

        c = openai.OpenAI(base_url=srv.url + "/v1", api_key="k1", max_retries=0)
        raw = c.chat.completions.with_raw_response.create(model="m1", messages=[{"role": "user", "content": "hello"}])
        assert raw.headers["x-llmgw-cache"] == "hit-exact"
        shown = requests.get(srv.url + "/admin/cache/entry", params={"key": raw.headers["x-llmgw-cache-key"]},
                             headers=AUTH, timeout=5)
        assert shown.status_code == 200 and shown.json()["model"] == "m1"

        # LiteLLM /cache/delete with a key we own and one of gateway B
        b_key = next(iter(requests.get(srv_b.url + "/admin/cache/entries", headers=AUTH, timeout=5).json()["data"]))
        mine = requests.get(srv.url + "/admin/cache/entries", params={"model": "m2"}, headers=AUTH,
                            timeout=5).json()["data"][0]["key"]
        r = requests.post(srv.url + "/cache/delete", json={"keys": [mine, b_key["key"]]}, headers=AUTH, timeout=5)
        assert r.status_code == 200 and r.json()["status"] == "success"
        assert r.json()["deleted"]["exact"] == 1 and r.json()["skipped"] == [b_key["key"]]
        r = requests.post(srv.url + "/cache/delete", json={"keys": "abc"}, headers=AUTH, timeout=5)
        assert r.status_code == 400

        # /cache/flushall: this gateway only, never FLUSHALL
        _wait_hit(srv, "m1", "other", "k2")
        r = requests.post(srv.url + "/cache/flushall", headers=AUTH, timeout=5)
        assert r.status_code == 200 and r.json()["status"] == "success" and r.json()["deleted"]["exact"] == 2
        assert requests.get(srv.url + "/admin/cache/entries", headers=AUTH, timeout=5).json()["data"] == []
        assert len(requests.get(srv_b.url + "/admin/cache/entries", headers=AUTH, timeout=5).json()["data"]) == 1
        assert ask(srv_b, "m1", "hello", "k1") == "hit-exact"

        reg = metrics.registry
        assert reg.get_sample_value("llmgw_cache_invalidations_total", {"cache": "exact", "by": "scope"}) == 1
        assert reg.get_sample_value("llmgw_cache_invalidations_total", {"cache": "exact", "by": "key"}) == 1
        assert reg.get_sample_value("llmgw_cache_invalidations_total", {"cache": "exact", "by": "all"}) == 2
    finally:
        srv.stop()
        srv_b.stop()


def test_savings_per_scope_json_cli_and_top_n(redis_standalone: str, tmp_path: Path) -> None:
    prefix = fresh_prefix()
    doc = {"gateway": {"namespace": "team-a", "name": "gw"},
           "redis": {"url": redis_standalone, "key_prefix": prefix},
           "models": [{"name": "m2", "provider": "mock", "pricing": {"input_per_1m": 1.0, "output_per_1m": 2.0}}],
           "cache": {"scope": "api_key"}, "spend": {"flush_interval_s": 0.1}, "metrics": {"top_scopes": 1}}
    cfg = sidecar_config({"url": redis_standalone}, prefix, "team-a", "gw", metrics={"top_scopes": 1})
    srv, metrics = start_sidecar(cfg)
    try:
        for key, hits in (("k1", 3), ("k2", 1)):
            ask(srv, "m2", f"q {key}", key)
            _wait_hit(srv, "m2", f"q {key}", key)
            for _ in range(hits - 1):
                assert ask(srv, "m2", f"q {key}", key) == "hit-exact"
        s1, s2 = f"key:{api_key_hash('Bearer k1')}", f"key:{api_key_hash('Bearer k2')}"
        deadline = time.monotonic() + 10
        while True:
            body = requests.get(srv.url + "/spend/scopes", timeout=5).json()
            rows = {r["scope"]: r for r in body["scopes"]}
            if rows.get(s1, {}).get("hits") == 3 and rows.get(s2, {}).get("hits") == 1:
                break
            assert time.monotonic() < deadline, body
            time.sleep(0.1)
        assert body["scopes"][0]["scope"] == s1, "biggest saver first"
        assert rows[s1]["misses"] == 1 and rows[s1]["saved_usd"] > rows[s2]["saved_usd"] > 0
        assert rows[s1]["saved_tokens"] > 0 and rows[s1]["hit_ratio"] == 0.75
        one = requests.get(srv.url + "/spend/scopes", params={"scope": s2}, timeout=5).json()["scopes"]
        assert [r["scope"] for r in one] == [s2]

        # Prometheus: top 1 scope by name, the rest summed as "other"
        reg = metrics.registry
        assert reg.get_sample_value("llmgw_cache_scope_hits_total", {"scope": "gw:team-a/gw|" + s1}) == 3
        assert reg.get_sample_value("llmgw_cache_scope_hits_total", {"scope": "other"}) == 1  # k2, not in the top 1
        assert reg.get_sample_value("llmgw_cache_scope_hits_total", {"scope": "gw:team-a/gw|" + s2}) is None

        # the documented CLI answer to "what does team X save?" (and "drop everything cached for model Y")
        path = tmp_path / "config.yaml"
        path.write_text(yaml.safe_dump(doc))
        env_run = [sys.executable, "-m", "llmgw_sidecar", "cache"]
        out = subprocess.run([*env_run, "savings", "-c", str(path), "--scope", s1, "--json"], capture_output=True,
                             text=True, timeout=60, check=True).stdout
        assert '"hits":3' in out and s2 not in out
        listed = json.loads(subprocess.run([*env_run, "ls", "-c", str(path), "--json", "--scope", s1],
                                           capture_output=True, text=True, timeout=60, check=True).stdout)
        assert [e["scope"] for e in listed] == ["gw:team-a/gw|" + s1]
        shown = json.loads(subprocess.run([*env_run, "show", "-c", str(path), listed[0]["key"]], capture_output=True,
                                          text=True, timeout=60, check=True).stdout)
        assert shown["fingerprint"] == listed[0]["fingerprint"] and shown["ttl_s"] > 0
        out = subprocess.run([*env_run, "rm", "-c", str(path), listed[0]["key"], "not-a-key"], capture_output=True,
                             text=True, timeout=60)
        assert out.returncode == 1 and json.loads(out.stdout) == {"deleted": {"exact": 1, "semantic": 0},
                                                                 "skipped": ["not-a-key"]}
        assert "cache invalidation on team-a/gw by cli actor=unnamed user=" in out.stderr
        done = subprocess.run([*env_run, "purge", "-c", str(path), "--model", "m2", "--actor", "ops ticket-42\n"],
                              capture_output=True, text=True, timeout=60, check=True)
        assert done.stdout.startswith("deleted 1 exact and 0 semantic entries")
        # Not counted (no scrape of a CLI process: docs/observability.md); logged with who asked, on one line.
        (line,) = [x for x in done.stderr.splitlines() if "cache invalidation" in x]
        assert " by cli actor=opsticket-42 user=" in line and " pid=" in line and "model=m2 -> exact=1" in line
        out = subprocess.run([*env_run, "ls", "-c", str(path), "--json"], capture_output=True, text=True, timeout=60,
                             check=True).stdout
        assert out.strip() == "[]"
        r = subprocess.run([*env_run, "purge", "-c", str(path)], capture_output=True, text=True, timeout=60)
        assert r.returncode == 2 and "needs a selector" in r.stderr
    finally:
        srv.stop()


def test_admin_token_from_a_mounted_secret_file_and_from_the_environment(redis_standalone: str, tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    token_file = tmp_path / "admin-token"
    token_file.write_text("from-file\n")
    srv, _ = start_sidecar(sidecar_config({"url": redis_standalone}, fresh_prefix(), "team-a", "gw",
                                          admin={"token_file": str(token_file)}))
    try:
        ok = requests.get(srv.url + "/cache/ping", headers={"Authorization": "Bearer from-file"}, timeout=5)
        assert ok.status_code == 200
        token_file.unlink()  # the Secret went away: closed, and the answer says why (never a traceback)
        r = requests.get(srv.url + "/cache/ping", headers={"Authorization": "Bearer from-file"}, timeout=5)
        assert r.status_code == 503 and r.json()["error"]["code"] == "admin_token_unreadable"
    finally:
        srv.stop()
    monkeypatch.setenv("LLMGW_ADMIN_TOKEN", "from-env")
    srv, _ = start_sidecar(sidecar_config({"url": redis_standalone}, fresh_prefix(), "team-a", "gw",
                                          admin={"token": "os.environ/LLMGW_ADMIN_TOKEN"}))
    try:
        assert requests.get(srv.url + "/cache/ping", headers={"Authorization": "Bearer from-env"},
                            timeout=5).status_code == 200
        assert requests.get(srv.url + "/cache/ping", headers={"Authorization": "Bearer from-file"},
                            timeout=5).status_code == 401
    finally:
        srv.stop()


def test_hits_per_entry_in_the_api_and_the_cli(redis_standalone: str, tmp_path: Path) -> None:
    """Counted in memory on the hit path and written every spend.flush_interval_s (0.1 s here) while the sidecar
    runs; a deleted entry takes its count along, and the same request stored again starts from zero."""
    import openai

    doc = {"gateway": {"namespace": "team-a", "name": "gw"},
           "redis": {"url": redis_standalone, "key_prefix": fresh_prefix()},
           "models": [{"name": "m1", "provider": "mock"}], "cache": {"scope": "api_key"},
           "spend": {"flush_interval_s": 0.1}, "admin": {"token": ADMIN_TOKEN}}
    cfg = sidecar_config({"url": redis_standalone}, doc["redis"]["key_prefix"], "team-a", "gw",
                         admin={"token": ADMIN_TOKEN})
    srv, _ = start_sidecar(cfg)
    c = openai.OpenAI(base_url=srv.url + "/v1", api_key="k1", max_retries=0)

    def call(text: str) -> tuple[str, str]:
        raw = c.chat.completions.with_raw_response.create(model="m1", messages=[{"role": "user", "content": text}])
        return raw.headers["x-llmgw-cache"], raw.headers["x-llmgw-cache-key"]

    def hits_of(key: str) -> int:
        return int(requests.get(srv.url + "/admin/cache/entry", params={"key": key}, headers=AUTH,
                                timeout=5).json()["hits"])

    def settled(key: str) -> int:
        # The wait for a first hit may have stored the answer twice (misses before the first store landed): count
        # from whichever entry is current once every write (0.1 s flushes) is done.
        last = -1
        for _ in range(100):
            time.sleep(0.3)
            now = hits_of(key)
            if now == last:
                return now
            last = now
        raise AssertionError("hit count never settled")

    try:
        _wait_hit(srv, "m1", "counted", "k1")  # ends on the first hit
        _, key = call("counted")
        base = settled(key)
        assert base >= 1
        for _ in range(4):
            assert call("counted")[0] == "hit-exact"
        assert settled(key) == base + 4
        _, never_hit = call("stored, never asked again")
        time.sleep(0.3)
        assert hits_of(never_hit) == 0

        path = tmp_path / "config.yaml"
        path.write_text(yaml.safe_dump({**doc, "redis": {**doc["redis"], "key_prefix": cfg.redis.key_prefix}}))
        shown = json.loads(subprocess.run([sys.executable, "-m", "llmgw_sidecar", "cache", "show", "-c", str(path),
                                           key], capture_output=True, text=True, timeout=60, check=True).stdout)
        assert shown["hits"] == base + 4

        r = requests.post(srv.url + "/cache/delete", json={"keys": [key]}, headers=AUTH, timeout=5)
        assert r.json()["deleted"]["exact"] == 1
        _wait_hit(srv, "m1", "counted", "k1")
        assert 1 <= settled(key) < base + 4, "stored again: a new entry, counted from zero"
    finally:
        srv.stop()
