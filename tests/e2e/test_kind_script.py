"""The kind end-to-end script cannot run here (no Docker, no kind): check what can be checked without a cluster."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest
import yaml

from tests.chart.helpers import REPO

SCRIPT = REPO / "tests" / "e2e" / "kind.sh"


def test_shellcheck_clean() -> None:
    if shutil.which("shellcheck") is None:
        # CI installs it (.ci/system-deps.sh): there the lint must run, not be skipped.
        assert not os.environ.get("CI"), "shellcheck missing in CI: .ci/system-deps.sh should have installed it"
        pytest.skip("shellcheck not installed (make test installs it, or apt-get install shellcheck)")
    out = subprocess.run(["shellcheck", "--severity=style", str(SCRIPT)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


def test_strict_mode_trap_and_syntax() -> None:
    text = SCRIPT.read_text()
    assert text.startswith("#!/usr/bin/env bash\n") and "set -euo pipefail" in text
    assert "trap cleanup EXIT" in text
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True, timeout=30)


def test_missing_tools_fail_fast_with_a_clear_message(tmp_path) -> None:
    # Only the basics on PATH: no docker/kind/kubectl/helm. Nothing may be created, the message must say what is missing.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ["date", "dirname", "sleep", "grep"]:
        found = shutil.which(tool)
        assert found
        os.symlink(found, bin_dir / tool)
    out = subprocess.run([shutil.which("bash") or "bash", str(SCRIPT)], capture_output=True, text=True, timeout=60,
                         env={"PATH": str(bin_dir), "HOME": str(tmp_path)})
    assert out.returncode == 1
    assert "'docker' is not installed" in out.stderr


def test_kind_config_and_demo_app() -> None:
    cfg = yaml.safe_load((REPO / "kind-config.yaml").read_text())
    assert cfg["kind"] == "Cluster" and cfg["apiVersion"] == "kind.x-k8s.io/v1alpha4"
    images = {n["image"] for n in cfg["nodes"]}
    assert all(":v1." in i and int(i.split(":v1.")[1].split(".")[0]) >= 29 for i in images), "native sidecars on"
    assert any(n["role"] == "worker" for n in cfg["nodes"])
    demo = yaml.safe_load((REPO / "manifests" / "examples" / "demo-app.yaml").read_text())
    assert demo["spec"]["template"]["metadata"]["annotations"]["llmgateway.dev/inject"] == "chat"
    assert "kubectl apply -n" in (REPO / "manifests" / "examples" / "demo-app.yaml").read_text()
    text = SCRIPT.read_text()
    assert "manifests/examples/demo-app.yaml" in text and "hit-exact" in text
