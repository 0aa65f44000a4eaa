"""The whole document: `Config`, one field per section, and the checks that span sections."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, field_validator, model_validator

from .auth import AuthConfig
from .base import StrictModel
from .cache import CacheConfig
from .limits import Budget, LimitsConfig, SpendConfig
from .models import ModelConfig
from .redis import RedisConfig
from .server import AdminConfig, GatewayIdentity, ListenConfig, MetricsConfig


class Config(StrictModel):
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
