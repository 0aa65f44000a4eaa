"""Real sidecar processes (`python -m llmgw_sidecar serve`) and helpers shared by the limits and spend tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from llmgw_sidecar.devredis import free_port

REPO = Path(__file__).resolve().parents[2]


def sidecar_config(redis: dict[str, Any], **over: Any) -> dict[str, Any]:
    """A mock-provider gateway with its own key prefix (tests share the session Redis)."""
    cfg: dict[str, Any] = {
        "gateway": {"name": "gw", "namespace": "team-a"},
        "redis": {"key_prefix": f"t{uuid.uuid4().hex[:10]}", **redis},
        "models": [{"name": "m", "provider": "mock", "mock": {"completion_tokens": 16},
                    "pricing": {"input_per_1m": 1.0, "output_per_1m": 3.0}}],
        "cache": {"exact": {"enabled": False}},
        "spend": {"flush_interval_s": 0.1},
    }
    cfg.update(over)
    return cfg


@dataclass
class Sidecar:
    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(10)

    def metrics_text(self) -> str:
        with urllib.request.urlopen(self.url + "/metrics", timeout=5) as r:
            return r.read().decode()


def start_sidecars(tmp: Path, cfg: dict[str, Any], n: int = 1, timeout: float = 30.0) -> list[Sidecar]:
    """Start n sidecars with one config in parallel and wait until each answers /healthz."""
    path = tmp / f"sidecar-{uuid.uuid4().hex[:6]}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "POD_NAMESPACE": "team-a", "POD_SERVICE_ACCOUNT": "app"}
    out = []
    for i in range(n):
        port = free_port()
        log = tmp / f"sidecar-{port}.log"
        with open(log, "wb") as fh:
            proc = subprocess.Popen(
                [sys.executable, "-m", "llmgw_sidecar", "serve", "--config", str(path), "--port", str(port)],
                cwd=REPO, env={**env, "POD_NAME": f"pod-{i}"}, stdout=fh, stderr=subprocess.STDOUT,
            )
        out.append(Sidecar(proc, port, log))
    deadline = time.monotonic() + timeout
    for s in out:
        while True:
            if s.proc.poll() is not None:
                raise RuntimeError(f"sidecar exited {s.proc.returncode}: {s.log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(s.url + "/healthz", timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"sidecar not ready: {s.log.read_text()[-2000:]}") from None
                time.sleep(0.1)
    return out


def stop_all(sidecars: list[Sidecar]) -> None:
    for s in sidecars:
        s.kill(signal.SIGTERM if s.proc.poll() is None else signal.SIGKILL)


def metric_value(text: str, name: str, **labels: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    total = 0.0
    for fam in text_string_to_metric_families(text):
        for smp in fam.samples:
            if smp.name == name and all(smp.labels.get(k) == v for k, v in labels.items()):
                total += smp.value
    return total
