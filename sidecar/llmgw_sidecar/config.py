"""The one configuration schema of the sidecar.

The operator renders this schema (it imports these models and validates before writing a ConfigMap); docs/configuration.md
documents every field. Any string value may be an `os.environ/NAME` reference (or `os.environ/NAME:-default`),
resolved at load time like LiteLLM does.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

ENV_PREFIX = "os.environ/"


class ConfigError(Exception):
    """A configuration problem, with the field path in the message. The CLI prints it and exits with code 2."""


class _Model(BaseModel):
    # Unknown keys are a typo more often than not: refuse them so the user hears about it.
    model_config = ConfigDict(extra="forbid", frozen=True)


class ListenConfig(_Model):
    host: str = Field("127.0.0.1", description="Address to bind. Keep 127.0.0.1 in a pod: only the app may call it.")
    port: int = Field(4000, ge=1, le=65535, description="TCP port of the OpenAI-compatible endpoint.")
    max_body_bytes: int = Field(
        8 * 1024 * 1024, ge=1024, description="Largest request body accepted; bigger bodies get 413."
    )
    max_json_depth: int = Field(64, ge=4, le=512, description="Deepest nesting of objects/arrays in a request "
                                "body; deeper bodies get 400.")
    max_header_bytes: int = Field(8190, ge=1024, le=65536, description="Longest request line or header field; "
                                  "longer ones get 431.")
    max_headers: int = Field(100, ge=16, le=1000, description="Most header fields in one request; more get 431.")
    read_timeout_s: float = Field(30.0, gt=0, le=3600, description="Deadline to receive a request's headers (from "
                                  "its first byte) and, separately, its body; slower clients get 408 and are "
                                  "disconnected (slowloris).")
    keepalive_timeout_s: float = Field(75.0, gt=0, le=3600, description="An idle keep-alive connection (no request "
                                       "under way) is closed after this long; also bounds a connection that never "
                                       "sends anything.")


class GatewayIdentity(_Model):
    name: str = Field("local", min_length=1, description="Name of the LLMGateway; part of every Redis key scope.")
    namespace: str = Field(
        "default",
        min_length=1,
        description="Namespace of the gateway. The caller's namespace comes from POD_NAMESPACE when set.",
    )


class TLSConfig(_Model):
    enabled: bool = Field(False, description="Connect to Redis over TLS.")
    ca_file: str | None = Field(None, description="CA bundle to verify the server certificate.")
    cert_file: str | None = Field(None, description="Client certificate (mutual TLS).")
    key_file: str | None = Field(None, description="Client key (mutual TLS).")
    insecure_skip_verify: bool = Field(False, description="Do not verify the server certificate (tests only).")
    check_hostname: bool = Field(True, description="Check that the certificate names the host (off for servers "
                                 "reached by IP whose certificate names only a DNS name, as GCP Memorystore).")


class CircuitBreakerConfig(_Model):
    failure_threshold: int = Field(5, ge=1, description="Consecutive Redis failures that open the breaker.")
    reset_after_s: float = Field(5.0, gt=0, description="Seconds the breaker stays open before one probe is let through.")


class RedisMode(StrEnum):
    standalone = "standalone"
    sentinel = "sentinel"
    cluster = "cluster"


def _without_password(url: str) -> str:
    scheme, sep, rest = url.rpartition("://")
    return f"{scheme}{sep}***@{rest.rpartition('@')[2]}" if "@" in rest else url


# --- managed Redis authentication (issue 12: LiteLLM drop-in) ---
class IamProvider(StrEnum):
    gcp = "gcp"
    aws = "aws"


class RedisIamConfig(_Model):
    """Short-lived tokens as the Redis password, refreshed before they expire; live connections re-authenticate with
    the new token on their next use (docs/migrating-from-litellm.md)."""

    provider: IamProvider = Field(description="gcp (Memorystore IAM: an OAuth access token) | aws (ElastiCache IAM: "
                                  "a SigV4-presigned token, user = redis.username).")
    gcp_service_account: str | None = Field(None, description="gcp: service account to impersonate "
                                            "(projects/-/serviceAccounts/EMAIL or EMAIL); unset: the pod's own "
                                            "identity (GKE Workload Identity).")
    gcp_metadata_url: str = Field("http://metadata.google.internal/computeMetadata/v1",
                                  description="gcp: metadata server (GCE_METADATA_HOST overrides the host).")
    gcp_iam_url: str = Field("https://iamcredentials.googleapis.com/v1",
                             description="gcp: IAM Credentials API used to impersonate gcp_service_account.")
    aws_region: str | None = Field(None, description="aws: region of the cache, e.g. us-east-1.")
    aws_cache_name: str | None = Field(None, description="aws: replication group id or serverless cache name.")
    aws_serverless: bool = Field(False, description="aws: the cache is ElastiCache Serverless.")
    refresh_fraction: float = Field(0.75, gt=0, lt=1, description="Fetch a new token after this fraction of the "
                                    "current token's lifetime (GCP 1 h -> 45 min, AWS 15 min -> 11 min).")
    token_timeout_s: float = Field(5.0, gt=0, description="Deadline to obtain one token.")

    @model_validator(mode="after")
    def _provider_fields(self) -> RedisIamConfig:
        if self.provider == IamProvider.aws and not (self.aws_region and self.aws_cache_name):
            raise ValueError("iam provider aws needs aws_region and aws_cache_name")
        return self


class RedisConfig(_Model):
    mode: RedisMode = Field(RedisMode.standalone, description="standalone | sentinel | cluster.")
    url: str = Field("redis://127.0.0.1:6379/0", description="Standalone URL (redis:// or rediss://).")
    sentinels: list[str] = Field(default_factory=list, description="Sentinel mode: host:port of each sentinel.")
    master_name: str = Field("mymaster", description="Sentinel mode: name of the monitored master.")
    sentinel_password: str | None = Field(None, description="Sentinel mode: password of the sentinels, if any.")
    sentinel_tls: bool | None = Field(None, description="Sentinel mode: talk TLS to the sentinels (with the tls "
                                      "section's files). Unset: when tls.enabled (TLS-only sentinels, as the "
                                      "operator deploys them).")
    nodes: list[str] = Field(default_factory=list, description="Cluster mode: host:port of some startup nodes.")
    username: str | None = Field(None, description="ACL user name.")
    password: str | None = Field(None, description="Password; prefer os.environ/NAME or password_file.")
    password_file: str | None = Field(None, description="File holding the password (a mounted Secret).")
    db: int = Field(0, ge=0, description="Database number (standalone and sentinel only).")
    tls: TLSConfig = Field(default_factory=TLSConfig)
    op_timeout_ms: int = Field(50, ge=1, description="Deadline of one cache operation; slower means fail open.")
    connect_timeout_ms: int = Field(500, ge=1, description="Deadline to open a connection.")
    max_connections: int = Field(64, ge=1, description="Connection pool size per process.")
    key_prefix: str = Field("llmgw", min_length=1, description="Prefix of every key this gateway writes.")
    circuit_breaker: CircuitBreakerConfig = Field(default_factory=CircuitBreakerConfig)
    from_env: bool = Field(False, description="Take the connection from LiteLLM's REDIS_* environment variables "
                           "(REDIS_URL, REDIS_HOST/PORT, REDIS_CLUSTER_NODES, ...); other keys here still apply. "
                           "Nothing set is an error. Without a redis section the environment is used when it names a "
                           "Redis.")
    iam: RedisIamConfig | None = Field(None, description="Managed Redis IAM authentication (GCP Memorystore, AWS "
                                       "ElastiCache) instead of a static password.")
    # Where this section came from, for the start-up line: "config", "environment (...)" or "default".
    _source: str = PrivateAttr("config")
    _credentials: Any = PrivateAttr(None)  # the IAM token source of this config (redis_auth.IamCredentials)

    @field_validator("url")
    @classmethod
    def _url_scheme(cls, url: str) -> str:
        # redis-py would read "host:6379" as a socket path and fail only at the first request
        if not url.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError(f"'{_without_password(url)}' needs a scheme: redis://HOST:PORT/DB (rediss:// for TLS, "
                             "unix:///path for a socket)")
        return url

    @model_validator(mode="after")
    def _mode_fields(self) -> RedisConfig:
        if self.iam is not None and (self.password or self.password_file):
            raise ValueError("iam replaces password/password_file: set one of them")
        if self.iam is not None and self.iam.provider == IamProvider.aws and not self.username:
            raise ValueError("iam provider aws needs username (the ElastiCache IAM-enabled user id)")
        if self.mode == RedisMode.sentinel and not self.sentinels:
            raise ValueError("mode sentinel needs 'sentinels' (host:port list)")
        if self.mode == RedisMode.cluster and not self.nodes:
            raise ValueError("mode cluster needs 'nodes' (host:port list)")
        for hp in [*self.sentinels, *self.nodes]:
            host, sep, port = hp.rpartition(":")
            if not sep or not host or not port.isdigit():
                raise ValueError(f"'{hp}' is not host:port")
        return self

    def resolved_password(self) -> str | None:
        if self.password_file:
            try:
                return Path(self.password_file).read_text().strip()
            except OSError as e:
                raise ConfigError(f"redis.password_file: cannot read {self.password_file}: {e.strerror}") from None
        return self.password


class Timeouts(_Model):
    connect_s: float = Field(5.0, gt=0, description="Deadline to connect to the upstream.")
    first_byte_s: float = Field(60.0, gt=0, description="Deadline until the upstream sends response headers.")
    total_s: float = Field(600.0, gt=0, description="Deadline for the whole answer (streams included).")


class RetryConfig(_Model):
    max_retries: int = Field(2, ge=0, le=10, description="Retries on connection errors, 429 and 5xx; never on other 4xx.")
    backoff_base_s: float = Field(0.25, ge=0, description="First backoff; doubles each retry, with full jitter.")
    backoff_max_s: float = Field(8.0, ge=0, description="Largest backoff, and the cap applied to Retry-After.")


class MockConfig(_Model):
    latency_ms: float = Field(0.0, ge=0, description="Delay before the answer (and between stream chunks / chunks).")
    completion_tokens: int = Field(16, ge=1, description="Tokens in each generated answer.")
    stream_chunks: int = Field(4, ge=1, description="Content chunks in a streamed answer.")
    embedding_dims: int = Field(8, ge=1, description="Dimensions of mock embeddings.")


class Pricing(_Model):
    input_per_1m: float = Field(ge=0, description="USD per 1M prompt tokens.")
    output_per_1m: float = Field(ge=0, description="USD per 1M completion tokens.")
    cached_input_per_1m: float | None = Field(None, ge=0, description="USD per 1M cached prompt tokens (default: input).")


class ModelLimits(_Model):
    rpm: int | None = Field(None, ge=1, description="Requests per minute to this model, across all replicas.")
    tpm: int | None = Field(None, ge=1, description="Tokens per minute to this model, across all replicas.")
    max_parallel: int | None = Field(None, ge=1, description="Requests in flight to this model, across all replicas.")


class Provider(StrEnum):
    openai = "openai"
    azure = "azure"
    mock = "mock"


class ModelConfig(_Model):
    name: str = Field(min_length=1, description="Public model name the app sends in 'model'.")
    provider: Provider = Field(Provider.openai, description="openai (any compatible upstream) | azure | mock.")
    model: str | None = Field(None, description="Upstream model id (Azure: deployment name). Default: name.")
    base_url: str | None = Field(None, description="Upstream base URL, e.g. https://api.openai.com/v1.")
    api_key: str | None = Field(None, description="Upstream API key; use os.environ/NAME.")
    api_key_file: str | None = Field(None, description="File holding the upstream API key.")
    api_version: str | None = Field(None, description="Azure: api-version query parameter.")
    headers: dict[str, str] = Field(default_factory=dict, description="Extra headers sent upstream.")
    timeouts: Timeouts = Field(default_factory=Timeouts)
    retry: RetryConfig = Field(default_factory=RetryConfig)
    mock: MockConfig = Field(default_factory=MockConfig)
    pricing: Pricing | None = Field(None, description="Overrides the built-in price table for this model.")
    limits: ModelLimits = Field(default_factory=ModelLimits)

    @model_validator(mode="after")
    def _provider_fields(self) -> ModelConfig:
        if self.provider != Provider.mock and not self.base_url:
            raise ValueError(f"provider {self.provider.value} needs base_url")
        if self.provider == Provider.azure and not self.api_version:
            raise ValueError("provider azure needs api_version")
        if self.base_url and not self.base_url.startswith(("http://", "https://")):
            raise ValueError("base_url must start with http:// or https://")
        return self

    @property
    def upstream_model(self) -> str:
        return self.model or self.name

    def resolved_api_key(self) -> str | None:
        if self.api_key_file:
            try:
                return Path(self.api_key_file).read_text().strip()
            except OSError as e:
                raise ConfigError(f"models[{self.name}].api_key_file: cannot read: {e.strerror}") from None
        return self.api_key


class Scope(StrEnum):
    """Who may share a cached answer (and whose limits/budgets a request counts against)."""

    global_ = "global"
    gateway = "gateway"
    namespace = "namespace"
    service_account = "service_account"
    pod = "pod"
    api_key = "api_key"


class ExactCacheConfig(_Model):
    enabled: bool = Field(True, description="Serve repeated identical requests from Redis.")
    ttl_s: int = Field(3600, ge=1, description="Default lifetime of an entry; per request via Cache-Control "
                       "s-maxage or cache.ttl.")
    max_entry_bytes: int = Field(2 * 1024 * 1024, ge=1024, description="Larger answers are not stored.")


class EmbeddingProvider(StrEnum):
    local = "local"
    openai = "openai"


class EmbeddingConfig(_Model):
    provider: EmbeddingProvider = Field(EmbeddingProvider.local, description="local (in-process ONNX) | openai.")
    model_dir: str = Field(".cache/models/all-MiniLM-L6-v2-onnx", description="local: exported ONNX model folder.")
    precision: Literal["fp32", "int8"] = Field("int8", description="local: int8 (default: half the CPU, 80 MB less "
                                               "memory, the same measured precision) or fp32; never mixed in one index.")
    max_batch: int = Field(16, ge=1, description="local: largest micro-batch under concurrency.")
    threads: int = Field(1, ge=1, description="local: onnxruntime intra-op threads.")
    base_url: str | None = Field(None, description="openai: embeddings endpoint base URL.")
    model: str | None = Field(None, description="openai: embedding model id.")
    api_key: str | None = Field(None, description="openai: API key; use os.environ/NAME.")
    dims: int | None = Field(None, ge=1, description="openai: vector dimensions (local models know theirs).")
    timeout_ms: int = Field(250, ge=1, description="Deadline of one embedding; past it the lookup is a miss.")


class GuardsConfig(_Model):
    """Rules of the verification step (cache/verify.py); each refusal is counted under its rule's name."""

    numbers: bool = Field(True, description="Refuse when numbers, units or arithmetic operators differ.")
    quoted: bool = Field(True, description="Refuse when quoted strings differ.")
    identifiers: bool = Field(True, description="Refuse when code identifiers differ.")
    entities: bool = Field(True, description="Refuse when capitalised names differ.")
    negation: bool = Field(True, description="Refuse when one question is negated and the other not.")
    question: bool = Field(True, description="Refuse when the question word differs (when/where/who/how many).")
    antonyms: bool = Field(True, description="Refuse when the questions use opposite words (WordNet antonyms, "
                           "negating prefixes): closer/farther, import/export.")
    degree: bool = Field(True, description="Refuse when an adjective's degree differs (large/larger/largest).")
    roles: bool = Field(True, description="Refuse when from/to/into/than govern different words (A into B vs B "
                        "into A).")
    tense: bool = Field(True, description="Refuse when past, present and future differ.")
    unmatched: bool = Field(True, description="Refuse when a content word of either question has no counterpart "
                            "(same lemma, synonym, derivation, typo) in the other (vegan, gluten-free, in Python 2).")


