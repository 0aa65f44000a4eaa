"""Redis settings from LiteLLM's environment variables, for a config without a `redis` section.

Follows litellm/_redis.py: REDIS_URL wins; then REDIS_CLUSTER_NODES (a JSON array of {"host", "port"} objects); then
REDIS_SENTINEL_NODES (a JSON array of [host, port] pairs) with REDIS_SERVICE_NAME and REDIS_SENTINEL_PASSWORD; then
REDIS_HOST + REDIS_PORT. REDIS_PASSWORD, REDIS_USERNAME, REDIS_DB, REDIS_SSL (and the REDIS_SSL_* file settings) apply
to every mode; REDIS_GCP_SERVICE_ACCOUNT switches to GCP Memorystore IAM authentication.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

log = logging.getLogger("llmgw.redis")

# LiteLLM's own words (litellm/_redis.py), so that a user searching for the message finds both projects' docs.
MISSING_MESSAGE = "Either 'REDIS_URL' or both 'REDIS_HOST' and 'REDIS_PORT' must be specified for Redis."
SENTINEL_MESSAGE = "Both 'sentinel_nodes' and 'service_name' are required for Redis Sentinel."
CLUSTER_JSON_MESSAGE = ("REDIS_CLUSTER_NODES environment variable is not valid JSON. Please ensure it's properly "
                        "formatted.")

# Variables that pick *which* Redis: any of them set means "the environment chose".
SELECTORS = ("REDIS_URL", "REDIS_HOST", "REDIS_CLUSTER_NODES", "REDIS_SENTINEL_NODES")
CARRIED = (*SELECTORS, "REDIS_PORT", "REDIS_PASSWORD", "REDIS_USERNAME", "REDIS_DB", "REDIS_SSL", "REDIS_SSL_CA_CERTS",
           "REDIS_SSL_CERTFILE", "REDIS_SSL_KEYFILE", "REDIS_SSL_CERT_REQS", "REDIS_SSL_CHECK_HOSTNAME",
           "REDIS_SERVICE_NAME", "REDIS_SENTINEL_PASSWORD", "REDIS_GCP_SERVICE_ACCOUNT", "REDIS_GCP_SSL_CA_CERTS",
           "REDIS_MAX_CONNECTIONS", "REDIS_SOCKET_CONNECT_TIMEOUT")
# redis.Redis keyword arguments LiteLLM also reads as REDIS_<NAME>, which we do not carry, and why.
NOT_CARRIED = {
    "REDIS_SOCKET_TIMEOUT": "each cache operation has its own deadline (redis.op_timeout_ms)",
    "REDIS_RETRY_ON_TIMEOUT": "a slow Redis is skipped (fail open), never retried inside a request",
    "REDIS_RETRY_ON_ERROR": "a failing Redis is skipped (fail open), never retried inside a request",
    "REDIS_HEALTH_CHECK_INTERVAL": "the circuit breaker (redis.circuit_breaker) watches Redis health",
    "REDIS_SOCKET_KEEPALIVE": "connections are pooled and kept alive already",
    "REDIS_SOCKET_KEEPALIVE_OPTIONS": "connections are pooled and kept alive already",
    "REDIS_CLIENT_NAME": "the gateway does not name its connections",
    "REDIS_ENCODING": "answers are stored as bytes, never re-encoded",
    "REDIS_ENCODING_ERRORS": "answers are stored as bytes, never re-encoded",
    "REDIS_DECODE_RESPONSES": "answers are stored as bytes, never decoded",
    "REDIS_PROTOCOL": "the gateway speaks RESP2 (the search module's client needs it)",
    "REDIS_SINGLE_CONNECTION_CLIENT": "every process uses one pooled client",
    "REDIS_UNIX_SOCKET_PATH": "use REDIS_URL=unix:///path/to/redis.sock instead",
    "REDIS_SSL_CA_PATH": "give a CA bundle file with REDIS_SSL_CA_CERTS",
    "REDIS_SSL_CA_DATA": "give a CA bundle file with REDIS_SSL_CA_CERTS",
    "REDIS_SSL_PASSWORD": "encrypted client keys are not supported; mount the key unencrypted from a Secret",
    "REDIS_SSL_MIN_VERSION": "TLS 1.2 or newer is negotiated by default",
    "REDIS_SSL_CIPHERS": "the system's default cipher list is used",
    "REDIS_SSL_VALIDATE_OCSP": "OCSP validation is not supported",
    "REDIS_SSL_VALIDATE_OCSP_STAPLED": "OCSP validation is not supported",
}
_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off", ""}


class RedisEnvError(ValueError):
    """The environment names a Redis but cannot be used as it is (message says which variable and why)."""


@dataclass
class EnvRedis:
    """A `redis` config section built from the environment, the variables it came from, and what was ignored."""

    section: dict[str, Any]
    used: list[str]
    warnings: list[str] = field(default_factory=list)


def env_selects_redis(environ: Mapping[str, str]) -> bool:
    return any(environ.get(v) for v in SELECTORS)


def _flag(environ: Mapping[str, str], name: str) -> bool | None:
    value = environ.get(name)
    if value is None:
        return None
    if value.strip().lower() in _TRUE:
        return True
    if value.strip().lower() in _FALSE:
        return False
    raise RedisEnvError(f"{name}={value!r} is not true or false")


def _port(name: str, value: Any) -> int:
    text = str(value).strip()
    if not text.isdigit() or not 0 < int(text) < 65536:
        hint = ""
        if text.startswith("tcp://"):
            # Kubernetes service links set REDIS_PORT=tcp://IP:6379 for a Service named "redis".
            hint = (" (Kubernetes sets REDIS_PORT=tcp://... for a Service named 'redis': set REDIS_PORT yourself, use "
                    "REDIS_URL, or turn off enableServiceLinks)")
        raise RedisEnvError(f"{name}={text!r} is not a port number{hint}")
    return int(text)


def _cluster_nodes(raw: str) -> list[str]:
    try:
        nodes = json.loads(raw)
    except json.JSONDecodeError:
        raise RedisEnvError(CLUSTER_JSON_MESSAGE) from None
    if not isinstance(nodes, list) or not nodes or not all(isinstance(n, dict) and "host" in n for n in nodes):
        raise RedisEnvError('REDIS_CLUSTER_NODES must be a JSON array of {"host": ..., "port": ...} objects, e.g. '
                            '[{"host": "10.0.0.1", "port": 6379}]')
    return [f"{n['host']}:{_port('REDIS_CLUSTER_NODES port', n.get('port', 6379))}" for n in nodes]


def _sentinel_nodes(raw: str) -> list[str]:
    try:
        nodes = json.loads(raw)
    except json.JSONDecodeError:
        raise RedisEnvError("REDIS_SENTINEL_NODES environment variable is not valid JSON, e.g. "
                            '[["10.0.0.1", 26379], ["10.0.0.2", 26379]]') from None
    if (not isinstance(nodes, list) or not nodes
            or not all(isinstance(n, list | tuple) and len(n) == 2 for n in nodes)):
        raise RedisEnvError('REDIS_SENTINEL_NODES must be a JSON array of [host, port] pairs, e.g. '
                            '[["10.0.0.1", 26379]]')
    return [f"{h}:{_port('REDIS_SENTINEL_NODES port', p)}" for h, p in nodes]


def _tls(environ: Mapping[str, str], used: list[str], ssl_on: bool) -> dict[str, Any] | None:
    ca = environ.get("REDIS_SSL_CA_CERTS") or environ.get("REDIS_GCP_SSL_CA_CERTS")
    cert, key = environ.get("REDIS_SSL_CERTFILE"), environ.get("REDIS_SSL_KEYFILE")
    reqs = (environ.get("REDIS_SSL_CERT_REQS") or "required").strip().lower()
    check_host = _flag(environ, "REDIS_SSL_CHECK_HOSTNAME")
    if not ssl_on:
        return None
    tls: dict[str, Any] = {"enabled": True}
    if ca:
        tls["ca_file"] = ca
    if cert:
        tls["cert_file"] = cert
    if key:
        tls["key_file"] = key
    if reqs in ("none", "null", "cert_none"):
        tls["insecure_skip_verify"] = True
    elif check_host is False:
        tls["check_hostname"] = False
    used += [v for v in ("REDIS_SSL_CA_CERTS", "REDIS_GCP_SSL_CA_CERTS", "REDIS_SSL_CERTFILE", "REDIS_SSL_KEYFILE",
                         "REDIS_SSL_CERT_REQS", "REDIS_SSL_CHECK_HOSTNAME") if environ.get(v)]
    return tls


def redis_from_env(environ: Mapping[str, str]) -> EnvRedis | None:
    """The `redis` section LiteLLM would connect with; None when no variable selects a Redis."""
    if not env_selects_redis(environ):
        return None
    used: list[str] = []
    section: dict[str, Any] = {}

    def take(name: str) -> str | None:
        value = environ.get(name)
        if value:
            used.append(name)
        return value or None

    url = take("REDIS_URL")
    cluster = None if url else take("REDIS_CLUSTER_NODES")
    sentinel = None if url or cluster else take("REDIS_SENTINEL_NODES")
    password, username = take("REDIS_PASSWORD"), take("REDIS_USERNAME")
    ssl_on = bool(_flag(environ, "REDIS_SSL"))
    if environ.get("REDIS_SSL"):
        used.append("REDIS_SSL")
    if url:
        scheme = urlsplit(url).scheme
        if scheme not in ("redis", "rediss", "unix"):
            raise RedisEnvError(f"REDIS_URL must start with redis://, rediss:// or unix://, not {scheme}://")
        section["url"] = url
        ssl_on = ssl_on or scheme == "rediss"
    elif cluster:
        section.update(mode="cluster", nodes=_cluster_nodes(cluster))
    elif sentinel:
        service = take("REDIS_SERVICE_NAME")
        if not service:
            raise RedisEnvError(f"{SENTINEL_MESSAGE} (REDIS_SENTINEL_NODES is set, REDIS_SERVICE_NAME is not)")
        section.update(mode="sentinel", sentinels=_sentinel_nodes(sentinel), master_name=service)
        sentinel_password = take("REDIS_SENTINEL_PASSWORD")
        if sentinel_password:
            section["sentinel_password"] = sentinel_password
            # As LiteLLM: without REDIS_PASSWORD the sentinel password also authenticates to the master.
            password = password or sentinel_password
    else:
        host = take("REDIS_HOST")
        port = _port("REDIS_PORT", take("REDIS_PORT") or 6379)
        section["url"] = f"{'rediss' if ssl_on else 'redis'}://{host}:{port}"
    if password:
        section["password"] = password
    if username:
        section["username"] = username
    if (db := take("REDIS_DB")) is not None:
        if not db.isdigit():
            raise RedisEnvError(f"REDIS_DB={db!r} is not a database number")
        section["db"] = int(db)
    if tls := _tls(environ, used, ssl_on):
        section["tls"] = tls
    if (maxconn := take("REDIS_MAX_CONNECTIONS")) is not None:
        section["max_connections"] = int(maxconn) if maxconn.isdigit() else maxconn
    if (connect := take("REDIS_SOCKET_CONNECT_TIMEOUT")) is not None:
        try:
            section["connect_timeout_ms"] = max(1, round(float(connect) * 1000))
        except ValueError:
            raise RedisEnvError(f"REDIS_SOCKET_CONNECT_TIMEOUT={connect!r} is not a number of seconds") from None
    if (account := take("REDIS_GCP_SERVICE_ACCOUNT")) is not None:
        section["iam"] = {"provider": "gcp", "gcp_service_account": account}
    warnings = [f"{name} is set but not used: {why}" for name, why in NOT_CARRIED.items() if environ.get(name)]
    return EnvRedis(section, used, warnings)


def describe(redis: Any) -> str:
    """The start-up line: which Redis (mode and address, never credentials) and why this one."""
    if redis.mode == "sentinel":
        where = f"sentinel {','.join(redis.sentinels)} master {redis.master_name}"
    elif redis.mode == "cluster":
        where = f"cluster {','.join(redis.nodes)}"
    else:
        u = urlsplit(redis.url)
        where = f"standalone {u.path if u.scheme == 'unix' else f'{u.hostname}:{u.port or 6379}'}"
    tls = " over TLS" if redis.tls.enabled or redis.url.startswith("rediss://") else ""
    auth = f", {redis.iam.provider.value} IAM tokens" if redis.iam is not None else ""
    return f"redis: {where}{tls}{auth}, from {redis._source}"
