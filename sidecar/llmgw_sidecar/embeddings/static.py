"""The first stage of the semantic cache: a static embedding model (one vector per token, averaged), distilled from
the same MiniLM with model2vec at export time. Embedding a question costs microseconds (a tokenizer call and a mean
of a few rows), so every lookup can afford it on the event loop; the full model runs only for candidates this stage
finds close enough (cache/semantic.py). At run time it needs only numpy, tokenizers and safetensors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .base import EmbeddingError


class StaticEncoder:
    def __init__(self, folder: Path) -> None:
        from safetensors.numpy import load_file
        from tokenizers import Tokenizer

        try:
            self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
            self.tokenizer.no_padding()
            self.tokenizer.no_truncation()
            tensors = load_file(str(folder / "model.safetensors"))
            config = json.loads((folder / "config.json").read_text())
        except (OSError, ValueError, KeyError) as e:
            raise EmbeddingError("unavailable", f"cannot load the static model in {folder}: {e}") from None
        # float16 rows (7.5 MB for 30k tokens x 128): averaged in float32
        self.table = next(iter(tensors.values()))
        self.dims = int(self.table.shape[1])
        self.unk = self.tokenizer.token_to_id(config.get("unk_token") or "[UNK]")
        self.name = folder.name

    def encode(self, text: str) -> np.ndarray:
        ids = [i for i in self.tokenizer.encode(text, add_special_tokens=False).ids if i != self.unk] or [self.unk]
        vec: np.ndarray = self.table[ids].astype(np.float32).mean(axis=0)
        n = float(np.linalg.norm(vec))
        return vec / n if n > 0 else vec


def distill(source: Path, out: Path, dims: int) -> None:
    """model2vec distillation of the sentence-transformers folder `source` into `out` (export time only: needs torch
    and the model2vec[distill] extra; reads local files, downloads nothing)."""
    from model2vec.distill import distill as m2v_distill

    model = m2v_distill(model_name=str(source), pca_dims=dims)
    model.save_pretrained(str(out))
