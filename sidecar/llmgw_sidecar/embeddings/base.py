"""The one interface every embedding provider implements, and the error that turns a lookup into a miss."""

from __future__ import annotations

import re
from abc import ABC, abstractmethod

import numpy as np


class EmbeddingError(Exception):
    """The text could not be embedded (model missing or failing, endpoint slow or wrong). Callers treat it as a miss."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind  # short metric/log label: unavailable, timeout, failed, bad_response, dimension_mismatch


class Embedder(ABC):
    """Turns a text into a unit-length float32 vector. Implementations must not block the event loop."""

    provider: str  # "local" | "openai": the metric label
    dims: int

    @property
    @abstractmethod
    def index_tag(self) -> str:
        """Names the vector space (model, precision, dims). Part of the index name, so vectors from two models or
        precisions never meet in one index."""

    @abstractmethod
    async def embed(self, text: str) -> np.ndarray:
        """One text -> vector of shape (dims,), L2-normalised. Raises EmbeddingError, nothing else."""

    async def embed_many(self, texts: list[str]) -> list[np.ndarray]:
        """Several texts at once (the local model batches them into one run). Raises EmbeddingError."""
        import asyncio

        return list(await asyncio.gather(*(self.embed(t) for t in texts)))

    async def close(self) -> None:  # optional hook: providers without resources keep the default
        return None


def safe_tag(*parts: str) -> str:
    """Lower-case [a-z0-9._-] only: index names end up inside Redis keys and hash tags."""
    return "-".join(re.sub(r"[^a-z0-9._-]+", "_", p.lower()).strip("_") for p in parts if p)


def normalise(vec: np.ndarray) -> np.ndarray:
    v = np.asarray(vec, dtype=np.float32).reshape(-1)
    n = float(np.linalg.norm(v))
    if not np.isfinite(n) or n == 0.0:
        raise EmbeddingError("bad_response", "embedding has zero or non-finite length")
    return v / n
