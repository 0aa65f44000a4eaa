"""A real Kubernetes control plane on loopback for tests: etcd + kube-apiserver + kube-controller-manager.

The binaries come from tests/apiserver/k8s/build.sh (Kubernetes v1.20.2 built from Debian's source package, cached
under `<repo>/.cache/k8s/bin`; `LLMGW_K8S_BIN` points elsewhere). No kubelet or scheduler: Pods are stored and go
through admission, they never run. 1.20 lacks CEL rules, policy/v1 and native sidecars; the tier is a test vehicle
for what it has (schemas, defaulting, RBAC, server-side apply, watches, webhooks, garbage collection).

Helper API (other test packages import it):
    ApiServer.start(bin_dir, state_dir)   start everything on free ports; .stop() stops it
    server.client()                       admin (system:masters) kubernetes ApiClient
    server.kubeconfig                     path of the admin kubeconfig
    server.service_account_token(ns, sa)  a TokenRequest token of a ServiceAccount (created when missing)
    server.service_account_kubeconfig(ns, sa, path)  a kubeconfig that authenticates as that ServiceAccount
    server.apply(obj)                     server-side apply as admin (field manager "llmgw-tests")
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlencode

import urllib3
import yaml
from kubernetes import client, config
from kubernetes.client.rest import ApiException

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = Path(__file__).resolve().parent / "k8s"
BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager")
TEST_MANAGER = "llmgw-tests"
T = TypeVar("T")


def bin_dir() -> Path:
    """Where build.sh put the binaries: $LLMGW_K8S_BIN, else the git-ignored cache of this checkout."""
    return Path(os.environ.get("LLMGW_K8S_BIN") or REPO / ".cache" / "k8s" / "bin")


def missing_binaries(directory: Path | None = None) -> list[str]:
    d = directory or bin_dir()
    return [b for b in BINARIES if not os.access(d / b, os.X_OK)]


def free_ports(n: int) -> list[int]:
    """n distinct free loopback ports (held open together so they differ)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def wait_for(what: str, check: Callable[[], T | None], timeout_s: float = 30.0, interval_s: float = 0.2) -> T:
    """Poll until check() returns something truthy; fail with `what` and the last value otherwise."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while True:
        last = check()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what} (last: {last!r})")
        time.sleep(interval_s)


def _kubeconfig(server: str, ca_file: Path, user: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "local", "cluster": {"server": server, "certificate-authority": str(ca_file)}}],
        "users": [{"name": "user", "user": user}],
        "contexts": [{"name": "local", "context": {"cluster": "local", "user": "user"}}],
        "current-context": "local",
    }


@dataclass
class ApiServer:
    state: Path
    port: int
    version: str
    started_s: float  # wall time of start.sh

    @property
    def kubeconfig(self) -> Path:
        return self.state / "kubeconfig"

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def ca_file(self) -> Path:
        return self.state / "pki" / "ca.crt"

    # -- lifecycle ------------------------------------------------------------------------------------------------
    @classmethod
    def start(cls, bins: Path, state: Path, timeout_s: float = 180.0) -> ApiServer:
        etcd, peer, api, kcm = free_ports(4)
        t0 = time.monotonic()
        proc = subprocess.run(["bash", str(SCRIPTS / "start.sh"), str(bins), str(state), str(etcd), str(peer),
                               str(api), str(kcm)], capture_output=True, text=True, timeout=timeout_s)
        if proc.returncode != 0:
            subprocess.run(["bash", str(SCRIPTS / "stop.sh"), str(state)], capture_output=True, timeout=60)
            raise RuntimeError(f"start.sh failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
        version = next((line.split()[2].rstrip(",") for line in proc.stdout.splitlines()
                        if line.startswith("version:")), "?")
        server = cls(state=state, port=api, version=version, started_s=time.monotonic() - t0)
        server._wait_default_service_account()
        return server

    def stop(self, purge: bool = True) -> None:
        subprocess.run(["bash", str(SCRIPTS / "stop.sh"), str(self.state), *(["--purge"] if purge else [])],
                       capture_output=True, timeout=60)

    def log(self, component: str, lines: int = 40) -> str:
        path = self.state / "logs" / f"{component}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    def _wait_default_service_account(self) -> None:
        # Pods are refused until the controller-manager has created the namespace's "default" ServiceAccount.
        core = client.CoreV1Api(self.client())

        def ready() -> bool:
            try:
                core.read_namespaced_service_account("default", "default", _request_timeout=5)
                return True
            except ApiException:
                return False

        wait_for("the default ServiceAccount (controller-manager)", ready, 60)

    # -- clients --------------------------------------------------------------------------------------------------
    def client(self) -> client.ApiClient:
        """A fresh admin client (never the kubernetes package's global configuration)."""
        return config.new_client_from_config(config_file=str(self.kubeconfig))

    def client_for(self, kubeconfig: Path) -> client.ApiClient:
        return config.new_client_from_config(config_file=str(kubeconfig))

    def service_account_token(self, namespace: str, name: str, *, expiration_s: int = 3600,
                              audiences: Iterable[str] = ()) -> str:
        """A bound token of the ServiceAccount from the TokenRequest API (the account is created when missing)."""
        core = client.CoreV1Api(self.client())
        self.ensure_namespace(namespace)
        try:
            core.create_namespaced_service_account(namespace, {"metadata": {"name": name}})
        except ApiException as e:
            if e.status != 409:
                raise
        spec: dict[str, Any] = {"expirationSeconds": expiration_s}
        if audiences:
            spec["audiences"] = list(audiences)
        resp = core.create_namespaced_service_account_token(name, namespace, {"spec": spec})
        return str(resp.status.token)

    def service_account_kubeconfig(self, namespace: str, name: str, path: Path, **token_kw: Any) -> Path:
        """A kubeconfig that authenticates as system:serviceaccount:<namespace>:<name> with a bearer token."""
        token = self.service_account_token(namespace, name, **token_kw)
        path.write_text(yaml.safe_dump(_kubeconfig(self.url, self.ca_file, {"token": token})))
        return path

    # -- objects --------------------------------------------------------------------------------------------------
    def ensure_namespace(self, name: str, labels: dict[str, str] | None = None) -> None:
        # 1.20 does not set kubernetes.io/metadata.name (1.21+); the chart's webhook selector matches on it.
        body = {"apiVersion": "v1", "kind": "Namespace",
                "metadata": {"name": name, "labels": {"kubernetes.io/metadata.name": name, **(labels or {})}}}
        self.apply(body)

    def apply(self, obj: dict[str, Any], manager: str = TEST_MANAGER,
              api: client.ApiClient | None = None) -> dict[str, Any]:
        """Server-side apply (force) of one object as admin, or through `api`. Returns the live object."""
        return apply(api or self.client(), obj, manager)

    def delete(self, obj: dict[str, Any], api: client.ApiClient | None = None) -> None:
        api = api or self.client()
        request(api, "DELETE", resource_path(api, obj, with_name=True), ok=(200, 202, 404))


_plural_cache: dict[tuple[str, str], tuple[str, bool]] = {}


def request(api: client.ApiClient, method: str, path: str, body: Any = None, content_type: str = "application/json",
            query: dict[str, str] | None = None, ok: Iterable[int] = (200, 201)) -> dict[str, Any]:
    """One raw HTTPS call with the client's credentials (the kubernetes client's generic call API differs between
    its major versions; urllib3 does not). Raises ApiException for an unexpected status."""
    cfg = api.configuration
    headers = {"Content-Type": content_type, "Accept": "application/json"}
    token = (cfg.api_key or {}).get("authorization") or (cfg.api_key or {}).get("BearerToken")
    if token:
        headers["Authorization"] = token if token.startswith("Bearer ") else f"Bearer {token}"
    pool = urllib3.PoolManager(ca_certs=cfg.ssl_ca_cert, cert_file=cfg.cert_file, key_file=cfg.key_file,
                               cert_reqs="CERT_REQUIRED")
    url = cfg.host + path + (f"?{urlencode(query)}" if query else "")
    resp = pool.request(method, url, body=None if body is None else json.dumps(body), headers=headers,
                        timeout=urllib3.Timeout(connect=5, read=30))
    if resp.status not in set(ok):
        raise ApiException(status=resp.status, reason=f"{method} {path}: {resp.data.decode(errors='replace')}")
    return json.loads(resp.data or b"{}")


def _resource(api: client.ApiClient, api_version: str, kind: str) -> tuple[str, bool]:
    """(plural, namespaced) from discovery."""
    key = (api_version, kind)
    if key not in _plural_cache:
        base = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
        for r in request(api, "GET", base).get("resources", []):
            if "/" not in r["name"]:
                _plural_cache[(api_version, r["kind"])] = (r["name"], r["namespaced"])
    if key not in _plural_cache:
        raise KeyError(f"{api_version} {kind} is not served")
    return _plural_cache[key]


def resource_path(api: client.ApiClient, obj: dict[str, Any], with_name: bool = False) -> str:
    api_version, kind = obj["apiVersion"], obj["kind"]
    plural, namespaced = _resource(api, api_version, kind)
    base = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    md = obj.get("metadata") or {}
    if namespaced:
        base += f"/namespaces/{md.get('namespace') or 'default'}"
    path = f"{base}/{plural}"
    return f"{path}/{md['name']}" if with_name else path


def apply(api: client.ApiClient, obj: dict[str, Any], manager: str = TEST_MANAGER) -> dict[str, Any]:
    """Server-side apply of one object through any client (PATCH application/apply-patch+yaml, force)."""
    return request(api, "PATCH", resource_path(api, obj, with_name=True), obj, "application/apply-patch+yaml",
                   {"fieldManager": manager, "force": "true"})
