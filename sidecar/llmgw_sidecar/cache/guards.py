"""Detail checks of the verification step (verify.py): details a sentence embedding does not see well.

A small sentence model puts "what is 2+2" and "what is 2+3" (or "is it safe" / "is it not safe") closer together than
many true paraphrases. Each check extracts one kind of detail (numbers and units, negation, quoted text, code
identifiers, names) from both questions and reports whether they disagree. Each is a pure, symmetric function
(question, candidate) -> bool "differs"; verify.py runs them as rules, switchable in `cache.semantic.guards`.
"""

from __future__ import annotations

import re
from collections import Counter
from functools import lru_cache

_APOS = str.maketrans({"\u2019": "'", "\u2018": "'", "\u201c": '"', "\u201d": '"', "\u00a0": " "})
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


def _norm(text: str) -> str:
    return text.translate(_APOS)


@lru_cache(maxsize=4096)
def _words(text: str) -> tuple[str, ...]:
    # "France's" is the word "france" for every guard; "isn't" keeps its "n't" for the negation guard.
    return tuple(w.removesuffix("'s") for w in _WORD.findall(_norm(text).lower()))


def _stem(w: str) -> str:
    """Crude plural folding (tips/tip, boxes/box) so that paraphrases differing only in number still match."""
    if len(w) > 4 and w.endswith("ies"):
        return w[:-3] + "y"
    if len(w) > 3 and w.endswith("es") and w[-3] in "sxz":
        return w[:-2]
    if len(w) > 3 and w.endswith("s") and not w.endswith("ss"):
        return w[:-1]
    return w


# --- numbers -------------------------------------------------------------------------------------------------------

