"""The verification step rule by rule: what each must refuse, what must pass, that each names itself and can be
switched off. Pure functions over packaged lexical data; the word vectors come from the real model."""

from __future__ import annotations

import numpy as np
import pytest

from llmgw_sidecar.cache import guards, lexicon, verify
from llmgw_sidecar.config import GuardsConfig
from llmgw_sidecar.embeddings.local import LocalEmbedder

REFUSE = [
    ("numbers", "What is 2+2?", "What is 2+3?"),
    ("numbers", "Convert 5 miles to km", "Convert 5 km to miles"),
    ("units", "How far is Paris from Berlin in kilometers?", "how far is paris from berlin in miles"),  # no number
    ("units", "How fast is my connection in megabits per second?", "How fast is my connection in megabytes per second?"),
    ("antonyms", "How do I schedule a cron job to run at midnight?", "how do i schedule a cron job to run at noon"),
    ("antonyms", "What should I eat before a long run?", "What should I eat after a long run?"),
    ("quoted", 'Translate "good morning" into Spanish.', 'Translate "good night" into Spanish.'),
    ("identifiers", "What does `os.path.join` do?", "What does `os.path.split` do?"),
    ("entities", "Who wrote Hamlet?", "Who wrote Macbeth?"),
    ("entities", "Explain option A of the plan.", "Explain option B of the plan."),
    ("negation", "Is it safe to eat raw eggs?", "Is it not safe to eat raw eggs?"),
    ("question", "When was Lincoln born?", "Where was Lincoln born?"),
    ("antonyms", "Which planets are farther from the Sun than Earth?", "Which planets are closer to the Sun than Earth?"),
    ("antonyms", "How do I import a CSV file?", "How do I export a CSV file?"),
    ("antonyms", "How do I encrypt a file?", "How do I decrypt a file?"),
    ("degree", "What is the largest city in Turkey?", "What is the capital of Turkey?"),
    ("roles", "How do I merge my feature branch into main?", "How do I merge main into my feature branch?"),
    ("roles", "How do I copy a file from the server to my machine with scp?",
     "How do I copy a file from my machine to the server with scp?"),
    ("tense", "Who won the race?", "Who will win the race?"),
    ("unmatched", "How do I bake a chocolate cake?", "How do I bake a vegan chocolate cake?"),
    ("unmatched", "Give me a recipe for gluten-free thin-crust pizza dough", "Give me a recipe for thin-crust pizza dough"),
    ("unmatched", "Who was the first UN Secretary-General?", "Who is the current UN Secretary-General?"),
    ("unmatched", "Write a systemd timer that runs my backup script every night",
     "Write a cron expression that runs my backup script every night"),
    # the near-misses blind batch 3 still served, each refused by a general rule since
    ("roles", "Can a cat eat dog food?", "Can a dog eat cat food?"),  # a swap without a preposition
    ("roles", "How do I transfer money from savings to checking?",
     "How do I transfer money from checking to savings?"),  # "to checking" is no infinitive
    ("roles", "How do I copy a table from one database into another?", "How do I copy a database into a table?"),
    ("numbers", "Give me one reason to learn Rust.", "Give me every reason to learn Rust."),
    ("unmatched", "How many hours are in a week?", "How many minutes are in a week?"),  # units: never synonyms
    ("antonyms", "How do I gain muscle fast?", "How do I lose muscle fast?"),  # win/lose's sense covers gain
    ("unmatched", "How do I make a vegan lasagna?", "How do I make a vegetarian lasagna?"),  # a kind and its kind
    ("unmatched", "How do I clean a cast iron pan with rust?", "How do I clean a cast iron pan?"),  # "with ..."
    # the near-misses blind batch 4 still served at its first measurement, each refused by a general rule since
    ("roles", "Does stress cause high blood pressure?", "Does high blood pressure cause stress?"),  # runs of words
    ("roles", "Can a parent be held liable for a child's debt?", "Can a child be held liable for a parent's debt?"),
    ("roles", "What questions should an interviewer ask a candidate?",
     "What questions should a candidate ask an interviewer?"),  # a / an are one context
    ("roles", "How do I call a C function from Python?", "How do I call a Python function from C?"),  # C is a name
    ("roles", "Why did the US buy Alaska from Russia?", "Why did Russia buy Alaska from the US?"),  # US is no "us"
    ("numbers", "Which moon of Saturn is the largest?", "Which moon of Saturn is the second largest?"),
    ("numbers", "Do some birds migrate?", "Do all birds migrate?"),
    ("numbers", "Is it always illegal to record a phone call without consent?",
     "Is it ever illegal to record a phone call without consent?"),
    ("unmatched", "Can my landlord evict me for complaining about repairs?",
     "Can I evict my tenant for complaining about repairs?"),  # two things WordNet tells apart, however alike
    # the near-misses blind batch 5 still served at its first measurement, each refused by a general rule since
    ("unmatched", "How do I tighten the brakes on my bike?", "How do I loosen the brakes on my bike?"),  # no vector
    ("unmatched", "how to expand all folds in vim", "how to collapse all folds in vim"),  # speaks for WordNet words
    ("unmatched", "What happens to my 401k if I quit my job?", "What happens to my 401k if I die?"),
    ("roles", "How do I roll over a 401k into an IRA?", "How do I roll over an IRA into a 401k?"),  # 401k is a name
    ("roles", "How do I get my older cat to accept a new kitten?", "How do I get a new kitten to accept my older cat?"),
    ("roles", "Do I owe my roommate half the rent if she moved out early?",
     "Does my roommate owe me half the rent if I moved out early?"),  # the same verb, someone else does it
    ("roles", "What animals eat foxes?", "what animals do foxes eat"),  # each doer is a word of the other side
    ("unmatched", "Can I get a refund for my flight if the airline cancels it?",
     "Can I get a refund for my flight if I cancel it myself?"),  # "if the airline ...": a party, never implied
    ("numbers", "SQL: how do I find rows that appear more than once in a table?",
     "SQL: how do I find rows that appear exactly once in a table?"),
    ("antonyms", "common symptoms of hyperthyroidism", "common symptoms of hypothyroidism"),
    # a verb with a particle stands for a verb only when the opposite particle fits worse
    ("unmatched", "How do I disable dark mode on my phone?", "How do I turn on dark mode on my phone?"),
    ("unmatched", "How do I remove a splinter?", "How do I get a splinter in?"),
]

