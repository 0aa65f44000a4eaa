"""Word knowledge for the verification step: lemmas and inflections (lemminflect's packaged lexicon), synonyms,
derivations and antonyms (WordNet 3.0, derived once into data/lexicon.json.gz by lexicon_build.py). Everything is
local data shipped in packages: nothing is downloaded, ever."""

from __future__ import annotations

import gzip
import json
from functools import cache, lru_cache
from pathlib import Path

from lemminflect import getAllInflections, getAllLemmas

_DATA = Path(__file__).parent / "data" / "lexicon.json.gz"

# Irregular degree forms lemminflect folds into a lemma (better -> good): their degree is not in the suffix.
_IRREGULAR_DEGREE = {"better": "cmp", "worse": "cmp", "more": "cmp", "less": "cmp", "fewer": "cmp", "further": "cmp",
                     "farther": "cmp", "best": "sup", "worst": "sup", "most": "sup", "least": "sup", "fewest": "sup",
                     "furthest": "sup", "farthest": "sup"}


@cache
def _data() -> tuple[dict[str, frozenset[int]], frozenset[str], frozenset[str], dict[str, frozenset[int]]]:
    raw = json.loads(gzip.decompress(_DATA.read_bytes()))
    syn = {w: frozenset(ids) for w, ids in raw["syn"].items()}
    hyp = {w: frozenset(ids) for w, ids in raw["hyp"].items()}
    return syn, frozenset(raw["der"]), frozenset(raw["ant"]), hyp


def load() -> None:
    """Read the data now (at start-up), not on the first request."""
    _data()
    lemmas("warm")


@lru_cache(maxsize=65536)
def lemmas(word: str) -> frozenset[str]:
    """Every lemma the word can be an inflection of, plus the word itself ("largest" -> {largest, large})."""
    out = {word}
    for forms in getAllLemmas(word).values():
        out.update(forms)
    if len(out) == 1 and len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
        out.add(word[:-1])  # unknown plural (veggies, apis): fold the plain -s
        if word.endswith("ies"):
            out.add(word[:-3] + "y")
    return frozenset(out)


def known(word: str) -> bool:
    """In the English lexicon (so not a typo of another word)."""
    return bool(getAllLemmas(word)) or word in _data()[0]


@lru_cache(maxsize=65536)
def degree(word: str) -> str:
    """'cmp' (larger), 'sup' (largest) or '' for adjectives and adverbs; derived from the lexicon's inflections."""
    if word in _IRREGULAR_DEGREE:
        return _IRREGULAR_DEGREE[word]
    for lemma in getAllLemmas(word).get("ADJ", ()) + getAllLemmas(word).get("ADV", ()):
        if lemma == word:
            continue
        infl = getAllInflections(lemma)
        if word in infl.get("JJR", ()) or word in infl.get("RBR", ()):
            return "cmp"
        if word in infl.get("JJS", ()) or word in infl.get("RBS", ()):
            return "sup"
    return ""


def past_tense(word: str) -> bool:
    """A past-tense verb form (merged, ran), not also a present form or an adjective-only reading."""
    for lemma in getAllLemmas(word).get("VERB", ()):
        if lemma != word and word in getAllInflections(lemma, upos="VERB").get("VBD", ()):
            return True
    return False


@lru_cache(maxsize=65536)
def verb_only(word: str) -> bool:
    """Only ever a verb form (travel is also a noun; overheating, convert are not)."""
    forms = getAllLemmas(word)
    return "VERB" in forms and "NOUN" not in forms and "PROPN" not in forms


@lru_cache(maxsize=65536)
def verb_not_noun(word: str) -> bool:
    """A verb that is never a noun (reduce, bring; not pack, dog or email, which name things)."""
    forms = getAllLemmas(word)
    return "VERB" in forms and "NOUN" not in forms and "PROPN" not in forms


def can_be_verb(word: str) -> bool:
    return "VERB" in getAllLemmas(word)


def synonyms(a: str, b: str) -> bool:
    syn = _data()[0]
    for x in lemmas(a):
        sx = syn.get(x)
        if sx:
            for y in lemmas(b):
                if sx & syn.get(y, frozenset()):
                    return True
    return False


def alternatives(a: str, b: str, siblings_only: bool = False) -> bool:
    """Two different things of one kind (tea/coffee, husband/wife: the same WordNet hypernym) or a thing and its
    kind (mortgage/loan): close in any embedding, never interchangeable in a question."""
    hyp = _data()[3]
    for x in lemmas(a):
        hx, ox = hyp.get(x, frozenset()), hyp.get("=" + x, frozenset())
        for y in lemmas(b):
            hy, oy = hyp.get(y, frozenset()), hyp.get("=" + y, frozenset())
            if hx & hy or (not siblings_only and (hx & oy or hy & ox)):
                return True
    return False


def derived(a: str, b: str) -> bool:
    der = _data()[1]
    return any(f"{min(x, y)} {max(x, y)}" in der for x in lemmas(a) for y in lemmas(b))


_NEG_PREFIXES = ("un", "dis", "non", "in", "im", "il", "ir", "de", "anti")
# Prefixes that point in opposite or different directions on one stem: en/de-crypt, im/ex-port, in/ex-clude,
# up/down-load, over/under-estimate, en/dis-able.
_DIRECTION_PREFIXES = ("en", "em", "de", "dis", "un", "in", "im", "ex", "up", "down", "over", "under", "pre", "post",
                       "inter", "intra", "sub", "super", "pro", "anti", "micro", "macro", "min", "max", "out")


def _split_prefix(word: str) -> list[tuple[str, str]]:
    return [(p, word[len(p):]) for p in _DIRECTION_PREFIXES if word.startswith(p) and len(word) - len(p) >= 3]


def antonyms(a: str, b: str) -> bool:
    """WordNet antonyms (direct, or through an adjective cluster), or one is the other with a negating prefix
    (connect/disconnect, safe/unsafe) or -less/-ful (useful/useless)."""
    ant = _data()[2]
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
