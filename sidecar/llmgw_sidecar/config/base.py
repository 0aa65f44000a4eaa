"""What every section of the configuration shares: the strict base model, the error type and the caller scope."""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict

ENV_PREFIX = "os.environ/"


class ConfigError(Exception):
    """A configuration problem, with the field path in the message. The CLI prints it and exits with code 2."""


class StrictModel(BaseModel):
    """The base of every section."""

    # Unknown keys are a typo more often than not: refuse them so the user hears about it.
    model_config = ConfigDict(extra="forbid", frozen=True)


class Scope(StrEnum):
    """Who may share a cached answer (and whose limits/budgets a request counts against)."""

    global_ = "global"
    gateway = "gateway"
    namespace = "namespace"
    service_account = "service_account"
    pod = "pod"
    api_key = "api_key"
