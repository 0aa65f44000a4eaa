"""Cache keys carry the upstream identity: one place (cache.keys.upstream_identity) used by exact and semantic keys."""

from __future__ import annotations

from typing import Any

from llmgw_sidecar.cache.keys import fingerprint, upstream_identity
from llmgw_sidecar.cache.semantic import context_hash
from llmgw_sidecar.config import ModelConfig

BODY = {"model": "m", "messages": [{"role": "user", "content": "q"}]}


def model(**kw: Any) -> ModelConfig:
    base: dict[str, Any] = {"name": "m", "provider": "openai", "base_url": "https://api.example.com/v1"}
    return ModelConfig.model_validate({**base, **kw})


def test_every_part_of_the_identity_changes_the_keys() -> None:
    variants = {
        "openai": model(),
        "base url": model(base_url="https://other.example.com/v1"),
        "upstream model": model(model="gpt-4o"),
        "azure": model(provider="azure", api_version="2024-06-01", model="dep-a"),
        "azure deployment": model(provider="azure", api_version="2024-06-01", model="dep-b"),
        "azure api-version": model(provider="azure", api_version="2024-10-21", model="dep-a"),
        "mock": ModelConfig.model_validate({"name": "m", "provider": "mock"}),
        "mock settings": ModelConfig.model_validate({"name": "m", "provider": "mock",
                                                     "mock": {"completion_tokens": 99}}),
    }
    idents = {k: upstream_identity(v) for k, v in variants.items()}
    assert len(set(idents.values())) == len(idents), idents
    exact = {fingerprint("chat", i, BODY) for i in idents.values()}
    semantic = {context_hash(i, BODY) for i in idents.values()}
    assert len(exact) == len(semantic) == len(idents)


def test_same_upstream_spelled_differently_shares_the_cache() -> None:
    a = upstream_identity(model(base_url="https://API.example.com/v1/"))
    assert a == upstream_identity(model(base_url="https://api.example.com/v1"))
    assert a == upstream_identity(model(api_key="sk-other"))  # the key is who pays, not who answers


def test_credentials_in_a_base_url_are_only_ever_hashed() -> None:
    m = model(base_url="https://user:s3cr3t-pass@api.example.com/v1")
    digest = fingerprint("chat", upstream_identity(m), BODY)
    assert "s3cr3t" not in digest and len(digest) == 64