MAX_DISTANCE_THRESHOLD = 0.5  # cosine distance; paraphrases measure 0.07-0.18 here, unrelated questions 0.34-0.98


class SemanticCacheConfig(_Model):
    enabled: bool = Field(False, description="Answer paraphrases of cached questions.")
    distance_threshold: float = Field(
        0.25, gt=0, lt=2, description="Largest cosine distance (1 - cos) for a hit. 0.25 is measured on "
        "tests/data/semantic_pairs*.jsonl with all-MiniLM-L6-v2 and all guards on (docs/semantic-cache.md)."
    )
    ttl_s: int = Field(3600, ge=1, description="Lifetime of a semantic entry.")

    @field_validator("distance_threshold")
    @classmethod
    def _distance_not_similarity(cls, v: float) -> float:
        # issue 12: LiteLLM's similarity_threshold copied here (0.8, 0.9) would answer unrelated questions.
        if v > MAX_DISTANCE_THRESHOLD:
            raise ValueError(f"distance_threshold {v} is a cosine distance (0 = same meaning) and above "
                             f"{MAX_DISTANCE_THRESHOLD} it matches unrelated questions: did you mean "
                             f"similarity_threshold? (LiteLLM's similarity_threshold s is distance_threshold 1 - s, "
                             f"e.g. 0.9 -> 0.1)")
        return v

    embed: Literal["last_user_message"] = Field(
        "last_user_message", description="Text that is embedded; the rest of the request must match exactly."
    )
    max_prompt_chars: int = Field(2000, ge=1, description="Longer questions are not eligible.")
    tools: bool = Field(False, description="Also answer requests with tools, tool results or function calls from the "
                        "semantic cache (by default they use the exact cache only).")
    first_stage: bool = Field(True, description="local: find candidates with the static model distilled at export "
                              "time; the full model runs only for candidates within first_stage_distance.")
    first_stage_distance: float = Field(0.3, gt=0, lt=2, description="Largest first-stage (static model) distance "
                                        "of a candidate worth the full model (docs/semantic-cache.md).")
    embedding: EmbeddingConfig = Field(default_factory=EmbeddingConfig)
    guards: GuardsConfig = Field(default_factory=GuardsConfig)


