"""The `models` section: each served model, its upstream, deadlines, retries, prices and model-level limits."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

from pydantic import Field, model_validator

from .base import ConfigError, StrictModel


class Timeouts(StrictModel):
    connect_s: float = Field(5.0, gt=0, description="Deadline to connect to the upstream.")
    first_byte_s: float = Field(60.0, gt=0, description="Deadline until the upstream sends response headers.")
    total_s: float = Field(600.0, gt=0, description="Deadline for the whole answer (streams included).")


class RetryConfig(StrictModel):
    max_retries: int = Field(2, ge=0, le=10, description="Retries on connection errors, 429 and 5xx; never on other 4xx.")
    backoff_base_s: float = Field(0.25, ge=0, description="First backoff; doubles each retry, with full jitter.")
    backoff_max_s: float = Field(8.0, ge=0, description="Largest backoff, and the cap applied to Retry-After.")


class MockConfig(StrictModel):
    latency_ms: float = Field(0.0, ge=0, description="Delay before the answer (and between stream chunks / chunks).")
    completion_tokens: int = Field(16, ge=1, description="Tokens in each generated answer.")
    stream_chunks: int = Field(4, ge=1, description="Content chunks in a streamed answer.")
    embedding_dims: int = Field(8, ge=1, description="Dimensions of mock embeddings.")


class Pricing(StrictModel):
    input_per_1m: float = Field(ge=0, description="USD per 1M prompt tokens.")
    output_per_1m: float = Field(ge=0, description="USD per 1M completion tokens.")
    cached_input_per_1m: float | None = Field(None, ge=0, description="USD per 1M cached prompt tokens (default: input).")


class ModelLimits(StrictModel):
    rpm: int | None = Field(None, ge=1, description="Requests per minute to this model, across all replicas.")
    tpm: int | None = Field(None, ge=1, description="Tokens per minute to this model, across all replicas.")
    max_parallel: int | None = Field(None, ge=1, description="Requests in flight to this model, across all replicas.")


class Provider(StrEnum):
    openai = "openai"
    azure = "azure"
    mock = "mock"


class ModelConfig(StrictModel):
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
