"""The fake OpenAI upstream of tests/fake_upstream.py with embeddings that carry meaning: a hashed bag of words, so a
paraphrase sharing most words is near (cosine distance ~0.1) and an unrelated question is far (~1)."""

from __future__ import annotations

import hashlib
import math
import re

from aiohttp import web

from tests.fake_upstream import FakeUpstream

DIMS = {"text-embedding-3-small": 1536, "text-embedding-ada-002": 1536}


def bow_vector(text: str, dims: int) -> list[float]:
    v = [0.0] * dims
    for word in re.findall(r"[a-z0-9]+", text.lower()):
        v[int.from_bytes(hashlib.blake2b(word.encode(), digest_size=4).digest(), "big") % dims] += 1.0
    norm = math.sqrt(sum(x * x for x in v)) or 1.0
    return [x / norm for x in v]


class BowUpstream(FakeUpstream):
    async def embeddings(self, request: web.Request) -> web.Response:
        body = await self._record(request)
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        dims = DIMS.get(body["model"], 64)
        data = [{"object": "embedding", "index": i, "embedding": bow_vector(str(x), dims)} for i, x in enumerate(inputs)]
        return web.json_response({"object": "list", "data": data, "model": body["model"],
                                  "usage": {"prompt_tokens": 4, "total_tokens": 4}})