class CacheEndpoint(StrEnum):
    chat = "chat"
    completions = "completions"
    embeddings = "embeddings"


class CacheConfig(_Model):
    scope: Scope = Field(Scope.namespace, description="Who shares cached answers: global|gateway|namespace|"
                         "service_account|pod|api_key. Every scope includes the gateway name except global.")
    generation: int = Field(0, ge=0, description="Cache generation, part of every cache key: raising it makes every "
                            "sidecar of the gateway stop serving older entries at once (they age out by TTL; "
                            "`llmgw-sidecar cache purge --stale-generations` deletes them now).")
    exact: ExactCacheConfig = Field(default_factory=ExactCacheConfig)
    semantic: SemanticCacheConfig = Field(default_factory=SemanticCacheConfig)
    # --- LiteLLM cache_params equivalents (issue 12) ---
    endpoints: list[CacheEndpoint] = Field(default_factory=lambda: list(CacheEndpoint), description="Endpoints "
                                           "whose answers are cached (LiteLLM supported_call_types); [] caches none.")
    mode: Literal["default_on", "default_off"] = Field("default_on", description="default_off: only requests that "
                                                       "send cache: {\"use-cache\": true} use the cache (LiteLLM mode).")


class ScopeLimit(_Model):
    scope: Scope = Field(description="Which callers share this limit (namespace, service_account, pod, api_key).")
    rpm: int | None = Field(None, ge=1, description="Requests per minute per caller of this scope.")
    tpm: int | None = Field(None, ge=1, description="Tokens per minute per caller of this scope.")
    max_parallel: int | None = Field(None, ge=1, description="Requests in flight per caller of this scope.")

    @model_validator(mode="after")
    def _some_limit(self) -> ScopeLimit:
        if self.rpm is None and self.tpm is None and self.max_parallel is None:
            raise ValueError("set at least one of rpm, tpm, max_parallel")
        return self