PASS = [
    ("What's the capital of France?", "Which city is France's capital?"),
    ("How do I reverse a list in Python?", "What's the way to reverse a Python list?"),
    ("How do I reset my router?", "How do i reset my ruoter?"),
    ("What is the largest ocean on Earth?", "Which ocean is the biggest in the world?"),
    ("How do I delete a git branch?", "How can I remove a branch in git?"),
    ("How do I unclog a drain?", "What's the way to unclog a sink drain?"),
    ("What should I do if my dog eats chocolate?", "My dog ate chocolate, what should I do?"),  # if + present
    ("How do I peel a mango?", "What's the easiest way to peel a mango?"),  # the frame of a request
    ("What is the difference between Python and Java?", "What is the difference between Java and Python?"),
    ("How do I sort a list in Python?", "In Python, how do I sort a list?"),  # a clause moved, not a swap
    ("What do cats eat?", "What food do cats eat?"),  # the same doer
    ("How tall is the Eiffel Tower in metres?", "What is the Eiffel Tower's height in meters?"),  # one unit, two spellings
    ("For tomatoes grown in containers, which fertiliser works best?",
     "Which fertiliser works best for container-grown tomatoes?"),  # a participle has no doer before it
    ("What is the price of a ticket to the Louvre?", "What is the Louvre ticket price?"),
    ("How do I remove a splinter?", "How do I get a splinter out?"),  # a light verb and its particle
    ("How do I politely decline an invitation?", "What's a polite way to turn down an invitation?"),
    ("yo how do i reverse a linked list in java lol", "How do I reverse a linked list in Java?"),  # chat filler
    ("How do I delete a git branch?", "How can I remove a branch in git?"),  # WordNet: deleting is a way to remove
    ("How tall is the Eiffel Tower?", "What is the height of the Eiffel Tower?"),  # an adjective and its attribute
    ("Is it safe to eat raw cookie dough?", "Can you safely eat raw cookie dough?"),  # an adverb of the adjective
    ("What is the difference between a crocodile and an alligator?",
     "What's the diffrence between an alligator and a crocodile?"),  # a certain typo, corrected
]


