"""What `llmgw-sidecar serve` says when it starts: one summary line once it listens, and one clear line (exit code 2)
for start-up mistakes instead of a traceback."""

from __future__ import annotations

import errno
import socket
from typing import Any

from .config import Config, EmbeddingProvider, Provider
from .redis_env import describe


def port_problem(host: str, port: int) -> str | None:
    """A one-line reason when (host, port) cannot be listened on, checked before anything is started."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        return f"cannot listen on {host}:{port}: {e.strerror}"
    family, kind, proto, _, addr = infos[0]
    with socket.socket(family, kind, proto) as s:
        # aiohttp binds with SO_REUSEADDR as well: a socket in TIME_WAIT is not a conflict.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(addr)
        except OSError as e:
            return bind_error(host, port, e)
    return None


def bind_error(host: str, port: int, e: OSError) -> str:
    if e.errno == errno.EADDRINUSE:
        return (f"port {port} on {host} is already in use (another gateway?): stop it, or choose another port with "
                f"--port N (make run PORT=N)")
    if e.errno == errno.EACCES:
        return f"no permission to listen on {host}:{port}: choose a port above 1023 with --port N"
    return f"cannot listen on {host}:{port}: {e.strerror or e}"


def semantic_summary(cfg: Config, semantic: Any) -> str:
    if semantic is None:
        return "semantic cache off"
    emb = cfg.cache.semantic.embedding
    if emb.provider == EmbeddingProvider.openai:
        return f"semantic cache on (embeddings from {emb.model} at {emb.base_url})"
    inner = getattr(semantic, "embedder", None)
    # factory.ReloadingLocalEmbedder stands in for a model that could not be loaded; it retries later.
    error = getattr(inner, "error", None) if type(inner).__name__ == "ReloadingLocalEmbedder" else None
    if error is not None:
        return f"semantic cache on but the model is NOT loaded ({error}; every lookup is a miss until it is)"
    return f"semantic cache on (model {emb.model_dir} {emb.precision} loaded)"


def summary(cfg: Config, semantic: Any) -> str:
    models = ", ".join(
        f"{m.name} -> {'mock' if m.provider == Provider.mock else f'{m.provider.value} {m.base_url}'}" for m in cfg.models)
    exact = f"exact cache {'on' if cfg.cache.exact.enabled else 'off'}"
    # describe(): mode and address (never credentials) and where they came from (config, REDIS_* env or default)
    return (f"ready on http://{cfg.listen.host}:{cfg.listen.port}/v1; models: {models}; {describe(cfg.redis)}; "
            f"{exact}; {semantic_summary(cfg, semantic)}")
