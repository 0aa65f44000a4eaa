"""Which limits apply to a request, and their Redis keys (next to the rate limiter; spend keys live in spend/keys.py).

    {p}:rl:{ns/name}:<subject>:<rpm|tpm|par>    ZSET sliding-window log (+ ":amt" HASH of token amounts for tpm)
    {p}:rl:{ns/name}:replicas                   ZSET heartbeats of the sidecars (replicas.py)

Subjects: `model:<name>` for model limits, and the caller scope subjects of caller_scope.subject
(`gw`, `ns:<ns>`, `sa:<ns>/<sa>`, `pod:<ns>/<pod>`, `key:<hash>`, `key:anonymous`).
"""

from __future__ import annotations

from dataclasses import dataclass

from .caller_scope import subject as caller_subject
from .caller_scope import virtual_key_subject
from .config import LimitsConfig, ModelConfig
from .context import Caller
from .spend.keys import gateway_tag

KIND_SUFFIX = {"r": "rpm", "t": "tpm", "p": "par"}


def rl_base(prefix: str, ns: str, name: str) -> str:
    return f"{prefix}:rl:{gateway_tag(ns, name)}"


def replicas_key(prefix: str, ns: str, name: str) -> str:
    return f"{rl_base(prefix, ns, name)}:replicas"


@dataclass(frozen=True, slots=True)
class LimitSpec:
    name: str  # metric label: "model:rpm", "namespace:tpm", ...
    kind: str  # r = requests, t = tokens, p = parallel
    keys: tuple[str, ...]
    limit: int
    cost: int  # 1 for r and p; the token estimate for t
    upstream: bool  # a model limit: protects the upstream, so a cache hit never takes from it


def _spec(base: str, name: str, kind: str, subject: str, limit: int, upstream: bool) -> LimitSpec:
    key = f"{base}:{subject}:{KIND_SUFFIX[kind]}"
    keys = (key, key + ":amt") if kind == "t" else (key,)
    return LimitSpec(name, kind, keys, limit, 0 if kind == "t" else 1, upstream)


def model_specs(base: str, model: ModelConfig) -> list[LimitSpec]:
    ml = model.limits
    subject = f"model:{model.name}"
    return [_spec(base, f"model:{KIND_SUFFIX[kind]}", kind, subject, lim, True)
            for kind, lim in (("r", ml.rpm), ("t", ml.tpm), ("p", ml.max_parallel)) if lim]


def scope_specs(base: str, limits: LimitsConfig, caller: Caller) -> list[LimitSpec]:
    out = []
    for sl in limits.scopes:
        subject = caller_subject(sl.scope, caller)
        for kind, lim in (("r", sl.rpm), ("t", sl.tpm), ("p", sl.max_parallel)):
            if lim:
                out.append(_spec(base, f"{sl.scope.value}:{KIND_SUFFIX[kind]}", kind, subject, lim, False))
    kp = caller.policy  # a virtual key's own limits (gateway mode)
    if kp is not None and caller.api_key_hash:
        for kind, lim in (("r", kp.rpm), ("t", kp.tpm), ("p", kp.max_parallel)):
            if lim:
                out.append(_spec(base, f"virtual_key:{KIND_SUFFIX[kind]}", kind, virtual_key_subject(caller), lim,
                                 False))
    return out


def with_tokens(specs: list[LimitSpec], tokens: int) -> list[LimitSpec]:
    """The specs of one request: token limits cost the request's estimate."""
    return [LimitSpec(s.name, s.kind, s.keys, s.limit, tokens, s.upstream) if s.kind == "t" else s for s in specs]
