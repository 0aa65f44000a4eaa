"""Misspelt words corrected before a question is embedded: "How do i reset my ruoter?" is the same question as "How do
I reset my router?", but the model's tokenizer cuts "ruoter" into pieces and places it 0.54 away (a paraphrase sits
within 0.3). Only the text that is embedded changes: the stored prompt, the exact-cache key and the verification step
(which accepts such typos word for word) all see what the user wrote.

A word is corrected only when it is lower case (names and identifiers are left alone), not an English word the lexicon
knows, and exactly one word the lexicon knows is one slip away: two neighbours swapped (5 letters or more), else one
letter dropped or doubled (7 letters or more). A changed letter is never corrected: postgres is not "postures". Two or
more candidates ("kube": cube, tube) leave it as it is: a doubtful correction is worse than none."""

from __future__ import annotations

import re
from functools import lru_cache

from . import lexicon

_WORD = re.compile(r"(?<![\w./\\-])[a-z]{5,}(?![\w./\\(-])")
_LETTERS = "abcdefghijklmnopqrstuvwxyz"


def _swaps(w: str) -> set[str]:
    return {w[:i] + w[i + 1] + w[i] + w[i + 2:] for i in range(len(w) - 1)} - {w}


def _dropped_or_doubled(w: str) -> set[str]:
    """A letter the writer left out (symtoms, diffrence) or typed once too often. Not a letter changed: that turns
    jargon into words (postgres -> postures, config -> confit)."""
    splits = [(w[:i], w[i:]) for i in range(len(w) + 1)]
    out = {a + b[1:] for a, b in splits if b}
    out |= {a + c + b for a, b in splits for c in _LETTERS}
    out.discard(w)
    return out


@lru_cache(maxsize=16384)
def correct_word(word: str) -> str:
    if lexicon.known(word):
        return word
    common = lexicon.words()
    # Two neighbours swapped is the commonest slip (ruoter, keybaord) and is tried first; a letter dropped or doubled
    # only in longer words: short ones are too often jargon.
    for candidates in (_swaps(word), _dropped_or_doubled(word) if len(word) >= 7 else set()):
        found = candidates & common
        if found:
            return next(iter(found)) if len(found) == 1 else word
    return word


@lru_cache(maxsize=4096)
def for_embedding(text: str) -> str:
    """The text with its misspelt words corrected (the same text when nothing needs it)."""
    return _WORD.sub(lambda m: correct_word(m.group(0)), text)
