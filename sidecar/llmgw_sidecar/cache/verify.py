"""Verification of a semantic-cache candidate: are the two questions the same question, word for word in meaning?

An embedding says how *close* two questions are, not whether a detail differs: "chocolate cake" and "vegan chocolate
cake", "merge A into B" and "merge B into A", "capital of Turkey" and "largest city in Turkey" are all at paraphrase
distance. So before a candidate within the distance threshold is served, the content words of both questions are
aligned and a set of general rules must all agree:

  alignment   each content word (not a function word, a request frame such as "how do I" or chat filler) needs a
              counterpart on the other side: the same lemma (lemminflect: ran/run), a WordNet synonym, derivation,
              attribute (tall/height) or verb hypernym (delete/remove), a compound (e-mail/email), a typo, a light
              verb with its particle (get ... out / remove), or, only for words WordNet cannot place, a close word
              vector. A word with no counterpart is a detail the other question does not ask about (vegan, in
              Python 2, for beginners) -> refuse.
  antonyms    opposites (WordNet antonyms between senses: gain/lose; opposite prefixes: encrypt/decrypt) -> refuse.
  degree      the same adjective at another degree (large / larger / largest) -> refuse.
  roles       a direction word governs different words, two words or runs of words swap places, or the same verb is
              done by someone else ("do I owe my roommate" / "does my roommate owe me") -> refuse.
  tense       past / present / future differ (who won / who will win) -> refuse.
  question    the question word differs (when / where / who / why / how many / how much) -> refuse.
  units       both ask in units, not the same ones (in kilometers / in miles) -> refuse.
  numbers, quoted, identifiers, entities, negation: the detail guards of guards.py (2+2 / 2+3, some / all,
              'happy' / 'sad', os.path.join / os.path.split, Paris / Rome, safe / not safe).

Every rule is symmetric, explainable (the refusing rule is the metric label and a debug log line names the words),
and can be switched off under `cache.semantic.guards`. All of it is local data; a check costs tens of microseconds.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from functools import lru_cache
from typing import Any

from ..config import GuardsConfig
from . import guards, lexicon
from .alignment import (
    FULL_MODEL,
    MAX_UNMATCHED_BEFORE_VECTORS,
    STATIC_PREFILTER,
    Alignment,
    Similarity,
    align,
    could_match,
    relation,
)
from .roles import roles, subjects, swapped
from .words import FUNCTION, Parsed, Word, numeral, parse

# the verification's public names, one import for the cache and the tests
__all__ = ["FULL_MODEL", "FUNCTION", "MAX_UNMATCHED_BEFORE_VECTORS", "RULES", "STATIC_PREFILTER", "Alignment", "Parsed",
           "Similarity", "Word", "align", "could_match", "first_rejecting", "lexical", "parse", "refusal", "relation", "roles",
           "subjects", "swapped"]

log = logging.getLogger("llmgw.semantic.verify")

OPPOSABLE = frozenset("up down in out on off over under before after above below inside outside into onto from to "
                      "more less most least with".split())

FUTURE = frozenset({"will", "shall", "gonna", "'ll"})
# Points in time that exclude each other, which WordNet does not list as antonyms: a cron job at noon is not one at
# midnight, a bedtime routine not a morning routine, what to do before a move not what to do after it.
EXCLUSIVE_TIMES = (frozenset("morning afternoon evening night tonight midnight noon midday bedtime dawn dusk sunrise "
                             "sunset overnight".split()),
                   frozenset("hourly daily nightly weekly fortnightly monthly quarterly yearly annually "
                             "continuously".split()),
                   frozenset("before after".split()))

CONDITIONAL = frozenset({"if", "when", "whenever", "once"})

PAST_AUX = frozenset({"did", "was", "were", "had", "didn't", "wasn't", "weren't"})

PRESENT_AUX = frozenset({"do", "does", "is", "are", "am", "don't", "doesn't", "isn't", "aren't"})

PASSIVE_OR_PERFECT = frozenset({"is", "are", "be", "been", "being", "am", "get", "gets", "has", "have", "was", "were",
                                "had", "got"})


# --- rules: each returns a short reason (for the debug log) when the two questions differ, else None -------------


def unmatched(al: Alignment) -> str | None:
    if al.hopeless():
        return f"{al.lexical_unmatched} words without counterpart: {al.unmatched_a} / {al.unmatched_b}"
    if al.unmatched_a or al.unmatched_b:
        return f"no counterpart: {al.unmatched_a} / {al.unmatched_b}"
    return None


def antonym_pairs(al: Alignment) -> str | None:
    la = {lem for w in al.a.content for lem in lexicon.lemmas(w.text)}
    lb = {lem for w in al.b.content for lem in lexicon.lemmas(w.text)}
    # content words, and the particles and prepositions that have opposites (up/down, before/after, in/out)
    xs = {w.text for w in al.a.content} | (set(al.a.tokens) & OPPOSABLE)
    ys = {w.text for w in al.b.content} | (set(al.b.tokens) & OPPOSABLE)
    for x in xs:
        if lexicon.lemmas(x) & lb:
            continue  # the other question says it too ("pros and cons" / "cons and pros")
        for y in ys:
            if lexicon.lemmas(y) & la:
                continue
            if len(x) > 1 and len(y) > 1 and not numeral(x) and not numeral(y) and lexicon.antonyms(x, y):
                return f"opposites: {x} / {y}"
            if x != y and any(x in group and y in group for group in EXCLUSIVE_TIMES):
                return f"opposites: {x} / {y}"
    return None


def degree(al: Alignment) -> str | None:
    # the same word at another degree (large / larger / largest), or a comparison against a superlative
    da = {d for w in al.a.content if (d := lexicon.degree(w.text))}
    db = {d for w in al.b.content if (d := lexicon.degree(w.text))}
    if (da and db and not (da & db)) or ("sup" in da) != ("sup" in db):
        return f"degree: {sorted(da)} / {sorted(db)}"
    for i, j in al.a_to_b.items():
        x, y = al.a.content[i].text, al.b.content[j].text
        if lexicon.degree(x) != lexicon.degree(y) and lexicon.lemmas(x) & lexicon.lemmas(y):
            return f"degree: {x} / {y}"
    return None


def _future(p: Parsed) -> bool:
    toks = p.tokens
    return any(t in FUTURE for t in toks) or any(toks[i] == "going" and toks[i + 1] == "to"
                                                 for i in range(len(toks) - 1))


def tense(al: Alignment) -> str | None:
    # future against not future; past against present only where both say it explicitly (did / does), or where the
    # same verb is past on one side and not on the other (won / wins). "Who wrote X" / "who is the author of X" are
    # the same question: a missing tense marker is not a different tense.
    fa, fb = _future(al.a), _future(al.b)
    if fa != fb:
        return f"tense: {'future' if fa else 'not future'} / {'future' if fb else 'not future'}"
    ta, tb = set(al.a.tokens), set(al.b.tokens)
    if (ta & PAST_AUX and tb & PRESENT_AUX and not tb & PAST_AUX) or \
            (tb & PAST_AUX and ta & PRESENT_AUX and not ta & PAST_AUX):
        return "tense: past / present (auxiliaries)"
    for i, j in al.a_to_b.items():
        x, y = al.a.content[i], al.b.content[j]
        px = lexicon.past_tense(x.text) and not _after(al.a, x, PASSIVE_OR_PERFECT)
        py = lexicon.past_tense(y.text) and not _after(al.b, y, PASSIVE_OR_PERFECT)
        if px != py and (lexicon.lemmas(x.text) & lexicon.lemmas(y.text)) and x.text != y.text:
            # "what do I do if my dog eats chocolate" / "my dog ate chocolate, what do I do": a present under "if" is
            # the same event as the past it asks about
            present, p = (y, al.b) if px else (x, al.a)
            if not _after(p, present, CONDITIONAL):
                return f"tense: {x.text} / {y.text}"
    return None


def _after(p: Parsed, w: Word, words: frozenset[str]) -> bool:
    return any(p.tokens[k] in words for k in range(max(0, w.pos - 3), w.pos))


_QUANT = {"many": "how many", "much": "how much", "long": "how long", "old": "how old", "far": "how far",
          "often": "how often"}


def _question_word(p: Parsed) -> str | None:
    toks = p.tokens
    if len(toks) >= 2 and toks[0] == "how" and toks[1] in _QUANT:
        return _QUANT[toks[1]]
    return guards._WH.get(toks[0]) if toks else None


def question(al: Alignment) -> str | None:
    qa, qb = _question_word(al.a), _question_word(al.b)
    if qa is not None and qb is not None and qa != qb:
        return f"question word: {qa} / {qb}"
    return None


_LETTER = re.compile(r"(?<![\w.!?]\s)(?<!^)(?<![\w'])([A-Z])(?![\w'])|(?<=[\w,] )([A-Z])(?![\w'])")


def _letters(text: str) -> set[str]:
    """Single capital letters used as names (option A, plan B, vitamin C); not "I", not a sentence-initial "A"."""
    return {x or y for x, y in _LETTER.findall(guards._norm(text))} - {"I"}


def entities_differ(a: str, b: str) -> bool:
    return guards.entities_differ(a, b) or _letters(a) != _letters(b)


def _text_rule(fn: Callable[[str, str], bool], name: str) -> Callable[[str, str, Alignment], str | None]:
    def rule(a: str, b: str, _al: Alignment) -> str | None:
        return name if fn(a, b) else None
    return rule


def _al_rule(fn: Callable[[Alignment], str | None]) -> Callable[[str, str, Alignment], str | None]:
    return lambda _a, _b, al: fn(al)


# Order only decides which rule gets the blame when several object; the specific ones go first.
RULES: dict[str, Callable[[str, str, Alignment], str | None]] = {
    "units": _text_rule(guards.units_differ, "units differ"),
    "numbers": _text_rule(guards.numbers_differ, "numbers differ"),
    "quoted": _text_rule(guards.quoted_differs, "quoted text differs"),
    "identifiers": _text_rule(guards.identifiers_differ, "identifiers differ"),
    "entities": _text_rule(entities_differ, "names differ"),
    "negation": _text_rule(guards.negation_differs, "negation differs"),
    "question": _al_rule(question),
    "antonyms": _al_rule(antonym_pairs),
    "degree": _al_rule(degree),
    "roles": _al_rule(roles),
    "tense": _al_rule(tense),
    "unmatched": _al_rule(unmatched),
}
# With a pair model, these rules still refuse outright: who does what to whom, opposites and the question word are
# what a cross-encoder reads worst (it scored "when was the Eiffel Tower built" / "where ..." 0.92), and so is the unit an
# answer is asked in ("paint in liters" / "in gallons": 1.00). The others (numbers,
# names, identifiers, quotes, negation, tense, degree) become doubts that the pair model may overrule when it is
# near-certain: on wordy paraphrases they misfire ("I've never grown garlic, when do I plant it" is not a negation
# of "best time to plant garlic?"), and the pair model reads number and name changes well (docs/semantic-cache.md).
HARD_RULES = ("roles", "antonyms", "question", "units")


def refusal(question_text: str, candidate: str, cfg: GuardsConfig,
            vectors: dict[str, Any] | None = None, sentences: tuple[Any, Any] | None = None, *,
            alignment: Alignment | None = None, skip: tuple[str, ...] = (),
            only: tuple[str, ...] | None = None) -> tuple[str, str] | None:
    """(rule, reason) of the first enabled rule that refuses serving `candidate`'s answer to `question_text`, or None
    when the two are the same question as far as every rule can tell. `vectors` holds the unit word vectors of
    `align(...).words_to_embed()` and `sentences` the two questions' full vectors; without them, unmatched words
    stay unmatched (stricter, never looser). `alignment`: one already resolved; `skip`/`only`: run a subset (the
    cache runs the lexical rules before any vector exists, and `unmatched` after)."""
    if question_text == candidate:
        return None
    al = alignment or align(question_text, candidate)
    if vectors and alignment is None:
        al.resolve(vectors, sentences=sentences)
    for name, rule in RULES.items():
        if name in skip or (only is not None and name not in only):
            continue
        if getattr(cfg, name, True):
            reason = rule(question_text, candidate, al)
            if reason is not None:
                log.debug("semantic candidate refused by %s: %s (%r vs %r)", name, reason, question_text, candidate)
                return name, reason
    return None


def first_rejecting(question_text: str, candidate: str, cfg: GuardsConfig) -> str | None:
    r = refusal(question_text, candidate, cfg)
    return r[0] if r else None


@lru_cache(maxsize=4096)
def lexical(question: str, candidate: str, guards: GuardsConfig
            ) -> tuple[tuple[str, str] | None, Alignment]:
    """The rules that need no vector and the alignment, once per (question, stored question): popular questions meet
    the same candidates (the alignment is copied before use: resolving changes it). A candidate with too many words
    without counterpart is refused first, the cheapest way."""
    al = align(question, candidate)
    if guards.unmatched and al.hopeless():
        return ("unmatched", ""), al
    return refusal(question, candidate, guards, alignment=al, skip=("unmatched",)), al


@lru_cache(maxsize=4096)
def lexical_for_pair_model(question: str, candidate: str, guards: GuardsConfig) -> tuple[tuple[str, str] | None, Alignment]:
    """When a pair model decides: the refusal of a rule it may not overrule (or None), and the alignment for
    `doubt`. The unmatched-word rule is the pair model's own job and does not run."""
    al = align(question, candidate)
    return refusal(question, candidate, guards, alignment=al, only=HARD_RULES), al


def doubt(question: str, candidate: str, guards: GuardsConfig) -> tuple[str, str] | None:
    """The first content rule that doubts a candidate the pair model accepted (asked only then: most candidates of
    a miss never need it)."""
    _, al = lexical_for_pair_model(question, candidate, guards)
    return refusal(question, candidate, guards, alignment=al, skip=(*HARD_RULES, "unmatched"))
