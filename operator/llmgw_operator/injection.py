"""Pure pod-patch builder for sidecar injection: pod + gateway -> JSONPatch ops + warnings.

No Kubernetes API access here: the webhook (webhook.py) looks the gateway up and hands it in, the status timer hands in
the pods it listed. Everything is a plain dict in, plain dicts out, so it is tested without a cluster.

Why the patch is built op by op instead of diffing a mutated copy: a diff of a re-serialised pod can drop or reorder
fields the webhook does not know (berglas#264); explicit `add` ops touch nothing else.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from llmgw_operator.builders.sidecar_config import (
    CONFIG_PATH,
    sidecar_secret_env,
    sidecar_volume_mounts,
    sidecar_volumes,
)
from llmgw_operator.builders.spec import DEFAULT_PULL_POLICY, gateway_of

PREFIX = "llmgateway.dev/"
ANNOTATION_INJECT = PREFIX + "inject"  # value: gateway name in the pod's namespace, or "false" to opt out
ANNOTATION_NATIVE = PREFIX + "native-sidecar"  # "true" | "false": overrides the gateway's choice for this pod
ANNOTATION_INJECT_ENV = PREFIX + "inject-env"  # "false": leave the app containers' env alone
ANNOTATION_CONTAINERS = PREFIX + "inject-containers"  # comma list: only these app containers get the env
ANNOTATION_STATUS = PREFIX + "status"  # written by the webhook: what was injected (JSON)
LABEL_OPT_OUT = PREFIX + "inject"  # label value "false": the webhook configuration never even sends the pod
DEFAULT_CONTAINER_ANNOTATION = "kubectl.kubernetes.io/default-container"

SIDECAR_NAME = "llmgw-sidecar"
TMP_VOLUME = "llmgw-tmp"
SIDECAR_UID = 10001  # matches USER in sidecar/Dockerfile; numeric so runAsNonRoot can be verified by the kubelet
OPT_OUT_VALUES = frozenset({"", "false", "no", "off", "disabled", "0"})
STATUS_VERSION = 1


def app_env(port: int) -> list[dict[str, str]]:
    """Variables the app containers get (only those not already set). docs/injection.md lists them."""
    base = f"http://127.0.0.1:{port}"
    return [
        {"name": "OPENAI_BASE_URL", "value": base + "/v1"},  # openai-python >= 1, openai-node, most SDKs
        {"name": "OPENAI_API_BASE", "value": base + "/v1"},  # openai-python < 1, LangChain, LiteLLM clients
        # The OpenAI SDKs refuse to start without a key; the real upstream keys live only in the sidecar.
        {"name": "OPENAI_API_KEY", "value": "llmgw-injected-no-upstream-key"},
        {"name": "LLMGW_URL", "value": base},  # for health checks and /metrics from the app
    ]


@dataclass(frozen=True)
class InjectionSettings:
    """Operator-wide knobs (from the operator's environment, set by the chart)."""

    default_image: str
    native_sidecars_supported: bool  # server >= 1.29; unknown version -> False (a plain container works everywhere)
    # The chart's sidecar.image.pullPolicy (LLMGW_SIDECAR_PULL_POLICY): used when spec.sidecar.imagePullPolicy is
    # unset (the CRD has no default for it, so an explicit spec value is the only thing that beats this).
    image_pull_policy: str = DEFAULT_PULL_POLICY
    startup_timeout_s: int = 120  # how long the app waits for the sidecar before starting anyway
    drain_s: int = 5  # plain-container mode: the sidecar outlives the app's last requests by this much on shutdown


@dataclass
class InjectionResult:
    patch: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    injected: bool = False
    reason: str = ""  # machine-readable why/why not (tests and logs)


def json_pointer_escape(key: str) -> str:
    """JSON pointer escaping (RFC 6901): '~' first, then '/'."""
    return key.replace("~", "~0").replace("/", "~1")


def annotations_of(pod: Mapping[str, Any]) -> dict[str, str]:
    return dict((pod.get("metadata") or {}).get("annotations") or {})


def _labels(pod: Mapping[str, Any]) -> dict[str, str]:
    return dict((pod.get("metadata") or {}).get("labels") or {})


def requested_gateway(pod: Mapping[str, Any]) -> str | None:
    """The gateway the pod asks for, or None when it does not ask or opts out."""
    value = annotations_of(pod).get(ANNOTATION_INJECT)
    if value is None or value.strip().lower() in OPT_OUT_VALUES:
        return None
    if _labels(pod).get(LABEL_OPT_OUT, "").lower() in OPT_OUT_VALUES - {""}:
        return None
    return value.strip()


def has_sidecar(pod: Mapping[str, Any]) -> bool:
    spec = pod.get("spec") or {}
    return any(c.get("name") == SIDECAR_NAME for c in [*(spec.get("initContainers") or []),
                                                         *(spec.get("containers") or [])])


def pod_label(pod: Mapping[str, Any]) -> str:
    """A name for messages: admission requests of Deployment pods carry only generateName."""
    meta = pod.get("metadata") or {}
    name: str = meta.get("name") or (meta.get("generateName", "") + "<generated>")
    return name


def _bool_annotation(value: str | None) -> bool | None:
    if value is None:
        return None
    v = value.strip().lower()
    if v in {"true", "yes", "on", "1"}:
        return True
    if v in {"false", "no", "off", "0"}:
        return False
    return None


def _want_native(pod: Mapping[str, Any], gateway_spec: Mapping[str, Any], settings: InjectionSettings,
                 warnings: list[str]) -> bool:
    """Pod annotation beats gateway beats cluster capability; never native where the cluster cannot run it."""
    raw = annotations_of(pod).get(ANNOTATION_NATIVE)
    choice = _bool_annotation(raw)
    if raw is not None and choice is None:
        warnings.append(f"annotation {ANNOTATION_NATIVE}={raw!r} is not true/false; ignored")
    if choice is None:
        g = str((gateway_spec.get("injection") or {}).get("nativeSidecar") or "Auto").lower()
        choice = {"always": True, "never": False}.get(g)  # Auto (the CRD default): follow the cluster
    if choice is None:
        return settings.native_sidecars_supported
    if choice and not settings.native_sidecars_supported:
        # An older API server drops restartPolicy from init containers: the sidecar would block the pod forever.
        warnings.append("native sidecar requested but the cluster does not support it (needs Kubernetes >= 1.29); "
                        "injected as a regular container")
        return False
    return choice


def _python_http_check(port: int, path: str, wait_s: int = 0) -> list[str]:
    """An exec probe. httpGet probes cannot be used: they dial the pod IP, the sidecar listens on 127.0.0.1 only."""
    url = f"http://127.0.0.1:{port}{path}"
    if wait_s <= 0:
        code = f"import urllib.request as u; u.urlopen({url!r}, timeout=2)"
    else:
        # postStart hook of a plain container: blocks the next container's start until ready (bounded, never fails
        # the pod: a sidecar that is slow to start must not keep the app down, the app then just sees errors).
        code = ("import time, urllib.request as u\n"
                f"end = time.monotonic() + {wait_s}\n"
                "while time.monotonic() < end:\n"
                "    try:\n"
                f"        u.urlopen({url!r}, timeout=1); break\n"
                "    except Exception:\n"
                "        time.sleep(0.5)\n")
    return ["python3", "-c", code]


def build_sidecar(gateway_name: str, gateway_spec: Mapping[str, Any], settings: InjectionSettings,
                  native: bool) -> dict[str, Any]:
    """The sidecar container: same for every pod of a gateway (pod identity comes from the downward API)."""
    gw = gateway_of(gateway_spec, gateway_name)  # the CRD defaults, applied once (builders/spec.py)
    sc = gw.sidecar
    port, metrics_port = sc.port, sc.metrics_port  # metrics_port: the metrics-only listener Prometheus scrapes
    env: list[dict[str, Any]] = [
        {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "POD_SERVICE_ACCOUNT", "valueFrom": {"fieldRef": {"fieldPath": "spec.serviceAccountName"}}},
        {"name": "HF_HUB_OFFLINE", "value": "1"},  # the embedding model is baked into the image; never download
        *sidecar_secret_env(gw),
    ]
    container: dict[str, Any] = {
        "name": SIDECAR_NAME,
        "image": sc.image or settings.default_image,
        "imagePullPolicy": sc.image_pull_policy or settings.image_pull_policy,
        "command": ["llmgw-sidecar"],
        "args": ["serve", "--config", CONFIG_PATH],
        "env": env,
        "ports": [{"name": "llmgw", "containerPort": port, "protocol": "TCP"},
                  *([{"name": "llmgw-metrics", "containerPort": metrics_port, "protocol": "TCP"}]
                    if metrics_port else [])],
        "resources": sc.resources,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": SIDECAR_UID,
            "runAsGroup": SIDECAR_UID,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        # Whole-directory mount, never subPath: subPath mounts do not see ConfigMap updates (the sidecar reloads).
        "volumeMounts": [*sidecar_volume_mounts(gw),
                         {"name": TMP_VOLUME, "mountPath": "/tmp"}],
        # Native sidecars: the kubelet starts the next container only after this succeeds.
        "startupProbe": {"exec": {"command": _python_http_check(port, "/readyz")},
                         "periodSeconds": 1, "timeoutSeconds": 3,
                         "failureThreshold": max(1, settings.startup_timeout_s)},
        # No readinessProbe on purpose: a sidecar that is unready (e.g. Redis down, which it survives by failing open)
        # must not take the app out of its Service endpoints.
        "livenessProbe": {"exec": {"command": _python_http_check(port, "/healthz")},
                          "periodSeconds": 10, "timeoutSeconds": 3, "failureThreshold": 3},
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    if native:
        container["restartPolicy"] = "Always"
    else:
        # Plain containers start in list order and the kubelet waits for each postStart hook: this holds the app
        # until the sidecar answers (istio's holdApplicationUntilProxyStarts). On shutdown all containers get
        # SIGTERM at once; the preStop sleep keeps the sidecar serving the app's last requests (istio#11130).
        container["lifecycle"] = {
            "postStart": {"exec": {"command": _python_http_check(port, "/readyz", settings.startup_timeout_s)}},
            "preStop": {"exec": {"command": ["python3", "-c", f"import time; time.sleep({settings.drain_s})"]}},
        }
    return container


def _volumes(gateway_name: str, gateway_spec: Mapping[str, Any]) -> list[dict[str, Any]]:
    # The config ConfigMap (+ the Redis CA when the operator provisions TLS), and a small writable /tmp.
    return [*sidecar_volumes(dict(gateway_spec), gateway_name), {"name": TMP_VOLUME, "emptyDir": {"sizeLimit": "64Mi"}}]


def _env_ops(pod: Mapping[str, Any], port: int, warnings: list[str]) -> tuple[list[dict[str, Any]], dict[str, list[str]]]:
    """Add the app env to app containers where a variable is not set yet. Returns ops + {container: [names]}."""
    if _bool_annotation(annotations_of(pod).get(ANNOTATION_INJECT_ENV)) is False:
        return [], {}
    only_raw = annotations_of(pod).get(ANNOTATION_CONTAINERS)
    only = {c.strip() for c in only_raw.split(",") if c.strip()} if only_raw else None
    ops: list[dict[str, Any]] = []
    added: dict[str, list[str]] = {}
    for i, c in enumerate((pod.get("spec") or {}).get("containers") or []):
        name = c.get("name", "")
        if only is not None and name not in only:
            continue
        existing = {e.get("name") for e in c.get("env") or []}
        new = [e for e in app_env(port) if e["name"] not in existing]
        if c.get("envFrom") and new:
            # env beats envFrom, and what a referenced ConfigMap/Secret holds is unknown here: say so.
            warnings.append(f"container {name!r} uses envFrom; injected {', '.join(e['name'] for e in new)} take "
                            f"precedence over same-named keys there (opt out: {ANNOTATION_INJECT_ENV}: \"false\")")
        if not new:
            continue
        if c.get("env") is None:
            ops.append({"op": "add", "path": f"/spec/containers/{i}/env", "value": new})
        else:
            ops.extend({"op": "add", "path": f"/spec/containers/{i}/env/-", "value": e} for e in new)
        added[name] = [e["name"] for e in new]
    if only is not None:
        missing = only - {c.get("name") for c in (pod.get("spec") or {}).get("containers") or []}
        if missing:
            warnings.append(f"{ANNOTATION_CONTAINERS} names unknown containers: {', '.join(sorted(missing))}")
    return ops, added


def skip_reason(pod: Mapping[str, Any]) -> tuple[str | None, str]:
    """(gateway name or None, reason). Decides from the pod alone whether injection is wanted at all."""
    gateway = requested_gateway(pod)
    if gateway is None:
        return None, "not-requested"
    spec = pod.get("spec") or {}
    if spec.get("hostNetwork"):
        # 127.0.0.1 would be the node's loopback: port clashes and other pods reaching the gateway.
        return None, "host-network"
    status = annotations_of(pod).get(ANNOTATION_STATUS)
    if status is not None and has_sidecar(pod):
        return None, "already-injected"
    if has_sidecar(pod):
        return None, "sidecar-present"
    return gateway, "wanted"


def build_patch(pod: Mapping[str, Any], gateway_name: str, gateway_spec: Mapping[str, Any] | None,
                settings: InjectionSettings) -> InjectionResult:
    """The whole decision for one admission request. gateway_spec None means no such gateway in the namespace.

    Odd pods never raise: they are admitted uninjected with a warning. A gateway spec the operator itself would refuse
    (e.g. two models mapping to one key variable) raises SpecError; the webhook turns that into a warning too.
    """
    res = InjectionResult()
    wanted, reason = skip_reason(pod)
    res.reason = reason
    who = pod_label(pod)
    if wanted is None:
        if reason == "host-network":
            res.warnings.append(f"llmgateway: pod {who} uses hostNetwork; sidecar not injected")
        elif reason == "sidecar-present":
            res.warnings.append(f"llmgateway: pod {who} already has a container named {SIDECAR_NAME}; not injected")
        return res
    if wanted != gateway_name:
        raise ValueError(f"pod asks for gateway {wanted!r}, not {gateway_name!r}")
    if gateway_spec is None:
        res.reason = "unknown-gateway"
        res.warnings.append(f"llmgateway: gateway {gateway_name!r} not found in this namespace; "
                            f"pod {who} admitted without the sidecar")
        return res
    if (gateway_spec.get("injection") or {}).get("enabled") is False:
        res.reason = "injection-disabled"
        res.warnings.append(f"llmgateway: gateway {gateway_name!r} has injection disabled; pod {who} not injected")
        return res
    spec = pod.get("spec") or {}
    taken = {v.get("name") for v in spec.get("volumes") or []}
    volumes = _volumes(gateway_name, gateway_spec)
    clash = {v["name"] for v in volumes} & taken
    if clash:
        res.reason = "volume-clash"
        res.warnings.append(f"llmgateway: pod {who} already has volume(s) {', '.join(sorted(clash))}; not injected")
        return res

    port = gateway_of(gateway_spec, gateway_name).sidecar.port
    declared = {p.get("containerPort") for c in [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]
                for p in c.get("ports") or []}
    if port in declared:
        # Containers share the pod's network: the sidecar could not bind, and a native one would hold the app back.
        res.reason = "port-clash"
        res.warnings.append(f"llmgateway: pod {who} already declares port {port}; not injected "
                            f"(set spec.sidecar.port of gateway {gateway_name!r} to a free port)")
        return res
    native = _want_native(pod, gateway_spec, settings, res.warnings)
    sidecar = build_sidecar(gateway_name, gateway_spec, settings, native)
    if not native and spec.get("restartPolicy") in {"Never", "OnFailure"}:
        res.warnings.append("llmgateway: plain-container sidecar in a run-to-completion pod (Job): the pod will not "
                            "complete while the sidecar runs; use a native sidecar (Kubernetes >= 1.29)")

    # Env first: it addresses app containers by their current index, before the sidecar shifts them.
    ops, env_added = _env_ops(pod, port, res.warnings)
    if native:
        if spec.get("initContainers"):
            # First: regular init containers after it may use the gateway too (native sidecars run during init).
            ops.append({"op": "add", "path": "/spec/initContainers/0", "value": sidecar})
        else:
            ops.append({"op": "add", "path": "/spec/initContainers", "value": [sidecar]})
    else:
        ops.append({"op": "add", "path": "/spec/containers/0", "value": sidecar})
    if spec.get("volumes") is None:
        ops.append({"op": "add", "path": "/spec/volumes", "value": volumes})
    else:
        ops.extend({"op": "add", "path": "/spec/volumes/-", "value": v} for v in volumes)

    annotations: dict[str, str] = {}
    status = {"version": STATUS_VERSION, "gateway": gateway_name, "mode": "native" if native else "container",
              "image": sidecar["image"], "port": port, "env": env_added}
    annotations[ANNOTATION_STATUS] = json.dumps(status, sort_keys=True, separators=(",", ":"))
    containers = spec.get("containers") or []
    if not native and containers and DEFAULT_CONTAINER_ANNOTATION not in annotations_of(pod):
        # The sidecar is now first: keep `kubectl logs/exec` pointing at the app by default.
        annotations[DEFAULT_CONTAINER_ANNOTATION] = containers[0].get("name", "")
    existing_annotations = (pod.get("metadata") or {}).get("annotations")
    if existing_annotations is None:
        ops.append({"op": "add", "path": "/metadata/annotations", "value": annotations})
    else:
        # "add" on an existing member replaces it (RFC 6902), which is what a stale status annotation needs.
        ops.extend({"op": "add", "path": f"/metadata/annotations/{json_pointer_escape(k)}", "value": v}
                   for k, v in annotations.items())
    res.patch = ops
    res.injected = True
    res.reason = "injected"
    return res


def find_uninjected(pods: list[dict[str, Any]], gateway_name: str) -> list[str]:
    """Names of live pods that ask for this gateway but run without the sidecar (the webhook was down or skipped).

    Pods that opted out, use hostNetwork, or have finished are not counted: they are uninjected on purpose or no
    longer matter. The caller lists pods of the gateway's namespace; sorting keeps status updates stable.
    """
    names = []
    for pod in pods:
        if requested_gateway(pod) != gateway_name:
            continue
        meta = pod.get("metadata") or {}
        if meta.get("deletionTimestamp") or (pod.get("status") or {}).get("phase") in {"Succeeded", "Failed"}:
            continue
        if (pod.get("spec") or {}).get("hostNetwork") or has_sidecar(pod):
            continue
        names.append(meta.get("name", ""))
    return sorted(names)


# ---------------------------------------------------------------------------- pods that use a shared gateway instead
