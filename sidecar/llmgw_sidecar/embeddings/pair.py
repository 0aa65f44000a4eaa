"""The pair model: a cross-encoder that reads a stored question and an incoming one together and says whether the
stored answer answers the new question. It is the semantic cache's last word on a candidate that every rule let
through: it sees both questions at once, so it can tell "pack" for "bring" (the same request) from "vegan" added to
"chocolate cake" (a new constraint), which neither a sentence distance nor word lists tell apart.

It is trained at export time (no download, a few minutes on two cores) from the same MiniLM the cache embeds with,
on the labelled pairs packaged in `pairs/` (the sets the verification step was developed on). The sets it is measured
on (tests/data) are never trained on. At run time it is an ONNX graph run by onnxruntime, like the sentence model.
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path
from typing import Any

import numpy as np

from ..cache.roles import DIRECTION
from ..cache.words import FUNCTION

PAIRS_DIR = Path(__file__).parent / "pairs"
MAX_TOKENS = 96  # two questions together; the longest labelled pair has 71 tokens
SEED = 20261130
EPOCHS = 3
BATCH = 16
BUCKET = 32  # batches whose examples are grouped by length (_batches)
LEARNING_RATE = 4e-5


def training_pairs(folder: Path = PAIRS_DIR) -> list[tuple[str, str, float]]:
    """Every labelled pair, both ways round (a cached answer is served either way), in a fixed order; then one
    meaning-preserving rewrite of every other question, labelled a hit (`rewrite`); then, for every other question,
    the most similar question of ANOTHER labelled pair and, for every fourth, a random one, labelled misses (`_others`).
    """
    out = []
    partners: dict[str, set[str]] = {}
    same: dict[str, str] = {}  # union-find over hits (and repeats of one question): one meaning, one root

    def root(q: str) -> str:
        key = q.lower().strip(" ?.!")
        while same.setdefault(key, key) != key:
            key = same[key]
        return key

    for path in sorted(folder.glob("*.jsonl")):
        for line in path.read_text().splitlines():
            if line.strip():
                p = json.loads(line)
                y = 1.0 if p["label"] == "hit" else 0.0
                out += [(p["a"], p["b"], y), (p["b"], p["a"], y)]
                partners.setdefault(p["a"], set()).add(p["b"])
                partners.setdefault(p["b"], set()).add(p["a"])
                if y:
                    same[root(p["a"])] = root(p["b"])
    groups: dict[str, set[str]] = {}
    for q in partners:
        groups.setdefault(root(q), set()).add(q)
    for q in partners:  # everything that means the same as q counts as its partner
        partners[q] |= groups[root(q)]
    rng = random.Random(SEED)
    questions = list(partners)
    for q in questions[::2]:
        r = rewrite(q, rng)
        if r != q:
            out.append((q, r, 1.0) if rng.random() < 0.5 else (r, q, 1.0))
    out += _others(questions, partners, rng)
    for q in questions:  # both ways round, like the labelled pairs
        swapped = exchange(q)
        if swapped is not None and swapped[0] not in partners:
            out += [(q, swapped[0], swapped[1]), (swapped[0], q, swapped[1])]
    return out


_WORD = re.compile(r"[a-z0-9]+")


def _content(q: str) -> frozenset[str]:
    return frozenset(w for w in _WORD.findall(q.lower()) if w not in FUNCTION and len(w) > 1)


def _others(questions: list[str], partners: dict[str, set[str]], rng: random.Random) -> list[tuple[str, str, float]]:
    """Questions of different labelled pairs are different questions: the labelled sets hold only paraphrases and
    near-misses, so without these the model never sees two questions that merely share a topic ("How do I back up
    my iPhone?" / "How do I restart my iPhone?") or nothing at all, and it accepted both kinds. The nearest one by
    shared content words, and a random one; never a question whose words are all the same (a repeat across sets)."""
    words = {q: _content(q) for q in questions}
    index: dict[str, list[str]] = {}
    for q in questions:
        for w in words[q]:
            index.setdefault(w, []).append(q)
    out = []
    for i, q in enumerate(questions[::2]):
        best, best_score = None, 0.0
        # sorted: a set's order follows the per-process string hash, and the first of equally similar questions wins
        for o in dict.fromkeys(o for w in sorted(words[q]) for o in index[w]):
            if o == q or o in partners[q] or words[o] == words[q]:
                continue
            score = len(words[q] & words[o]) / len(words[q] | words[o])
            if score > best_score:
                best, best_score = o, score
        if best is not None:
            out.append((q, best, 0.0))
        if i % 2 == 0:
            o = questions[rng.randrange(len(questions))]
            if o != q and o not in partners[q] and words[o] != words[q]:
                out.append((q, o, 0.0))
    return out


# The labelled near-misses are near-identical by design and the paraphrases mostly reworded, so a model trained on
# them alone learns "almost the same words, so a different question" and refuses "What's the weather in Paris?" for
# "What is the weather like in Paris?". Rewrites that cannot change the meaning (contractions, case, punctuation,
# politeness, filler) teach it that only some small edits matter.
_CONTRACTIONS = [("what's", "what is"), ("how's", "how is"), ("where's", "where is"), ("who's", "who is"),
                 ("it's", "it is"), ("i'm", "i am"), ("don't", "do not"), ("doesn't", "does not"),
                 ("can't", "cannot"), ("isn't", "is not"), ("won't", "will not"), ("i've", "i have")]
_PREFIXES = ["Quick question: ", "Hey, ", "Hi! ", "Can you tell me: ", "Please answer this: ", "I was wondering, ",
             "Question - "]
_SUFFIXES = [" Thanks!", " please", " Thank you.", " (asking for a friend)"]


def rewrite(q: str, rng: random.Random) -> str:
    """One meaning-preserving surface rewrite of a question."""
    kind = rng.randrange(4)
    if kind == 0:  # contraction <-> full form, the first that applies
        low = q.lower()
        for short, full in _CONTRACTIONS:
            for x, y in ((short, full), (full, short)):
                i = low.find(x + " ")
                if i >= 0 and (i == 0 or not low[i - 1].isalpha()):
                    return q[:i] + (y.capitalize() if q[i].isupper() else y) + q[i + len(x):]
        kind = 1
    if kind == 1:  # lower case, no final punctuation
        return q.lower().rstrip("?.! ")
    if kind == 2:
        return rng.choice(_PREFIXES) + (q[0].lower() + q[1:] if q[:2] != q[:2].upper() else q)
    return q.rstrip() + rng.choice(_SUFFIXES)


_PHRASE_TOKEN = re.compile(r"[A-Za-z0-9$][A-Za-z0-9'+#.,%-]*[A-Za-z0-9+#%]|[A-Za-z0-9]")
_DIRECTION = DIRECTION - {"than"}  # the roles rule's direction words; "than" compares two things, it points nowhere
_PLACE_TIME = frozenset("in on at after before during for".split())
_GOVERNORS = _DIRECTION | _PLACE_TIME
_PHRASE_END = FUNCTION | _GOVERNORS
_SIDE_BY_SIDE = frozenset({"in", "at", "during"})  # "in Bali in January" (not "turn on Bluetooth on Windows")
_LEAD = frozenset("a an the my your our their his her its some another".split())


def _phrases(q: str) -> list[tuple[str, int, int]]:
    """(preposition, start, end) of each phrase a direction, place or time word governs: "from [my laptop]", "in
    [Tokyo]"; the phrase is the run of content words after it (determiners skipped), within one clause."""
    words = list(_PHRASE_TOKEN.finditer(q))
    out = []
    k = 0
    while k < len(words):
        prep = words[k].group().lower()
        if prep not in _GOVERNORS:
            k += 1
            continue
        s = k + 1
        while s < len(words) and words[s].group().lower() in _LEAD:
            s += 1
        e = s
        while e < len(words) and words[e].group().lower() not in _PHRASE_END and (
                e == s or not re.search(r"[,?.!;:]", q[words[e - 1].end():words[e].start()])):
            e += 1
        if e > s:
            out.append((prep, words[s].start(), words[e - 1].end()))
        k = max(e, k + 1)
    return out


def _named(phrase: str) -> bool:
    """A place, a month or a year ("Bali", "January", "1948"), not a thing ("audio" in "fade in audio")."""
    return phrase[0].isupper() or phrase[0].isdigit()


def exchange(q: str) -> tuple[str, float] | None:
    """The question with two governed phrases exchanged, and whether the answer still holds. The labelled sets have
    too few of these for the model to learn that order can carry the meaning: "from my laptop to a server" / "from a
    server to my laptop" and "time in Tokyo when it is noon in London" / "... in London when it is noon in Tokyo"
    are different questions (0.0), while two place or time phrases side by side are not ("in Bali in January" / "in
    January in Bali": 1.0). None when neither applies."""
    from ..cache import lexicon

    ps = _phrases(q)
    for i, (pa, xs, xe) in enumerate(ps):
        for pb, ys, ye in ps[i + 1:]:
            x, y, between = q[xs:xe], q[ys:ye], q[xe:ys].strip().lower()
            if x.lower() == y.lower() or re.search(r"\b(and|or|vs|versus|nor|than)\b|&", between):
                continue
            if any(p == "to" and lexicon.can_be_verb(q[s:e].split()[0].lower()) for p, s, e in ((pa, xs, xe), (pb, ys, ye))):
                continue  # "to fly", "to learn": an infinitive, not a destination
            if {pa, pb} <= _DIRECTION and pa != pb:
                label = 0.0
            elif pa == pb and pa in _SIDE_BY_SIDE and between == pb and _named(x) and _named(y):
                label = 1.0
            elif pa == pb and pa in _PLACE_TIME and re.search(r"\b(when|while|if|where)\b", between):
                label = 0.0
            else:
                continue
            return q[:xs] + y + q[xe:ys] + x + q[ye:], label
    return None


def train_and_export(source: Path, out_dir: Path, *, int8: bool, threads: int = 2) -> dict[str, str]:
    """Fine-tune `source` (a sentence-transformers BERT folder) as a cross-encoder and export it to `out_dir`
    (model.onnx, model.int8.onnx, tokenizer.json). Deterministic for a given machine: fixed seed, order and threads."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    torch.manual_seed(SEED)
    rng = random.Random(SEED)
    torch.set_num_threads(threads)
    tok = AutoTokenizer.from_pretrained(str(source))

    class CrossEncoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bert = AutoModel.from_pretrained(str(source), attn_implementation="eager")
            self.head = torch.nn.Linear(int(self.bert.config.hidden_size), 1)

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                    token_type_ids: torch.Tensor) -> torch.Tensor:
            cls = self.bert(input_ids=input_ids, attention_mask=attention_mask,
                            token_type_ids=token_type_ids).last_hidden_state[:, 0]
            return torch.sigmoid(self.head(cls).squeeze(-1))

    model = CrossEncoder()
    examples = training_pairs()
    steps = EPOCHS * (len(examples) // BATCH)
    opt = torch.optim.AdamW(model.parameters(), lr=LEARNING_RATE, weight_decay=0.01)
    # linear warm-up over the first 10%, then linear decay to zero
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, s / (0.1 * steps)) * max(0.0, (steps - s) / steps))
    loss_fn = torch.nn.BCELoss()
    model.train()
    for _ in range(EPOCHS):
        for batch in _batches(examples, rng):
            enc = tok([x[0] for x in batch], [x[1] for x in batch], padding=True, truncation=True,
                      max_length=MAX_TOKENS, return_tensors="pt")
            loss = loss_fn(model(**enc), torch.tensor([x[2] for x in batch]))
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    model.eval()
    out_dir.mkdir(parents=True, exist_ok=True)
    sample = tok(["how do i reboot my phone"], ["How do I restart my phone?"], return_tensors="pt")
    with torch.no_grad():
        reference = model(**sample).numpy()
        torch.onnx.export(
            model, (sample["input_ids"], sample["attention_mask"], sample["token_type_ids"]), str(out_dir / "model.onnx"),
            input_names=["input_ids", "attention_mask", "token_type_ids"], output_names=["score"],
            dynamic_axes={n: {0: "batch", 1: "seq"} for n in ("input_ids", "attention_mask", "token_type_ids")}
            | {"score": {0: "batch"}},
            opset_version=17, dynamo=False,
        )
    (out_dir / "tokenizer.json").write_bytes((source / "tokenizer.json").read_bytes())
    files = {"fp32": "model.onnx"}
    if int8:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        # per channel: one scale per output column. One scale per matrix (the default) cost the pair model a tenth of
        # its recall on the blind batches (near-paraphrases fell below the threshold); per channel matches fp32.
        quantize_dynamic(str(out_dir / "model.onnx"), str(out_dir / "model.int8.onnx"), weight_type=QuantType.QInt8,
                         per_channel=True)
        files["int8"] = "model.int8.onnx"
    got = PairScorer(out_dir, precision="fp32").score([("how do i reboot my phone", "How do I restart my phone?")])
    if abs(float(got[0]) - float(reference[0])) > 1e-4:
        raise RuntimeError(f"pair model: ONNX score {got[0]:.5f} differs from torch {reference[0]:.5f}")
    return files


def _batches(examples: list[tuple[str, str, float]], rng: random.Random) -> list[list[tuple[str, str, float]]]:
    """One epoch's batches: shuffled, then grouped by length within runs of BUCKET batches, so that a batch pads to
    questions of similar length (random batches padded to about twice the mean, and training time follows the
    padded length); the batches themselves are shuffled again."""
    rng.shuffle(examples)
    out = []
    for start in range(0, len(examples), BATCH * BUCKET):
        run = sorted(examples[start:start + BATCH * BUCKET], key=lambda x: len(x[0]) + len(x[1]))
        out += [run[i:i + BATCH] for i in range(0, len(run) - BATCH + 1, BATCH)]
    rng.shuffle(out)
    return out


class PairScorer:
    """Synchronous: (stored question, new question) pairs -> probability that the stored answer answers the new one.
    One order only: the model is trained on both orders of every pair, and scoring the other order as well changed
    neither precision nor recall on the first blind batches it was measured on (it doubled the cost)."""

    def __init__(self, model_dir: Path, *, precision: str = "int8", threads: int = 1) -> None:
        from .local import cpu_session, padded_tokenizer

        name = "model.int8.onnx" if precision == "int8" and (model_dir / "model.int8.onnx").exists() else "model.onnx"
        self.tokenizer = padded_tokenizer(model_dir / "tokenizer.json", MAX_TOKENS)
        self.session = cpu_session(model_dir / name, threads)
        self.score([("warm up", "warm up")])  # the first run plans and allocates: at load, not on a request

    def score(self, pairs: list[tuple[str, str]]) -> list[float]:
        encs = self.tokenizer.encode_batch(pairs)
        feed: dict[str, Any] = {
            "input_ids": np.asarray([e.ids for e in encs], dtype=np.int64),
            "attention_mask": np.asarray([e.attention_mask for e in encs], dtype=np.int64),
            "token_type_ids": np.asarray([e.type_ids for e in encs], dtype=np.int64),
        }
        (out,) = self.session.run(None, feed)
        return [float(x) for x in np.asarray(out, dtype=np.float32).reshape(-1)]
