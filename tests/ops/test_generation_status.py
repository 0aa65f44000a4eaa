"""Declarative invalidation end to end: spec.cache.generation is rendered into the sidecar config, a sidecar picks a
bumped value up through its config reload and stops serving older entries, reports the generation it serves, and the
operator's readers turn the reports and the per-scope counters into a status that the CRD schema accepts."""

from __future__ import annotations

import copy
import datetime as dt
import time
from pathlib import Path

import jsonschema
import redis
import yaml

from llmgw_operator import crd
from llmgw_operator.builders import Gateway
from llmgw_operator.builders.sidecar_config import ADMIN_TOKEN_ENV, render_sidecar_config, sidecar_secret_env
from llmgw_operator.spend_reader import read_generations, read_spend, read_top_scopes
from llmgw_operator.status import Check, Observation, build_status
from llmgw_sidecar.app import create_app
from llmgw_sidecar.config import load_config
from llmgw_sidecar.metrics import Metrics
from tests.servers import ThreadServer

from .helpers import ask, fresh_prefix

SPEC = {"models": [{"name": "m1", "provider": "mock"}], "cache": {"generation": 3,
                                                                   "adminTokenSecretRef": {"name": "adm", "key": "t"}}}


def _wait(pred, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.05)


def test_operator_renders_generation_and_admin_token_reference() -> None:
    spec = crd.defaulted_spec(copy.deepcopy(SPEC))
    gw = Gateway.from_spec("gw", "team-a", spec)
    doc = render_sidecar_config(gw)
    assert doc["cache"]["generation"] == 3
    assert doc["admin"] == {"token": f"os.environ/{ADMIN_TOKEN_ENV}"}, "the token itself never enters the ConfigMap"
    assert {"name": ADMIN_TOKEN_ENV, "valueFrom": {"secretKeyRef": {"name": "adm", "key": "t"}}} in \
        sidecar_secret_env(gw)
    assert crd.defaulted_spec({"models": SPEC["models"]})["cache"]["generation"] == 0


def test_bumped_generation_through_reload_then_status(tmp_path: Path, redis_standalone: str) -> None:
    prefix = fresh_prefix()
    path = tmp_path / "config.yaml"
    doc = {"gateway": {"namespace": "team-a", "name": "gw"}, "redis": {"url": redis_standalone, "key_prefix": prefix},
           "models": [{"name": "m1", "provider": "mock", "pricing": {"input_per_1m": 1.0, "output_per_1m": 1.0}}],
           "cache": {"scope": "namespace", "generation": 0}, "spend": {"flush_interval_s": 0.1}}
    path.write_text(yaml.safe_dump(doc))
    srv = ThreadServer(lambda: create_app(load_config(path), config_path=path, metrics=Metrics(),
                                          reload_interval_s=0.05)).start()
    sync = redis.Redis.from_url(redis_standalone)
    try:
        assert ask(srv, "m1", "hello", "k") == "miss"
        _wait(lambda: ask(srv, "m1", "hello", "k") == "hit-exact")
        now = time.time
        _wait(lambda: read_generations(sync, "team-a", "gw", 0, now(), prefix=prefix)["sidecarsApplied"] == 1)

        doc["cache"]["generation"] = 1  # what `kubectl patch ... spec.cache.generation` becomes in the ConfigMap
        path.write_text(yaml.safe_dump(doc))
        _wait(lambda: read_generations(sync, "team-a", "gw", 1, now(), prefix=prefix) ==
              {"sidecarsReporting": 1, "sidecarsApplied": 1})
        assert read_generations(sync, "team-a", "gw", 0, now(), prefix=prefix)["sidecarsApplied"] == 0
        assert ask(srv, "m1", "hello", "k") == "miss", "older entries are no longer served"
        _wait(lambda: ask(srv, "m1", "hello", "k") == "hit-exact")

        today = dt.datetime.now(dt.UTC).date()
        _wait(lambda: read_top_scopes(sync, "team-a", "gw", today, prefix=prefix)[:1] and
              read_top_scopes(sync, "team-a", "gw", today, prefix=prefix)[0]["hits"] == 2)
        top = read_top_scopes(sync, "team-a", "gw", today, prefix=prefix)
        assert top[0]["scope"] == "ns:team-a" and top[0]["misses"] == 2 and top[0]["savedUsd"] > 0
        spend = read_spend(sync, "team-a", "gw", today, prefix=prefix)
        spend["topScopes"] = top
        spend["updatedAt"] = "2026-11-30T00:00:00Z"
        # a report from a sidecar gone for more than a day is removed by the reader
        key = f"{prefix}:gen:{{team-a/gw}}"
        sync.hset(key, "old-pod", f"0 {int(now()) - 200_000}")
        assert read_generations(sync, "team-a", "gw", 1, now(), prefix=prefix)["sidecarsReporting"] == 1
        assert not sync.hexists(key, "old-pod")
    finally:
        srv.stop()
        sync.close()

    obs = Observation(4, Check(True, "Rendered", "ok"), Check(True, "Ready", "ok"), config_map="gw-sidecar",
                      config_hash="h", spend=spend, cache={"generation": 1, "sidecarsReporting": 1,
                                                           "sidecarsApplied": 1})
    status = build_status(obs, None, "2026-11-30T00:00:00Z")
    schema = crd.to_json_schema(crd.openapi_schema()["properties"]["status"])
    jsonschema.validate(status, schema)
    assert status["cache"]["generation"] == 1 and status["spend"]["topScopes"][0]["scope"] == "ns:team-a"


def test_status_cache_counts_reset_when_the_generation_changes() -> None:
    from llmgw_operator.reconcile import _cache_status

    prev = {"generation": 1, "sidecarsReporting": 3, "sidecarsApplied": 3}
    assert _cache_status(prev, 1) == prev
    # merge patch: nulls remove the old generation's counts
    assert _cache_status(prev, 2) == {"generation": 2, "sidecarsReporting": None, "sidecarsApplied": None}
    assert _cache_status(None, 0)["generation"] == 0
