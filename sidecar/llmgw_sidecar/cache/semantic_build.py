"""The semantic cache's factory: the layer built from the configuration (None when disabled), with its embedding
model, its first-stage model and the verification step's lexical data loaded off the event loop."""

from __future__ import annotations

import asyncio
import functools
import logging
from typing import Any

from ..config import Config, EmbeddingProvider, RedisMode, SemanticCacheConfig
from ..embeddings.base import Embedder, EmbeddingError
from ..embeddings.factory import make_embedder
from ..embeddings.pair import PairScorer
from ..embeddings.static import StaticEncoder
from ..metrics import Metrics
from ..redis_guard import RedisHealth
from .semantic import SemanticCache

log = logging.getLogger("llmgw.semantic")


async def build_semantic(config: Config, redis: Any, metrics: Metrics, *, embedder: Embedder | None = None,
                         health: RedisHealth | None = None) -> SemanticCache | None:
    """The app's factory: None when disabled. Model trouble does not stop the sidecar (lookups are misses). The model
    loads in a thread (about half a second): a config reload must not stall requests in flight."""
    cfg = config.cache.semantic
    if not cfg.enabled:
        return None
    node_client = None
    if config.redis.mode == RedisMode.cluster:
        from redis.asyncio import Redis

        from ..redis_topology import node_client as make_node_client

        def node_client(host: str, port: int) -> Redis:
            return make_node_client(config.redis, host, port)

    # the first stage and the pair model come from the same model as the full one: only with the local provider
    local = cfg.embedding.provider == EmbeddingProvider.local and getattr(embedder, "provider", "local") == "local"
    static = await asyncio.to_thread(_load_static, cfg) if cfg.first_stage and local else None
    pair = await asyncio.to_thread(_load_pair, cfg) if cfg.pair_model and local else None
    if embedder is None:
        # with both, lookups never run the full model: it is loaded only if something does
        lazy = static is not None and pair is not None
        embedder = await asyncio.to_thread(functools.partial(make_embedder, cfg.embedding, metrics, lazy=lazy))
    return SemanticCache(
        cfg, embedder, metrics, redis=redis,
        key_prefix=config.redis.key_prefix, node_client=node_client,
        # one KNN per shard, concurrently; a little more than one cache op, but still a hard bound
        search_timeout_s=max(config.redis.op_timeout_ms / 1000 * 2, 0.05),
        breaker=health.breaker if health is not None else config.redis.circuit_breaker,
        generation=config.cache.generation, gateway=f"{config.gateway.namespace}/{config.gateway.name}",
        static=static, pair=pair,
    )


def _load_static(cfg: SemanticCacheConfig) -> StaticEncoder | None:
    """The local model folder's first-stage model, or None (remote provider, or a folder exported without it: then
    the full model finds the candidates, as before). The lexical data of the verification step loads here too."""
    from pathlib import Path

    from . import lexicon

    lexicon.load()
    folder = Path(cfg.embedding.model_dir) / "static"
    if not (folder / "model.safetensors").exists():
        return None
    try:
        return StaticEncoder(folder)
    except EmbeddingError as e:
        log.warning("first stage unavailable, one-stage lookups: %s", e)
        return None


def _load_pair(cfg: SemanticCacheConfig) -> PairScorer | None:
    """The local model folder's pair model, or None (a folder exported without it: the unmatched-word rule decides,
    and the start-up log says so)."""
    from pathlib import Path

    folder = Path(cfg.embedding.model_dir) / "pair"
    if not (folder / "model.onnx").exists():
        log.warning("no pair model in %s (exported before it existed?): the unmatched-word rule verifies candidates; "
                    "export the model again for the pair model", cfg.embedding.model_dir)
        return None
    try:
        return PairScorer(folder, precision=cfg.embedding.precision, threads=cfg.embedding.threads)
    except Exception as e:  # noqa: BLE001 - a broken file must not stop the sidecar: the rules still verify
        log.warning("pair model unavailable, the unmatched-word rule verifies candidates: %s", e)
        return None