class LimitsConfig(_Model):
    scopes: list[ScopeLimit] = Field(default_factory=list, description="Per-caller limits.")
    fail_open: bool = Field(True, description="When Redis is unreachable: admit with a local limiter that gives this "
                            "process its share of each limit (limit / replicas), or answer 503.")
    default_max_tokens: int = Field(1024, ge=1, description="Completion estimate when a request sets no max_tokens.")
    window_s: float = Field(60.0, ge=0.1, le=3600, description="Length of the sliding window that rpm/tpm count in "
                            "(60 = per minute; shorter only for tests and demos).")
    parallel_lease_s: float = Field(660.0, gt=0, description="A max_parallel slot held by a crashed replica frees "
                                    "itself after this long (keep above the longest request).")
    decision_timeout_ms: int = Field(
        250, ge=1, le=60_000, description="Deadline of one limit decision in Redis (separate from redis.op_timeout_ms, the "
        "cache deadline). A slower decision answers that request 503 rate_limiter_timeout; it never falls back to the "
        "local limiter.")
    unreachable_after_s: float = Field(
        2.0, gt=0, le=3600, description="Decisions that keep timing out for this long (no reply at all) count as Redis "
        "unreachable, like a refused connection: the process then decides locally with its share.")
    heartbeat_interval_s: float = Field(
        2.0, ge=0.1, le=60, description="How often each sidecar announces itself in Redis. The replica count (those "
        "seen in the last 3 intervals) sizes each process's share of a limit while Redis is unreachable.")


