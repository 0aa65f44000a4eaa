"""Real HTTP servers for the tests, each in its own thread and event loop so that the official (sync or async)
openai client can call them from the test: the sidecar under test, and a fake OpenAI-compatible upstream."""

from __future__ import annotations

import asyncio
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable, Coroutine
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

from aiohttp import web

from llmgw_sidecar.devredis import free_port

T = TypeVar("T")


class ThreadServer:
    """Runs an aiohttp Application on 127.0.0.1:<free port> in a background thread."""

    def __init__(self, make_app: Callable[[], web.Application]) -> None:
        self.port = free_port()
        self._make_app = make_app
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.app: web.Application | None = None
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        fut: Future[T] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return fut.result(timeout)

    def start(self) -> ThreadServer:
        self._thread.start()

        async def up() -> None:
            self.app = self._make_app()
            self._runner = web.AppRunner(self.app, access_log=None)
            await self._runner.setup()
            await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

        self.call(up())
        return self

    def stop(self) -> None:
        if self._runner is not None:
            self.call(self._runner.cleanup())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)


def wait_ready(proc: subprocess.Popen[Any], url: str, log: Path, timeout: float = 30.0) -> None:
    """Wait until a sidecar process answers GET /readyz; fail with its log if it exits or the timeout passes."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url + "/readyz", timeout=2):
                return
        except OSError:
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
