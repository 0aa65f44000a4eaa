"""Misspelt words are corrected in the text the semantic cache embeds (cache/spelling.py), and only where the
correction is certain: names, identifiers, jargon and short words stay as written."""

from __future__ import annotations

import pytest

from llmgw_sidecar.cache.spelling import correct_word, for_embedding


@pytest.mark.parametrize(("typed", "meant"), [
    ("How do i reset my ruoter?", "How do i reset my router?"),  # two neighbours swapped
    ("How do I clean a keybaord?", "How do I clean a keyboard?"),
    ("What are the symtoms of a concussion?", "What are the symptoms of a concussion?"),  # a letter dropped
    ("whats the diffrence between tcp and udp", "whats the difference between tcp and udp"),
    ("How do I reverse a linkd list in Java?", "How do I reverse a linked list in Java?"),
])
def test_certain_typos_are_corrected(typed: str, meant: str) -> None:
    assert for_embedding(typed) == meant


@pytest.mark.parametrize("text", [
    "How do I upsert rows in postgres?",  # a changed letter is never corrected: postgres is not "postures"
    "How do I set the kube config for kubectl?",  # short jargon (config/confit) stays
    "How do I unmarshal json in golang?",
    "Why does `os.path.joni` fail?",  # inside code
    "What does Kubernets mean?",  # capitalised: a name, whatever it looks like
    "How do I make sourdough bread without a scale?",  # nothing to correct: the same string
    "whats the best way to learn python dont overthink it",  # contractions typed without the apostrophe
    "How do I stop guacamole from turnig brown?",  # turning or turing: not certain, left alone
])
def test_what_is_not_certain_is_left_alone(text: str) -> None:
    assert for_embedding(text) == text


def test_ambiguous_words_are_left_alone() -> None:
    # "tset" could be "test" or "set" with a letter doubled... only a unique candidate is used
    assert correct_word("abcdefgh") == "abcdefgh"
    assert correct_word("router") == "router"
