"""The alignment of two questions' content words: which word of one question stands for which word of the other
(lemma, WordNet synonym, derivation, attribute or verb hypernym, compound, typo, a light verb with its particle, or -
only for words WordNet cannot place - a close word vector), and which words are left without a counterpart."""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Any, NamedTuple

from . import guards, lexicon
from .words import ANSWER_TYPE_AFTER, FUNCTION, VERB_CONTEXT, Parsed, as_verb, in_phrase, parse


class Similarity(NamedTuple):
    """Cosines the alignment accepts as "the same": two words, the leftover words of each side as two phrases, a
    word against the other question as a whole (implied), and a verb against a verb with its particle on the other
    side (remove / get ... out)."""
    word: float
    phrase: float
    implied: float
    phrasal: float


# measured on the dev set only with the full model: docs/semantic-cache.md
FULL_MODEL = Similarity(word=0.7, phrase=0.7, implied=0.3, phrasal=0.4)
# The same test with the static first-stage vectors, looser, so that it seldom refuses what the full model would
# accept (chosen on the dev set, none lost then; 5 of ~330 accepted pairs over all labelled sets now): a candidate
# that fails even this is refused before the full model runs, which is what most misses with a close candidate cost.
STATIC_PREFILTER = Similarity(word=0.3, phrase=0.3, implied=0.1, phrasal=0.1)
# More words than this without a lexical counterpart (both sides together) and no similarity rescues a candidate:
# refused before any vector is computed, so such a miss never runs the full model (3 of 228 accepted hits had more)
MAX_UNMATCHED_BEFORE_VECTORS = 3


@lru_cache(maxsize=65536)
def relation(a: str, b: str) -> str | None:
    """How word a can stand for word b: same (lemma), derived, synonym, typo; None if it cannot."""
    if a == b or lexicon.lemmas(a) & lexicon.lemmas(b):
        return "same"
    ua, ub = guards._UNITS.get(a), guards._UNITS.get(b)
    if ua and ub and ua != ub:  # WordNet shares a sense between "minutes" and "hours"; units are measured, not meant
        return None
    if lexicon.derived(a, b) or _same_stem(a, b) or _adverb_of(a, b) or _adverb_of(b, a):
        return "derived"
    if lexicon.synonyms(a, b):
        return "synonym"
    if min(len(a), len(b)) >= 5 and not (lexicon.known(a) and lexicon.known(b)):
        if lexicon.edit_distance_at_most(a, b, 1 if min(len(a), len(b)) < 8 else 2):
            return "typo"
    return None


def _adverb_of(a: str, b: str) -> bool:
    """safely / safe, mainly / main, simply / simple, easily / easy."""
    return len(b) >= 3 and a in (b + "ly", b[:-1] + "ily", b[:-2] + "ly", b[:-1] + "ly")


