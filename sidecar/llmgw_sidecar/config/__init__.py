"""The one configuration schema of the sidecar, one module per section.

The operator renders this schema (it imports these models and validates before writing a ConfigMap); docs/configuration.md
documents every field. Any string value may be an `os.environ/NAME` reference (or `os.environ/NAME:-default`),
resolved at load time like LiteLLM does.

    base.py     the strict base model, ConfigError, Scope (shared by cache, limits and budgets)
    server.py   listen, gateway, metrics, admin
    redis.py    redis (topology, TLS, IAM, deadlines, circuit breaker)
    models.py   models (upstreams, deadlines, retries, prices, model limits)
    cache.py    cache (exact, semantic, embeddings, verification rules)
    limits.py   limits, budgets, spend
    auth.py     auth (TokenReview, virtual keys)
    root.py     Config: the whole document and its cross-section checks
    loading.py  parse_config / load_config: YAML, os.environ/ references, LiteLLM configs and REDIS_* environment

Import from here (`from llmgw_sidecar.config import RedisConfig`): the split into modules is not part of the API.
"""

from __future__ import annotations

from .auth import AuthConfig, LabelExpression, NamespaceSelector, TokenReviewConfig, VirtualKeysConfig
from .base import ENV_PREFIX, ConfigError, Scope, StrictModel
from .cache import (
    MAX_DISTANCE_THRESHOLD,
    CacheConfig,
    CacheEndpoint,
    EmbeddingConfig,
    EmbeddingProvider,
    ExactCacheConfig,
    GuardsConfig,
    SemanticCacheConfig,
)
from .limits import Budget, LimitsConfig, ScopeLimit, SpendConfig
from .loading import load_config, parse_config, resolve_env, yaml_error
from .models import MockConfig, ModelConfig, ModelLimits, Pricing, Provider, RetryConfig, Timeouts
from .redis import CircuitBreakerConfig, IamProvider, RedisConfig, RedisIamConfig, RedisMode, TLSConfig
from .root import Config
from .server import AdminConfig, GatewayIdentity, ListenConfig, MetricsConfig

__all__ = [
    "ENV_PREFIX", "MAX_DISTANCE_THRESHOLD", "AdminConfig", "AuthConfig", "Budget", "CacheConfig", "CacheEndpoint",
    "CircuitBreakerConfig", "Config", "ConfigError", "EmbeddingConfig", "EmbeddingProvider", "ExactCacheConfig",
    "GatewayIdentity", "GuardsConfig", "IamProvider", "LabelExpression", "LimitsConfig", "ListenConfig",
    "MetricsConfig", "MockConfig", "ModelConfig", "ModelLimits", "NamespaceSelector", "Pricing", "Provider",
    "RedisConfig", "RedisIamConfig", "RedisMode", "RetryConfig", "Scope", "ScopeLimit", "SemanticCacheConfig",
    "SpendConfig", "StrictModel", "TLSConfig", "Timeouts", "TokenReviewConfig", "VirtualKeysConfig", "load_config",
    "parse_config", "resolve_env", "yaml_error",
]
