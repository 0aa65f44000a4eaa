"""The release workflow builds what the chart pulls: multi-arch, no provenance attestation, pushed on tags only."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
import yaml

from tests.chart.helpers import REPO

WORKFLOW = REPO / ".github" / "workflows" / "release.yml"


def load() -> dict:
    doc = yaml.safe_load(WORKFLOW.read_text())
    doc["on"] = doc.pop(True, doc.get("on"))  # YAML 1.1 reads the key `on` as true
    return doc


def build_step(doc: dict) -> dict:
    return next(s for s in doc["jobs"]["images"]["steps"] if s.get("uses", "").startswith("docker/build-push-action"))


def test_triggers_and_push_only_on_tags() -> None:
    doc = load()
    assert doc["on"]["push"]["tags"] == ["v*"] and "workflow_dispatch" in doc["on"]
    step = build_step(doc)["with"]
    assert step["push"] == "${{ github.ref_type == 'tag' }}"
    assert doc["permissions"]["packages"] == "write"


def test_multi_arch_without_provenance() -> None:
    step = build_step(load())["with"]
    assert set(step["platforms"].split(",")) == {"linux/amd64", "linux/arm64"}
    assert step["provenance"] is False and step["sbom"] is False


def test_images_are_the_ones_the_chart_pulls() -> None:
    doc = load()
    values = yaml.safe_load((REPO / "charts" / "llmgateway" / "values.yaml").read_text())
    chart_repos = {values["operator"]["image"]["repository"], values["sidecar"]["image"]["repository"]}
    matrix = doc["jobs"]["images"]["strategy"]["matrix"]["include"]
    # ghcr.io/<owner>/<image>: for the project's own repository (owner llmgateway) exactly the chart's defaults.
    assert {f"ghcr.io/llmgateway/{m['image']}" for m in matrix} == chart_repos
    for m in matrix:
        dockerfile = (REPO / m["dockerfile"]).read_text()
        assert re.search(rf"^FROM .* AS {m['target']}$", dockerfile, flags=re.M), m
    assert {m["suffix"] for m in matrix if m["image"] == "sidecar"} == {"", "-embeddings"}  # as values.yaml describes


def test_run_scripts_pass_shellcheck(tmp_path) -> None:
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck not installed")
    for i, step in enumerate(s for s in load()["jobs"]["images"]["steps"] if "run" in s):
        script = re.sub(r"\$\{\{[^}]*\}\}", "X", step["run"])  # GitHub expressions are substituted before bash runs
        path = tmp_path / f"step{i}.sh"
        path.write_text("#!/usr/bin/env bash\n" + script)
        out = subprocess.run(["shellcheck", "--severity=style", str(path)], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stdout
