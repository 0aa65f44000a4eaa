"""LiteLLM proxy configs, accepted as they are: `model_list` + `litellm_settings` (+ router/general settings) mapped
onto the native schema. What cannot be carried is named in one warning per field, never dropped silently.

docs/migrating-from-litellm.md holds the side-by-side table; `llmgw-sidecar convert-litellm IN` prints the result.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .redis_env import MISSING_MESSAGE

log = logging.getLogger("llmgw.litellm")

LITELLM_KEYS = ("model_list", "litellm_settings", "router_settings", "general_settings")
NATIVE_KEYS = ("models", "listen", "gateway", "redis", "cache", "limits", "budgets", "spend", "metrics")
OPENAI_BASE = "https://api.openai.com/v1"
# LiteLLM's default embedding model of the redis-semantic cache, and the vector sizes of OpenAI's embedding models
# (model_info.output_vector_size names it for any other model).
DEFAULT_EMBEDDING_MODEL = "text-embedding-ada-002"
EMBEDDING_DIMS = {"text-embedding-ada-002": 1536, "text-embedding-3-small": 1536, "text-embedding-3-large": 3072}
# LiteLLM call types -> our endpoints (the async twins mean the same endpoint).
CALL_TYPES = {"completion": "chat", "acompletion": "chat", "text_completion": "completions",
              "atext_completion": "completions", "embedding": "embeddings", "aembedding": "embeddings"}
# cache_params keys that name the Redis connection -> the REDIS_* variable LiteLLM would read for the same thing.
REDIS_PARAMS = {"url": "REDIS_URL", "redis_url": "REDIS_URL", "host": "REDIS_HOST", "port": "REDIS_PORT",
                "password": "REDIS_PASSWORD", "username": "REDIS_USERNAME", "db": "REDIS_DB", "ssl": "REDIS_SSL",
                "ssl_ca_certs": "REDIS_SSL_CA_CERTS", "ssl_certfile": "REDIS_SSL_CERTFILE",
                "ssl_keyfile": "REDIS_SSL_KEYFILE", "ssl_cert_reqs": "REDIS_SSL_CERT_REQS",
                "ssl_check_hostname": "REDIS_SSL_CHECK_HOSTNAME", "redis_startup_nodes": "REDIS_CLUSTER_NODES",
                "startup_nodes": "REDIS_CLUSTER_NODES", "sentinel_nodes": "REDIS_SENTINEL_NODES",
                "service_name": "REDIS_SERVICE_NAME", "sentinel_password": "REDIS_SENTINEL_PASSWORD",
                "gcp_service_account": "REDIS_GCP_SERVICE_ACCOUNT", "gcp_ssl_ca_certs": "REDIS_GCP_SSL_CA_CERTS",
                "max_connections": "REDIS_MAX_CONNECTIONS"}
SECRET_PARAMS = ("password", "sentinel_password")
MASTER_KEY_ENV = "LITELLM_MASTER_KEY"  # LiteLLM's fallback when general_settings.master_key is absent


@dataclass
class Conversion:
    """The native config document, a warning per field not carried, and a note per field carried differently."""

    native: dict[str, Any]
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def is_litellm(data: Mapping[str, Any]) -> bool:
    return any(k in data for k in LITELLM_KEYS)


def convert_if_litellm(data: dict[str, Any], environ: Mapping[str, str]) -> dict[str, Any]:
    """The native document for a LiteLLM config (warnings logged), or `data` unchanged for a native one."""
    if not is_litellm(data):
        return data
    conv = convert(data, environ)
    for w in conv.warnings:
        log.warning("LiteLLM config: %s", w)
    return conv.native


def _env_ref(value: Any, environ: Mapping[str, str]) -> Any:
    """Resolve `os.environ/NAME` as LiteLLM does (for values we must read now: ports, node lists, thresholds)."""
    if isinstance(value, str) and value.startswith("os.environ/"):
        from .config import ConfigError, resolve_env

        try:
            return resolve_env(value, "", dict(environ))
        except ConfigError as e:
            raise ConfigError(f"LiteLLM config: {e}") from None
    return value


class _Converter:
    def __init__(self, data: Mapping[str, Any], environ: Mapping[str, str]) -> None:
        self.data = data
        self.env = environ
        self.conv = Conversion(native={})

    def warn(self, path: str, why: str) -> None:
        self.conv.warnings.append(f"{path} is not supported, because {why}; ignored")

    def note(self, text: str) -> None:
        self.conv.notes.append(text)

    # --- models ---------------------------------------------------------------------------------------------
    def models(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        seen: dict[str, int] = {}
        settings = self.data.get("litellm_settings") or {}
        for i, entry in enumerate(self.data.get("model_list") or []):
            path = f"model_list[{i}]"
            if not isinstance(entry, dict) or "model_name" not in entry:
                from .config import ConfigError

                raise ConfigError(f"LiteLLM config: {path} needs model_name and litellm_params")
            name = str(entry["model_name"])
            if name in seen:
                self.warn(f"{path} ({name})", f"a second deployment of '{name}' would need load balancing across "
                          f"deployments; model_list[{seen[name]}] serves '{name}'")
                continue
            model = self.model(path, name, entry, settings)
            if model is not None:
                seen[name] = i
                out.append(model)
        return out

    def model(self, path: str, name: str, entry: Mapping[str, Any], settings: Mapping[str, Any]) -> dict[str, Any] | None:
        params = dict(entry.get("litellm_params") or {})
        for k in entry:
            if k not in ("model_name", "litellm_params", "model_info"):
                self.warn(f"{path}.{k}", "it is not a LiteLLM deployment field the gateway knows")
        target = str(params.pop("model", name))
        if name == "*" or "*" in target:
            self.warn(f"{path} ({name})", "wildcard routing needs each model named: list the models you serve")
            return None
        provider, _, upstream = target.partition("/")
        if not upstream:  # a plain name: LiteLLM sends gpt-*, o*, text-embedding-* to OpenAI
            provider, upstream = "openai", target
        m: dict[str, Any] = {"name": name, "model": upstream}
        api_base = params.pop("api_base", None) or params.pop("base_url", None)
        if provider == "openai":
            m["provider"] = "openai"
            m["base_url"] = api_base or self.env.get("OPENAI_API_BASE") or self.env.get("OPENAI_BASE_URL") or OPENAI_BASE
            m["api_key"] = params.pop("api_key", None) or "os.environ/OPENAI_API_KEY:-"
        elif provider == "azure":
            m["provider"] = "azure"
            m["base_url"] = api_base or "os.environ/AZURE_API_BASE"
            m["api_key"] = params.pop("api_key", None) or "os.environ/AZURE_API_KEY:-"
            m["api_version"] = params.pop("api_version", None) or "os.environ/AZURE_API_VERSION"
        else:
            self.warn(f"{path} ({name}): provider '{provider}/'", "the gateway speaks to OpenAI-compatible upstreams "
                      "(openai/ with api_base) and Azure OpenAI (azure/) only; the model is not served")
            return None
        if provider == "openai" and "api_version" in params:
            self.warn(f"{path}.litellm_params.api_version", "it applies to azure/ models only")
            params.pop("api_version")
        limits = {k: params.pop(k) for k in ("rpm", "tpm") if k in params}
        if limits:
            m["limits"] = {k: int(_env_ref(v, self.env)) for k, v in limits.items()}
        timeout = params.pop("timeout", None) or params.pop("request_timeout", None) or settings.get("request_timeout")
        if timeout is not None:
            t = float(_env_ref(timeout, self.env))
            m["timeouts"] = {"total_s": t, "first_byte_s": min(t, 60.0)}
        retries = params.pop("max_retries", None)
        retries = retries if retries is not None else settings.get("num_retries")
        if retries is not None:
            m["retry"] = {"max_retries": int(_env_ref(retries, self.env))}
        headers = dict(params.pop("extra_headers", None) or params.pop("headers", None) or {})
        if org := params.pop("organization", None):
            headers["OpenAI-Organization"] = org
        if headers:
            m["headers"] = headers
        info = dict(entry.get("model_info") or {})
        prices = {k: params.pop(k, None) or info.pop(k, None) for k in ("input_cost_per_token", "output_cost_per_token")}
        if all(v is not None for v in prices.values()):
            m["pricing"] = {"input_per_1m": float(prices["input_cost_per_token"]) * 1e6,
                            "output_per_1m": float(prices["output_cost_per_token"]) * 1e6}
        self._embedding_info[name] = info.pop("output_vector_size", None)
        for k in ("id", "mode", "base_model", "description"):
            info.pop(k, None)  # descriptive only: nothing to carry
        for k in params:
            self.warn(f"{path}.litellm_params.{k}", "the gateway has no such per-model setting")
        for k in info:
            self.warn(f"{path}.model_info.{k}", "the gateway has no such per-model setting")
        return m

    # --- cache ----------------------------------------------------------------------------------------------
    def cache(self, models: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any] | None]:
        settings = dict(self.data.get("litellm_settings") or {})
        enabled = bool(_env_ref(settings.pop("cache", False), self.env))
        params = dict(settings.pop("cache_params", None) or {})
        self._other_settings(settings)
        if not enabled:
            if params:
                self.note("litellm_settings.cache is not true: cache_params are read, but no answer is cached")
            cache: dict[str, Any] = {"exact": {"enabled": False}, "semantic": {"enabled": False}}
            return cache, self._redis(params, required=False)
        kind = str(params.pop("type", "redis"))
        cache = {"scope": "global", "exact": {"enabled": True}}
        self.note("cache.scope global: like LiteLLM, callers share answers; choose namespace or service_account to "
                  "keep teams apart")
        if kind not in ("redis", "redis-semantic"):
            self.warn(f"litellm_settings.cache_params.type {kind}", "answers are cached in Redis (shared by every "
                      "replica); the Redis cache is used instead")
        ttl = params.pop("ttl", None) or params.pop("default_in_redis_ttl", None)
        if ttl is not None:
            cache["exact"]["ttl_s"] = max(1, int(float(_env_ref(ttl, self.env))))
        if params.pop("default_in_memory_ttl", None) is not None:
            self.warn("litellm_settings.cache_params.default_in_memory_ttl", "there is no in-process cache layer: an "
                      "exact hit from Redis takes under a millisecond")
        if kind == "redis-semantic":
            cache["semantic"] = self._semantic(params, models, cache["exact"].get("ttl_s"))
        else:
            for k in ("similarity_threshold", "redis_semantic_cache_embedding_model"):
                if params.pop(k, None) is not None:
                    self.warn(f"litellm_settings.cache_params.{k}", "it applies to type redis-semantic only")
        if (calls := params.pop("supported_call_types", None)) is not None:
            cache["endpoints"] = self._endpoints(calls)
        if (mode := params.pop("mode", None)) is not None:
            if mode not in ("default_on", "default_off"):
                from .config import ConfigError

                raise ConfigError(f"LiteLLM config: cache_params.mode must be default_on or default_off, not {mode}")
            cache["mode"] = mode
        return cache, self._redis(params, required=True)

    def _semantic(self, params: dict[str, Any], models: list[dict[str, Any]], ttl: int | None) -> dict[str, Any]:
        from .config import ConfigError

        raw = params.pop("similarity_threshold", None)
        if raw is None:  # LiteLLM refuses this too
            raise ConfigError("LiteLLM config: cache_params.similarity_threshold must be provided for redis-semantic")
        s = float(_env_ref(raw, self.env))
        if not 0 < s <= 1:
            raise ConfigError(f"LiteLLM config: cache_params.similarity_threshold {s} must be in (0, 1]")
        sem: dict[str, Any] = {"enabled": True, "distance_threshold": round(1 - s, 6) or 1e-6}
        self.note(f"similarity_threshold {s} -> cache.semantic.distance_threshold {sem['distance_threshold']} "
                  "(cosine distance = 1 - similarity)")
        if ttl is not None:
            sem["ttl_s"] = ttl
        name = str(params.pop("redis_semantic_cache_embedding_model", DEFAULT_EMBEDDING_MODEL))
        sem["embedding"] = self._embedding(name, models)
        if params.pop("index_name", None) is not None:
            self.warn("litellm_settings.cache_params.index_name", "index names are derived from redis.key_prefix and "
                      "the embedding model (a model change never mixes vectors)")
        return sem

    def _embedding(self, name: str, models: list[dict[str, Any]]) -> dict[str, Any]:
        from .config import ConfigError

        entry = next((m for m in models if m["name"] == name), None)
        if entry is None:  # LiteLLM calls litellm.embedding(model=name) directly: an OpenAI model
            self.note(f"redis_semantic_cache_embedding_model {name} is not in model_list: embeddings from OpenAI")
            entry = {"name": name, "provider": "openai", "model": name, "api_key": "os.environ/OPENAI_API_KEY:-",
                     "base_url": self.env.get("OPENAI_API_BASE") or self.env.get("OPENAI_BASE_URL") or OPENAI_BASE}
        dims = self._embedding_info.get(name) or EMBEDDING_DIMS.get(str(entry.get("model")))
        if not dims:
            raise ConfigError(f"LiteLLM config: the vector size of embedding model '{name}' is unknown: set "
                              f"model_info.output_vector_size on its model_list entry")
        emb: dict[str, Any] = {"provider": "openai", "model": entry["model"], "dims": int(dims), "timeout_ms": 1000}
        if entry["provider"] == "azure":
            # Azure speaks its own URL scheme and header: embed through this gateway's own /v1/embeddings, which
            # serves that model_list entry (a loop-back call; the semantic cache never embeds an embeddings call).
            emb.update(base_url="os.environ/LLMGW_SELF_URL:-http://127.0.0.1:{port}/v1", model=name)
        else:
            emb.update(base_url=entry["base_url"], api_key=entry.get("api_key"))
        self.note(f"embeddings of the semantic cache from model_list entry '{name}' (timeout 1000 ms; LiteLLM waits "
                  "without a deadline)")
        return emb

    def _endpoints(self, calls: Any) -> list[str]:
        out: list[str] = []
        for c in calls or []:
            ep = CALL_TYPES.get(str(c))
            if ep is None:
                self.warn(f"litellm_settings.cache_params.supported_call_types {c}", "the gateway caches "
                          "/chat/completions, /completions and /embeddings only")
            elif ep not in out:
                out.append(ep)
        return out

    def _redis(self, params: dict[str, Any], *, required: bool) -> dict[str, Any] | None:
        """The `redis` section: from cache_params connection keys, else LiteLLM's REDIS_* environment at start-up."""
        from .config import ConfigError
        from .redis_env import RedisEnvError, redis_from_env

        conn = {k: params.pop(k) for k in list(params) if k in REDIS_PARAMS}
        namespace = params.pop("namespace", None)
        for k in params:
            self.warn(f"litellm_settings.cache_params.{k}", "the gateway has no such cache setting")
        extra: dict[str, Any] = {"key_prefix": str(namespace)} if namespace else {}
        if namespace:
            self.note(f"cache_params.namespace {namespace} -> redis.key_prefix (every key starts with it)")
        if not conn:
            return {"from_env": True, **extra} if (required or extra) else None
        # cache_params override the environment, as LiteLLM merges them (kwargs over REDIS_* variables).
        merged: dict[str, str] = {k: v for k, v in self.env.items() if k.startswith("REDIS_")}
        for k, v in conn.items():
            v = _env_ref(v, self.env)
            if v is None:
                continue
            merged[REDIS_PARAMS[k]] = json.dumps(v) if isinstance(v, list | dict) else str(v)
        try:
            found = redis_from_env(merged)
        except RedisEnvError as e:
            raise ConfigError(f"LiteLLM config: cache_params: {e}") from None
        if found is None:
            raise ConfigError(f"LiteLLM config: {MISSING_MESSAGE}")
        section = found.section
        for k in SECRET_PARAMS:  # secrets stay references, so a converted file holds no password
            if k not in section:
                continue
            if isinstance(conn.get(k), str):
                section[k] = conn[k]
            elif self.env.get(REDIS_PARAMS[k]) == section[k]:
                section[k] = f"os.environ/{REDIS_PARAMS[k]}"
            elif k == "password" and isinstance(conn.get("sentinel_password"), str):
                section[k] = conn["sentinel_password"]  # LiteLLM's fallback: the sentinel password for the master
        return {**section, **extra}

    def _other_settings(self, settings: Mapping[str, Any]) -> None:
        known = {"request_timeout": "per-model timeouts.total_s", "num_retries": "per-model retry.max_retries"}
        for k in settings:
            if k in known:
                self.note(f"litellm_settings.{k} -> {known[k]}")
            elif k == "set_verbose":
                self.warn("litellm_settings.set_verbose", "log verbosity is the --log-level option")
            else:
                self.warn(f"litellm_settings.{k}", "the gateway has no such setting")

    def admin(self, general: Mapping[str, Any]) -> dict[str, Any] | None:
        """LiteLLM's master key -> the admin token (admin API and LiteLLM's /cache/* routes). As LiteLLM reads it:
        general_settings.master_key, else the LITELLM_MASTER_KEY variable; `os.environ/NAME` is read from the
        environment, and a variable that is not set means no key (LiteLLM then runs without one; here the admin API
        stays off). The value itself never reaches a warning or a log line."""
        key = general.get("master_key") if "master_key" in general else f"os.environ/{MASTER_KEY_ENV}"
        where = "general_settings.master_key" if "master_key" in general else MASTER_KEY_ENV
        if key is None:
            return None
        if not isinstance(key, str) or not key.strip():
            self.conv.warnings.append(f"{where} is not a non-empty string: no admin token, the admin API and "
                                      "/cache/* stay off")
            return None
        if not key.startswith("os.environ/"):
            self.note(f"{where} -> admin.token (bearer token of the admin API and /cache/*; not asked on /v1)")
            return {"token": key}
        name = key.removeprefix("os.environ/").partition(":-")[0]
        if not self.env.get(name):
            if "master_key" in general:  # an absent key with no LITELLM_MASTER_KEY is the ordinary case: no word
                self.conv.warnings.append(f"{where} names {name}, which is not set: no admin token, the admin API "
                                          "and /cache/* stay off")
            return None
        self.note(f"{where} -> admin.token from {name} (bearer token of the admin API and /cache/*; not asked on /v1)")
        return {"token": f"os.environ/{name}"}

    def run(self) -> Conversion:
        from .config import ConfigError

        mixed = [k for k in NATIVE_KEYS if k in self.data]
        if mixed:
            raise ConfigError(f"the config mixes LiteLLM keys (model_list, litellm_settings) with native keys "
                              f"({', '.join(mixed)}): use one format (llmgw-sidecar convert-litellm converts)")
        self._embedding_info: dict[str, Any] = {}
        models = self.models()
        if not models:
            raise ConfigError("LiteLLM config: model_list has no model the gateway can serve (see the warnings)")
        cache, redis = self.cache(models)
        native: dict[str, Any] = {"models": models, "cache": cache}
        if redis is not None:
            native["redis"] = redis
        router = self.data.get("router_settings") or {}
        for k in router:
            if k in ("redis_host", "redis_port", "redis_password", "redis_url"):
                self.warn(f"router_settings.{k}", "limits share the cache's Redis (litellm_settings.cache_params or "
                          "REDIS_* variables)")
            elif k in ("num_retries", "timeout"):
                self.warn(f"router_settings.{k}", "set it per model (litellm_params max_retries / timeout)")
            else:
                self.warn(f"router_settings.{k}", "the gateway serves one upstream per model name (no router)")
        general = self.data.get("general_settings") or {}
        admin = self.admin(general)
        if admin is not None:
            native["admin"] = admin
        for k in general:
            if k == "master_key":
                continue
            why = {"database_url": "spend goes to Redis and optionally spend.database_url (its own schema)"}
            self.warn(f"general_settings.{k}", why.get(k, "the gateway has no such setting"))
        for k in self.data:
            if k not in LITELLM_KEYS:
                self.warn(k, "it is not part of the LiteLLM proxy config the gateway reads")
        # The loop-back embedding URL needs the listen port (LiteLLM's default 4000 is ours too).
        sem = cache.get("semantic") or {}
        emb = sem.get("embedding") or {}
        if "{port}" in str(emb.get("base_url", "")):
            emb["base_url"] = emb["base_url"].replace("{port}", "4000")
        self.conv.native = native
        return self.conv


