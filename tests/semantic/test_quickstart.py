"""The README quick start, as `make run` runs it: a real sidecar process on examples/local.yaml (mock provider, local
semantic model), driven by the README's own curl commands: miss, exact hit, semantic hit for the paraphrase."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import yaml

from llmgw_sidecar.devredis import free_port

REPO = Path(__file__).resolve().parents[2]


def test_quickstart_with_examples_local_yaml(tmp_path: Path, redis_standalone: str, model_dir: Path) -> None:
    cfg = yaml.safe_load((REPO / "examples" / "local.yaml").read_text())
    cfg["redis"]["url"] = redis_standalone
    cfg["redis"]["key_prefix"] = "quickstart"
    cfg["cache"]["semantic"]["embedding"]["model_dir"] = str(model_dir)
    cfg["models"][0]["mock"]["latency_ms"] = 0
    port = free_port()
    (tmp_path / "local.yaml").write_text(yaml.safe_dump(cfg))
    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "LLMGW_PROVIDER")}
    proc = subprocess.Popen([sys.executable, "-m", "llmgw_sidecar", "serve", "--config", str(tmp_path / "local.yaml"),
                             "--port", str(port)], env=env, cwd=REPO)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                assert proc.poll() is None, "sidecar exited"
                assert time.monotonic() < deadline, "sidecar not ready"
                time.sleep(0.1)
        readme = (REPO / "README.md").read_text().replace("http://127.0.0.1:4000", f"http://127.0.0.1:{port}")
        exact_cmd, paraphrase_cmd = re.findall(r"```bash\n(curl .*?)```", readme, flags=re.S)[:2]

        def cache_header(cmd: str) -> str:
            out = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, timeout=30).stdout
            return re.search(r"x-llmgw-cache: (\S+)", out, flags=re.I).group(1)

        assert [cache_header(exact_cmd), cache_header(exact_cmd)] == ["miss", "hit-exact"]
        # The semantic entry is written in the background after the first answer: give it a moment (a paraphrase
        # sent before it lands would be a miss and store its own exact entry).
        time.sleep(1.0)
        assert cache_header(paraphrase_cmd) == "hit-semantic"
        spain = paraphrase_cmd.replace("Which city is the capital of France?", "What is the capital of Spain?")
        assert cache_header(spain) == "miss"
    finally:
        proc.terminate()
        proc.wait(15)
