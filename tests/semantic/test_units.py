"""Pure parts of the semantic layer: what is embedded vs matched exactly, micro-batching, export checks, CLI."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from llmgw_sidecar.cache.semantic import context_hash, question_and_context, scope_hash
from llmgw_sidecar.embeddings.export import ExportError, default_source, export
from llmgw_sidecar.embeddings.local import LocalEmbedder
from llmgw_sidecar.metrics import Metrics

from .conftest import new_metrics, sample

REPO = Path(__file__).resolve().parents[2]


def body(*msgs: tuple[str, object], **params: object) -> dict:
    return {"model": "m", "messages": [{"role": r, "content": c} for r, c in msgs], **params}


def test_last_user_message_is_embedded_and_the_rest_is_context() -> None:
    q, rest = question_and_context(body(("system", "be brief"), ("user", "  Hi there?  ")), 100)  # type: ignore[misc]
    assert q == "Hi there?"
    assert rest["messages"][-1] == {"role": "user"}  # the question's text is not part of the exact context
    a = context_hash("up", question_and_context(body(("system", "s"), ("user", "one")), 100)[1])  # type: ignore[index]
    b = context_hash("up", question_and_context(body(("system", "s"), ("user", "two")), 100)[1])  # type: ignore[index]
    assert a == b, "only the last question differs: same context"
    assert a != context_hash("up", question_and_context(body(("system", "t"), ("user", "one")), 100)[1])  # type: ignore[index]
    assert a != context_hash("other-upstream", question_and_context(body(("system", "s"), ("user", "one")), 100)[1])  # type: ignore[index]
    with_t = question_and_context(body(("system", "s"), ("user", "one"), temperature=0.7), 100)
    assert a != context_hash("up", with_t[1])  # type: ignore[index]
    # fields that never change the answer do not split the context
    tracked = question_and_context(body(("system", "s"), ("user", "one"), user="u", stream=True, metadata={"x": 1}), 100)
    assert a == context_hash("up", tracked[1])  # type: ignore[index]
    assert scope_hash("gw|ns:a", None) != scope_hash("gw|ns:b", None) != scope_hash("gw|ns:b", "x")


@pytest.mark.parametrize("b", [
    body(("user", "q"), ("assistant", "a")),  # last message not from the user
    body(("user", [{"type": "image_url", "image_url": {"url": "x"}}])),  # the model would not see the image
    body(("user", "x" * 101)),  # too long
    body(("user", "   ")),
    {"model": "m"},
])
def test_ineligible(b: dict) -> None:
    assert question_and_context(b, 100) is None


def test_text_parts_are_joined() -> None:
    q, _ = question_and_context(body(("user", [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}])), 100)  # type: ignore[misc]
    assert q == "a\nb"


async def test_micro_batching_under_concurrency(model_dir: Path) -> None:
    m: Metrics = new_metrics()
    e = LocalEmbedder(model_dir, max_batch=8, metrics=m)
    texts = [f"question number {w}" for w in ("one", "two", "three", "four", "five", "six", "seven", "eight")] * 4
    vecs = await asyncio.gather(*(e.embed(t) for t in texts))
    batches = sample(m, "llmgw_embedding_batch_size_count")
    assert batches < len(texts), "concurrent requests share batches"
    assert sample(m, "llmgw_embedding_batch_size_sum") == len(texts)
    assert sample(m, "llmgw_embedding_duration_seconds_count", {"provider": "local"}) == len(texts)
    single = e.embed_sync(texts[:8])
    # batched (padded) and single results agree, and vectors are unit length
    for i in range(8):
        alone = e.embed_sync([texts[i]])[0]
        assert np.allclose(vecs[i], alone, atol=1e-5) and np.allclose(single[i], alone, atol=1e-5)
        assert abs(float(np.linalg.norm(alone)) - 1) < 1e-5
    await e.close()


def test_export_refuses_tampered_files(tmp_path: Path) -> None:
    src = tmp_path / "src"
    shutil.copytree(default_source(), src)
    with (src / "tokenizer.json").open("a") as f:
        f.write(" ")
    with pytest.raises(ExportError, match="does not match the pinned"):
        export(src, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    with pytest.raises(ExportError, match="no pinned hashes"):
        export(src, tmp_path / "out", name="some-other-model")


def test_cli_export_model_reuses_a_complete_export(model_dir: Path) -> None:
    r = subprocess.run([sys.executable, "-m", "llmgw_sidecar", "export-model", "--out", str(model_dir)],
                       capture_output=True, text=True, timeout=60, cwd=REPO)
    assert r.returncode == 0, r.stderr
    assert "exported all-MiniLM-L6-v2" in r.stdout


async def test_reload_shares_the_loaded_model(model_dir: Path) -> None:
    from llmgw_sidecar.config import EmbeddingConfig
    from llmgw_sidecar.embeddings.factory import SharedLocal, make_embedder

    m = new_metrics()
    cfg = EmbeddingConfig(model_dir=str(model_dir))
    old, new = make_embedder(cfg, m), make_embedder(cfg, m)  # the runtime after a reload, before the old one closes
    assert isinstance(old, SharedLocal) and isinstance(new, SharedLocal)
    assert old.inner is new.inner, "one model in memory"
    other = make_embedder(EmbeddingConfig(model_dir=str(model_dir), precision="fp32"), m)  # the default is int8
    assert other.inner is not old.inner and other.index_tag != old.index_tag  # type: ignore[attr-defined]
    await old.close()
    assert (await new.embed("still works")).shape == (384,)
    await new.close()
    with pytest.raises(Exception, match="closed"):
        await new.inner.embed("closed now")
    await other.close()


def test_distance_threshold_default_is_one_number_everywhere() -> None:
    """The CRD's default (what the operator renders) and the sidecar's default are the same measured value."""
    from pathlib import Path

    import yaml

    from llmgw_sidecar.config import SemanticCacheConfig

    repo = Path(__file__).resolve().parents[2]
    crd = yaml.safe_load((repo / "charts/llmgateway/crds/llmgateways.llmgateway.dev.yaml").read_text())
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    semantic = schema["properties"]["spec"]["properties"]["cache"]["properties"]["semantic"]["properties"]
    assert semantic["distanceThreshold"]["default"] == SemanticCacheConfig().distance_threshold
    docs = (repo / "docs/semantic-cache.md").read_text()
    assert f"distance_threshold: {SemanticCacheConfig().distance_threshold}" in docs
