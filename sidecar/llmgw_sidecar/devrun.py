"""`make run`: a local Redis Stack and the gateway, started together and stopped together by one Ctrl-C.

Both children run in their own sessions, so the terminal's Ctrl-C reaches only this supervisor, which stops the gateway
first (it hands its spend buffer to Redis on the way out) and Redis second. On Linux both children also get SIGTERM
if the supervisor itself is killed, so nothing outlives `make run`.
Start-up mistakes (a port in use, something else on the Redis port) are one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import redis

from .devredis import RedisProcess, standalone

EXIT_USAGE = 2
STOP_GATEWAY_S = 1.2  # the gateway's own shutdown takes ~0.2 s; past this it is killed (Ctrl-C must end in < 2 s)
STOP_REDIS_S = 0.6


class StartError(Exception):
    """A start-up mistake the user can fix: printed as one line, exit code 2."""


def _die_with_parent() -> None:
    # Runs in the child between fork and exec: PR_SET_PDEATHSIG (1) = SIGTERM when the supervisor dies, even by SIGKILL.
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)


PREEXEC = _die_with_parent if sys.platform.startswith("linux") else None


def port_in_use(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as aiohttp and redis bind: TIME_WAIT is no conflict
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


def existing_redis(port: int, data_dir: Path) -> str | None:
    """What already answers on 127.0.0.1:port: None (nothing), or a description of a Redis we can use.
    Raises StartError when it is something we must not use."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return None
    hint = f"stop it, or choose another port: LLMGW_REDIS_PORT={port + 1} make run"
    client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=2, socket_connect_timeout=1, protocol=2,
                         decode_responses=True)
    try:
        client.ping()
        modules = {str(m.get("name", "")).lower() for m in client.module_list()}
        try:
            ours = Path(client.config_get("dir").get("dir") or "").resolve() == data_dir.resolve()
        except redis.ResponseError:  # CONFIG may be renamed or forbidden on someone else's Redis
            ours = False
    except redis.AuthenticationError:
        raise StartError(f"port {port} is a Redis that needs a password (not the one make run starts): {hint}") from None
    except (redis.RedisError, OSError, ValueError):
        raise StartError(f"port {port} is in use by something that is not Redis: {hint}") from None
    finally:
        client.close()
    if ours:
        return f"reusing the Redis Stack already running on 127.0.0.1:{port} with data in {data_dir}"
    if "search" in modules or "ft" in modules:
        return f"reusing the Redis with the search module already running on 127.0.0.1:{port} (it keeps running)"
    raise StartError(f"port {port} is a Redis without the search module (not the one make run starts): {hint}")


class Supervisor:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.redis: RedisProcess | None = None
        self.gateway: subprocess.Popen[bytes] | None = None
        self.stop_signal: int | None = None

    def _on_signal(self, signum: int, _frame: object) -> None:
        self.stop_signal = signum

    def start(self) -> None:
        a = self.args
        data_dir = Path(a.dir).resolve()
        if port_in_use(a.host, a.port):
            raise StartError(f"port {a.port} (the gateway) is already in use, perhaps by another make run: stop it, "
                             f"or choose another port: make run PORT={a.port + 1}")
        note = existing_redis(a.redis_port, data_dir)
        if note is None:
            # appendfsync always: the gateway's spend hand-off waits for the AOF fsync (WAITAOF), which with the
            # default everysec costs up to a second of every Ctrl-C; a dev Redis does not need the write throughput.
            self.redis = standalone(a.redis_port, data_dir, persist=True, extra=["--appendfsync", "always"])
            self.redis.preexec_fn = PREEXEC
            try:
                self.redis.start()
            except (RuntimeError, TimeoutError) as e:
                raise StartError(f"Redis Stack did not start: {e} (see {data_dir}/redis-server-{a.redis_port}.log)"
                                 ) from None
            note = f"started Redis Stack on 127.0.0.1:{a.redis_port} (data in {a.dir})"
        print(f"llmgw: {note}", file=sys.stderr, flush=True)
        env = dict(os.environ, LLMGW_REDIS_URL=f"redis://127.0.0.1:{a.redis_port}/0")
        # The example config's model goes to the real OpenAI API when a key is there, to the mock otherwise.
        env.setdefault("LLMGW_PROVIDER", "openai" if env.get("OPENAI_API_KEY") else "mock")
        cmd = [sys.executable, "-m", "llmgw_sidecar", "serve", "--config", a.config, "--host", a.host,
               "--port", str(a.port)]
        self.gateway = subprocess.Popen(cmd, env=env, start_new_session=True, preexec_fn=PREEXEC)

    def wait(self) -> int:
        assert self.gateway is not None
        while self.stop_signal is None:
            try:
                return self.gateway.wait(0.1)
            except subprocess.TimeoutExpired:
                continue
        return 0

    def stop(self) -> None:
        if self.gateway is not None and self.gateway.poll() is None:
            self.gateway.send_signal(signal.SIGTERM)
            try:
                self.gateway.wait(STOP_GATEWAY_S)
            except subprocess.TimeoutExpired:
                self.gateway.kill()
                self.gateway.wait()
        if self.redis is not None and self.redis.alive:
            self.redis.stop(timeout_s=STOP_REDIS_S)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m llmgw_sidecar.devrun",
                                description="Run a local Redis Stack and the gateway (what `make run` does).")
    p.add_argument("--config", default="examples/local.yaml", help="gateway configuration (default: %(default)s)")
    p.add_argument("--host", default="127.0.0.1", help="gateway listen address (default: %(default)s)")
    p.add_argument("--port", type=int, default=4000, help="gateway port (default: %(default)s)")
    p.add_argument("--redis-port", type=int, default=int(os.environ.get("LLMGW_REDIS_PORT") or 6379),
                   help="Redis port (default: $LLMGW_REDIS_PORT or 6379)")
    p.add_argument("--dir", default=".data/redis", help="Redis data folder (default: %(default)s)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    sup = Supervisor(parse_args(argv))
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, sup._on_signal)
    try:
        sup.start()
        code = sup.wait()
    except StartError as e:
        print(f"llmgw: {e}", file=sys.stderr, flush=True)
        code = EXIT_USAGE
    finally:
        stopping = time.monotonic()
        sup.stop()
    if sup.stop_signal is not None:
        print(f"llmgw: stopped the gateway{' and Redis' if sup.redis else ''} in {time.monotonic() - stopping:.1f} s",
              file=sys.stderr, flush=True)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
