"""Word knowledge for the verification step: lemmas, parts of speech, degree and past tense (from lemminflect's
packaged lexicon, derived once into data/morphology.json.gz for the model's words and all their inflections), synonyms,
derivations, antonyms and hypernyms (WordNet 3.0, derived once into data/lexicon.json.gz). Both are built by
lexicon_build.py and committed; at run time they are plain tables (~10 MB in memory; lemminflect itself would hold
~65 MB). Nothing is downloaded, ever."""

from __future__ import annotations

import gzip
import json
from functools import cache, lru_cache
from pathlib import Path
from typing import NamedTuple

_DATA = Path(__file__).parent / "data" / "lexicon.json.gz"
_MORPHOLOGY = Path(__file__).parent / "data" / "morphology.json.gz"

# Irregular degree forms the lexicon folds into a lemma (better -> good): their degree is not in the suffix.
_IRREGULAR_DEGREE = {"better": "cmp", "worse": "cmp", "more": "cmp", "less": "cmp", "fewer": "cmp", "further": "cmp",
                     "farther": "cmp", "best": "sup", "worst": "sup", "most": "sup", "least": "sup", "fewest": "sup",
                     "furthest": "sup", "farthest": "sup"}


class _Tables(NamedTuple):
    # sense ids as tuples of shared int objects (most words have one to three): a tuple of two costs 56 bytes, a
    # frozenset 216, and with ~45k such values that is 7 MB of the sidecar's memory
    syn: dict[str, tuple[int, ...]]  # word -> sense ids shared with another word
    der: frozenset[str]  # "a b" derivation pairs
    ant: frozenset[str]  # "a b" antonym pairs
    hyp: dict[str, tuple[int, ...]]  # noun -> hypernym ids; "=noun" -> own sense ids
    vhyp: dict[str, tuple[int, ...]]  # the same for verbs
    described: frozenset[str]  # every word WordNet has a sense for


@cache
def _data() -> _Tables:
    """The WordNet tables, read and parsed once."""
    raw = json.loads(gzip.decompress(_DATA.read_bytes()))

    shared: dict[int, int] = {}

    def ids(table: dict[str, list[int]]) -> dict[str, tuple[int, ...]]:
        return {w: tuple(shared.setdefault(i, i) for i in v) for w, v in table.items()}

    return _Tables(ids(raw["syn"]), frozenset(raw["der"]), frozenset(raw["ant"]), ids(raw["hyp"]), ids(raw["vhyp"]),
                   frozenset(raw["described"]))


def _meet(a: tuple[int, ...], b: tuple[int, ...]) -> bool:
    """Do two (short) tuples of sense ids share one?"""
    return any(i in b for i in a)


@cache
def words() -> frozenset[str]:
    """Every English word the lexicon knows (4 letters or more): what spelling.py corrects a misspelling to."""
    return frozenset(w for w in (*_morphology(), *_data().syn) if len(w) >= 4)


@cache
def _morphology() -> dict[str, str]:
    table: dict[str, str] = json.loads(gzip.decompress(_MORPHOLOGY.read_bytes()))
    return table


def _entry(word: str) -> tuple[str, str, str, str] | None:
    """(lemmas "a,b", parts of speech V/N/A/R/P, degree c/s, past p) or None for a word the lexicon does not know."""
    raw = _morphology().get(word)
    if raw is None:
        return None
    lem, pos, deg, past = raw.split("|")
    return lem, pos, deg, past


def load() -> None:
    """Read the data now (at start-up), not on the first request."""
    _data()
    _morphology()
    words()


@lru_cache(maxsize=65536)
def lemmas(word: str) -> frozenset[str]:
    """Every lemma the word can be an inflection of, plus the word itself ("largest" -> {largest, large})."""
    out = {word}
    e = _entry(word)
    if e is not None and e[0]:
        out.update(e[0].split(","))
    if len(out) == 1 and len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
        out.add(word[:-1])  # unknown plural (veggies, apis): fold the plain -s
        if word.endswith("ies"):
            out.add(word[:-3] + "y")
    return frozenset(out)


@lru_cache(maxsize=65536)
def way_to(a: str, b: str) -> bool:
    """One verb is a way to do the other (WordNet: delete -> remove, boost -> increase): the same request."""
    vh = _data().vhyp
    for x in lemmas(a):
        for y in lemmas(b):
            if _meet(vh.get(x, ()), vh.get("=" + y, ())) or _meet(vh.get(y, ()), vh.get("=" + x, ())):
                return True
    return False


@lru_cache(maxsize=65536)
def both_described(a: str, b: str) -> bool:
    """WordNet has senses for both words and none is shared: it knows them, and not as one meaning."""
    described = _data().described
    if not any(x in described for x in lemmas(a)) or not any(y in described for y in lemmas(b)):
        return False
    return not synonyms(a, b) and not derived(a, b)


@lru_cache(maxsize=65536)
def known(word: str) -> bool:
    """In the English lexicon (so not a typo of another word)."""
    return _entry(word) is not None or word in _data().syn