class Budget(_Model):
    scope: Scope = Field(description="Which callers share this budget.")
    period: Literal["day", "month"] = Field("day", description="Budget window (UTC).")
    max_usd: float = Field(gt=0, description="Spend after which requests get 429 budget_exceeded.")


class SpendConfig(_Model):
    enabled: bool = Field(True, description="Record the cost of every call.")
    flush_interval_s: float = Field(1.0, gt=0, description="How often buffered records are handed to Redis.")
    batch_size: int = Field(500, ge=1, description="Records per hand-off and per flush batch.")
    max_buffered_records: int = Field(100_000, ge=100, description="Memory bound while Redis is down.")
    database_url: str | None = Field(None, description="Optional PostgreSQL sink (postgresql://...). The Redis "
                                     "totals (and budgets) never wait for it.")
    sink_backlog_batches: int = Field(10_000, ge=1, description="Committed batches kept in Redis for the PostgreSQL "
                                      "sink while it is down; beyond this the oldest is dropped (and counted).")
    wait_replicas: int = Field(0, ge=0, le=5, description="Replicas that must acknowledge a hand-off before records "
                               "leave memory (sentinel: 1 makes a failover lossless).")
    lock_ttl_s: float = Field(10.0, ge=0.5, le=300, description="Flusher lock lifetime; renewed every third of it.")


