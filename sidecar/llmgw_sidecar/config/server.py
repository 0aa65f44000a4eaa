"""Sections of the process itself: where it listens, which gateway it is, metrics and the admin API."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from .base import ConfigError, StrictModel


class ListenConfig(StrictModel):
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


class GatewayIdentity(StrictModel):
    name: str = Field("local", min_length=1, description="Name of the LLMGateway; part of every Redis key scope.")
    namespace: str = Field(
        "default",
        min_length=1,
        description="Namespace of the gateway. The caller's namespace comes from POD_NAMESPACE when set.",
    )


class MetricsConfig(StrictModel):
    enabled: bool = Field(True, description="Serve Prometheus metrics on /metrics of the API port.")
    port: int | None = Field(None, ge=1, le=65535, description="Also serve /metrics (and nothing else) on this port, "
                             "for Prometheus to scrape from outside the pod. Read at start-up only.")
    host: str = Field("0.0.0.0", description="Address of the metrics-only listener (the API stays on listen.host).")
    top_scopes: int = Field(10, ge=0, le=100, description="Cache scopes with their own series in "
                            "llmgw_cache_scope_saved_usd / llmgw_cache_scope_hits (the biggest savers of this process; "
                            "the rest are summed as scope=\"other\"). Caps the label cardinality.")


class AdminConfig(StrictModel):
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