_NUM_WORDS = {w: str(i) for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen twenty".split())}
_NUM_WORDS.update({"thirty": "30", "forty": "40", "fifty": "50", "sixty": "60", "seventy": "70", "eighty": "80",
                   "ninety": "90", "hundred": "100", "thousand": "1000", "million": "1000000",
                   "billion": "1000000000", "dozen": "12", "half": "0.5", "quarter": "0.25", "twice": "2",
                   "triple": "3"})
# "first" and "second" are left out: far more often "initial" / "second-hand" / a time unit than a count; a swap of
# them in the same sentence is the substitution guard's job, first/last the opposites guard's.
_ORDINALS = {w: str(i) for i, w in enumerate(
    "zeroth - - third fourth fifth sixth seventh eighth ninth tenth".split()) if w != "-"}
_UNITS = {}
for _canon, _names in {
    "km": "km kms kilometer kilometers kilometre kilometres", "mile": "mi mile miles", "m": "m meter meters metre metres",
    "cm": "cm centimeter centimeters", "mm": "mm millimeter millimeters", "ft": "ft foot feet", "in": "inch inches",
    "kg": "kg kgs kilogram kilograms kilo kilos", "g": "g gram grams", "lb": "lb lbs pound pounds",
    "oz": "oz ounce ounces", "l": "l liter liters litre litres", "ml": "ml milliliter milliliters",
    "gal": "gallon gallons", "c": "c celsius centigrade", "f": "f fahrenheit", "k": "kelvin",
    "usd": "usd dollar dollars $", "eur": "eur euro euros €", "gbp": "gbp £", "jpy": "yen ¥",
    "s": "s sec secs second seconds", "min": "min mins minute minutes", "h": "h hr hrs hour hours",
    "day": "day days", "week": "week weeks", "month": "month months", "year": "year years yr yrs",
    "kb": "kb kilobyte kilobytes", "mb": "mb megabyte megabytes", "gb": "gb gigabyte gigabytes",
    "tb": "tb terabyte terabytes", "byte": "byte bytes", "bit": "bit bits", "%": "% percent percentage",
    "mbit": "mbps megabit megabits", "gbit": "gbps gigabit gigabits",
    "mph": "mph", "kmh": "kph kmh", "cal": "calorie calories kcal", "cup": "cup cups",
    "tbsp": "tbsp tablespoon tablespoons", "tsp": "tsp teaspoon teaspoons",
}.items():
    for _n in _names.split():
        _UNITS[_n] = _canon
# One token at a time: a number (optionally with currency sign, ordinal suffix or degree sign), a word, or an operator.
_NUMBER_TOKEN = re.compile(r"[$\u20ac\u00a3\u00a5]|\d+(?:[.,]\d+)*(?:st|nd|rd|th)?|\u00b0?[a-z%]+|[+\-*/^=<>\u00d7\u00f7]")
_OPS = {"+": "+", "plus": "+", "add": "+", "sum": "+", "-": "-", "minus": "-", "subtract": "-", "*": "*", "\u00d7": "*",
        "times": "*", "multiplied": "*", "product": "*", "/": "/", "\u00f7": "/", "divided": "/",
        "^": "^", "power": "^", "squared": "^2", "cubed": "^3", "root": "root", "<": "<", ">": ">", "=": "="}
_NON_COMMUTATIVE = {"-", "/", "^", "<", ">"}
_CURRENCY = {"$", "\u20ac", "\u00a3", "\u00a5"}
# Roman numerals as in "World War II" / "Henry VIII"; single letters (I, V, X) are too often words.
_ROMAN = {r: str(i) for i, r in enumerate("- - ii iii iv - vi vii viii ix - xi xii".split()) if r != "-"}


@lru_cache(maxsize=4096)  # per text: a stored question meets many lookups, a lookup up to 4 candidates
def _numbers(text: str) -> tuple[list[str], list[str]]:
    """(numbers, each with the unit that follows it, in order), (math operators)."""
    nums: list[str] = []
    ops: list[str] = []
    # Inside a sentence, capitalised First/Second are ordinals of a name ("the Second World War" = "World War II").
    text = re.sub(r"(?<=\w )(First|Second)\b", lambda m: "1st" if m.group(1) == "First" else "2nd", _norm(text))
    toks = _NUMBER_TOKEN.findall(text.lower())
    currency = ""
    for i, tok in enumerate(toks):
        if tok in _CURRENCY:
            currency = _UNITS.get(tok, "")
            continue
        if tok[0].isdigit():
            value = re.sub(r"(st|nd|rd|th)$", "", tok).replace(",", "")  # "1,000" is 1000, "2nd" is 2
            if "." in value:
                value = value.rstrip("0").rstrip(".")
            nxt = toks[i + 1].lstrip("\u00b0") if i + 1 < len(toks) else ""
            unit = currency or _UNITS.get(nxt, "")
            nums.append(f"{value} {unit}" if unit else value)
        elif tok in _NUM_WORDS:
            if tok != "one":  # "one cup" is "a cup": a lone "one" is an article more often than a count
                nums.append(_NUM_WORDS[tok])
        elif tok in _ORDINALS:
            nums.append(_ORDINALS[tok])
        elif tok in _ROMAN:
            nums.append(_ROMAN[tok])
        elif tok in _OPS:
            ops.append(_OPS[tok])
        currency = ""
    # Operator words only mean arithmetic next to numbers ("add a column" is not "+").
    return nums, ops if nums else []


# Measurement units that name a direction when they appear without a number ("convert Celsius to Fahrenheit").
# Time units are left out: "what day" or "this year" are not conversions.
_DIRECTION_UNITS = {n: c for n, c in _UNITS.items()
                    if len(n) > 2 and c not in {"s", "min", "h", "day", "week", "month", "year", "%"}}


@lru_cache(maxsize=4096)
def _bare_units(text: str) -> tuple[str, ...]:
    """Units not right after a number, in order of appearance."""
    toks = _NUMBER_TOKEN.findall(_norm(text).lower())
    out = []
    for i, tok in enumerate(toks):
        unit = _DIRECTION_UNITS.get(tok)
        if unit and not (i > 0 and toks[i - 1][0].isdigit()) and unit not in out:
            out.append(unit)
    return tuple(out)


# How much of a set a question is about: "do all birds migrate" / "do some birds" / "do most birds", "always" / "ever".
_QUANTITY = {**dict.fromkeys("all every each entire whole always".split(), "all"),
             **dict.fromkeys("most mostly usually generally".split(), "most"),
             **dict.fromkeys("some any ever sometimes".split(), "some"),
             **dict.fromkeys("one single".split(), "one")}
_ORDINAL_WORDS = frozenset("first second third fourth fifth sixth seventh eighth ninth tenth penultimate".split())


# Bounds on a count: "more than once" / "exactly once" / "at least once".
_BOUNDS = {("at", "least"): "at least", ("more", "than"): "at least", ("over",): "at least", ("at", "most"): "at most",
           ("less", "than"): "at most", ("fewer", "than"): "at most", ("exactly",): "exactly", ("only",): "exactly"}


@lru_cache(maxsize=4096)
def _quantities(text: str) -> frozenset[str]:
    words = _words(text)
    out = {b for i in range(len(words)) for k, b in _BOUNDS.items() if tuple(words[i:i + len(k)]) == k}
    # "the most popular" is a superlative (the degree rule's), "at most" a bound: neither is "most birds"
    out |= {_QUANTITY[w] for i, w in enumerate(words)
            if w in _QUANTITY and not (w == "most" and i > 0 and words[i - 1] in ("the", "at"))}
    return frozenset(out)


@lru_cache(maxsize=4096)
def _ordinals(text: str) -> frozenset[str]:
    """first / second / last ... as written words (largest / second largest, first / last president); "last" only
    after an article or possessive (not "how long does it last")."""
    words = _words(text)
    out = {w for i, w in enumerate(words) if w in _ORDINAL_WORDS and not (i > 0 and words[i - 1][:1].isdigit())}
    out |= {"last" for i, w in enumerate(words) if w == "last" and i > 0 and words[i - 1] in _DETERMINER_WORDS}
    return frozenset(out)


_DETERMINER_WORDS = frozenset("the a my your his her its our their this that".split())


def quantities_differ(a: str, b: str) -> bool:
    qa, qb = _quantities(a), _quantities(b)
    if qa and qb and qa != qb:  # some / all, always / ever, one / every
        return True
    # "all" or "most" on one side only: "do birds migrate" is not "do all birds migrate" (a bare "some" or "any" is
    # often filler: "some tips for", "is there any way to")
    return bool((qa ^ qb) & {"all", "most"}) and not (qa and qb)


def units_differ(a: str, b: str) -> bool:
    """Both ask in units, not the same ones: "how far ... in kilometers" / "... in miles", "a cup of flour in grams" /
    "... in ounces" (the answer is another number, however alike the questions)."""
    ua, ub = _bare_units(a), _bare_units(b)
    return bool(ua and ub and set(ua) != set(ub))


def numbers_differ(a: str, b: str) -> bool:
    na, oa = _numbers(a)
    nb, ob = _numbers(b)
    if Counter(oa) != Counter(ob):
        return True
    if quantities_differ(a, b) or _ordinals(a) != _ordinals(b):  # one / every reason; largest / second largest
        return True
    ua, ub = _bare_units(a), _bare_units(b)
    if len(ua) >= 2 and len(ub) >= 2 and ua != ub:  # Celsius -> Fahrenheit is not Fahrenheit -> Celsius
        return True
    # A unit only counts when both sides give it: "5 miles" and "5" may be the same question, "5 miles" and
    # "5 km" are not.
    if len(na) != len(nb):
        return True
    if set(oa) & _NON_COMMUTATIVE:  # 10 - 3 is not 3 - 10: order matters
        pairs = zip(na, nb, strict=True)
    else:
        pairs = zip(sorted(na), sorted(nb), strict=True)
    for x, y in pairs:
        if x != y and (x.split(" ")[0] != y.split(" ")[0] or (" " in x and " " in y)):
            return True
    return False


# --- negation ------------------------------------------------------------------------------------------------------

_NEGATORS = frozenset("not no never none nobody nothing neither nor nowhere without cannot except excluding "
                      "besides unless lack lacking fail fails".split())


@lru_cache(maxsize=4096)
def _negations(text: str) -> int:
    n = 0
    for w in _words(text):
        if w in _NEGATORS or w.endswith("n't"):
            n += 1
    return n + len(re.findall(r"\bother than\b|\bapart from\b", _norm(text).lower()))


_NEG_PREFIXES = ("un", "dis", "non", "de", "in", "im", "il", "ir")


def _prefix_negated(a: str, b: str) -> bool:
    """A word of one question appears negated by a prefix in the other: connect/disconnect, mute/unmute, safe/unsafe."""
    wa, wb = set(_words(a)), set(_words(b))
    for x, y in ((wa - wb, wb - wa), (wb - wa, wa - wb)):
        for w in x:
            if len(w) >= 4 and any(p + w in y for p in _NEG_PREFIXES):
                return True
    return False


def negation_differs(a: str, b: str) -> bool:
    return _negations(a) != _negations(b) or _prefix_negated(a, b)


# --- quoted strings ------------------------------------------------------------------------------------------------

_QUOTED = re.compile(r'"([^"\n]{1,200})"|(?<![\w])\'([^\'\n]{1,200})\'(?![\w])|`([^`\n]{1,200})`')


@lru_cache(maxsize=4096)
def _quoted(text: str) -> frozenset[str]:
    return frozenset({" ".join(next(g for g in m if g).split()) for m in _QUOTED.findall(_norm(text))})


def quoted_differs(a: str, b: str) -> bool:
    # Each side's quoted text must appear in the other question (quoted or not): "what does 'carpe diem' mean" and
    # "meaning of carpe diem" agree, "translate 'hello'" and "translate 'goodbye'" do not.
    la, lb = " ".join(_norm(a).lower().split()), " ".join(_norm(b).lower().split())
    return any(q.lower() not in lb for q in _quoted(a)) or any(q.lower() not in la for q in _quoted(b))


# --- code identifiers ----------------------------------------------------------------------------------------------

_IDENT = re.compile(
    r"`[^`\n]+`"                                   # anything in backticks
    r"|[A-Za-z_][A-Za-z0-9_]*\(\)"                 # call syntax foo()
    r"|\b[A-Za-z][A-Za-z0-9]*_[A-Za-z0-9_]+\b"     # snake_case
    r"|\b[a-z]+[A-Z][A-Za-z0-9]*\b"                # camelCase
    r"|\b[A-Z][a-z0-9]+[A-Z][A-Za-z0-9]*\b"        # PascalCase with an inner capital
    r"|\b[A-Za-z_]\w*(?:\.[A-Za-z_]\w+)+\b"        # dotted.names, files
    r"|(?<!\w)--?[A-Za-z][\w-]*"                   # CLI flags
    r"|(?:~|\.{1,2})?/[\w.\-/]+"                   # paths
)


@lru_cache(maxsize=4096)
def _identifiers(text: str) -> frozenset[str]:
    return frozenset(i.strip("`").removesuffix("()") for i in _IDENT.findall(_norm(text)))


def identifiers_differ(a: str, b: str) -> bool:
    # Case-sensitive containment both ways: `readFile` and `readfile` are different functions.
    ia, ib = _identifiers(a), _identifiers(b)
    return any(i not in b for i in ia) or any(i not in a for i in ib)


# --- named entities ------------------------------------------------------------------------------------------------

_CAP = re.compile(r"(?<![.!?:]\s)(?<!^)\b([A-Z][a-zA-Z0-9\-]*(?:'s)?)|\b([A-Z]{2,}[0-9]*)\b")
# Capitalised by habit rather than names of different things ("on Earth" = "in the world").
_NOT_ENTITIES = frozenset("i i'm i've i'd i'll ok please thanks hi hello hey earth".split())


@lru_cache(maxsize=4096)
def _entities(text: str) -> frozenset[str]:
    t = _norm(text).strip()
    found = set()
    for m in _CAP.finditer(t):
        w = (m.group(1) or m.group(2)).lower().removesuffix("'s")
        # "World War II", "the Second World War": the numbers guard compares those
        numeral = w in _ROMAN or w in _ORDINALS or w in _NUM_WORDS or w in ("first", "second")
        if len(w) > 1 and w not in _NOT_ENTITIES and not numeral:
            found.add(w)
    return frozenset(found)


def entities_differ(a: str, b: str) -> bool:
    # Capitalised words inside a sentence (and acronyms anywhere) are names; each must appear as a word in the other
    # question, capitalised or not (the other may start a sentence with it). "Paris" vs "Rome" differ.
    wa = {_stem(w) for w in _words(a)}
    wb = {_stem(w) for w in _words(b)}
    return any(not _entity_in(e, wb) for e in _entities(a)) or any(not _entity_in(e, wa) for e in _entities(b))


def _entity_in(entity: str, words: set[str]) -> bool:
    # "Wi-Fi" is one entity but two words ("wi", "fi") to the word splitter
    return all(_stem(part) in words for part in entity.split("-") if part)


_WH = {"who": "who", "whom": "who", "whose": "who", "when": "when", "where": "where", "why": "why"}
