"""The `auth` section: pod or gateway mode, ServiceAccount tokens (TokenReview) and virtual keys."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from .base import StrictModel


class LabelExpression(StrictModel):
    key: str = Field(min_length=1, description="Namespace label key.")
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"] = Field(description="As in a Kubernetes label selector.")
    values: list[str] = Field(default_factory=list, description="Values for In / NotIn.")


class NamespaceSelector(StrictModel):
    """A Kubernetes label selector over namespaces; empty selects every namespace."""

    match_labels: dict[str, str] = Field(default_factory=dict, description="Labels the namespace must carry.")
    match_expressions: list[LabelExpression] = Field(default_factory=list, description="Further label requirements.")


class TokenReviewConfig(StrictModel):
    enabled: bool = Field(True, description="Accept Kubernetes ServiceAccount tokens, checked with the TokenReview API.")
    audience: str = Field("llmgateway.dev", min_length=1, description="Audience the projected token must be issued "
                          "for; tokens for other audiences (e.g. the API server's) are refused.")
    api_server: str | None = Field(None, description="Kubernetes API URL. Default: in-cluster "
                                   "(https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT).")
    token_file: str = Field("/var/run/secrets/kubernetes.io/serviceaccount/token",
                            description="The gateway's own ServiceAccount token (re-read as the kubelet rotates it).")
    ca_file: str | None = Field("/var/run/secrets/kubernetes.io/serviceaccount/ca.crt",
                                description="CA bundle of the API server.")
    timeout_ms: int = Field(2000, ge=1, description="Deadline of one TokenReview call; past it the request gets 503.")
    cache_size: int = Field(10_000, ge=1, description="Most tokens remembered (least recently used are dropped).")
    max_cache_s: float = Field(300.0, gt=0, description="Longest time a reviewed token is trusted without asking "
                               "again (never past the token's own expiry): bounds how long a deleted "
                               "ServiceAccount keeps working.")
    negative_cache_s: float = Field(5.0, ge=0, description="How long a refused token is refused without asking again.")
    allowed_namespaces: NamespaceSelector | None = Field(
        None, description="Namespaces whose ServiceAccounts may call (read with GET namespace, cached). None: only "
        "the gateway's own namespace.")


class VirtualKeysConfig(StrictModel):
    dir: str | None = Field(None, description="Folder with one sub-folder per virtual-key Secret (files `key`, and "
                            "optionally `scope`, `rpm`, `tpm`, `maxParallel`, `budgetUsd`, `budgetPeriod`); re-read "
                            "when it changes. Keys are kept only as hashes in memory.")


class AuthConfig(StrictModel):
    mode: Literal["pod", "gateway"] = Field(
        "pod", description="pod: the caller is the pod the sidecar runs in (downward API). gateway: a shared "
        "gateway; every request must identify itself with a ServiceAccount token or a virtual key.")
    allow_anonymous: bool = Field(False, description="gateway mode: admit requests without a bearer token (as the "
                                  "caller system:anonymous).")
    token_review: TokenReviewConfig = Field(default_factory=TokenReviewConfig)
    virtual_keys: VirtualKeysConfig = Field(default_factory=VirtualKeysConfig)
