"""The pair model (embeddings/pair.py) on its own and as the semantic layer's last word, with the real exported model
and a real Redis Stack."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from llmgw_sidecar.embeddings.local import LocalEmbedder
from llmgw_sidecar.embeddings.pair import (
    BATCH,
    BUCKET,
    PAIRS_DIR,
    PairScorer,
    _batches,
    _content,
    exchange,
    rewrite,
    training_pairs,
)

from .conftest import build_layer, make_ctx, sample, store_and_wait

BLIND = Path(__file__).resolve().parents[1] / "data"


@pytest.fixture(scope="module")
def scorer(model_dir: Path) -> PairScorer:
    return PairScorer(model_dir / "pair")


def test_training_data_is_the_development_sets_plus_rewrites_and_other_questions() -> None:
    pairs = training_pairs()
    files = sorted(p.name for p in PAIRS_DIR.glob("*.jsonl"))
    assert len(files) == 11 and not {p.name for p in BLIND.glob("semantic_pairs*.jsonl")} & set(files)
    labelled = 2 * sum(1 for f in PAIRS_DIR.glob("*.jsonl") for line in f.read_text().splitlines() if line)
    forward = {(a, b): y for a, b, y in pairs[:labelled]}
    assert all(forward[(b, a)] == y for a, b, y in pairs[:labelled])
    extra = pairs[labelled:]
    rewrites = [(a, b) for a, b, y in extra if y == 1.0]
    others = [(a, b) for a, b, y in extra if y == 0.0]
    # a rewrite adds words at most (a "Quick question:", a "Thanks!"): it never drops or changes one
    assert len(rewrites) > labelled // 5 and all(a != b and (_content(a) <= _content(b) or _content(b) <= _content(a))
                                                 for a, b in rewrites)
    # questions of other labelled pairs, never the question's own partner
    assert len(others) > labelled // 5 and not {(a, b) for a, b in others} & set(forward)
    assert training_pairs() == pairs  # deterministic: the same model on the same machine


def test_training_data_does_not_depend_on_the_string_hash() -> None:
    """Each process salts str hashes differently: a set iterated while building the data once changed which of two
    equally similar questions became a negative, and each fresh export trained another model."""
    code = ("import hashlib, json; from llmgw_sidecar.embeddings.pair import training_pairs; "
            "print(hashlib.sha256(json.dumps(training_pairs()).encode()).hexdigest())")
    digests = {subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONHASHSEED": seed},
                              capture_output=True, text=True, check=True, timeout=120).stdout for seed in ("1", "2")}
    assert len(digests) == 1


def test_batches_group_similar_lengths_and_keep_every_example() -> None:
    examples = [(f"q{i} " + "word " * (i % 23), "other", float(i % 2)) for i in range(BATCH * BUCKET * 2 + 5)]
    batches = _batches(list(examples), random.Random(1))
    flat = [x for b in batches for x in b]
    assert len(flat) == len(set(flat)) == len(examples) - 5 and all(len(b) == BATCH for b in batches)
    spread = [max(len(x[0]) for x in b) - min(len(x[0]) for x in b) for b in batches]
    assert max(spread) <= 10  # 23 lengths 5 characters apart in runs of 32 batches: neighbours only
    assert _batches(list(examples), random.Random(1)) == batches


def test_exchanged_phrases_are_new_questions_unless_side_by_side() -> None:
    assert exchange("How do I copy a file from my laptop to a remote server with scp?") == (
        "How do I copy a file from my remote server to a laptop with scp?", 0.0)
    assert exchange("What time is it in Tokyo when it's noon in London?") == (
        "What time is it in London when it's noon in Tokyo?", 0.0)
    assert exchange("What happened in Germany in 1989?") == ("What happened in 1989 in Germany?", 1.0)
    # not a direction: an infinitive, an alternative, a phrasal verb, one phrase only
    for q in ("What's a good way to learn to read sheet music?", "Flights to Rome or to Oslo",
              "How do I turn on Bluetooth on Windows?", "How do I fade in audio in Audacity?", "What is DNS?"):
        assert exchange(q) is None, q
    pairs = training_pairs()
    assert ("How do I migrate from MySQL to PostgreSQL?", "How do I migrate from PostgreSQL to MySQL?", 0.0) in pairs


def test_rewrites_keep_the_meaning() -> None:
    rng = random.Random(0)
    seen = {rewrite("What's the weather in Paris?", rng) for _ in range(40)}
    assert "What is the weather in Paris?" in seen and "what's the weather in paris" in seen
    assert all("Paris" in r or "paris" in r for r in seen)


def test_scores_are_probabilities_of_each_pair_in_a_batch(scorer: PairScorer) -> None:
    pairs = [("How do I reboot my router?", "how do i restart my router"),
             ("What is the capital of Australia?", "What is the largest city in Australia?")]
    got = scorer.score(pairs)
    assert len(got) == 2 and all(0.0 <= s <= 1.0 for s in got)
    # a batch scores each pair as if alone (padding does not leak into the other pair's score)
    assert got == pytest.approx([scorer.score([p])[0] for p in pairs], abs=0.02)


def test_unrelated_and_merely_related_questions_score_low(scorer: PairScorer) -> None:
    """The labelled sets hold only paraphrases and near-misses; a model trained on them alone accepted "my dog ate
    chocolate" for "when can I eat after a tooth extraction" (0.99). Not in the training data, any of these."""
    pairs = [("What should I do if my cat eats chocolate?", "When can I eat solid food after a tooth extraction?"),
             ("How can I get my toddler to sleep through the night?", "How do I back up my Android phone?"),
             ("How do I back up my iPad?", "How do I restart my iPad?"),
             ("What is Docker?", "How do I restart a single container in Docker?")]
    trained = {q for a, b, _ in training_pairs() for q in (a, b)}
    assert not {q for p in pairs for q in p} & trained
    assert max(scorer.score(pairs)) < 0.5