class MetricsConfig(_Model):
    enabled: bool = Field(True, description="Serve Prometheus metrics on /metrics of the API port.")
    port: int | None = Field(None, ge=1, le=65535, description="Also serve /metrics (and nothing else) on this port, "
                             "for Prometheus to scrape from outside the pod. Read at start-up only.")
    host: str = Field("0.0.0.0", description="Address of the metrics-only listener (the API stays on listen.host).")
    top_scopes: int = Field(10, ge=0, le=100, description="Cache scopes with their own series in "
                            "llmgw_cache_scope_saved_usd / llmgw_cache_scope_hits (the biggest savers of this process; "
                            "the rest are summed as scope=\"other\"). Caps the label cardinality.")


class AdminConfig(_Model):
    token: str | None = Field(None, description="Bearer token of the admin API (/admin/cache/*, LiteLLM's /cache/*); "
                              "use os.environ/NAME. Without a token (here or in token_file) the admin API is off.")
    token_file: str | None = Field(None, description="File holding the admin token (a mounted Secret); wins over token.")

    def resolved_token(self) -> str | None:
        if self.token_file:
            try:
                return Path(self.token_file).read_text().strip() or None
            except OSError as e:
                raise ConfigError(f"admin.token_file: cannot read {self.token_file}: {e.strerror}") from None
        return self.token or None


class LabelExpression(_Model):
    key: str = Field(min_length=1, description="Namespace label key.")
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"] = Field(description="As in a Kubernetes label selector.")
    values: list[str] = Field(default_factory=list, description="Values for In / NotIn.")


