"""Static checks of the Dockerfiles (no Docker engine here): pinned bases, non-root USER that matches what the webhook
and chart enforce, documented entrypoints and health checks, COPY sources that exist, a lean build context."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import pytest

from llmgw_operator import injection
from llmgw_operator.builders.sidecar_config import CONFIG_PATH
from tests.chart.helpers import REPO, one, render

DOCKERFILES = {"sidecar": REPO / "sidecar" / "Dockerfile", "operator": REPO / "operator" / "Dockerfile"}


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    text = re.sub(r"\\\n", " ", path.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def stages(path: Path) -> list[tuple[str, list[tuple[str, str]]]]:
    args = {k: v for k, v in (a.split("=", 1) for i, a in instructions(path) if i == "ARG" and "=" in a)}
    result: list[tuple[str, list[tuple[str, str]]]] = []
    for ins, rest in instructions(path):
        if ins == "FROM":
            m = re.match(r"(\S+)(?:\s+AS\s+(\S+))?", rest, re.I)
            assert m
            image = re.sub(r"\$\{(\w+)\}", lambda g: args[g.group(1)], m.group(1))
            result.append((m.group(2) or "", [("FROM", image)]))
        elif result:
            result[-1][1].append((ins, rest))
    return result


def final(path: Path) -> list[tuple[str, str]]:
    """Instructions in effect for the default target: the last stage and the stages it is built FROM."""
    st = stages(path)
    names = {name: body for name, body in st}
    chain, body = [], st[-1][1]
    while True:
        chain = body[1:] + chain
        parent = body[0][1]
        if parent not in names:
            return chain
        body = names[parent]


@pytest.mark.parametrize("name", sorted(DOCKERFILES))
def test_bases_are_pinned(name: str) -> None:
    stage_names = {n for n, _ in stages(DOCKERFILES[name])}
    for _, body in stages(DOCKERFILES[name]):
        image = body[0][1]
        if image in stage_names:
            continue
        assert "@sha256:" in image or re.search(r":\d+(\.\d+)+[\w.-]*$", image), f"unpinned base {image}"
        assert not image.endswith(":latest")
    assert "latest" not in DOCKERFILES[name].read_text().replace("# ", "")


@pytest.mark.parametrize("name", sorted(DOCKERFILES))
def test_runs_as_the_non_root_uid_the_cluster_expects(name: str) -> None:
    users = [rest for ins, rest in final(DOCKERFILES[name]) if ins == "USER"]
    assert users, "no USER in the final image"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0, "numeric non-root USER (runAsNonRoot can verify only numbers)"
    assert int(uid) == injection.SIDECAR_UID
    if name == "operator":
        dep = one(render(), "Deployment")
        assert dep["spec"]["template"]["spec"]["securityContext"]["runAsUser"] == int(uid)


@pytest.mark.parametrize("name", sorted(DOCKERFILES))
def test_entrypoint_and_healthcheck_as_documented(name: str) -> None:
    body = final(DOCKERFILES[name])
    entry = json.loads(next(rest for ins, rest in body if ins == "ENTRYPOINT"))
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert entry == [f"llmgw-{name}"] and entry[0] in scripts
    health = next(rest for ins, rest in body if ins == "HEALTHCHECK")
    assert "/healthz" in health and "127.0.0.1" in health
    if name == "sidecar":
        assert json.loads(next(rest for ins, rest in body if ins == "CMD")) == ["serve", "--config", CONFIG_PATH]
        assert ":4000/" in health and "EXPOSE" in dict(body) and dict(body)["EXPOSE"] == "4000"


def test_sidecar_has_an_embeddings_variant_and_a_slim_default() -> None:
    st = dict(stages(DOCKERFILES["sidecar"]))
    assert list(dict(stages(DOCKERFILES["sidecar"])))[-1] == "sidecar", "the default target is the slim image"
    emb = st["sidecar-embeddings"]
    assert any(i == "COPY" and "--from=model" in r and ".cache/models/all-MiniLM-L6-v2-onnx" in r for i, r in emb)
    assert not any("--from=model" in r for _, r in st["sidecar"])
    assert not any("torch" in r for _, r in st["runtime"]), "torch stays in the export stage"


@pytest.mark.parametrize("name", sorted(DOCKERFILES))
def test_copy_sources_exist_and_are_not_ignored(name: str) -> None:
    ignored = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")]
    for ins, rest in instructions(DOCKERFILES[name]):
        if ins != "COPY" or "--from=" in rest:
            continue
        *sources, _dest = [p for p in rest.split() if not p.startswith("--")]
        for src in sources:
            assert (REPO / src).exists(), src
            assert src.rstrip("/").split("/")[0] not in ignored, f"{src} is excluded by .dockerignore"
    assert {".git", ".venv"} <= set(ignored)
