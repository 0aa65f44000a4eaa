"""Embeddings from any OpenAI-compatible `/embeddings` endpoint (OpenAI, vLLM, TEI, or one of the gateway's own models).

A remote call sits on the request path of every semantic lookup, so it gets a strict deadline (default 250 ms): past
it, the lookup is a miss, never an error. One pooled keep-alive session; no retries (a retry would blow the deadline).
"""

from __future__ import annotations

import asyncio
import time

import aiohttp
import numpy as np

from ..metrics import Metrics
from .base import Embedder, EmbeddingError, normalise, safe_tag


class OpenAIEmbedder(Embedder):
    provider = "openai"

    def __init__(self, base_url: str, model: str, dims: int, *, api_key: str | None = None, timeout_ms: int = 250,
                 metrics: Metrics | None = None) -> None:
        self.url = base_url.rstrip("/") + "/embeddings"
        self.model = model
        self.dims = dims
        self.timeout_s = timeout_ms / 1000
        self.metrics = metrics
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._session: aiohttp.ClientSession | None = None

    @property
    def index_tag(self) -> str:
        return safe_tag("openai", self.model, str(self.dims))

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=64, keepalive_timeout=60), headers=self.headers
            )
        return self._session

    async def embed(self, text: str) -> np.ndarray:
        t0 = time.perf_counter()
        try:
            async with asyncio.timeout(self.timeout_s):
                async with self._get_session().post(self.url, json={"model": self.model, "input": [text]}) as resp:
                    if resp.status != 200:
                        raise EmbeddingError("failed", f"{self.url} answered HTTP {resp.status}")
                    data = await resp.json(content_type=None)
        except TimeoutError:
            raise EmbeddingError("timeout", f"{self.url} took more than {self.timeout_s * 1000:.0f} ms") from None
        except aiohttp.ClientError as e:
            raise EmbeddingError("failed", f"{self.url}: {type(e).__name__}: {e}") from None
        except ValueError as e:
            raise EmbeddingError("bad_response", f"{self.url}: not JSON: {e}") from None
        finally:
            if self.metrics is not None:
                self.metrics.embedding_latency.labels(self.provider).observe(time.perf_counter() - t0)
        try:
            vec = np.asarray(data["data"][0]["embedding"], dtype=np.float32)
        except (KeyError, IndexError, TypeError, ValueError) as e:
            raise EmbeddingError("bad_response", f"{self.url}: unexpected answer shape: {e}") from None
        if vec.shape != (self.dims,):
            raise EmbeddingError("dimension_mismatch", f"{self.url} returned {vec.shape[0]} dims, configured {self.dims}")
        return normalise(vec)  # cosine distance in Redis does not need it, but guards and tests compare vectors

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