class NamespaceSelector(_Model):
    """A Kubernetes label selector over namespaces; empty selects every namespace."""

    match_labels: dict[str, str] = Field(default_factory=dict, description="Labels the namespace must carry.")
    match_expressions: list[LabelExpression] = Field(default_factory=list, description="Further label requirements.")


class TokenReviewConfig(_Model):
    enabled: bool = Field(True, description="Accept Kubernetes ServiceAccount tokens, checked with the TokenReview API.")
    audience: str = Field("llmgateway.dev", min_length=1, description="Audience the projected token must be issued "
                          "for; tokens for other audiences (e.g. the API server's) are refused.")
    api_server: str | None = Field(None, description="Kubernetes API URL. Default: in-cluster "
                                   "(https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT).")
    token_file: str = Field("/var/run/secrets/kubernetes.io/serviceaccount/token",
                            description="The gateway's own ServiceAccount token (re-read as the kubelet rotates it).")
    ca_file: str | None = Field("/var/run/secrets/kubernetes.io/serviceaccount/ca.crt",
                                description="CA bundle of the API server.")
    timeout_ms: int = Field(2000, ge=1, description="Deadline of one TokenReview call; past it the request gets 503.")
    cache_size: int = Field(10_000, ge=1, description="Most tokens remembered (least recently used are dropped).")
    max_cache_s: float = Field(300.0, gt=0, description="Longest time a reviewed token is trusted without asking "
                               "again (never past the token's own expiry): bounds how long a deleted "
                               "ServiceAccount keeps working.")
    negative_cache_s: float = Field(5.0, ge=0, description="How long a refused token is refused without asking again.")
    allowed_namespaces: NamespaceSelector | None = Field(
        None, description="Namespaces whose ServiceAccounts may call (read with GET namespace, cached). None: only "
        "the gateway's own namespace.")


class VirtualKeysConfig(_Model):
    dir: str | None = Field(None, description="Folder with one sub-folder per virtual-key Secret (files `key`, and "
                            "optionally `scope`, `rpm`, `tpm`, `maxParallel`, `budgetUsd`, `budgetPeriod`); re-read "
                            "when it changes. Keys are kept only as hashes in memory.")


class AuthConfig(_Model):
    mode: Literal["pod", "gateway"] = Field(
        "pod", description="pod: the caller is the pod the sidecar runs in (downward API). gateway: a shared "
        "gateway; every request must identify itself with a ServiceAccount token or a virtual key.")
    allow_anonymous: bool = Field(False, description="gateway mode: admit requests without a bearer token (as the "
                                  "caller system:anonymous).")
    token_review: TokenReviewConfig = Field(default_factory=TokenReviewConfig)
    virtual_keys: VirtualKeysConfig = Field(default_factory=VirtualKeysConfig)


class Config(_Model):
    listen: ListenConfig = Field(default_factory=ListenConfig)
    gateway: GatewayIdentity = Field(default_factory=GatewayIdentity)
    redis: RedisConfig = Field(default_factory=RedisConfig)
    models: Annotated[list[ModelConfig], Field(min_length=1, description="Models this gateway serves.")]
    cache: CacheConfig = Field(default_factory=CacheConfig)
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    budgets: list[Budget] = Field(default_factory=list)
    spend: SpendConfig = Field(default_factory=SpendConfig)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    auth: AuthConfig = Field(default_factory=AuthConfig)
    admin: AdminConfig = Field(default_factory=AdminConfig)

    @field_validator("models")
    @classmethod
    def _unique_names(cls, models: list[ModelConfig]) -> list[ModelConfig]:
        seen: set[str] = set()
        for m in models:
            if m.name in seen:
                raise ValueError(f"model name '{m.name}' appears twice")
            seen.add(m.name)
        return models

    @model_validator(mode="after")
    def _ports_differ(self) -> Config:
        if self.metrics.port is not None and self.metrics.port == self.listen.port:
            raise ValueError("metrics.port must differ from listen.port (the API must not be served on it)")
        return self

    def model_by_name(self) -> dict[str, ModelConfig]:
        return {m.name: m for m in self.models}


