"""Each guard on its own: what it must reject, what it must let through, and that it can be switched off."""

from __future__ import annotations

import pytest

from llmgw_sidecar.cache import guards
from llmgw_sidecar.cache.guards import GUARDS, first_rejecting
from llmgw_sidecar.config import GuardsConfig

REJECT = [
    ("numbers", "What is 2+2?", "What is 2+3?"),
    ("numbers", "What is 10 divided by 2?", "What is 2 divided by 10?"),
    ("numbers", "What is 100 minus 37?", "What is 100 plus 37?"),
    ("numbers", "Convert 5 miles to km", "Convert 5 km to miles"),
    ("numbers", "How much is $50 in euros?", "How much is $500 in euros?"),
    ("numbers", "Give me two examples", "Give me three examples"),
    ("negation", "Is it safe to eat raw eggs?", "Is it not safe to eat raw eggs?"),
    ("negation", "What can I bring on a plane?", "What can't I bring on a plane?"),
    ("negation", "List all European countries.", "List all European countries except France."),
    ("negation", "How do I connect my headphones to my laptop?", "How do I disconnect my headphones from my laptop?"),
    ("quoted", 'Translate "good morning" into Spanish.', 'Translate "good night" into Spanish.'),
    ("language_format", "Translate thank you to French.", "Translate thank you to Spanish."),
    ("language_format", "Write hello world in C.", "Write hello world in Go."),
    ("language_format", "Return the planets as JSON.", "Return the planets as YAML."),
    ("identifiers", "What does `os.path.join` do?", "What does `os.path.split` do?"),
    ("identifiers", "Why is my_variable undefined?", "Why is myVariable undefined?"),
    ("entities", "Who wrote Hamlet?", "Who wrote Macbeth?"),
    ("entities", "What does NASA do?", "What does NOAA do?"),
    ("opposites", "How do I encrypt a file?", "How do I decrypt a file?"),
    ("opposites", "Convert uppercase to lowercase", "Convert lowercase to uppercase"),
    ("opposites", "When was Lincoln born?", "Where was Lincoln born?"),
    ("substitution", "What is the chemical symbol for gold?", "What is the chemical symbol for silver?"),
    ("substitution", "How many legs does a spider have?", "How many legs does an insect have?"),
]

ALLOW = [
    ("What's the capital of France?", "Which city is France's capital?"),
    ("Convert 5 miles to km", "How many kilometers are 5 miles?"),
    ("What is 15% of 200?", "How much is 15 percent of 200?"),
    ("What does `len()` do in Python?", "In Python, what is `len()` used for?"),
    ("I can't log in to my account", "I cannot sign in to my account"),
    ("What is the largest planet?", "Which planet is the biggest?"),
    ("What year did World War II end?", "In which year did the Second World War end?"),
    ("How many ounces are in a cup?", "How many ounces does one cup hold?"),
    ("Why do onions make you cry?", "What makes people cry when cutting onions?"),
    ("What is the largest ocean on Earth?", "Which ocean is the biggest in the world?"),
    ("What does HTTP stand for?", "What is HTTP short for?"),
]


@pytest.mark.parametrize(("guard", "a", "b"), REJECT)
def test_guard_rejects(guard: str, a: str, b: str) -> None:
    assert GUARDS[guard](a, b), (guard, a, b)
    assert GUARDS[guard](b, a), "guards are symmetric"
    assert first_rejecting(b, a, GuardsConfig()) is not None
    # switching only that guard off lets the pair through that guard
    off = GuardsConfig(**{guard: False})
    assert first_rejecting(b, a, off) != guard


@pytest.mark.parametrize(("a", "b"), ALLOW)
def test_paraphrases_pass_every_guard(a: str, b: str) -> None:
    assert first_rejecting(b, a, GuardsConfig()) is None, [n for n, g in GUARDS.items() if g(a, b)]


def test_every_config_switch_names_a_guard() -> None:
    assert set(GuardsConfig.model_fields) == set(GUARDS)


def test_all_off_accepts_everything() -> None:
    off = GuardsConfig(**{k: False for k in GuardsConfig.model_fields})
    assert all(first_rejecting(b, a, off) is None for _, a, b in REJECT)


def test_number_normalisation() -> None:
    assert guards._numbers("It costs $1,000.50 for 2nd place")[0] == ["1000.5 usd", "2"]
    assert guards._numbers("add a column")[1] == []  # operator words only count next to numbers