def convert(data: Mapping[str, Any], environ: Mapping[str, str]) -> Conversion:
    return _Converter(data, environ).run()


def convert_file(path: str, environ: Mapping[str, str] | None = None) -> str:
    """`llmgw-sidecar convert-litellm`: the native YAML, with what changed and what was left out as comments."""
    import os
    from pathlib import Path

    import yaml

    from .config import ConfigError, parse_config, yaml_error

    try:
        data = yaml.safe_load(Path(path).read_text())
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror}") from None
    except yaml.YAMLError as e:
        raise yaml_error(path, e) from None
    if not isinstance(data, dict) or not is_litellm(data):
        raise ConfigError(f"{path}: not a LiteLLM proxy config (no model_list / litellm_settings)")
    env = os.environ if environ is None else environ
    conv = convert(data, env)
    lines = [f"# Converted from the LiteLLM proxy config {path} by `llmgw-sidecar convert-litellm`.",
             "# docs/migrating-from-litellm.md explains every mapping. os.environ/NAME values are read at start-up."]
    lines += [f"# note: {n}" for n in conv.notes]
    lines += [f"# NOT CARRIED: {w}" for w in conv.warnings]
    if conv.native.get("redis", {}).get("from_env"):
        lines.append("# redis.from_env: the connection comes from REDIS_URL / REDIS_HOST+REDIS_PORT / "
                     "REDIS_CLUSTER_NODES / REDIS_SENTINEL_NODES at start-up, as in LiteLLM.")
    text = "\n".join(lines) + "\n" + yaml.safe_dump(conv.native, sort_keys=False, default_flow_style=False)
    try:
        parse_config(yaml.safe_load(text), environ=dict(env))
    except ConfigError as e:  # say so, but still print: the user may fill in the environment later
        text += f"# WARNING: this config does not load in the current environment: {e}\n".replace("\n  ", " ")
    return text
