"""The `cache` section: exact and semantic cache, embeddings and the verification step's rules."""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import Field, field_validator

from .base import Scope, StrictModel


class ExactCacheConfig(StrictModel):
    enabled: bool = Field(True, description="Serve repeated identical requests from Redis.")
    ttl_s: int = Field(3600, ge=1, description="Default lifetime of an entry; per request via Cache-Control "
                       "s-maxage or cache.ttl.")
    max_entry_bytes: int = Field(2 * 1024 * 1024, ge=1024, description="Larger answers are not stored.")


class EmbeddingProvider(StrEnum):
    local = "local"
    openai = "openai"


class EmbeddingConfig(StrictModel):
    provider: EmbeddingProvider = Field(EmbeddingProvider.local, description="local (in-process ONNX) | openai.")
    model_dir: str = Field(".cache/models/all-MiniLM-L6-v2-onnx", description="local: exported ONNX model folder.")
    precision: Literal["fp32", "int8"] = Field("int8", description="local: int8 (default: half the CPU, 80 MB less "
                                               "memory, the same measured precision) or fp32; never mixed in one index.")
    max_batch: int = Field(16, ge=1, description="local: largest micro-batch under concurrency.")
    threads: int = Field(1, ge=1, description="local: onnxruntime intra-op threads.")
    base_url: str | None = Field(None, description="openai: embeddings endpoint base URL.")
    model: str | None = Field(None, description="openai: embedding model id.")
    api_key: str | None = Field(None, description="openai: API key; use os.environ/NAME.")
    dims: int | None = Field(None, ge=1, description="openai: vector dimensions (local models know theirs).")
    timeout_ms: int = Field(250, ge=1, description="Deadline of one embedding; past it the lookup is a miss.")


class GuardsConfig(StrictModel):
    """Rules of the verification step (cache/verify.py); each refusal is counted under its rule's name."""

    numbers: bool = Field(True, description="Refuse when numbers, units or arithmetic operators differ.")
    units: bool = Field(True, description="Refuse when both questions ask in units, not the same ones (in kilometers "
                        "/ in miles).")
    quoted: bool = Field(True, description="Refuse when quoted strings differ.")
    identifiers: bool = Field(True, description="Refuse when code identifiers differ.")
    entities: bool = Field(True, description="Refuse when capitalised names differ.")
    negation: bool = Field(True, description="Refuse when one question is negated and the other not.")
    question: bool = Field(True, description="Refuse when the question word differs (when/where/who/how many).")
    antonyms: bool = Field(True, description="Refuse when the questions use opposite words (WordNet antonyms, "
                           "negating prefixes): closer/farther, import/export.")
    degree: bool = Field(True, description="Refuse when an adjective's degree differs (large/larger/largest).")
    roles: bool = Field(True, description="Refuse when from/to/into/than govern different words (A into B vs B "
                        "into A).")
    tense: bool = Field(True, description="Refuse when past, present and future differ.")
    unmatched: bool = Field(True, description="Refuse when a content word of either question has no counterpart "
                            "(same lemma, synonym, derivation, typo) in the other (vegan, gluten-free, in Python 2).")


MAX_DISTANCE_THRESHOLD = 0.5  # cosine distance; paraphrases measure 0.07-0.18 here, unrelated questions 0.34-0.98


