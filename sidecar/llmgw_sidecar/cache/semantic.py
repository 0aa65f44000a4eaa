"""Semantic cache: answer a paraphrase of a question already answered, inside an identical context.

What is compared: only the last user message is embedded. Everything else that can change the answer (the model, the
system prompt and the rest of the conversation, every output-affecting parameter), plus the caller scope and the
per-request cache namespace, goes into exact tag filters. So "capital of France?" in one conversation never answers
the same words in another conversation, another model, another temperature or another tenant.

A static model distilled from the same MiniLM (embeddings/static.py, tens of microseconds) finds candidates in Redis
within `first_stage_distance`. With the pair model (embeddings/pair.py, the local default), the rules it may not
overrule (verify.HARD_RULES) run, and it reads the nearest survivor together with the question: the full model never
runs. Without it, only when a candidate passes the lexical rules of the verification step does the full model run,
once, in one batch: the question, any candidate stored without its full vector, and the words the alignment needs;
a candidate is then served only when (1) its full-model cosine distance is within `distance_threshold` and (2) the
verification step (verify.py) finds no difference the embedding is blind to. The vectors computed for the lookup are
the ones stored: one embedding per request, and a miss never runs the full model just to store (the full vector of an
entry is filled in the first time it is a candidate).

Requests with tools, tool results or function calls are exact-cache only unless `tools: true`. Every failure (model
missing, embedding deadline, Redis error, index missing, wrong dimensions) is a miss, a metric and a rate-limited log
line; a request never fails because of this layer.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections import OrderedDict
from typing import Any, NamedTuple

import numpy as np
import orjson

from ..config import CircuitBreakerConfig, SemanticCacheConfig
from ..context import CachedAnswer, RequestContext
from ..embeddings.base import Embedder, EmbeddingError
from ..embeddings.pair import PairScorer
from ..embeddings.static import StaticEncoder
from ..metrics import Metrics
from ..redis_guard import CircuitBreaker, RateLimitedLog
from . import verify
from .keys import upstream_identity
from .semantic_entry import answer_from, decode_vec, encode_vec
from .semantic_index import Candidate, ShardIndex, VectorStore
from .semantic_request import context_hash, question_and_context, scope_hash, uses_tools  # noqa: F401 - re-exported
from .spelling import for_embedding

log = logging.getLogger("llmgw.semantic")
CANDIDATES_PER_SHARD = 4  # the nearest few, so that a guard-rejected nearest one does not hide a good second one
MAX_PENDING_STORES = 256
WORD_CACHE_SIZE = 4096  # word/phrase vectors of the verification step (1.5 KB each: 6 MB at most)
WORD_CACHE_MAX_CHARS = 40  # words and short phrases only, never whole questions
STORE_DEADLINE_S = 10.0
_STATE_KEY = "semantic"


class Survivor(NamedTuple):
    """A candidate the lexical rules let through, with its alignment (the unmatched-word rule finishes it; None when
    the pair model decides instead)."""
    cand: Candidate
    prompt: str
    al: verify.Alignment | None


class SemanticCache:
    def __init__(self, cfg: SemanticCacheConfig, embedder: Embedder, metrics: Metrics, *, redis: Any, key_prefix: str,
                 node_client: Any = None, search_timeout_s: float = 0.1,
                 breaker: CircuitBreakerConfig | CircuitBreaker | None = None, generation: int = 0, gateway: str = "",
                 static: StaticEncoder | None = None, pair: PairScorer | None = None) -> None:
        self.cfg = cfg
        self.generation = generation
        self.gateway = gateway  # "ns/name": stored in plain text so that cache.admin can select this gateway's entries
        self.embedder = embedder
        self.static = static  # None: one stage, the full model finds the candidates (remote embedding providers)
        self.pair = pair  # None: the unmatched-word rule (word vectors) decides instead of the pair model
        self.metrics = metrics
        self.redis = redis
        self.key_prefix = key_prefix
        self.node_client = node_client
        self.search_timeout_s = search_timeout_s
        self.embed_timeout_s = cfg.embedding.timeout_ms / 1000
        self._stores: dict[str, VectorStore] = {}
        self._word_vectors: OrderedDict[str, np.ndarray] = OrderedDict()
        self._static_words: OrderedDict[str, np.ndarray] = OrderedDict()  # first-stage word vectors, oldest out
        self._pending: set[asyncio.Task[None]] = set()
        self._log = RateLimitedLog(log, every_s=30.0)
        # While Redis is down, do not pay the search deadline on every request: skip the lookup (and stores) until
        # the breaker lets one probe through.
        # (the runtime passes its one shared breaker; a private one when used alone)
        self.breaker = breaker if isinstance(breaker, CircuitBreaker) else CircuitBreaker(breaker or CircuitBreakerConfig())

    # --- lookup --------------------------------------------------------------------------------------------------

    async def lookup(self, ctx: RequestContext) -> CachedAnswer | None:
        try:
            return await self._lookup(ctx)
        except Exception as e:  # noqa: BLE001 - the contract: never raise, trouble is a miss
            self._count("error")
            self._log.warning("lookup", f"semantic lookup failed: {type(e).__name__}: {e}")
            return None

    async def _lookup(self, ctx: RequestContext) -> CachedAnswer | None:
        if ctx.directives.no_cache:
            return None
        split = question_and_context(ctx.body, self.cfg.max_prompt_chars, self.cfg.tools)
        if split is None:
            self._count("ineligible")
            return None
        text, rest = split
        ctx_h = context_hash(upstream_identity(ctx.model), rest)
        scope_h = scope_hash(ctx.scope, ctx.directives.namespace, self.generation)
        full: np.ndarray | None = None
        first: np.ndarray | None
        if self.static is not None:
            first = self.static.encode(for_embedding(text))
        else:
            full = first = await self._embed(for_embedding(text))
        # Keep what we computed: a miss stores this very question (and its vectors) after the upstream answers.
        ctx.state[_STATE_KEY] = (text, ctx_h, scope_h, first, full)
        if first is None:
            self._count("error")
            return None
        if not self.breaker.allow():
            self.metrics.redis_fail_open.labels("semantic_search").inc()
            self._count("error")
            return None
        store = self._store()
        try:
            # the outer bound also covers a cluster re-discovery; each shard gets the plain search deadline
            async with asyncio.timeout(self.search_timeout_s * 2):
                found, failed = await store.search(first, ctx.model.name, ctx_h, scope_h, CANDIDATES_PER_SHARD,
                                                   self._shard_error, timeout_s=self.search_timeout_s,
                                                   fields=("prompt",) if self.pair is not None else ("prompt", "fvec"))
        except Exception as e:  # noqa: BLE001 - timeout, cluster layout unreadable, ...: a miss, and the breaker knows
            self.breaker.failure(e)
            self.metrics.redis_errors.labels("semantic_search").inc()
            self._count("error")
            self._log.warning("search", f"semantic search failed: {type(e).__name__}: {e}")
            return None
        if failed and failed == len(store.shards):
            self.breaker.failure()
            self._count("error")
            return None
        self.breaker.success()
        limit = self.cfg.first_stage_distance if self.static is not None else self.cfg.distance_threshold
        near = [c for c in found if c.distance <= limit]
        if not near:
            self._count("miss")
            return None
        # The lexical rules first: they cost microseconds and need no vectors; what they refuse never costs a
        # full-model run.
        survivors: list[Survivor] = []
        rejected = False
        for cand in near:  # nearest first
            if self.pair is not None and len(survivors) >= self.cfg.pair_candidates:
                break  # the pair model reads only the nearest survivors: the rest need no rules
            prompt = str(cand.fields.get("prompt", ""))
            if self.pair is not None:
                refused, _al = verify.lexical_for_pair_model(text, prompt, self.cfg.guards)
                al = None
            else:
                refused, template = verify.lexical(text, prompt, self.cfg.guards)
                al = template.copy()
                if refused is None and self.cfg.guards.unmatched and self.static is not None and first is not None \
                        and not self._could_match(al, first, prompt):
                    # no full-model vector would give these words a counterpart: refused before the full model runs
                    refused = ("unmatched", "")
            if refused is not None:
                self._refused(refused)
                rejected = True
            else:
                survivors.append(Survivor(cand, prompt, al))
        if not survivors:
            self._count("guard_rejected")
            return None
        if self.pair is not None:
            # the pair model reads the candidates the rules let through, nearest first; the full model never runs
            self.metrics.semantic_distance.observe(survivors[0].cand.distance)
            answer, refused_later = await self._judge_pairs(text, [(sv.cand.distance, sv) for sv in survivors])
        else:
            answer, refused_later = await self._verify_with_vectors(ctx, text, full, survivors)
        if answer is not None:
            self._count("hit")
            return answer
        if refused_later is None:  # the full model failed
            self._count("error")
            return None
        self._count("guard_rejected" if rejected or refused_later else "miss")
        return None

    async def _verify_with_vectors(self, ctx: RequestContext, text: str, full: np.ndarray | None,
                                   survivors: list[Survivor]
                                   ) -> tuple[CachedAnswer | None, bool | None]:
        """The full model, at most twice: first the question (unless the first stage was the full model) and any
        candidate stored without a full vector, for the distance; then, only for candidates within the threshold,
        the words their alignments still have to match (most candidates that get this far are not paraphrases, and
        stop at the distance). Returns (answer, whether the verification refused a candidate; None when the full
        model failed)."""
        texts: dict[str, None] = {}  # what is embedded: the questions with misspelt words corrected (spelling.py)
        if full is None:
            texts[for_embedding(text)] = None
        cvecs: dict[int, np.ndarray] = {}
        for i, (cand, prompt, *_) in enumerate(survivors):
            vec = decode_vec(cand.fields.get("fvec"), self.embedder.dims) if self.static is not None else None
            if vec is not None:
                cvecs[i] = vec
            else:
                texts[for_embedding(prompt)] = None
        if texts:
            got = await self._embed_many(list(texts))
            if got is None:
                return None, None
            fresh = dict(zip(texts, got, strict=True))
            if full is None:
                full = fresh[for_embedding(text)]
                state = ctx.state.get(_STATE_KEY)
                if state is not None:  # stored with the entry if this turns out a miss
                    ctx.state[_STATE_KEY] = (*state[:4], full)
            for i, (cand, prompt, *_) in enumerate(survivors):
                if i not in cvecs:
                    cvecs[i] = fresh[for_embedding(prompt)]
                    if self.static is not None:
                        self._fill_full_vector(cand, cvecs[i])
        close = []
        best: float | None = None
        for i, sv in enumerate(survivors):
            distance = float(1.0 - full @ cvecs[i])
            best = distance if best is None else min(best, distance)
            if distance <= self.cfg.distance_threshold:
                close.append((distance, sv, cvecs[i]))
        if best is not None:
            self.metrics.semantic_distance.observe(best)
        if not close:
            return None, False
        close.sort(key=lambda c: c[0])
        # words and phrases repeat across questions: their vectors are kept (a bounded LRU), never recomputed
        aligned = [(d, sv.cand, sv.prompt, sv.al, v) for d, sv, v in close if sv.al is not None]
        wanted = dict.fromkeys(w for *_, al, _v in aligned for w in al.words_to_embed())
        vectors: dict[str, np.ndarray] = {}
        for w in list(wanted):
            if w in self._word_vectors:
                vectors[w] = self._word_vectors[w]
                self._word_vectors.move_to_end(w)
                del wanted[w]
        if wanted:
            got = await self._embed_many(list(wanted))
            if got is None:
                return None, None
            for w, v in zip(wanted, got, strict=True):
                vectors[w] = v
                if len(w) <= WORD_CACHE_MAX_CHARS:
                    self._word_vectors[w] = v
            while len(self._word_vectors) > WORD_CACHE_SIZE:
                self._word_vectors.popitem(last=False)
        refused_any = False
        for distance, cand, prompt, al, cvec in aligned:
            al.resolve(vectors, sentences=(full, cvec))
            refused = verify.refusal(text, prompt, self.cfg.guards, alignment=al, only=("unmatched",))
            if refused is not None:
                self._refused(refused)
                refused_any = True
                continue
            answer = await self._answer(cand, distance)
            if answer is not None:
                return answer, refused_any
        return None, refused_any

    async def _judge_pairs(self, text: str, close: list[tuple[float, Survivor]]
                           ) -> tuple[CachedAnswer | None, bool | None]:
        """The pair model reads each close candidate with the question (one batch, off the event loop); the nearest
        one it accepts is served. Between pair_threshold and pair_overrule_threshold, a content rule's doubt refuses
        it (and gets the blame)."""
        assert self.pair is not None
        try:
            async with asyncio.timeout(self.embed_timeout_s):
                scores = await asyncio.to_thread(self.pair.score, [(sv.prompt, text) for _d, sv in close])
        except Exception as e:  # noqa: BLE001 - deadline or model trouble: a miss, like a failed embedding
            self._log.warning("pair", f"pair model failed: {type(e).__name__}: {e}")
            return None, None
        refused_any = False
        for (distance, sv), score in zip(close, scores, strict=True):
            refused: tuple[str, str] | None = None
            if score < self.cfg.pair_threshold:
                refused = ("pair_model", f"{score:.3f} < {self.cfg.pair_threshold}")
            elif score < self.cfg.pair_overrule_threshold:
                refused = verify.doubt(text, sv.prompt, self.cfg.guards)  # a content rule's doubt stands
            if refused is not None:
                self._refused(refused)
                log.debug("semantic candidate refused by %s: pair model %.3f (%r vs %r)", refused[0], score, text,
                          sv.prompt)
                refused_any = True
                continue
            answer = await self._answer(sv.cand, distance, score)
            if answer is not None:
                return answer, refused_any
        return None, refused_any

    async def _answer(self, cand: Candidate, distance: float, score: float | None = None) -> CachedAnswer | None:
        """The answer of the candidate to serve, read now (the search returned only what the verification reads);
        None when it expired since. A Redis failure is the breaker's and the lookup's (an error, a miss)."""
        try:
            async with asyncio.timeout(self.search_timeout_s):
                fields = await cand.answer_fields()
        except Exception as e:
            self.breaker.failure(e)
            self.metrics.redis_errors.labels("semantic_search").inc()
            raise
        return answer_from(fields, distance, score) if fields else None

    def _could_match(self, al: verify.Alignment, first: np.ndarray, prompt: str) -> bool:
        """The static-vector prefilter of verify.could_match (microseconds per word; word vectors kept, bounded)."""
        words = al.words_to_embed()
        if not words:
            return True
        assert self.static is not None
        vectors = {w: self._static_vector(w) for w in words}
        return verify.could_match(al, vectors, (first, self._static_vector(prompt)))

    def _static_vector(self, text: str) -> np.ndarray:
        """First-stage vector of a word or a stored question (both repeat across lookups), kept, bounded."""
        vec = self._static_words.get(text)
        if vec is None:
            assert self.static is not None
            vec = self._static_words[text] = self.static.encode(for_embedding(text))
            if len(self._static_words) > WORD_CACHE_SIZE:
                self._static_words.popitem(last=False)
        return vec

    def _refused(self, refused: tuple[str, str]) -> None:
        self.metrics.semantic_guard_rejections.labels(refused[0]).inc()

    def _fill_full_vector(self, cand: Candidate, vec: np.ndarray) -> None:
        """The entry was stored by a miss (static vector only): keep its full vector for the next lookups."""
        if not cand.key or cand.client is None or len(self._pending) >= MAX_PENDING_STORES:
            return

        async def put() -> None:
            try:
                async with asyncio.timeout(STORE_DEADLINE_S):
                    await cand.client.hset(cand.key, "fvec", encode_vec(vec))
            except Exception as e:  # noqa: BLE001 - background: a later lookup computes it again
                self._log.warning("fvec", f"semantic full-vector update failed: {type(e).__name__}: {e}")

        task = asyncio.get_running_loop().create_task(put())
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _embed_many(self, texts: list[str]) -> list[np.ndarray] | None:
        try:
            async with asyncio.timeout(self.embed_timeout_s):
                many = getattr(self.embedder, "embed_many", None)
                vecs = await (many(texts) if many else asyncio.gather(*(self.embedder.embed(t) for t in texts)))
        except TimeoutError:
            self._log.warning("embed_timeout", f"embedding exceeded {self.embed_timeout_s * 1000:.0f} ms: miss")
            return None
        except EmbeddingError as e:
            self._log.warning(f"embed_{e.kind}", f"embedding unavailable ({e.kind}): {e}")
            return None
        if any(v.shape != (self.embedder.dims,) for v in vecs):
            self._log.warning("dims", f"embedding shape differs from ({self.embedder.dims},)")
            return None
        return list(vecs)

    async def _embed(self, text: str) -> np.ndarray | None:
        vecs = await self._embed_many([text])
        return vecs[0] if vecs else None

    def _store(self) -> VectorStore:
        tag = self.embedder.index_tag
        dims = self.embedder.dims
        if self.static is not None:  # the index holds first-stage vectors: its name says which model made them
            tag, dims = f"{tag}-s{self.static.name}-{self.static.dims}", self.static.dims
        if tag not in self._stores:
            self._stores[tag] = VectorStore(self.redis, self.key_prefix, tag, dims, node_client=self.node_client)
        return self._stores[tag]

    def _shard_error(self, shard: ShardIndex, err: BaseException) -> None:
        msg = str(err).lower()
        if "no such index" in msg or "unknown index" in msg or "not found" in msg:
            shard.forget()  # recreated on the next call
        if not isinstance(err, TimeoutError):
            self._store().mark_stale()  # a moved slot or a dead node: re-read the cluster layout (in the background)
        self._log.warning(f"search_{type(err).__name__}", f"semantic search on {shard.name} failed: {err}")

    def _count(self, result: str) -> None:
        self.metrics.semantic_lookups.labels(result).inc()
        self.metrics.cache_lookups.labels("semantic", result).inc()

    # --- store ---------------------------------------------------------------------------------------------------

    def store(self, ctx: RequestContext, answer: CachedAnswer) -> None:
        try:
            if ctx.directives.no_store or not answer.body:
                return
            if self.breaker.is_open:
                self.metrics.cache_stores.labels("semantic", "skipped").inc()
                return
            if len(self._pending) >= MAX_PENDING_STORES:
                self.metrics.cache_stores.labels("semantic", "skipped").inc()
                return
            task = asyncio.get_running_loop().create_task(self._put(ctx, answer))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)
        except Exception as e:  # noqa: BLE001 - never raise into the request path
            self._log.warning("store", f"semantic store not scheduled: {e}")

    async def _put(self, ctx: RequestContext, answer: CachedAnswer) -> None:
        result = "error"
        try:
            async with asyncio.timeout(STORE_DEADLINE_S):
                result = await self._put_inner(ctx, answer)
        except Exception as e:  # noqa: BLE001 - background work: count and log, nothing else
            self._store().mark_stale()
            self._log.warning(f"store_{type(e).__name__}", f"semantic store failed: {type(e).__name__}: {e}")
        self.metrics.cache_stores.labels("semantic", result).inc()

    async def _put_inner(self, ctx: RequestContext, answer: CachedAnswer) -> str:
        state = ctx.state.get(_STATE_KEY)
        if state is None:  # the lookup did not run (no-cache request, exact hit path): compute now
            split = question_and_context(ctx.body, self.cfg.max_prompt_chars, self.cfg.tools)
            if split is None:
                return "skipped"
            text, rest = split
            first = self.static.encode(for_embedding(text)) if self.static is not None else None
            state = (text, context_hash(upstream_identity(ctx.model), rest),
                     scope_hash(ctx.scope, ctx.directives.namespace, self.generation), first, None)
        text, ctx_h, scope_h, first, full = state
        if first is None:
            try:
                first = full = await self.embedder.embed(for_embedding(text))  # one stage only; off the request path
            except EmbeddingError:
                return "error"
        if self.static is None and first.shape != (self.embedder.dims,):
            return "error"
        u = answer.usage
        fields = {
            "model": ctx.model.name, "ctx": ctx_h, "scope": scope_h, "svec": first.astype(np.float32).tobytes(),
            # the full vector when the lookup computed it; otherwise the first lookup that needs it fills it in
            "fvec": encode_vec(full) if full is not None and self.static is not None else "",
            "prompt": text, "body": answer.body, "sse": answer.sse or b"", "sse_usage": answer.sse_usage or b"",
            "usage": orjson.dumps([u.prompt_tokens, u.completion_tokens, u.cached_prompt_tokens, u.estimated]
                                  if u else None),
            "created": repr(answer.created),
            # not indexed: what cache.admin lists and selects by (gateway, readable scope, generation)
            "gw": self.gateway, "sc": ctx.scope, "cns": ctx.directives.namespace or "", "gen": str(self.generation),
        }
        entry_id = hashlib.sha256(f"{ctx_h}\x00{scope_h}\x00{text}".encode()).hexdigest()[:32]
        await self._store().put(entry_id, fields, ctx.directives.ttl_s or self.cfg.ttl_s)
        return "stored"

    async def drain(self, timeout_s: float = 5.0) -> None:
        """Wait for background stores (tests, shutdown)."""
        if self._pending:
            await asyncio.wait(list(self._pending), timeout=timeout_s)

    async def close(self) -> None:
        await self.drain()
        for s in self._stores.values():
            await s.close()
        await self.embedder.close()
