"""Build the configured embedding provider. A local model that cannot be loaded does not stop the sidecar: the
provider keeps answering EmbeddingError("unavailable") (every semantic lookup is a miss) and tries to load it again
now and then, so exporting the model later heals a running sidecar."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..config import EmbeddingConfig, EmbeddingProvider
from ..metrics import Metrics
from .base import Embedder, EmbeddingError, safe_tag
from .local import LocalEmbedder
from .openai_remote import OpenAIEmbedder

RELOAD_EVERY_S = 30.0


class ReloadingLocalEmbedder(Embedder):
    provider = "local"

    def __init__(self, cfg: EmbeddingConfig, metrics: Metrics | None, first_error: EmbeddingError) -> None:
        self.cfg = cfg
        self.metrics = metrics
        self.error = first_error
        self._inner: LocalEmbedder | None = None
        self._tried_at = time.monotonic()
        self._loading: asyncio.Task[Any] | None = None
        self.dims = 0

    @property
    def index_tag(self) -> str:
        if self._inner is not None:
            return self._inner.index_tag
        return safe_tag(Path(self.cfg.model_dir).name, self.cfg.precision)

    async def embed(self, text: str) -> np.ndarray:
        if self._inner is None:
            if self._loading is None and time.monotonic() - self._tried_at >= RELOAD_EVERY_S:
                self._tried_at = time.monotonic()
                self._loading = asyncio.get_running_loop().create_task(asyncio.to_thread(_load, self.cfg, self.metrics))
                self._loading.add_done_callback(self._loaded)
            raise self.error
        return await self._inner.embed(text)

    def _loaded(self, task: asyncio.Task[Any]) -> None:
        self._loading = None
        if task.cancelled():
            return
        exc = task.exception()
        if exc is None:
            self._inner = task.result()
            self.dims = self._inner.dims
        elif isinstance(exc, EmbeddingError):
            self.error = exc

    async def close(self) -> None:
        if self._loading is not None:
            self._loading.cancel()
        if self._inner is not None:
            await self._inner.close()


def _load(cfg: EmbeddingConfig, metrics: Metrics | None, lazy: bool = False) -> LocalEmbedder:
    return LocalEmbedder(cfg.model_dir, precision=cfg.precision, max_batch=cfg.max_batch, threads=cfg.threads,
                         metrics=metrics, lazy=lazy)


class SharedLocal(Embedder):
    """A reference to a loaded local model. A config reload builds the new runtime before closing the old one: with
    an unchanged embedding config both share one model (no second load, no second ~170 MB)."""

    provider = "local"

    def __init__(self, key: tuple[Any, ...], inner: LocalEmbedder) -> None:
        self.key = key
        self.inner = inner
        self.dims = inner.dims
        self._closed = False

    @property
    def index_tag(self) -> str:
        return self.inner.index_tag

    async def embed(self, text: str) -> np.ndarray:
        return await self.inner.embed(text)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with _lock:
            inner, refs = _shared[self.key]
            if refs > 1:
                _shared[self.key] = (inner, refs - 1)
                return
            del _shared[self.key]
        await inner.close()


_lock = threading.Lock()  # make_embedder runs in worker threads (build_semantic)
_shared: dict[tuple[Any, ...], tuple[LocalEmbedder, int]] = {}


def make_embedder(cfg: EmbeddingConfig, metrics: Metrics | None = None, *, lazy: bool = False) -> Embedder:
    """lazy: a local model's session is loaded on first use (see LocalEmbedder)."""
    if cfg.provider == EmbeddingProvider.openai:
        if not cfg.base_url or not cfg.model or not cfg.dims:
            raise ValueError("cache.semantic.embedding: provider openai needs base_url, model and dims")
        return OpenAIEmbedder(cfg.base_url, cfg.model, cfg.dims, api_key=cfg.api_key, timeout_ms=cfg.timeout_ms,
                              metrics=metrics)
    key = (str(Path(cfg.model_dir).resolve()), cfg.precision, cfg.max_batch, cfg.threads, id(metrics))
    with _lock:
        if key in _shared:
            inner, refs = _shared[key]
            if not lazy:
                with contextlib.suppress(EmbeddingError):  # unloadable: each embed reports it, as a miss
                    inner.load()
            _shared[key] = (inner, refs + 1)
            return SharedLocal(key, inner)
        try:
            inner = _load(cfg, metrics, lazy)
        except EmbeddingError as e:
            return ReloadingLocalEmbedder(cfg, metrics, e)
        _shared[key] = (inner, 1)
        return SharedLocal(key, inner)
