"""Who does what to whom: the roles rule. A direction word that governs different words (merge A into B / B into A),
two words or runs of words that swap places (a cat eats dog food / a dog eats cat food), or the same verb done by
someone else (do I owe my roommate / does my roommate owe me)."""

from __future__ import annotations

from . import lexicon
from .alignment import Alignment
from .words import DETERMINERS, FUNCTION, Parsed, Word, prev_word

# (all four measured on the dev set only: docs/semantic-cache.md)
DIRECTION = frozenset({"from", "to", "into", "onto", "than", "toward", "towards"})


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


def _between(p: Parsed, x: Word, y: Word) -> tuple[str, ...]:
    lo, hi = sorted((x.pos, y.pos))
    return tuple(t for t in p.tokens[lo + 1:hi] if t not in DETERMINERS)


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
    if prev_word(al.a, xa) == prev_word(al.b, xb) and prev_word(al.a, ya) == prev_word(al.b, yb):
        return None  # each kept its own context: a clause moved
    if prev_word(al.a, xa) == prev_word(al.b, yb) or prev_word(al.a, ya) == prev_word(al.b, xb):
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


def _doer(p: Parsed, w: Word) -> Word | None:
    """The content word right before the verb `w` (its subject in "animals eat", "do foxes eat"), if it is a noun."""
    return next((c for c in p.content if c.pos == w.pos - 1 and not lexicon.verb_not_noun(c.text)), None)


def subjects(al: Alignment) -> str | None:
    """The same verb done by someone else: "do I owe my roommate" / "does my roommate owe me", "what animals eat
    foxes" / "what animals do foxes eat" (each side's doer is a word of the other side, in another place)."""
    for i, j in al.a_to_b.items():
        x, y = al.a.content[i], al.b.content[j]
        # the same verb, one that is only ever a verb (owe, evict; not "better", "move")
        if al.b_to_a.get(j) != i or not (lexicon.verb_not_noun(x.text) and lexicon.verb_not_noun(y.text)) or \
                not lexicon.lemmas(x.text) & lexicon.lemmas(y.text):
            continue
        sx, sy = _subject(al.a, x), _subject(al.b, y)
        if sx is not None and sy is not None and sx != sy:
            return f"roles: {x.text} done by {sx} / by {sy}"
        # a verb in the present ("eat", "eats"), not a participle: "container-grown", "an email asking"
        finite = all(v.text in (base := min(lexicon.lemmas(v.text), key=len), base + "s", base + "es") for v in (x, y))
        da, db = (_doer(al.a, x), _doer(al.b, y)) if finite else (None, None)
        if da is not None and db is not None and not lexicon.lemmas(da.text) & lexicon.lemmas(db.text) and any(
                lexicon.lemmas(da.text) & lexicon.lemmas(c.text) for c in al.b.content) and any(
                lexicon.lemmas(db.text) & lexicon.lemmas(c.text) for c in al.a.content):
            return f"roles: {x.text} done by {da.text} / by {db.text}"
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