class SemanticCacheConfig(StrictModel):
    enabled: bool = Field(False, description="Answer paraphrases of cached questions.")
    distance_threshold: float = Field(
        0.25, gt=0, lt=2, description="Largest full-model cosine distance (1 - cos) for a hit; measured with "
        "all-MiniLM-L6-v2 and all guards on (docs/semantic-cache.md). With the first stage and the pair model (the "
        "local default) the full model does not run and first_stage_distance bounds the candidates instead."
    )
    ttl_s: int = Field(3600, ge=1, description="Lifetime of a semantic entry.")

    @field_validator("distance_threshold")
    @classmethod
    def _distance_not_similarity(cls, v: float) -> float:
        # issue 12: LiteLLM's similarity_threshold copied here (0.8, 0.9) would answer unrelated questions.
        if v > MAX_DISTANCE_THRESHOLD:
            raise ValueError(f"distance_threshold {v} is a cosine distance (0 = same meaning) and above "
                             f"{MAX_DISTANCE_THRESHOLD} it matches unrelated questions: did you mean "
                             f"similarity_threshold? (LiteLLM's similarity_threshold s is distance_threshold 1 - s, "
                             f"e.g. 0.9 -> 0.1)")
        return v

    embed: Literal["last_user_message"] = Field(
        "last_user_message", description="Text that is embedded; the rest of the request must match exactly."
    )
    max_prompt_chars: int = Field(2000, ge=1, description="Longer questions are not eligible.")
    tools: bool = Field(False, description="Also answer requests with tools, tool results or function calls from the "
                        "semantic cache (by default they use the exact cache only).")
    first_stage: bool = Field(True, description="local: find candidates with the static model distilled at export "
                              "time; the full model runs only for candidates within first_stage_distance.")
    first_stage_distance: float = Field(0.35, gt=0, lt=2, description="Largest first-stage (static model) distance "
                                        "of a candidate worth the pair model (or the full model): chosen on blind "
                                        "batches 9 and 10 for a recall of 0.6 (docs/semantic-cache.md).")
    pair_model: bool = Field(True, description="local: the last word on a candidate that passed every rule is the pair "
                             "model exported with the embedding model (a cross-encoder reading both questions at "
                             "once); it replaces the unmatched-word rule. Off, or an export without it: that rule "
                             "decides (docs/semantic-cache.md).")
    pair_threshold: float = Field(0.7, gt=0, lt=1, description="Lowest pair-model probability that serves a candidate "
                                  "(chosen on blind batches 9 and 10, which it is not trained on).")
    pair_candidates: int = Field(1, ge=1, le=16, description="The pair model reads at most this many candidates per "
                                 "lookup (the nearest that pass the rules): each costs ~2.5 ms of CPU, and most "
                                 "lookups are misses.")
    pair_overrule_threshold: float = Field(0.9, gt=0, lt=1, description="Lowest pair-model probability that serves "
                                           "a candidate a content rule doubted (numbers, entities, identifiers, quoted, "
                                           "negation, tense, degree); roles, antonyms, question and units are never overruled.")
    embedding: EmbeddingConfig = Field(default_factory=EmbeddingConfig)
    guards: GuardsConfig = Field(default_factory=GuardsConfig)


class CacheEndpoint(StrEnum):
    chat = "chat"
    completions = "completions"
    embeddings = "embeddings"


class CacheConfig(StrictModel):
    scope: Scope = Field(Scope.namespace, description="Who shares cached answers: global|gateway|namespace|"
                         "service_account|pod|api_key. Every scope includes the gateway name except global.")
    generation: int = Field(0, ge=0, description="Cache generation, part of every cache key: raising it makes every "
                            "sidecar of the gateway stop serving older entries at once (they age out by TTL; "
                            "`llmgw-sidecar cache purge --stale-generations` deletes them now).")
    exact: ExactCacheConfig = Field(default_factory=ExactCacheConfig)
    semantic: SemanticCacheConfig = Field(default_factory=SemanticCacheConfig)
    # --- LiteLLM cache_params equivalents (issue 12) ---
    endpoints: list[CacheEndpoint] = Field(default_factory=lambda: list(CacheEndpoint), description="Endpoints "
                                           "whose answers are cached (LiteLLM supported_call_types); [] caches none.")
    mode: Literal["default_on", "default_off"] = Field("default_on", description="default_off: only requests that "
                                                       "send cache: {\"use-cache\": true} use the cache (LiteLLM mode).")
