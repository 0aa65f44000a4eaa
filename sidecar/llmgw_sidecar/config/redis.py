"""The `redis` section: topology, TLS, ACL and IAM authentication, deadlines and the circuit breaker."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Any

from pydantic import Field, PrivateAttr, field_validator, model_validator

from .base import ConfigError, StrictModel


class TLSConfig(StrictModel):
    enabled: bool = Field(False, description="Connect to Redis over TLS.")
    ca_file: str | None = Field(None, description="CA bundle to verify the server certificate.")
    cert_file: str | None = Field(None, description="Client certificate (mutual TLS).")
    key_file: str | None = Field(None, description="Client key (mutual TLS).")
    insecure_skip_verify: bool = Field(False, description="Do not verify the server certificate (tests only).")
    check_hostname: bool = Field(True, description="Check that the certificate names the host (off for servers "
                                 "reached by IP whose certificate names only a DNS name, as GCP Memorystore).")


class CircuitBreakerConfig(StrictModel):
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


class RedisIamConfig(StrictModel):
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


class RedisConfig(StrictModel):
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
