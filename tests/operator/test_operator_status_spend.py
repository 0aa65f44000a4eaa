"""Pure status computation, the spend reader against a real Redis, and the CLI's settings."""

from __future__ import annotations

import datetime as dt
import logging
import uuid

import kopf
import pytest
import redis

from llmgw_operator import __main__ as cli
from llmgw_operator.spend_reader import read_spend
from llmgw_operator.status import Check, Observation, build_status, ready_check
from llmgw_sidecar.spend.keys import daily_totals_key

OK = Check(True, "Rendered", "ok")
NOW, LATER = "2026-11-22T00:00:00Z", "2026-11-22T00:05:00Z"


def conds(status: dict) -> dict[str, dict]:
    return {c["type"]: c for c in status["conditions"]}


def test_ready_only_when_both_parts_are_ready() -> None:
    assert ready_check(OK, Check(True, "PodsReady", "1/1")).ok is True
    r = ready_check(Check(False, "SecretNotFound", "Secret a/b missing"), Check(False, "PodsNotReady", "0/1"))
    assert (r.ok, r.reason, r.message) == (False, "SecretNotFound", "ConfigReady: Secret a/b missing")
    r = ready_check(OK, Check(None, "Pending", "waiting"))
    assert r.ok is None and r.status == "Unknown" and r.reason == "Pending"


def test_status_shape_and_transition_times() -> None:
    obs = Observation(3, OK, Check(False, "PodsNotReady", "0/1 Redis pods ready"),
                      endpoints={"mode": "standalone", "url": "redis://x:6379/0"}, members=(0, 1),
                      config_map="gw-sidecar", config_hash="h")
    first = build_status(obs, None, NOW)
    c = conds(first)
    assert first["observedGeneration"] == 3
    assert [x["type"] for x in first["conditions"]] == ["Ready", "RedisReady", "ConfigReady"]
    assert c["Ready"] == {"type": "Ready", "status": "False", "reason": "PodsNotReady",
                          "message": "RedisReady: 0/1 Redis pods ready", "lastTransitionTime": NOW,
                          "observedGeneration": 3}
    assert first["redis"] == {"mode": "standalone", "url": "redis://x:6379/0", "readyMembers": 0, "desiredMembers": 1}
    assert first["sidecar"] == {"configMap": "gw-sidecar", "configHash": "h"}
    # Same verdict later: the transition time stays; a changed verdict moves it.
    same = conds(build_status(obs, first, LATER))
    assert same["Ready"]["lastTransitionTime"] == NOW
    obs.redis = Check(True, "PodsReady", "1/1")
    flipped = conds(build_status(obs, first, LATER))
    assert flipped["Ready"]["lastTransitionTime"] == LATER and flipped["Ready"]["status"] == "True"
    assert flipped["ConfigReady"]["lastTransitionTime"] == NOW


def test_spend_reader_against_real_redis(redis_sync: redis.Redis) -> None:
    ns, name = "team-a", f"gw-{uuid.uuid4().hex[:6]}"
    today = dt.date(2026, 11, 22)
    keys = [daily_totals_key("llmgw", ns, name, d) for d in ("2026-11-01", "2026-11-21", "2026-11-22", "2026-10-31")]
    redis_sync.hset(keys[0], mapping={"requests": 5, "cost_nusd": 250_000_000})
    redis_sync.hset(keys[1], mapping={"requests": 7, "cost_usd": "0.75"})  # decimal-only writer: the fallback
    redis_sync.hset(keys[2], mapping={"requests": 20, "hits": 5, "cost_nusd": 1_234_567_890, "saved_nusd": 400_000_000,
                                      "cost_usd": "1.23456789"})
    redis_sync.hset(keys[3], mapping={"requests": 1000, "cost_nusd": 99 * 10**9})  # last month: not counted
    try:
        spend = read_spend(redis_sync, ns, name, today)
    finally:
        redis_sync.delete(*keys)
    assert spend == {"day": "2026-11-22", "todayUsd": 1.234568, "todayRequests": 20, "todayCacheHits": 5,
                     "todaySavedUsd": 0.4, "todayHitRatio": 0.25, "monthUsd": 2.234568, "monthRequests": 32}


def test_spend_reader_with_nothing_recorded(redis_sync: redis.Redis) -> None:
    spend = read_spend(redis_sync, "team-a", f"none-{uuid.uuid4().hex[:6]}", dt.date(2026, 2, 1))
    assert spend["todayUsd"] == 0 and spend["todayRequests"] == 0 and spend["todayHitRatio"] == 0.0
    assert spend["monthRequests"] == 0


def test_cli_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMGW_WATCH_NAMESPACES", "a, b")
    monkeypatch.setenv("LLMGW_PEERING_NAME", "llmgateway")
    monkeypatch.setenv("LLMGW_WEBHOOK_ENABLED", "false")
    args = cli.build_parser().parse_args([])
    assert args.namespaces == "a, b" and args.peering == "llmgateway" and args.no_webhook
    assert cli.build_parser().parse_args(["run", "--status-interval", "5"]).status_interval == 5
    s = cli.operator_settings("llmgateway")
    assert s.peering.mandatory and s.peering.clusterwide
    assert s.watching.server_timeout == 300 and s.watching.client_timeout > s.watching.server_timeout
    assert s.posting.level == logging.INFO
    assert isinstance(s.persistence.progress_storage, kopf.AnnotationsProgressStorage)
    assert s.background.cancellation_polling <= 2, "a deleted gateway waits on its refresh timer no longer"
    assert not cli.operator_settings("").peering.mandatory
    assert not cli.operator_settings("llmgateway", ["a", "b"]).peering.clusterwide  # KopfPeering per namespace


def test_peering_priorities_are_drawn_at_startup_whatever_is_enabled() -> None:
    """Two replicas with kopf's default priority 0 pause each other: each process draws its own, in the operator's
    start-up settings (not in an optional part such as the webhook)."""
    drawn = {cli.operator_settings("llmgateway").peering.priority for _ in range(3)}
    assert len(drawn) == 3 and min(drawn) > 0
    assert cli.operator_settings("llmgateway", ["team-a"]).peering.priority > 0
    assert cli.operator_settings("").peering.priority == 0, "standalone: no peering, no priority"


def test_cli_without_crd_fails_clearly(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    from llmgw_operator import crd

    def nowhere() -> None:
        raise crd.CRDNotFound("LLMGateway CRD not found; set LLMGW_CRD_PATH. Looked in: /x")

    monkeypatch.setattr(cli, "load_crd", nowhere)
    assert cli.main([]) == 2
    assert "CRD not found; set LLMGW_CRD_PATH" in capsys.readouterr().err


def test_cli_without_kubernetes_config_fails_clearly(monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture) -> None:
    import kubernetes.config.kube_config as kube_config

    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", "/nonexistent/kubeconfig")
    monkeypatch.setattr(kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", "/nonexistent/kubeconfig")
    assert cli.main(["--no-webhook"]) == 2
    assert "no Kubernetes API configuration" in capsys.readouterr().err
