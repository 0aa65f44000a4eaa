"""Reading a configuration: YAML, `os.environ/NAME` references, LiteLLM proxy configs and LiteLLM's REDIS_*
environment, then validation into `Config` with errors that name the field."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from .base import ENV_PREFIX, ConfigError
from .root import Config


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
    from ..litellm_config import convert_if_litellm  # LiteLLM proxy configs: issue 12

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
    from ..redis_env import MISSING_MESSAGE, SELECTORS, RedisEnvError, env_selects_redis, redis_from_env

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