def resolve_env(value: Any, path: str = "", environ: Mapping[str, str] | None = None) -> Any:
    """Replace every `os.environ/NAME` string with the variable's value; a missing variable is a ConfigError."""
    env = os.environ if environ is None else environ
    if isinstance(value, dict):
        return {k: resolve_env(v, f"{path}.{k}" if path else str(k), env) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve_env(v, f"{path}[{i}]", env) for i, v in enumerate(value)]
    if isinstance(value, str) and value.startswith(ENV_PREFIX):
        # `os.environ/NAME:-default` falls back to default when NAME is unset or empty (as in the shell).
        name, sep, default = value[len(ENV_PREFIX):].partition(":-")
        if env.get(name):
            return env[name]
        if sep:
            return default
        if name not in env:
            raise ConfigError(f"{path}: environment variable {name} is not set")
        return env[name]
    return value


def _format_validation_error(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        loc = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in e["loc"]).lstrip(".") or "(top level)"
        msg = e["msg"].removeprefix("Value error, ")
        lines.append(f"{loc}: {msg}")
    return "invalid configuration:\n  " + "\n  ".join(lines)


def parse_config(data: Any, environ: dict[str, str] | None = None) -> Config:
    """Validate a decoded YAML/JSON document (a LiteLLM proxy config is converted first). Raises ConfigError."""
    if not isinstance(data, dict):
        raise ConfigError("configuration must be a mapping at the top level")
    env = os.environ if environ is None else environ
    from .litellm_config import convert_if_litellm  # LiteLLM proxy configs: issue 12

    litellm = data is not (data := convert_if_litellm(data, env))
    data, source, warnings = _redis_section(data, env)
    if litellm and source.startswith("the config's redis section"):
        source = source.replace("the config's redis section", "the LiteLLM config's cache_params", 1)
    try:
        cfg = Config.model_validate(resolve_env(data, environ=environ))
    except ValidationError as e:
        raise ConfigError(_format_validation_error(e)) from None
    cfg.redis._source = source
    for w in warnings:
        logging.getLogger("llmgw.redis").warning("%s", w)
    return cfg


def _redis_section(data: dict[str, Any], env: Any) -> tuple[dict[str, Any], str, list[str]]:
    """The config's own `redis` section wins; without one, LiteLLM's REDIS_* environment; else the default."""
    from .redis_env import MISSING_MESSAGE, SELECTORS, RedisEnvError, env_selects_redis, redis_from_env

    section = data.get("redis")
    if isinstance(section, dict) and section.get("from_env"):
        try:
            found = redis_from_env(env)
        except RedisEnvError as e:
            raise ConfigError(f"redis from the environment: {e}") from None
        if found is None:
            raise ConfigError(f"redis.from_env: {MISSING_MESSAGE}")
        why = f"the environment ({', '.join(found.used)}; the redis section asks for from_env)"
        return {**data, "redis": {**found.section, **section}}, why, found.warnings
    if "redis" in data:
        ignored = [v for v in SELECTORS if env.get(v)]
        note = f" ({', '.join(ignored)} in the environment ignored: the redis section wins)" if ignored else ""
        return data, f"the config's redis section{note}", []
    try:
        found = redis_from_env(env)
    except RedisEnvError as e:
        raise ConfigError(f"redis from the environment: {e}") from None
    if found is None:
        assert not env_selects_redis(env)
        return data, "the default (no redis section in the config, no REDIS_URL/REDIS_HOST in the environment)", []
    why = f"the environment ({', '.join(found.used)}; the config has no redis section)"
    return {**data, "redis": found.section}, why, found.warnings


def load_config(path: str | Path, environ: dict[str, str] | None = None) -> Config:
    try:
        text = Path(path).read_text()
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise yaml_error(path, e) from None
    return parse_config(data, environ=environ)


def yaml_error(path: str | Path, e: yaml.YAMLError) -> ConfigError:
    """Where and what, never the offending line itself: it may hold a secret (a key pasted in the wrong place)."""
    mark = getattr(e, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    problem = getattr(e, "problem", None) or type(e).__name__
    return ConfigError(f"{path}: not valid YAML{where}: {problem}")
