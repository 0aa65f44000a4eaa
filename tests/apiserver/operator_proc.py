"""The operator as a real process (`python -m llmgw_operator run`) against the test control plane, as the chart's
ServiceAccount: a token kubeconfig, no admin rights. Logs go to a file the tests read (403s, reconciles, peering);
conftest attaches the log of every operator that ran during a failed test to its report (`logs_during`)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.apiserver.cluster import REPO, free_ports, wait_for

# A refused API call as kopf or the kubernetes client report it. A bare 403 must not follow a comma or a dot: log
# timestamps end in milliseconds (",403"), which once failed CI on a "Handler succeeded" line.
FORBIDDEN = re.compile(r"(?<![,.\d])\b403\b|Forbidden|forbidden")


@dataclass
class OperatorProcess:
    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    webhook_port: int | None
    _log_file: object = field(repr=False, default=None)
    started_at: float = field(default_factory=time.time)
    stopped_at: float | None = None

    def __post_init__(self) -> None:
        _STARTED.append(self)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def forbidden(self) -> list[str]:
        return [line for line in self.log().splitlines() if FORBIDDEN.search(line)]

    def wait_ready(self, timeout_s: float = 60.0) -> None:
        if self.webhook_port is not None:
            port = self.webhook_port
            wait_for(f"{self.name}'s webhook on port {port}", lambda: _listening(port) or _dead(self), timeout_s)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def interrupt(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)

    def stop(self, timeout_s: float = 15.0) -> None:
        """SIGINT, as kubelet's SIGTERM would: kopf stops its handlers and the webhook server; then kill."""
        if self.proc.poll() is None:
            self.interrupt()
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self.stopped_at is None:
            self.stopped_at = time.time()


# Every operator process of this test session, for the failure reports (module-scoped ones included).
_STARTED: list[OperatorProcess] = []
LOG_TAIL_LINES = 200


def logs_during(start: float, stop: float) -> list[tuple[str, str]]:
    """(title, log tail) of each operator that ran at some point between start and stop (time.time())."""
    out = []
    for op in _STARTED:
        if op.started_at <= stop and (op.stopped_at is None or op.stopped_at >= start):
            tail = "\n".join(op.log().splitlines()[-LOG_TAIL_LINES:])
            out.append((f"operator {op.name} log (last {LOG_TAIL_LINES} lines of {op.log_path})", tail))
    return out


def start_operator(name: str, kubeconfig: Path, log_dir: Path, *, webhook_cert_dir: Path | None = None,
                   webhook_port: int | None = None, peering: str = "", namespaces: str = "",
                   status_interval_s: float = 2.0, extra_env: dict[str, str] | None = None,
                   wait: bool = True) -> OperatorProcess:
    """Start one replica. With webhook_cert_dir the admission server listens on loopback (HTTPS), on webhook_port
    or a free port; wait=True returns once it answers (wait_ready() later otherwise: start replicas in parallel)."""
    port = (webhook_port or free_ports(1)[0]) if webhook_cert_dir else None
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KUBERNETES_", "LLMGW_"))}
    paths = [str(REPO / "operator"), str(REPO / "sidecar"), str(REPO)]
    env.update({
        "PYTHONPATH": os.pathsep.join([*paths, env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
        "KUBECONFIG": str(kubeconfig),
        "POD_ID": name,  # kopf's peer identity (and our Events' reportingInstance via POD_NAME)
        "POD_NAME": name,
        "LLMGW_LOG_LEVEL": "INFO",
        "LLMGW_LIVENESS_PORT": "0",
        "LLMGW_STATUS_INTERVAL_S": str(status_interval_s),
        "LLMGW_UNINJECTED_INTERVAL_S": str(status_interval_s),
        "LLMGW_PEERING_NAME": peering,
        "LLMGW_WATCH_NAMESPACES": namespaces,
        "LLMGW_WEBHOOK_ENABLED": "true" if webhook_cert_dir else "false",
        "LLMGW_SIDECAR_IMAGE": "ghcr.io/llmgateway/sidecar:test",
    })
    if webhook_cert_dir:
        env.update({"LLMGW_WEBHOOK_HOST": "127.0.0.1", "LLMGW_WEBHOOK_PORT": str(port),
                    "LLMGW_WEBHOOK_CERT_DIR": str(webhook_cert_dir)})
    env.update(extra_env or {})
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}.log"
    log_file = log_path.open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "llmgw_operator", "run"], env=env, stdout=log_file,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=REPO)
    op = OperatorProcess(name, proc, log_path, port, log_file)
    if wait:
        try:
            op.wait_ready()
        except BaseException:
            op.stop()  # never leave a process behind when it did not come up
            raise
    return op


def _listening(port: int) -> bool:
    import socket

    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _dead(op: OperatorProcess) -> bool:
    if op.proc.poll() is not None:
        raise AssertionError(f"operator {op.name} exited ({op.proc.returncode}):\n{op.log()[-3000:]}")
    return False


def wait_log(op: OperatorProcess, pattern: str, timeout_s: float = 30.0) -> re.Match[str]:
    rx = re.compile(pattern)
    return wait_for(f"{pattern!r} in {op.name}'s log",
                    lambda: rx.search(op.log()) or _dead(op) or None, timeout_s)


def settle(seconds: float) -> None:
    time.sleep(seconds)
