"""The words of a question as the verification step sees them: tokens, content words (not function words, the frame
of a request or chat filler), and the small grammar the rules share (is a word used as a verb here, is it the
object of a preposition or a condition, what comes before it)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from . import guards, lexicon
from .spelling import for_embedding

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
                    and not numeral(w)
                    and not (w in FRAME_ADJECTIVES and i + 1 < len(tokens) and tokens[i + 1] in FRAME_NOUNS))
    return Parsed(tuple(tokens), content)


_FRAME_VERBS = frozenset("make get use take help need want know keep go come give tell show explain".split())


def _function(w: str) -> bool:
    """A function word, or a form of a frame verb ("making", "getting": the method for making cold brew)."""
    return w in FUNCTION or (w.endswith(("ing", "s", "ed")) and bool(lexicon.lemmas(w) & _FRAME_VERBS))


def numeral(w: str) -> bool:
    # the numbers rule compares these ("World War II" / "the Second World War")
    return (w[0].isdigit() and (w[-1].isdigit() or w[-2:] in ("st", "nd", "rd", "th"))) or w in guards._ROMAN \
        or w in guards._ORDINALS or w in guards._NUM_WORDS or \
        w in ("first", "second")


DETERMINERS = frozenset("the a an my your our their its his her this that".split())


# skipped when looking for a word's context: articles, possessives and modifiers ("get a new kitten" -> "get")
_MODIFIERS = DETERMINERS | frozenset("new other another such some any each every all both one same very".split())


def prev_word(p: Parsed, w: Word) -> str:
    """The word before, articles, possessives and modifiers skipped: "for a child's debt" -> "for"."""
    k = w.pos - 1
    while k >= 0 and p.tokens[k] in _MODIFIERS:
        k -= 1
    return p.tokens[k] if k >= 0 else ""


# after these a word is a case or a party of its own: "with rust", "for beginners", "if the airline cancels"
_PHRASE_HEAD = frozenset("with without for in on using from after before during under over via by at if when unless "
                         "because whether while once".split())


def in_phrase(p: Parsed, word: str) -> bool:
    """The word is the object of a preposition (with rust, for beginners, on Windows): a case of its own."""
    for w in p.content:
        if w.text == word:
            k = w.pos - 1
            while k >= 0 and p.tokens[k] in DETERMINERS:
                k -= 1
            if k >= 0 and p.tokens[k] in _PHRASE_HEAD:
                return True
    return False


VERB_CONTEXT = frozenset("to i you we they can could should would will do does did please let's must may might "
                          "how".split())


def as_verb(p: Parsed, word: str) -> bool:
    """Used as a verb here: never a noun, or a verb form right after a subject, a modal or "to" (how do I pack)."""
    if lexicon.verb_not_noun(word):
        return True
    if not lexicon.can_be_verb(word):
        return False
    return any(w.text == word and (w.pos == 0 or p.tokens[w.pos - 1] in VERB_CONTEXT or (
        w.pos >= 2 and p.tokens[w.pos - 1].endswith("ly") and p.tokens[w.pos - 2] in VERB_CONTEXT))  # I politely decline
        for w in p.content)