def _same_stem(a: str, b: str) -> bool:
    """One derivation of the other by their shared stem (discoverer/discovered, summary/summarize)."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n >= 6 and n >= min(len(a), len(b)) - 3


@dataclass(slots=True)
class Alignment:
    a: Parsed
    b: Parsed
    a_to_b: dict[int, int]  # index in a.content -> index in b.content
    b_to_a: dict[int, int]
    unmatched_a: list[str]
    unmatched_b: list[str]
    lexical_unmatched: int = 0  # words without a lexical counterpart, before any similarity

    def copy(self) -> Alignment:
        """A copy to resolve (resolving changes the leftover words; the word maps are only read)."""
        return replace(self, unmatched_a=list(self.unmatched_a), unmatched_b=list(self.unmatched_b))

    def hopeless(self) -> bool:
        return self.lexical_unmatched > MAX_UNMATCHED_BEFORE_VECTORS

    def words_to_embed(self) -> list[str]:
        """Texts whose vectors decide the rest of the alignment: every unmatched word, the other side's words, and
        the unmatched words of each side as one phrase."""
        if (not self.unmatched_a and not self.unmatched_b) or self.hopeless():
            return []
        out = dict.fromkeys(self.unmatched_a + self.unmatched_b)
        if self.unmatched_a:
            out.update(dict.fromkeys(w.text for w in self.b.content))
        if self.unmatched_b:
            out.update(dict.fromkeys(w.text for w in self.a.content))
        if self.unmatched_a and self.unmatched_b:
            out.update(dict.fromkeys((" ".join(self.unmatched_a), " ".join(self.unmatched_b))))
        for left, other in ((self.unmatched_a, self.b), (self.unmatched_b, self.a)):
            if left:
                out.update(dict.fromkeys(t for ph in phrasals(other) for t in ph[1:] if t))
        return list(out)

    def resolve(self, vectors: dict[str, Any], sentences: tuple[Any, Any] | None = None,
                limits: Similarity = FULL_MODEL) -> None:
        """Match the remaining words by similarity (unit vectors from the embedding model), except opposites and
        alternatives, which an embedding puts close together although they never stand for each other: word for
        word first, then what is left on both sides as one phrase each ("turn ... int" / "convert ... integer",
        "pros and cons" / "advantages and disadvantages"). A word left over on ONE side only is an added detail."""
        if self.hopeless():
            return
        pa, pb = " ".join(self.unmatched_a), " ".join(self.unmatched_b)
        ua = _similar(self.unmatched_a, self.b, vectors, limits.word)
        ub = _similar(self.unmatched_b, self.a, vectors, limits.word)
        single = len(ua) == len(ub) == 1
        if ua and ub and not any(lexicon.antonyms(x, y) or lexicon.alternatives(x, y, True) for x in ua for y in ub):
            # (one word against one word was the word test above: a phrase needs two words on a side)
            if not single and pa in vectors and pb in vectors and float(vectors[pa] @ vectors[pb]) >= limits.phrase:
                ua, ub = [], []
        ua, ub = _phrasal_matches(ua, self.a, ub, self.b, vectors, limits.phrasal)
        ub, ua = _phrasal_matches(ub, self.b, ua, self.a, vectors, limits.phrasal)
        if sentences is not None and not (ua and ub):
            # only one side has words left: each may still be implied by the other question as a whole
            # ("sink" / "unclog a drain", "eat" / "healthy breakfast"); a swapped word (both sides left) never is,
            # and neither is the object of a preposition: "with rust", "for beginners", "in winter" add a case
            ua = [w for w in ua if w not in vectors or float(vectors[w] @ sentences[1]) < limits.implied
                  or in_phrase(self.a, w)]
            ub = [w for w in ub if w not in vectors or float(vectors[w] @ sentences[0]) < limits.implied
                  or in_phrase(self.b, w)]
        # units are measured, not described: miles are never kilometres, however alike the words
        units_a = [w for w in self.unmatched_a if w in guards._UNITS and w not in ua]
        units_b = [w for w in self.unmatched_b if w in guards._UNITS and w not in ub]
        self.unmatched_a, self.unmatched_b = ua + units_a, ub + units_b


# A verb with its particle is one action: "get a splinter out" (remove), "keep my glasses from fogging" (stop), "turn
# down an invitation" (decline). The particle's opposite tells "get ... out" from "get ... in".
PARTICLES = {"out": "in", "in": "out", "off": "on", "on": "off", "up": "down", "down": "up", "into": "out of",
             "from": "", "away": "back", "back": "away", "over": "", "rid": ""}
OPPOSITE_MARGIN = 0.02  # the particle must fit clearly better than its opposite (enable: turn on 0.508, off 0.500)
# Only light verbs, whose meaning is in the particle: "copy ... into" is still a copy, "turn ... into" is a conversion.
LIGHT_VERBS = frozenset("get gets getting got keep keeps kept make makes take takes took put puts turn turns set sets "
                        "go goes come comes give gives bring brings find figure wrap pick cut run look carry break "
                        "hold".split())


@lru_cache(maxsize=8192)
def phrasals(p: Parsed) -> tuple[tuple[str, str, str], ...]:
    """(verb, "verb particle", "verb opposite-particle" or "") for each light verb used as a verb (after a subject,
    a modal or "to") that a particle follows within five words."""
    out = []
    toks = p.tokens
    for i, t in enumerate(toks):
        if t not in PARTICLES or i == 0:
            continue
        for k in range(i - 1, max(-1, i - 6), -1):  # get [a stuck wine stain] out
            v = toks[k]
            if v in LIGHT_VERBS and (k == 0 or toks[k - 1] in VERB_CONTEXT):
                opposite = PARTICLES[t]
                out.append((v, f"{v} {t}", f"{v} {opposite}" if opposite else ""))
                break
    return tuple(out)


def _phrasal_matches(left: list[str], side: Parsed, other_left: list[str], other: Parsed,
                     vectors: dict[str, Any], limit: float) -> tuple[list[str], list[str]]:
    """Leftover verbs of `side` that the other side says with a verb and particle: both are matched (remove / get
    ... out, decline / turn down), unless the opposite particle fits the verb at least as well (enable / turn on,
    not turn off)."""
    if not left:
        return left, other_left
    for verb, phrase, opposite in phrasals(other):
        if phrase not in vectors:
            continue
        for w in left:
            if w not in vectors or not as_verb(side, w) or lexicon.antonyms(w, verb):
                continue
            sim = float(vectors[w] @ vectors[phrase])
            if sim >= limit and not (opposite in vectors and float(vectors[w] @ vectors[opposite]) >= sim - OPPOSITE_MARGIN):
                left = [x for x in left if x != w]
                other_left = [x for x in other_left if x != verb]
                break
    return left, other_left


def _similar(words: list[str], other: Parsed, vectors: dict[str, Any], threshold: float) -> list[str]:
    """The words no word of `other` matches by similarity. Never opposites or alternatives, and never two words
    WordNet knows with different meanings: vectors place landlord / tenant (0.83), tighten / loosen (0.74) or
    lawn / grass (0.83) as close as real synonyms, so similarity only speaks for words WordNet cannot place (kb / kilobyte
    is lexical; coworker, wifi, 401k are not in it)."""
    left = []
    for w in words:
        vw = vectors.get(w)
        ok = False
        if vw is not None:
            for o in other.content:
                vo = vectors.get(o.text)
                sim = float(vw @ vo) if vo is not None else -1.0
                if sim >= threshold and not lexicon.antonyms(w, o.text) \
                        and not lexicon.alternatives(w, o.text) \
                        and (not lexicon.both_described(w, o.text) or lexicon.way_to(w, o.text)):
                    ok = True
                    break
        if not ok:
            left.append(w)
    return left


def _compounds(p: Parsed) -> dict[str, list[int]]:
    """Adjacent content words written as one (e mail / email, thin crust / thincrust): joined form -> indexes."""
    out: dict[str, list[int]] = {}
    for i in range(len(p.content) - 1):
        x, y = p.content[i], p.content[i + 1]
        if y.pos == x.pos + 1:
            out[x.text + y.text] = [i, i + 1]
    return out


def _one_way(x: Parsed, y: Parsed) -> tuple[dict[int, int], list[str]]:
    mapping: dict[int, int] = {}
    unmatched: list[str] = []
    joined = _compounds(y)
    for i, w in enumerate(x.content):
        best: tuple[int, int] | None = None
        for j, v in enumerate(y.content):
            r = relation(w.text, v.text)
            if r is not None:
                rank = ("same", "derived", "synonym", "typo").index(r)
                if best is None or rank < best[0]:
                    best = (rank, j)
        if best is not None:
            mapping[i] = best[1]
        elif w.text in joined:
            mapping[i] = joined[w.text][0]
        else:
            unmatched.append(w.text)
    # a compound on this side (e-mail) may be one word on the other side (email)
    for word, idx in _compounds(x).items():
        if any(k in unmatched for k in (x.content[idx[0]].text, x.content[idx[1]].text)):
            hit = next((j for j, v in enumerate(y.content) if v.text == word), None)
            if hit is not None:
                for k in idx:
                    mapping[k] = hit
                unmatched = [u for u in unmatched if u not in (x.content[idx[0]].text, x.content[idx[1]].text)]
    return mapping, unmatched


def _answer_type(p: Parsed) -> str | None:
    t = p.tokens
    for i in range(len(t) - 1):
        if t[i] in ANSWER_TYPE_AFTER and t[i + 1] not in FUNCTION:
            return t[i + 1]
    return None


def align(a: str, b: str) -> Alignment:
    pa, pb = parse(a), parse(b)
    ab, ua = _one_way(pa, pb)
    ba, ub = _one_way(pb, pa)
    ta, tb = _answer_type(pa), _answer_type(pb)
    if ta in ua and tb is None:
        ua.remove(ta)
    if tb in ub and ta is None:
        ub.remove(tb)
    return Alignment(pa, pb, ab, ba, ua, ub, len(ua) + len(ub))


def could_match(al: Alignment, vectors: dict[str, Any], sentences: tuple[Any, Any]) -> bool:
    """Would the alignment's leftover words match under the loose static-vector test? False: no full-model vector
    will make them match either (STATIC_PREFILTER), so the candidate is refused without running the full model."""
    trial = al.copy()
    trial.resolve(vectors, sentences, STATIC_PREFILTER)
    return not (trial.unmatched_a or trial.unmatched_b)
