"""`make run`'s supervisor (python -m llmgw_sidecar.devrun) as a user meets it: real Redis Stack, real gateway process,
Ctrl-C delivered to the whole process group as a terminal does. Every test uses its own ports and folders."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import yaml

from llmgw_sidecar.devredis import free_port, standalone

REPO = Path(__file__).resolve().parents[2]


def _config(tmp_path: Path) -> Path:
    cfg = yaml.safe_load((REPO / "examples" / "local.yaml").read_text())
    cfg["cache"]["semantic"]["enabled"] = False  # the model is the semantic tests' business; this is about processes
    cfg["models"][0]["mock"]["latency_ms"] = 0
    path = tmp_path / "local.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _start(tmp_path: Path, port: int, redis_port: int) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "LLMGW_PROVIDER", "LLMGW_REDIS_URL")}
    env["LLMGW_REDIS_PORT"] = str(redis_port)
    # Its own session, as `make run` in a terminal: Ctrl-C goes to the whole group.
    return subprocess.Popen([sys.executable, "-m", "llmgw_sidecar.devrun", "--config", str(_config(tmp_path)),
                             "--port", str(port), "--dir", str(tmp_path / "redis")],
                            cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True, start_new_session=True)


def _wait_ready(proc: subprocess.Popen[str], port: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"devrun exited ({proc.returncode}): {proc.stderr.read() if proc.stderr else ''}"
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise AssertionError("gateway not ready")


@pytest.fixture
def ports() -> Iterator[tuple[int, int]]:
    yield free_port(), free_port()


def test_ctrl_c_stops_everything_fast_and_quietly(tmp_path: Path, ports: tuple[int, int]) -> None:
    port, redis_port = ports
    proc = _start(tmp_path, port, redis_port)
    try:
        _wait_ready(proc, port)
        children = psutil.Process(proc.pid).children(recursive=True)
        assert len(children) == 2, [c.cmdline() for c in children]  # redis-server and the gateway
        started = time.monotonic()
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=15)
        took = time.monotonic() - started
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, err
    assert "Traceback" not in err, err
    # Typically 0.3-0.5 s; by construction at most 1.2 s for the gateway (then SIGKILL) and 0.6 s for Redis.
    assert took < 2.0, f"Ctrl-C took {took:.1f} s\n{err}"
    _, alive = psutil.wait_procs(children, timeout=2)
    assert not alive, [c.pid for c in alive]
    # One summary line, and the gateway followed LLMGW_REDIS_PORT.
    ready = [line for line in err.splitlines() if " ready on " in line]
    assert len(ready) == 1, err
    assert f"redis: standalone 127.0.0.1:{redis_port}" in ready[0] and "gpt-4o-mini -> mock" in ready[0], ready[0]
    assert "exact cache on; semantic cache off" in ready[0]


def test_killed_supervisor_takes_its_children_along(tmp_path: Path, ports: tuple[int, int]) -> None:
    port, redis_port = ports
    proc = _start(tmp_path, port, redis_port)
    try:
        _wait_ready(proc, port)
        children = psutil.Process(proc.pid).children(recursive=True)
        proc.kill()  # SIGKILL: no handler runs; the children get SIGTERM from the kernel (PR_SET_PDEATHSIG)
        proc.communicate(timeout=10)
        _, alive = psutil.wait_procs(children, timeout=5)
        assert not alive, [c.cmdline() for c in alive]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


def _run_to_exit(tmp_path: Path, port: int, redis_port: int) -> tuple[int, str]:
    proc = _start(tmp_path, port, redis_port)
    try:
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    return proc.returncode, err


def test_gateway_port_in_use_is_one_line_and_exit_2(tmp_path: Path, ports: tuple[int, int]) -> None:
    port, redis_port = ports
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", port))
        busy.listen()
        code, err = _run_to_exit(tmp_path, port, redis_port)
    assert code == 2 and "Traceback" not in err
    assert err.strip() == (f"llmgw: port {port} (the gateway) is already in use, perhaps by another make run: stop it, "
                           f"or choose another port: make run PORT={port + 1}")


def test_redis_port_taken_by_something_else(tmp_path: Path, ports: tuple[int, int]) -> None:
    port, redis_port = ports
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", redis_port))
        busy.listen()
        # Answers nothing a Redis client understands: the connection is accepted and closed.
        code, err = _run_to_exit(tmp_path, port, redis_port)
    assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert f"port {redis_port} is in use by something that is not Redis" in err
    assert f"LLMGW_REDIS_PORT={redis_port + 1} make run" in err


def test_redis_without_search_is_refused(tmp_path: Path, ports: tuple[int, int]) -> None:
    port, redis_port = ports
    plain = standalone(redis_port, tmp_path / "plain")
    plain.args = [a for a in plain.args if not a.endswith(".so") and a != "--loadmodule"]
    plain.start()
    try:
        code, err = _run_to_exit(tmp_path, port, redis_port)
    finally:
        plain.kill()
    assert code == 2 and "Traceback" not in err, err
    assert f"port {redis_port} is a Redis without the search module" in err


def test_a_redis_with_search_is_reused_and_left_running(tmp_path: Path, ports: tuple[int, int]) -> None:
    port, redis_port = ports
    other = standalone(redis_port, tmp_path / "other").start()
    try:
        proc = _start(tmp_path, port, redis_port)
        try:
            _wait_ready(proc, port)
            assert len(psutil.Process(proc.pid).children(recursive=True)) == 1  # only the gateway
            os.killpg(proc.pid, signal.SIGINT)
            _, err = proc.communicate(timeout=15)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
        assert proc.returncode == 0 and "reusing the Redis with the search module" in err, err
        assert other.alive, "a Redis make run did not start must keep running"
    finally:
        other.kill()
