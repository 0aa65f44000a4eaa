"""`llmgw-sidecar` as a newcomer meets it: --version, --help of every command, and start-up mistakes as one line with
exit code 2 (never a traceback after a "serving" line)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from llmgw_sidecar import __version__
from llmgw_sidecar.devredis import free_port

REPO = Path(__file__).resolve().parents[2]


def cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "LLMGW_REDIS_URL"}
    return subprocess.run([sys.executable, "-m", "llmgw_sidecar", *args], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=REPO)


def test_version() -> None:
    r = cli("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"llmgw-sidecar {__version__}"


def test_every_command_has_help() -> None:
    from tests.docs.test_markdown import subcommands

    commands = subcommands(cli("--help").stdout)
    assert {"serve", "check-config", "export-model"} <= commands
    for command in commands:
        r = cli(command, "--help")
        assert r.returncode == 0, r.stderr
        assert r.stdout.startswith(f"usage: llmgw-sidecar {command}"), r.stdout
        assert len(r.stdout.splitlines()) > 3, f"{command} --help says almost nothing"


def _mock_config(tmp_path: Path, **redis: str) -> Path:
    path = tmp_path / "gw.yaml"
    path.write_text(yaml.safe_dump({"models": [{"name": "m", "provider": "mock"}], "redis": redis}))
    return path


def test_port_in_use_is_one_line_naming_the_port(tmp_path: Path) -> None:
    port = free_port()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", port))
        busy.listen()
        r = cli("serve", "--config", str(_mock_config(tmp_path)), "--port", str(port))
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.strip().splitlines() == [
        f"llmgw-sidecar: port {port} on 127.0.0.1 is already in use (another gateway?): stop it, or choose another "
        "port with --port N (make run PORT=N)"]


@pytest.mark.parametrize("command", ["check-config", "serve"])
def test_redis_url_without_a_scheme_is_refused(tmp_path: Path, command: str) -> None:
    path = _mock_config(tmp_path, url="127.0.0.1:6379")
    r = cli(command, str(path)) if command == "check-config" else cli(command, "--config", str(path), "--port", "1")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "redis.url: '127.0.0.1:6379' needs a scheme: redis://HOST:PORT/DB" in r.stderr


def test_redis_url_error_hides_the_password(tmp_path: Path) -> None:
    r = cli("check-config", str(_mock_config(tmp_path, url="user:s3cret@10.0.0.1:6379")))
    assert r.returncode == 2 and "s3cret" not in r.stderr and "needs a scheme" in r.stderr


@pytest.mark.parametrize("kind", ["missing", "directory", "unreadable"])
def test_unreadable_config_file_is_one_line(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "gw.yaml"
    if kind == "directory":
        path.mkdir()
    elif kind == "unreadable":
        path.write_text("models: []\n")
        path.chmod(0)
        if os.access(path, os.R_OK):
            pytest.skip("running as root: every file is readable")
    r = cli("serve", "--config", str(path))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.startswith(f"llmgw-sidecar: cannot read config file {path}: ")
    assert len(r.stderr.strip().splitlines()) == 1