def test_paraphrases_score_above_near_misses(scorer: PairScorer) -> None:
    # none of these questions is in the training data (checked below): the model generalises or this fails
    paraphrases = [("How do I reboot my wireless router?", "what's the way to restart my wifi router"),
                   ("How can I make my laptop battery last longer?", "tips to extend my laptop's battery life")]
    near_misses = [("How do I bake a chocolate cake?", "How do I bake a vegan chocolate cake?"),
                   ("How do I copy a file from my server to my laptop with scp?",
                    "How do I copy a file from my laptop to my server with scp?")]
    trained = {q for a, b, _ in training_pairs() for q in (a, b)}
    assert not {q for p in paraphrases + near_misses for q in p} & trained
    good, bad = scorer.score(paraphrases), scorer.score(near_misses)
    assert min(good) > max(bad), (good, bad)


async def test_layer_serves_what_the_pair_model_accepts_and_names_it_when_it_refuses(
        redis_standalone: str, embedder: LocalEmbedder) -> None:
    sc, cfg, m = await build_layer({"url": redis_standalone}, embedder)
    assert sc.pair is not None  # loaded from the exported model folder by the app's factory
    await store_and_wait(sc, make_ctx(cfg, "How do I reboot my wireless router?"), "hold the button")
    hit = await sc.lookup(make_ctx(cfg, "what's the way to restart my wifi router"))
    assert hit is not None and b"hold the button" in hit.body
    await store_and_wait(sc, make_ctx(cfg, "How do I bake a chocolate cake?"), "flour, cocoa")
    assert await sc.lookup(make_ctx(cfg, "How do I bake a vegan chocolate cake?")) is None
    assert sample(m, "llmgw_semantic_guard_rejections_total", {"guard": "pair_model"}) >= 1
    assert sample(m, "llmgw_semantic_guard_rejections_total", {"guard": "unmatched"}) == 0
    await sc.close()


async def test_pair_model_off_falls_back_to_the_unmatched_rule(redis_standalone: str,
                                                                embedder: LocalEmbedder) -> None:
    sc, cfg, m = await build_layer({"url": redis_standalone}, embedder, pair_model=False)
    assert sc.pair is None
    await store_and_wait(sc, make_ctx(cfg, "How do I bake a chocolate cake?"), "flour, cocoa")
    assert await sc.lookup(make_ctx(cfg, "How do I bake a vegan chocolate cake?")) is None
    assert sample(m, "llmgw_semantic_guard_rejections_total", {"guard": "unmatched"}) == 1
    assert sample(m, "llmgw_semantic_guard_rejections_total", {"guard": "pair_model"}) == 0
    await sc.close()


@pytest.mark.parametrize(("score", "served", "blamed"), [(0.8, False, "numbers"), (0.95, True, None),
                                                          (0.5, False, "pair_model")])
async def test_a_content_rule_doubt_needs_a_near_certain_pair_model(redis_standalone: str, embedder: LocalEmbedder,
                                                                    score: float, served: bool,
                                                                    blamed: str | None) -> None:
    """Between pair_threshold (0.7) and pair_overrule_threshold (0.9), a content rule's doubt refuses and is blamed;
    above, the pair model overrules it; below, the pair model refuses (the score is fixed here: this is about the
    thresholds, not the model)."""
    sc, cfg, m = await build_layer({"url": redis_standalone}, embedder)

    class Fixed:
        def score(self, pairs: list[tuple[str, str]]) -> list[float]:
            return [score] * len(pairs)

    sc.pair = Fixed()  # type: ignore[assignment]
    await store_and_wait(sc, make_ctx(cfg, "What is 2+2?"), "4")
    got = await sc.lookup(make_ctx(cfg, "What is 2+3?"))  # the numbers rule doubts it
    assert (got is not None) == served
    if blamed:
        assert sample(m, "llmgw_semantic_guard_rejections_total", {"guard": blamed}) == 1
    await sc.close()
