"""Misspelt words corrected before a question is embedded: "How do i reset my ruoter?" is the same question as "How do
I reset my router?", but the model's tokenizer cuts "ruoter" into pieces and places it 0.54 away (a paraphrase sits
within 0.3). Only the text that is embedded changes: the stored prompt, the exact-cache key and the verification step
(which accepts such typos word for word) all see what the user wrote.

A word is corrected only when it is lower case (names and identifiers are left alone), not an English word the lexicon
knows, and exactly one word the lexicon knows is one slip away: two neighbours swapped or a letter left out (from 5
letters on), else a letter too many (7 letters or more). A changed letter is never corrected: postgres is not
"postures". Two or
more candidates ("kube": cube, tube) leave it as it is: a doubtful correction is worse than none."""

from __future__ import annotations

import re
from functools import lru_cache

from . import lexicon

_WORD = re.compile(r"(?<![\w./\\-])[a-z]{5,}(?![\w./\\(-])")
_LETTERS = "abcdefghijklmnopqrstuvwxyz"


def _swaps(w: str) -> set[str]:
    return {w[:i] + w[i + 1] + w[i] + w[i + 2:] for i in range(len(w) - 1)} - {w}


def _dropped(w: str) -> set[str]:
    """The word with a letter the writer left out put back (symtoms, linkd)."""
    return {w[:i] + c + w[i:] for i in range(len(w) + 1) for c in _LETTERS}


def _doubled(w: str) -> set[str]:
    """The word without a letter typed once too often (recieeve)."""
    return {w[:i] + w[i + 1:] for i in range(len(w))} - {w}


# Contractions typed without the apostrophe are words, not slips ("whats" is not "wheats").
_NO_APOSTROPHE = frozenset("whats thats theres heres hows whos wheres whens whys dont doesnt didnt cant couldnt "
                           "shouldnt wouldnt wont isnt arent wasnt werent havent hasnt hadnt youre theyre weve youve "
                           "theyve youll theyll shes hes lets".split())


@lru_cache(maxsize=16384)
def correct_word(word: str) -> str:
    if lexicon.known(word) or word in _NO_APOSTROPHE:
        return word
    common = lexicon.words()
    # Two neighbours swapped (ruoter, keybaord) or a letter left out (linkd) first, as one set: "turnig" could be
    # "turing" or "turning", so it stays. A letter too many only in longer words: short jargon often is a word plus
    # a letter (upsert, golang). Never a letter changed: it turns jargon into words (postgres -> postures).
    for candidates in (_swaps(word) | _dropped(word), _doubled(word) if len(word) >= 7 else set()):
        found = candidates & common
        if found:
            return next(iter(found)) if len(found) == 1 else word
    return word


@lru_cache(maxsize=4096)
def for_embedding(text: str) -> str:
    """The text with its misspelt words corrected (the same text when nothing needs it)."""
    return _WORD.sub(lambda m: correct_word(m.group(0)), text)
