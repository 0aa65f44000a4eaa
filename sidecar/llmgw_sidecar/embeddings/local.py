"""In-process embeddings: an exported ONNX sentence model run by onnxruntime, tokenised by `tokenizers` (no torch).

Inference runs on one worker thread, never on the event loop. Requests that arrive while a batch is running queue up
and go together in the next batch (micro-batching): under concurrency the model runs fewer, larger batches, which is
cheaper per text than one call per request, and a lone request pays no batching delay at all.
"""

from __future__ import annotations

import asyncio
import json
import queue
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..metrics import Metrics
from .base import Embedder, EmbeddingError, safe_tag

MANIFEST = "llmgw-model.json"
_STOP = object()


def padded_tokenizer(tokenizer_file: Path, max_tokens: int) -> Any:
    """The model's tokenizer, padding each batch to its own longest text and cutting at max_tokens: the shipped
    tokenizer.json pads every input to 128 tokens, and short questions would pay for 128."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer_file))
    tok.enable_truncation(max_length=max_tokens)
    tok.enable_padding(pad_id=0, pad_token="[PAD]")
    return tok


def cpu_session(onnx_file: Path, threads: int) -> Any:
    """An onnxruntime CPU session with `threads` intra-op threads and every graph optimisation."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(onnx_file), sess_options=opts, providers=["CPUExecutionProvider"])


class OnnxSentenceEncoder:
    """Synchronous encoder: texts -> unit vectors. Pooling and normalisation live inside the exported graph."""

    def __init__(self, onnx_file: Path, tokenizer_file: Path, *, max_tokens: int, threads: int) -> None:
        self.tokenizer = padded_tokenizer(tokenizer_file, max_tokens)
        self.session = cpu_session(onnx_file, threads)
        self.dims = int(self.session.get_outputs()[0].shape[-1])
        # The first run allocates and plans (tens of ms): pay it at load, not on the first request's deadline.
        self.dims = int(self.encode(["warm up"]).shape[-1])

    def encode(self, texts: list[str]) -> np.ndarray:
        encs = self.tokenizer.encode_batch(texts)
        ids = np.asarray([e.ids for e in encs], dtype=np.int64)
        mask = np.asarray([e.attention_mask for e in encs], dtype=np.int64)
        (out,) = self.session.run(None, {"input_ids": ids, "attention_mask": mask})
        return np.asarray(out, dtype=np.float32)


def load_manifest(model_dir: Path) -> dict[str, Any]:
    path = model_dir / MANIFEST
    try:
        manifest: dict[str, Any] = json.loads(path.read_text())
        return manifest
    except FileNotFoundError:
        raise EmbeddingError(
            "unavailable", f"no exported model in {model_dir} (run: llmgw-sidecar export-model --out {model_dir})"
        ) from None
    except (OSError, ValueError) as e:
        raise EmbeddingError("unavailable", f"cannot read {path}: {e}") from None


class LocalEmbedder(Embedder):
    provider = "local"

    def __init__(self, model_dir: str | Path, *, precision: str = "fp32", max_batch: int = 16, threads: int = 1,
                 metrics: Metrics | None = None, lazy: bool = False) -> None:
        """lazy: load the ONNX session on first use, not now (the semantic cache with a first stage and a pair model
        never embeds with the full model: it would hold ~50 MB for nothing)."""
        self.model_dir = Path(model_dir)
        manifest = load_manifest(self.model_dir)
        files = manifest.get("files", {})
        if precision not in files:
            raise EmbeddingError("unavailable", f"{self.model_dir} has no {precision} model (export with --int8)")
        self._file = self.model_dir / files[precision]
        self._max_tokens = int(manifest.get("max_tokens", 256))
        self._threads = threads
        self._encoder: OnnxSentenceEncoder | None = None
        self._load_lock = threading.Lock()
        self.dims = int(manifest.get("dims", 0))
        if not lazy or not self.dims:
            self.load()
        self.model_name = str(manifest.get("name", self.model_dir.name))
        self.precision = precision
        self.max_batch = max_batch
        self.metrics = metrics
        self._q: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._worker, name="llmgw-embed", daemon=True)
        self._thread.start()
        self._closed = False

    def load(self) -> OnnxSentenceEncoder:
        """The ONNX session, loaded now if it was not yet (thread-safe)."""
        with self._load_lock:
            if self._encoder is None:
                try:
                    self._encoder = OnnxSentenceEncoder(self._file, self.model_dir / "tokenizer.json",
                                                        max_tokens=self._max_tokens, threads=self._threads)
                except Exception as e:  # noqa: BLE001 - onnxruntime raises its own types; any of them: unavailable
                    raise EmbeddingError("unavailable", f"cannot load {self.model_dir}: {e}") from None
                self.dims = self._encoder.dims
            return self._encoder

    @property
    def index_tag(self) -> str:
        return safe_tag(self.model_name, self.precision, str(self.dims))

    async def embed(self, text: str) -> np.ndarray:
        if self._closed:
            raise EmbeddingError("unavailable", "embedder is closed")
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[np.ndarray] = loop.create_future()
        t0 = time.perf_counter()
        self._q.put((text, fut, loop))
        try:
            vec = await fut
        finally:
            if self.metrics is not None:
                self.metrics.embedding_latency.labels(self.provider).observe(time.perf_counter() - t0)
        return vec

    def embed_sync(self, texts: list[str]) -> np.ndarray:
        """For offline use (evaluation, benchmarks): encode in the caller's thread."""
        return self.load().encode(texts)

    def _worker(self) -> None:
        while True:
            first = self._q.get()
            if first is _STOP:
                self._fail_queued()
                return
            batch = [first]
            # Take whatever queued up while the previous batch ran; never wait for more (no added latency).
            while len(batch) < self.max_batch:
                try:
                    item = self._q.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP:
                    self._q.put(_STOP)
                    break
                batch.append(item)
            self._run(batch)

    def _run(self, batch: list[tuple[str, asyncio.Future[np.ndarray], asyncio.AbstractEventLoop]]) -> None:
        if self.metrics is not None:
            self.metrics.embedding_batch_size.observe(len(batch))
        try:
            vecs = self.load().encode([t for t, _, _ in batch])
        except Exception as e:  # noqa: BLE001 - hand any inference failure to every waiter as an EmbeddingError
            err = EmbeddingError("failed", f"local embedding failed: {type(e).__name__}: {e}")
            for _, fut, loop in batch:
                loop.call_soon_threadsafe(_set_exception, fut, err)
            return
        for i, (_, fut, loop) in enumerate(batch):
            loop.call_soon_threadsafe(_set_result, fut, vecs[i])

    def _fail_queued(self) -> None:
        """Whoever is still waiting after close() gets an error now instead of waiting for a deadline."""
        err = EmbeddingError("unavailable", "embedder is closed")
        while True:
            try:
                item = self._q.get_nowait()
            except queue.Empty:
                return
            if item is not _STOP:
                _, fut, loop = item
                loop.call_soon_threadsafe(_set_exception, fut, err)

    async def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._q.put(_STOP)
            await asyncio.to_thread(self._thread.join, 5.0)


def _set_result(fut: asyncio.Future[np.ndarray], value: np.ndarray) -> None:
    if not fut.done():  # the waiter may have given up (deadline, cancelled request)
        fut.set_result(value)


def _set_exception(fut: asyncio.Future[np.ndarray], err: Exception) -> None:
    if not fut.done():
        fut.set_exception(err)
