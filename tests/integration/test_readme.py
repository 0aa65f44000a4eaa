"""The README's examples run as written (only the address is pointed at the test gateway)."""

from __future__ import annotations

import contextlib
import io
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.integration.conftest import gateway_config

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


@pytest.fixture
def local_gateway(make_gateway, redis_standalone: str, fake_upstream):
    cfg = gateway_config({"url": redis_standalone}, fake_upstream.url)
    cfg["models"].append({"name": "gpt-4o-mini", "provider": "mock"})
    return make_gateway(cfg)


def test_readme_python_example(local_gateway) -> None:
    code = re.search(r"```python\n(.*?)```", README, flags=re.S).group(1)
    code = code.replace("http://127.0.0.1:4000", local_gateway.url)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "README.md", "exec"), {})
    lines = out.getvalue().splitlines()
    assert [line.split()[0] for line in lines] == ["miss", "hit-exact"]


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl not installed")
def test_readme_curl_example(local_gateway) -> None:
    cmd = re.search(r"```bash\n(curl .*?)```", README, flags=re.S).group(1)
    cmd = cmd.replace("http://127.0.0.1:4000", local_gateway.url)
    outs = [subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, timeout=30).stdout for _ in range(2)]
    assert "x-llmgw-cache: miss" in outs[0].lower() and "x-llmgw-cache: hit-exact" in outs[1].lower()
