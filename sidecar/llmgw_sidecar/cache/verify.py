"""Verification of a semantic-cache candidate: are the two questions the same question, word for word in meaning?

An embedding says how *close* two questions are, not whether a detail differs: "chocolate cake" and "vegan chocolate
cake", "merge A into B" and "merge B into A", "capital of Turkey" and "largest city in Turkey" are all at paraphrase
distance. So before a candidate within the distance threshold is served, the content words of both questions are
aligned and a set of general rules must all agree:

  alignment   each content word (not a function word or a question frame such as "how do I", "explain") needs a
              counterpart on the other side: the same lemma (lemminflect: ran/run, children/child), a synonym or
              derivation (WordNet: kid/child, encrypt/encryption), a compound (e-mail/email) or a typo of it (an
              unknown word one or two edits away). A word with no counterpart is a detail the other question does
              not ask about (vegan, gluten-free, in Python 2, for beginners) -> refuse.
  antonyms    words that are opposites (WordNet antonyms: closer/farther, import/export, minimum/maximum; or a
              negating prefix: connect/disconnect) -> refuse.
  degree      the same adjective at another degree (large / larger / largest) -> refuse.
  roles       a direction word (from, to, into, onto, than, toward) governs different words: "from the server to my
              machine" vs "from my machine to the server" -> refuse.
  tense       past / present / future differ (who won / who will win) -> refuse.
  question    the question word differs (when / where / who / why / how many / how much) -> refuse.
  numbers, quoted, identifiers, entities, negation: the detail guards of guards.py (2+2 / 2+3, 'happy' / 'sad',
              os.path.join / os.path.split, Paris / Rome, safe / not safe).

Every rule is symmetric, explainable (the refusing rule is the metric label and a debug log line names the words),
and can be switched off under `cache.semantic.guards`. All of it is local data; a check costs tens of microseconds.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Any, NamedTuple

from ..config import GuardsConfig
from . import guards, lexicon
from .spelling import for_embedding

log = logging.getLogger("llmgw.semantic.verify")

# Function words, the frame of a request and the filler of a chat ("hey", "lol", "kindly"): they carry no detail the
# answer depends on. Prepositions that can be
# each other's opposite (before/after, above/below, inside/outside, up/down) are NOT here: they are content words.
FUNCTION = frozenset("""
a an the this that these those some any each every all both either neither another other such
what what's whats which whose whatever how why when where who whom whoever
i i'm i've i'd i'll me my mine myself you you're your yours yourself we we're our ours us it it's its itself they
they're them their he him his she her one ones someone something anything everything anyone somebody anybody
be am is are was were been being do does did done doing don't doesn't didn't have has had having can could may might
must shall should will would isn't aren't wasn't weren't can't couldn't shouldn't won't wouldn't
about at by for from in into of on onto to toward towards with within via per than through upon across along among
around during since until till as
and or but nor so yet if then else because while whether though although
please tell explain describe show give know want need help like let get make use using used
way ways best good method process step steps thing things stuff kind sort possible possibly
just really actually exactly basically simply also very much many more most quite too there here
question questions answer mean means meaning difference differ different between
people person someone somebody anyone go goes going come comes take takes look looks happen happens work works
keep keeps okay ok new include up out off down over
you'd i'd we'd they'd it'd he'd she'd that's there's let's cannot
reason reasons purpose role job function responsibilities origin system command
differences vs versus suggest recommend
hey hi hello yo lol lmao ugh bro dude af pls plz thx thanks thank kindly grateful wondering curious honestly
""".split())
# "the easiest way to", "the right method for": the frame of a request, like "how do I" (not "the cheapest way" or
# "the fastest way": cost and speed are constraints the answer must meet)
FRAME_ADJECTIVES = frozenset("easy easiest simple simplest good best right proper correct recommended".split())
FRAME_NOUNS = frozenset("way ways method methods approach".split())
# The noun right after "which"/"what" names the kind of answer ("which city is the capital", "in what year"): the other
# question implies it when it has no such noun of its own.
ANSWER_TYPE_AFTER = frozenset({"which", "what"})


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
# The same test with the static first-stage vectors, looser so that it never refuses what the full model would
# accept (chosen on the dev set: no accepted pair lost): a candidate that fails even this is refused before the full
# model runs, which is what most misses with a close candidate cost.
STATIC_PREFILTER = Similarity(word=0.3, phrase=0.3, implied=0.1, phrasal=0.1)
# More words than this without a lexical counterpart (both sides together) and no similarity rescues a candidate:
# refused before any vector is computed, so such a miss never runs the full model (3 of 228 accepted hits had more)
MAX_UNMATCHED_BEFORE_VECTORS = 3
# (all four measured on the dev set only: docs/semantic-cache.md)
DIRECTION = frozenset({"from", "to", "into", "onto", "than", "toward", "towards"})
OPPOSABLE = frozenset("up down in out on off over under before after above below inside outside into onto from to "
                      "more less most least with".split())
FUTURE = frozenset({"will", "shall", "gonna", "'ll"})
CONDITIONAL = frozenset({"if", "when", "whenever", "once"})
PAST_AUX = frozenset({"did", "was", "were", "had", "didn't", "wasn't", "weren't"})
PRESENT_AUX = frozenset({"do", "does", "is", "are", "am", "don't", "doesn't", "isn't", "aren't"})
PASSIVE_OR_PERFECT = frozenset({"is", "are", "be", "been", "being", "am", "get", "gets", "has", "have", "was", "were",
                                "had", "got"})
_TOKEN = re.compile(r"[a-z][a-z0-9]*(?:'[a-z]+)?|\d+[a-z][a-z0-9]*|\d+(?:[.,]\d+)*")  # 401k, 5g, 3d: names


@dataclass(frozen=True, slots=True)
class Word:
    text: str
    pos: int  # index among all tokens (function words included)
    hyphen_next: bool  # joined to the next word by a hyphen (gluten-free, e-mail)
    capital: bool = False  # written with a capital letter: a name (Google Drive), whatever else the word can be


@dataclass(frozen=True, slots=True)
class Parsed:
    tokens: tuple[str, ...]
    content: tuple[Word, ...]


@lru_cache(maxsize=8192)
def parse(text: str) -> Parsed:
    orig = for_embedding(guards._norm(text))  # certain typos corrected: "diffrence" is "difference", a frame word
    t = orig.lower()
    tokens: list[str] = []
    hyphen: list[bool] = []
    capital: list[bool] = []
    acronym: list[bool] = []  # US, UK, IT: a name, even where the lower-case word is a function word
    for m in _TOKEN.finditer(t):
        capital.append(len(orig) == len(t) and orig[m.start()].isupper() and m.start() > 0)
        acronym.append(len(orig) == len(t) and m.end() - m.start() >= 2 and orig[m.start():m.end()].isupper())
        tok = m.group(0)
        tok = tok.removesuffix("'s")
        tokens.append(tok)
        hyphen.append(t[m.end():m.end() + 1] == "-")
    content = tuple(Word(w, i, hyphen[i], capital[i]) for i, w in enumerate(tokens)
                    # a single capital letter is a name (the C language, option B, vitamin D), not an article
                    if (not _function(w) or acronym[i]) and (len(w) > 1 or (capital[i] and w.isalpha()))
                    and not _numeral(w)
                    and not (w in FRAME_ADJECTIVES and i + 1 < len(tokens) and tokens[i + 1] in FRAME_NOUNS))
    return Parsed(tuple(tokens), content)


_FRAME_VERBS = frozenset("make get use take help need want know keep go come give tell show explain".split())


def _function(w: str) -> bool:
    """A function word, or a form of a frame verb ("making", "getting": the method for making cold brew)."""
    return w in FUNCTION or (w.endswith(("ing", "s", "ed")) and bool(lexicon.lemmas(w) & _FRAME_VERBS))


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
                  or _in_phrase(self.a, w)]
            ub = [w for w in ub if w not in vectors or float(vectors[w] @ sentences[0]) < limits.implied
                  or _in_phrase(self.b, w)]
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
            if v in LIGHT_VERBS and (k == 0 or toks[k - 1] in _VERB_CONTEXT):
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
            if w not in vectors or not _as_verb(side, w) or lexicon.antonyms(w, verb):
                continue
            sim = float(vectors[w] @ vectors[phrase])
            if sim >= limit and not (opposite in vectors and float(vectors[w] @ vectors[opposite]) >= sim - OPPOSITE_MARGIN):
                left = [x for x in left if x != w]
                other_left = [x for x in other_left if x != verb]
                break
    return left, other_left


# after these a word is a case or a party of its own: "with rust", "for beginners", "if the airline cancels"
_PHRASE_HEAD = frozenset("with without for in on using from after before during under over via by at if when unless "
                         "because whether while once".split())


def _in_phrase(p: Parsed, word: str) -> bool:
    """The word is the object of a preposition (with rust, for beginners, on Windows): a case of its own."""
    for w in p.content:
        if w.text == word:
            k = w.pos - 1
            while k >= 0 and p.tokens[k] in _DETERMINERS:
                k -= 1
            if k >= 0 and p.tokens[k] in _PHRASE_HEAD:
                return True
    return False


_VERB_CONTEXT = frozenset("to i you we they can could should would will do does did please let's must may might "
                          "how".split())


def _as_verb(p: Parsed, word: str) -> bool:
    """Used as a verb here: never a noun, or a verb form right after a subject, a modal or "to" (how do I pack)."""
    if lexicon.verb_not_noun(word):
        return True
    if not lexicon.can_be_verb(word):
        return False
    return any(w.text == word and (w.pos == 0 or p.tokens[w.pos - 1] in _VERB_CONTEXT or (
        w.pos >= 2 and p.tokens[w.pos - 1].endswith("ly") and p.tokens[w.pos - 2] in _VERB_CONTEXT))  # I politely decline
        for w in p.content)


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


# --- rules: each returns a short reason (for the debug log) when the two questions differ, else None -------------


def could_match(al: Alignment, vectors: dict[str, Any], sentences: tuple[Any, Any]) -> bool:
    """Would the alignment's leftover words match under the loose static-vector test? False: no full-model vector
    will make them match either (STATIC_PREFILTER), so the candidate is refused without running the full model."""
    trial = replace(al, unmatched_a=list(al.unmatched_a), unmatched_b=list(al.unmatched_b))
    trial.resolve(vectors, sentences, STATIC_PREFILTER)
    return not (trial.unmatched_a or trial.unmatched_b)


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
            if len(x) > 1 and len(y) > 1 and not _numeral(x) and not _numeral(y) and lexicon.antonyms(x, y):
                return f"opposites: {x} / {y}"
    return None


def _numeral(w: str) -> bool:
    # the numbers rule compares these ("World War II" / "the Second World War")
    return (w[0].isdigit() and (w[-1].isdigit() or w[-2:] in ("st", "nd", "rd", "th"))) or w in guards._ROMAN \
        or w in guards._ORDINALS or w in guards._NUM_WORDS or \
        w in ("first", "second")


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


def _governed(p: Parsed) -> dict[str, set[int]]:
    """Direction word -> indexes (in p.content) of the first content word after each of its uses."""
    out: dict[str, set[int]] = {}
    for i, tok in enumerate(p.tokens):
        if tok in DIRECTION:
            nxt = next((k for k, w in enumerate(p.content) if i < w.pos <= i + 4), None)
            # "to travel", "from overheating": an infinitive or a gerund is an action, not a place or a party
            word = p.content[nxt] if nxt is not None else None
            # ("to checking" is an account: an infinitive is never an -ing form)
            if nxt is not None and word is not None and (word.capital or not (
                    lexicon.verb_only(word.text)
                    or (tok == "to" and lexicon.can_be_verb(word.text) and word.pos == i + 1
                        and not word.text.endswith("ing")))):
                out.setdefault(tok, set()).add(nxt)
    return out


_COORDINATION = frozenset({"and", "or", "vs", "versus", "v", "&"})


_DETERMINERS = frozenset("the a an my your our their its his her this that".split())


# skipped when looking for a word's context: articles, possessives and modifiers ("get a new kitten" -> "get")
_MODIFIERS = _DETERMINERS | frozenset("new other another such some any each every all both one same very".split())


def _prev(p: Parsed, w: Word) -> str:
    """The word before, articles, possessives and modifiers skipped: "for a child's debt" -> "for"."""
    k = w.pos - 1
    while k >= 0 and p.tokens[k] in _MODIFIERS:
        k -= 1
    return p.tokens[k] if k >= 0 else ""


def _between(p: Parsed, x: Word, y: Word) -> tuple[str, ...]:
    lo, hi = sorted((x.pos, y.pos))
    return tuple(t for t in p.tokens[lo + 1:hi] if t not in _DETERMINERS)


def _blocks(order: list[int]) -> tuple[int, int, int, int] | None:
    """`order` (the other side's positions, in this side's order) as one exchange of two runs of words around a
    middle: X M Y there, Y M X here. Returns (start, end of X, start of Y, end) in `order`'s positions, or None."""
    ref = sorted(order)
    diff = [k for k in range(len(order)) if order[k] != ref[k]]
    if not diff:
        return None
    lo, hi = diff[0], diff[-1] + 1
    seg, want = order[lo:hi], ref[lo:hi]
    for x in range(1, len(seg)):
        for y in range(x, len(seg)):
            if seg[y:] + seg[x:y] + seg[:x] == want:
                return lo, lo + x, lo + y, hi
    return None


