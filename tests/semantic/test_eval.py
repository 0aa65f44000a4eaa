"""Precision and recall of "hit" on the labelled sets, at the default settings, with the real models, exactly as the
layer decides: first-stage (static) distance within `first_stage_distance`, the lexical rules, then the pair model
(embeddings/pair.py) at `pair_threshold` - or, with the pair model off, the static prefilter, full-model distance
within `distance_threshold` and the unmatched-word rule with word vectors.

The development sets are packaged with the sidecar (embeddings/pairs/): the rules were developed on them and the pair
model is trained on them at export time, so what they measure is fit, not generalisation. semantic_pairs.jsonl (469)
was the rules' dev set; holdout 1-2 (90, 70) and blind 3-6 (159, 198, 253, 291) were each measured once, blind, for
the rules; blind 7-8 (235, 255) once for the first pair model, blind 11-12 (262, 264) once for the third; then each
became development data. Blind 9-10 (255, 266) and 13-14 (265, 260; tests/data) were measured once for the second
and fourth pair models; since then they are validation sets (the quantisation and thresholds were chosen on 9-10,
the units and time rules on 13-14), never trained on. The blind sets of the method as shipped are
tests/data/semantic_pairs_blind15.jsonl and blind16.jsonl (256, 259 pairs), written by two people who never saw the
method, and measured once after it was frozen, before anyone read them; never trained or tuned on.
docs/semantic-cache.md has every first measurement.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from llmgw_sidecar.cache import verify
from llmgw_sidecar.cache.spelling import for_embedding
from llmgw_sidecar.config import GuardsConfig, SemanticCacheConfig
from llmgw_sidecar.embeddings.local import LocalEmbedder
from llmgw_sidecar.embeddings.pair import PAIRS_DIR, PairScorer
from llmgw_sidecar.embeddings.static import StaticEncoder

DATA = Path(__file__).resolve().parents[1] / "data"
DEV = "semantic_pairs.jsonl"
RULES_HELD_OUT = ["semantic_pairs_holdout.jsonl", "semantic_pairs_holdout2.jsonl",
                  *(f"semantic_pairs_blind{n}.jsonl" for n in (3, 4, 5, 6))]
FIRST_PAIR_BLIND = ["semantic_pairs_blind7.jsonl", "semantic_pairs_blind8.jsonl"]
THIRD_PAIR_BLIND = ["semantic_pairs_blind11.jsonl", "semantic_pairs_blind12.jsonl"]
# all in embeddings/pairs/: the pair model's training data
DEVELOPMENT = [DEV, *RULES_HELD_OUT, *FIRST_PAIR_BLIND, *THIRD_PAIR_BLIND]
# tests/data: never trained on; the thresholds (9-10) and the last rules (13-14) were chosen on them
VALIDATION = [f"semantic_pairs_blind{n}.jsonl" for n in (9, 10, 13, 14)]
BLIND = ["semantic_pairs_blind15.jsonl", "semantic_pairs_blind16.jsonl"]  # tests/data: never trained on or tuned on
# Issue 13's bars: 0.99 precision on the development data, 0.97 on the sets never trained on combined, both at
# recall >= 0.6.
DEV_PRECISION, DEV_RECALL = 0.99, 0.6
UNSEEN_PRECISION, UNSEEN_RECALL = 0.97, 0.6  # measured 0.978 / 0.687 (int8), 0.974 / 0.720 (fp32)
# First measurement of blind 15-16 (int8, the default): precision 0.976, recall 0.692 (fp32 0.977 / 0.713); of the
# validation sets 0.979 / 0.684 (fp32 0.972 / 0.724). The floors are those less a false hit and a few paraphrases,
# so that a regression fails and a model trained on another CPU (floating point differs) does not fail by one pair.
BLIND_PRECISION, BLIND_RECALL = 0.965, 0.66
VALIDATION_PRECISION, VALIDATION_RECALL = 0.965, 0.66
# The rules alone (pair model off, or a remote embedding provider): their measured floors on their own sets, so that
# a regression fails (recall 0.41 on the sets they were not developed on: docs/semantic-cache.md).
RULES_HELD_OUT_PRECISION, RULES_HELD_OUT_RECALL = 0.97, 0.38
RULES_DEV_RECALL = 0.58  # 0.602 at first_stage_distance 0.3 (0.611 at the 0.35 they were tuned with)


def load(name: str) -> list[dict]:
    folder = DATA if name in (*VALIDATION, *BLIND) else PAIRS_DIR
    return [json.loads(line) for line in (folder / name).read_text().splitlines() if line.strip()]


def evaluate(emb: LocalEmbedder, static: StaticEncoder | None, pairs: list[dict], cfg: SemanticCacheConfig,
             guards: GuardsConfig | None = None, pair: PairScorer | None = None) -> dict:
    """Stored question = a, incoming question = b: the layer's decision, step by step and in its order."""
    guards = guards or cfg.guards
    full: dict[str, np.ndarray] = {}

    def embed(text: str) -> np.ndarray:
        # one text per call, as a lookup at low load embeds it (int8 results depend a little on the batch), and
        # misspelt words corrected as the layer does (the verification still sees the raw text)
        if text not in full:
            full[text] = emb.embed_sync([for_embedding(text)])[0]
        return full[text]

    tp = fp = fn = 0
    wrong = []
    for p in pairs:
        q, c = p["b"], p["a"]
        hit = decide(q, c, cfg, guards, embed, emb, static, pair)
        if p["label"] == "hit":
            tp += hit
            fn += not hit
        elif hit:
            fp += 1
            wrong.append((round(float(1.0 - embed(q) @ embed(c)), 3), p["kind"], p["a"], p["b"]))
    return {"precision": tp / max(tp + fp, 1), "recall": tp / max(tp + fn, 1), "tp": tp, "fp": fp, "fn": fn,
            "false_hits": wrong}


