"""What a semantic entry keeps besides its indexed first-stage vector, and how a candidate becomes an answer."""

from __future__ import annotations

import base64
import time
from typing import Any

import numpy as np
import orjson

from ..context import CachedAnswer, Usage


def encode_vec(vec: np.ndarray) -> str:
    return base64.b64encode(np.asarray(vec, dtype=np.float32).tobytes()).decode()


def decode_vec(value: Any, dims: int) -> np.ndarray | None:
    if not value:
        return None
    try:
        vec = np.frombuffer(base64.b64decode(value), dtype=np.float32)
    except (ValueError, TypeError):
        return None
    return vec if vec.shape == (dims,) else None


def answer_from(f: dict[str, Any], distance: float, score: float | None = None) -> CachedAnswer | None:
    """The cached answer of a candidate's fields (Candidate.answer_fields), or None when they are unusable."""
    body = f.get("body")
    if not body:
        return None  # expired between search and read, or a foreign document
    usage = None
    try:
        u = orjson.loads(f.get("usage") or "null")
        if u:
            usage = Usage(int(u[0]), int(u[1]), int(u[2]), bool(u[3]))
        created = float(f.get("created") or time.time())
    except (ValueError, TypeError, IndexError):
        return None

    def b(name: str) -> bytes | None:
        v = f.get(name)
        if not v:
            return None
        return v.encode() if isinstance(v, str) else bytes(v)

    return CachedAnswer(body=b("body") or b"", created=created, sse=b("sse"), sse_usage=b("sse_usage"), usage=usage,
                        distance=round(distance, 6), score=None if score is None else round(score, 6))