def swapped(al: Alignment) -> str | None:
    """Two words, or two runs of words, that changed places while everything else stayed: "can a cat eat dog food" /
    "can a dog eat cat food", "does stress cause high blood pressure" / "does high blood pressure cause stress",
    "from savings to checking" / "from checking to savings". A clause that moved takes its own context along
    ("in Python, how do I sort" / "how do I sort in Python"), a coordination is symmetric (X and Y, X vs Y) and a
    modifier may become a phrase (a Python list / a list in Python): none of those is a swap."""
    pairs = sorted((i, j) for i, j in al.a_to_b.items() if al.b_to_a.get(j) == i)
    found = _blocks([j for _i, j in pairs])
    if found is None:
        return None
    lo, x_end, y_start, hi = found
    xs, ys = pairs[lo:x_end], pairs[y_start:hi]
    xa, ya = al.a.content[xs[0][0]], al.a.content[ys[0][0]]  # the first word of each run, here and there
    xb, yb = al.b.content[xs[0][1]], al.b.content[ys[0][1]]
    x_words = {al.a.content[i].text for i, _j in xs}
    if any(lexicon.lemmas(w) & lexicon.lemmas(al.a.content[i].text) for w in x_words for i, _j in ys):
        return None
    ba = _between(al.a, al.a.content[xs[-1][0]], ya)
    bb = _between(al.b, al.b.content[ys[-1][1]], xb)
    if (ba and set(ba) <= _COORDINATION) or (bb and set(bb) <= _COORDINATION):
        return None
    # a modifier turned into a phrase or back: "a Python list" / "a list in Python", "a running toilet" / "a toilet
    # that keeps running", "the Louvre ticket price" / "the price of a ticket to the Louvre"
    compound_a, compound_b = not (set(ba) & FUNCTION), not (set(bb) & FUNCTION)
    if compound_a != compound_b:
        return None
    if _prev(al.a, xa) == _prev(al.b, xb) and _prev(al.a, ya) == _prev(al.b, yb):
        return None  # each kept its own context: a clause moved
    if _prev(al.a, xa) == _prev(al.b, yb) or _prev(al.a, ya) == _prev(al.b, xb):
        return f"roles: {xa.text} and {ya.text} swapped places"
    return None