@pytest.fixture(scope="module")
def vectors_for(embedder: LocalEmbedder):
    def get(a: str, b: str) -> tuple[dict[str, np.ndarray], tuple[np.ndarray, np.ndarray]]:
        words = verify.align(a, b).words_to_embed()
        vecs = embedder.embed_sync(words) if words else []
        sa, sb = embedder.embed_sync([a, b])
        return dict(zip(words, vecs, strict=True)), (sa, sb)
    return get


@pytest.mark.parametrize(("rule", "a", "b"), REFUSE)
def test_rule_refuses_names_itself_and_can_be_switched_off(rule: str, a: str, b: str, vectors_for) -> None:
    for q, c in ((b, a), (a, b)):  # symmetric
        vectors, sentences = vectors_for(q, c)
        assert verify.refusal(q, c, GuardsConfig(), vectors, sentences) is not None
        got = verify.refusal(q, c, GuardsConfig(), vectors, sentences, only=(rule,))
        assert got is not None and got[0] == rule, (q, c, got)
    vectors, sentences = vectors_for(b, a)
    assert verify.refusal(b, a, GuardsConfig(**{rule: False}), vectors, sentences, only=(rule,)) is None


@pytest.mark.parametrize(("a", "b"), PASS)
def test_paraphrases_pass(a: str, b: str, vectors_for) -> None:
    vectors, sentences = vectors_for(b, a)
    assert verify.refusal(b, a, GuardsConfig(), vectors, sentences) is None


def test_without_vectors_it_is_stricter_never_looser(vectors_for) -> None:
    a, b = PASS[4]
    assert verify.refusal(b, a, GuardsConfig()) == verify.refusal(b, a, GuardsConfig(), {}, None)
    assert verify.refusal(b, a, GuardsConfig()) is not None  # delete/remove needs the word vectors


def test_every_rule_has_a_switch() -> None:
    assert set(GuardsConfig.model_fields) == set(verify.RULES)


def test_all_off_accepts_everything() -> None:
    off = GuardsConfig(**{k: False for k in GuardsConfig.model_fields})
    assert all(verify.refusal(b, a, off) is None for _, a, b in REFUSE)


def test_lexicon_is_packaged_data() -> None:
    assert lexicon.antonyms("import", "export") and lexicon.antonyms("farther", "closer")
    assert lexicon.synonyms("kids", "children") and lexicon.alternatives("tea", "coffee")
    assert lexicon.degree("largest") == "sup" and lexicon.degree("larger") == "cmp" and lexicon.degree("large") == ""
    assert guards._numbers("It costs $1,000.50 for 2nd place")[0] == ["1000.5 usd", "2"]


def test_refusal_is_explained_in_a_debug_line(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("DEBUG", logger="llmgw.semantic.verify"):
        got = verify.refusal("How do I bake a vegan chocolate cake?", "How do I bake a chocolate cake?", GuardsConfig())
    assert got == ("unmatched", "no counterpart: ['vegan'] / []")
    line = caplog.records[-1].getMessage()
    assert "refused by unmatched" in line and "vegan" in line and "chocolate cake" in line


def test_a_candidate_with_many_unmatched_words_is_refused_before_any_vector() -> None:
    """More than MAX_UNMATCHED_BEFORE_VECTORS words without a lexical counterpart: no word vector is asked for (the
    layer then never runs the full model for it) and the refusal is the unmatched rule's."""
    al = verify.align("How do I fix a leaking kitchen faucet washer?", "How do I bake sourdough bread at home?")
    assert al.hopeless() and al.words_to_embed() == []
    got = verify.refusal("How do I fix a leaking kitchen faucet washer?", "How do I bake sourdough bread at home?",
                         GuardsConfig(), {"unused": np.zeros(3)}, None)
    assert got is not None and got[0] == "unmatched" and "without counterpart" in got[1]
    near = verify.align("How do I lower my electricity bill?", "How do I reduce my electricity bill?")
    assert not near.hopeless() and near.words_to_embed()