def decide(q: str, c: str, cfg: SemanticCacheConfig, guards: GuardsConfig, embed: Callable[[str], np.ndarray],
           emb: LocalEmbedder, static: StaticEncoder | None, pair: PairScorer | None = None) -> bool:
    """cache/semantic.py's lookup for one stored candidate: first stage, lexical rules, then the pair model (at the
    higher bar when a content rule doubted); without a pair model, the static prefilter, the full-model distance and
    the alignment with word vectors (one batch, as the layer embeds a lookup's words)."""
    if static is not None:
        sq, sc = static.encode(for_embedding(q)), static.encode(for_embedding(c))
        if float(1.0 - sq @ sc) > cfg.first_stage_distance:
            return False
    if pair is not None:  # the layer's lexical step when a pair model decides, the pair model, a doubt
        if verify.lexical_for_pair_model(q, c, guards)[0] is not None:
            return False
        score = pair.score([(c, q)])[0]
        return score >= cfg.pair_overrule_threshold or (score >= cfg.pair_threshold and
                                                        verify.doubt(q, c, guards) is None)
    refused, template = verify.lexical(q, c, guards)  # the layer's own lexical step
    if refused is not None:
        return False
    al = template.copy()
    words = al.words_to_embed()
    if static is not None and guards.unmatched and words:
        svec = {w: static.encode(for_embedding(w)) for w in words}
        if not verify.could_match(al, svec, (sq, sc)):
            return False
    vq, vc = embed(q), embed(c)
    if float(1.0 - vq @ vc) > cfg.distance_threshold:
        return False
    vectors = dict(zip(words, emb.embed_sync(words), strict=True)) if words else {}
    al.resolve(vectors, sentences=(vq, vc))
    return verify.refusal(q, c, guards, alignment=al, only=("unmatched",)) is None


def test_dataset_shape() -> None:
    assert len(load(DEV)) >= 300
    for name in (*DEVELOPMENT, *VALIDATION, *BLIND):
        got = load(name)
        assert len({(p["a"], p["b"]) for p in got}) == len(got), f"duplicate pairs in {name}"
        assert all(p["label"] in ("hit", "miss") for p in got)
    for name in (*RULES_HELD_OUT[2:], *FIRST_PAIR_BLIND, *THIRD_PAIR_BLIND, *VALIDATION, *BLIND):
        blind = load(name)
        assert len(blind) >= 150
        assert {"modifier", "antonym", "direction", "role", "comparative", "scope", "format", "time", "units", "typo",
                "reorder"} <= {p["kind"] for p in blind}, name
    # every blind set after batch 3 repeats no question of any earlier set (batch 3 shares 17 questions with the dev
    # set, which is why it was followed by these); the pair model's blind sets repeat nothing it was trained on
    seen: set[str] = set()
    for name in (*DEVELOPMENT, *VALIDATION, *BLIND):
        questions = {x for p in load(name) for x in (p["a"], p["b"])}
        # batch 12 was written at the same time as 11, blind to it: 11 of its questions are also in 11
        if name not in (DEV, *RULES_HELD_OUT[:3], "semantic_pairs_blind12.jsonl"):
            assert not questions & seen, (name, sorted(questions & seen)[:3])
        seen |= questions
    assert not {p.name for p in PAIRS_DIR.glob("*.jsonl")} & {*VALIDATION, *BLIND}, "a blind set is in the training data"