_ASKER = frozenset("i me we us you one".split())  # "how do I" = "how do you" = "how does one"
_OTHER = frozenset("he him she her it they them".split())


def _subject(p: Parsed, w: Word) -> str | None:
    """Who does the verb `w`: "asker" (I, you, we), "other" (he, they, a noun right before it), or None when the
    question does not say (to eat, who wrote)."""
    k = w.pos - 1
    if k < 0:
        return None
    t = p.tokens[k]
    if t in _ASKER:
        return "asker"
    if t in _OTHER or any(c.pos == k and not lexicon.can_be_verb(t) for c in p.content):
        return "other"
    return None


def subjects(al: Alignment) -> str | None:
    """The same verb done by someone else: "do I owe my roommate" / "does my roommate owe me"."""
    for i, j in al.a_to_b.items():
        x, y = al.a.content[i], al.b.content[j]
        # the same verb, one that is only ever a verb (owe, evict; not "better", "move")
        if al.b_to_a.get(j) != i or not (lexicon.verb_not_noun(x.text) and lexicon.verb_not_noun(y.text)) or \
                not lexicon.lemmas(x.text) & lexicon.lemmas(y.text):
            continue
        sx, sy = _subject(al.a, x), _subject(al.b, y)
        if sx is not None and sy is not None and sx != sy:
            return f"roles: {x.text} done by {sx} / by {sy}"
    return None


def roles(al: Alignment) -> str | None:
    if (reason := swapped(al) or subjects(al)) is not None:
        return reason
    ga, gb = _governed(al.a), _governed(al.b)
    for prep in ga.keys() & gb.keys():
        mapped = {al.a_to_b.get(i, -1) for i in ga[prep]}
        if mapped != gb[prep] and not (mapped & gb[prep]):
            wa = [al.a.content[i].text for i in ga[prep]]
            wb = [al.b.content[j].text for j in gb[prep]]
            return f"roles: {prep} {wa} / {prep} {wb}"
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