@lru_cache(maxsize=65536)
def degree(word: str) -> str:
    """'cmp' (larger), 'sup' (largest) or '' for adjectives and adverbs."""
    if word in _IRREGULAR_DEGREE:
        return _IRREGULAR_DEGREE[word]
    e = _entry(word)
    return {"c": "cmp", "s": "sup"}.get(e[2], "") if e else ""


@lru_cache(maxsize=65536)
def past_tense(word: str) -> bool:
    """A past-tense verb form (merged, ran)."""
    e = _entry(word)
    return bool(e and e[3])


def _pos(word: str) -> str:
    e = _entry(word)
    return e[1] if e else ""


@lru_cache(maxsize=65536)
def verb_only(word: str) -> bool:
    """Only ever a verb form (travel is also a noun; overheating, convert are not)."""
    pos = _pos(word)
    return "V" in pos and "N" not in pos and "P" not in pos


@lru_cache(maxsize=65536)
def verb_not_noun(word: str) -> bool:
    """A verb that is never a noun (reduce, bring; not pack, dog or email, which name things)."""
    pos = _pos(word)
    return "V" in pos and "N" not in pos and "P" not in pos


@lru_cache(maxsize=65536)
def can_be_verb(word: str) -> bool:
    return "V" in _pos(word)


@lru_cache(maxsize=65536)
def synonyms(a: str, b: str) -> bool:
    syn = _data().syn
    for x in lemmas(a):
        sx = syn.get(x)
        if sx:
            for y in lemmas(b):
                if _meet(sx, syn.get(y, ())):
                    return True
    return False


@lru_cache(maxsize=65536)
def alternatives(a: str, b: str, siblings_only: bool = False) -> bool:
    """Two different things of one kind (tea/coffee, husband/wife: the same WordNet hypernym) or a thing and its
    kind (mortgage/loan): close in any embedding, never interchangeable in a question."""
    hyp = _data().hyp
    for x in lemmas(a):
        hx, ox = hyp.get(x, ()), hyp.get("=" + x, ())
        for y in lemmas(b):
            hy, oy = hyp.get(y, ()), hyp.get("=" + y, ())
            if _meet(hx, hy) or (not siblings_only and (_meet(hx, oy) or _meet(hy, ox))):
                return True
    return False


@lru_cache(maxsize=65536)
def derived(a: str, b: str) -> bool:
    der = _data().der
    return any(f"{min(x, y)} {max(x, y)}" in der for x in lemmas(a) for y in lemmas(b))


_NEG_PREFIXES = ("un", "dis", "non", "in", "im", "il", "ir", "de", "anti")
# Prefixes that point in opposite or different directions on one stem: en/de-crypt, im/ex-port, in/ex-clude,
# up/down-load, over/under-estimate, en/dis-able, hyper/hypo-thyroidism, exo/endo-thermic.
_DIRECTION_PREFIXES = ("en", "em", "de", "dis", "un", "in", "im", "ex", "up", "down", "over", "under", "pre", "post",
                       "inter", "intra", "sub", "super", "pro", "anti", "micro", "macro", "min", "max", "out",
                       "hyper", "hypo", "exo", "endo")


def _split_prefix(word: str) -> list[tuple[str, str]]:
    return [(p, word[len(p):]) for p in _DIRECTION_PREFIXES if word.startswith(p) and len(word) - len(p) >= 3]


@lru_cache(maxsize=65536)
def antonyms(a: str, b: str) -> bool:
    """WordNet antonyms (direct, or through an adjective cluster), or one is the other with a negating prefix
    (connect/disconnect, safe/unsafe) or -less/-ful (useful/useless)."""
    ant = _data().ant
    la, lb = lemmas(a), lemmas(b)
    if any(f"{min(x, y)} {max(x, y)}" in ant for x in la for y in lb):
        return True
    for x in la:
        for y in lb:
            for p, q in ((x, y), (y, x)):
                if len(p) >= 3 and any(q == pre + p or q == pre + "-" + p for pre in _NEG_PREFIXES):
                    return True
                if p.endswith("ful") and q == p[:-3] + "less":
                    return True
    for px, sx in _split_prefix(a):
        for py, sy in _split_prefix(b):
            if sx == sy and px != py:
                return True
    return False


def edit_distance_at_most(a: str, b: str, k: int) -> bool:
    """Damerau-Levenshtein distance (a swap of two neighbours is one typo: ruoter) <= k, k small."""
    if abs(len(a) - len(b)) > k:
        return False
    pprev: list[int] = []
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i] + [0] * len(b)
        for j, cb in enumerate(b, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb))
            if i > 1 and j > 1 and ca == b[j - 2] and a[i - 2] == cb:
                cur[j] = min(cur[j], pprev[j - 2] + 1)
        if min(cur) > k:
            return False
        pprev, prev = prev, cur
    return prev[-1] <= k