@pytest.fixture(scope="module")
def static(model_dir: Path) -> StaticEncoder:
    return StaticEncoder(model_dir / "static")


@pytest.fixture(scope="module")
def pair(model_dir: Path) -> PairScorer:
    return PairScorer(model_dir / "pair", precision="int8")


def _report(precision: str, verifier: str, results: dict[str, dict], groups: dict[str, list[str]]) -> dict:
    lines = []
    for name, r in results.items():
        lines.append(f"[semantic eval] {precision} {verifier} {name}: precision={r['precision']:.3f} "
                     f"recall={r['recall']:.3f} (tp={r['tp']} fp={r['fp']} fn={r['fn']})")
        lines += [f"  false hit: {w}" for w in r["false_hits"]]
    combined = {}
    for label, names in groups.items():
        tp, fp, fn = (sum(results[n][k] for n in names) for k in ("tp", "fp", "fn"))
        combined[label] = (tp / max(tp + fp, 1), tp / max(tp + fn, 1))
        lines.append(f"[semantic eval] {precision} {verifier} {label} combined: precision={combined[label][0]:.3f} "
                     f"recall={combined[label][1]:.3f}")
    print("\n" + "\n".join(lines))
    return combined


@pytest.mark.timeout(600)  # the real models over 2,020 pairs on two shared cores
@pytest.mark.parametrize("precision", ["int8", "fp32"])  # int8 is the default
def test_pair_model_precision_and_recall(model_dir: Path, static: StaticEncoder, precision: str,
                                         capsys: pytest.CaptureFixture) -> None:
    cfg = SemanticCacheConfig()
    embedder = LocalEmbedder(model_dir, precision=precision)
    scorer = PairScorer(model_dir / "pair", precision=precision)
    results = {name: evaluate(embedder, static, load(name), cfg, pair=scorer)
               for name in (*DEVELOPMENT, *VALIDATION, *BLIND)}
    with capsys.disabled():  # the numbers belong in every test run's output, not only with -s
        combined = _report(precision, "pair", results, {"development": DEVELOPMENT, "validation 9-10, 13-14": VALIDATION,
                                                        "blind 15-16": BLIND, "unseen 9-10, 13-16": [*VALIDATION, *BLIND]})
    assert combined["development"][0] >= DEV_PRECISION and combined["development"][1] >= DEV_RECALL, combined
    assert combined["validation 9-10, 13-14"][0] >= VALIDATION_PRECISION, combined
    assert combined["validation 9-10, 13-14"][1] >= VALIDATION_RECALL, combined
    assert combined["blind 15-16"][0] >= BLIND_PRECISION and combined["blind 15-16"][1] >= BLIND_RECALL, combined
    assert combined["unseen 9-10, 13-16"][0] >= UNSEEN_PRECISION, combined
    assert combined["unseen 9-10, 13-16"][1] >= UNSEEN_RECALL, combined


@pytest.mark.timeout(600)
def test_rules_alone_precision_and_recall(model_dir: Path, static: StaticEncoder,
                                          capsys: pytest.CaptureFixture) -> None:
    """The verifier without a pair model (pair_model: false, or a remote embedding provider)."""
    cfg = SemanticCacheConfig(pair_model=False)
    embedder = LocalEmbedder(model_dir, precision="int8")
    results = {name: evaluate(embedder, static, load(name), cfg)
               for name in (DEV, *RULES_HELD_OUT, *FIRST_PAIR_BLIND, *VALIDATION, *THIRD_PAIR_BLIND, *BLIND)}
    with capsys.disabled():
        combined = _report("int8", "rules", results, {"held-out 1-6": RULES_HELD_OUT, "blind 7-16":
                                                      [*FIRST_PAIR_BLIND, *VALIDATION, *THIRD_PAIR_BLIND, *BLIND]})
    dev = results[DEV]
    assert dev["precision"] >= DEV_PRECISION and dev["recall"] >= RULES_DEV_RECALL, dev
    assert combined["held-out 1-6"][0] >= RULES_HELD_OUT_PRECISION, combined
    assert combined["held-out 1-6"][1] >= RULES_HELD_OUT_RECALL, combined
    assert combined["blind 7-16"][0] >= 0.85, combined  # measured 0.92: the rules alone do not generalise


def test_threshold_alone_is_not_safe(embedder: LocalEmbedder) -> None:
    """Why verification exists: with every rule off, the same threshold serves many wrong answers."""
    off = GuardsConfig(**{k: False for k in GuardsConfig.model_fields})
    r = evaluate(embedder, None, load(DEV), SemanticCacheConfig(), off)
    assert r["precision"] < 0.9
