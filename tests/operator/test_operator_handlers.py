"""Handler registrations: only LLMGateway objects are watched (never pods); the webhook joins when enabled."""

from __future__ import annotations

import kopf

from llmgw_operator.crd import GROUP, PLURAL, VERSION
from llmgw_operator.handlers import HandlerSettings, register


def handlers(registry: kopf.OperatorRegistry) -> list:
    out = []
    for reg in (registry._changing, registry._spawning, registry._watching, registry._indexing):
        out += list(reg.get_all_handlers())
    return out


def test_only_gateways_are_watched_and_the_webhook_registers() -> None:
    registry = kopf.OperatorRegistry()
    register(registry, lambda: None, HandlerSettings(webhook=True))  # type: ignore[arg-type,return-value]
    hs = handlers(registry)
    assert hs
    for h in hs:
        sel = h.selector
        assert (sel.group, sel.version, sel.any_name) == (GROUP, VERSION, PLURAL), f"{h.id} watches {sel}"
    ids = {h.id for h in hs}
    assert {"reconcile", "reconcile/spec", "refresh"} <= ids
    assert "llmgw-webhook-start" in {h.id for h in registry._activities.get_all_handlers()}


def test_webhook_can_be_left_out() -> None:
    registry = kopf.OperatorRegistry()
    register(registry, lambda: None, HandlerSettings(webhook=False))  # type: ignore[arg-type,return-value]
    assert not [h for h in registry._activities.get_all_handlers() if "webhook" in (h.id or "")]
