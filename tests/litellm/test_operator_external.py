"""spec.redis.external carries managed-Redis settings into the sidecar: the CA Secret and client certificate (mounted
read-only), the ACL user and the IAM mode, rendered into a config the sidecar's own parser accepts."""

from __future__ import annotations

from pathlib import Path

import jsonschema
import pytest
import yaml

from llmgw_operator.builders.sidecar_config import (
    referenced_secrets,
    render_sidecar_config,
    sidecar_volume_mounts,
    sidecar_volumes,
)
from llmgw_operator.builders.spec import Gateway, SpecError
from llmgw_operator.crd import defaulted_spec, openapi_schema, to_json_schema

REPO = Path(__file__).resolve().parents[2]


def gateway(external: dict) -> Gateway:
    spec = defaulted_spec({"redis": {"mode": "external", "external": external},
                           "models": [{"name": "m", "provider": "mock"}]})
    return Gateway.from_spec("gw", "team-a", spec)


def test_ca_secret_client_cert_and_acl_user() -> None:
    gw = gateway({"mode": "standalone", "url": "redis://redis.example:6380/0", "username": "app",
                  "passwordSecretRef": {"name": "redis", "key": "password"},
                  "caSecretRef": {"name": "redis-ca", "key": "ca.pem"}, "clientCertSecretName": "redis-client"})
    r = render_sidecar_config(gw)["redis"]
    assert r["username"] == "app" and r["password"] == "os.environ/LLMGW_REDIS_PASSWORD"
    assert r["tls"] == {"enabled": True, "ca_file": "/etc/llmgw-redis-ca/ca.crt",
                        "cert_file": "/etc/llmgw-redis-client/tls.crt", "key_file": "/etc/llmgw-redis-client/tls.key"}
    vols = {v["name"]: v for v in sidecar_volumes(gw)}
    assert vols["llmgw-redis-ca"]["secret"] == {"secretName": "redis-ca", "items": [{"key": "ca.pem", "path": "ca.crt"}]}
    assert vols["llmgw-redis-client"]["secret"]["secretName"] == "redis-client"
    mounts = {m["mountPath"]: m for m in sidecar_volume_mounts(gw)}
    assert mounts["/etc/llmgw-redis-ca"]["readOnly"] and mounts["/etc/llmgw-redis-client"]["readOnly"]
    assert {("redis-ca", "ca.pem"), ("redis-client", "tls.crt"), ("redis-client", "tls.key"),
            ("redis", "password")} <= set(referenced_secrets(gw))


def test_gcp_iam_cluster() -> None:
    gw = gateway({"mode": "cluster", "nodes": ["10.0.0.2:6379"], "caSecretRef": {"name": "ca", "key": "ca.crt"},
                  "iam": {"provider": "gcp", "gcpServiceAccount": "sa@p.iam.gserviceaccount.com"}})
    r = render_sidecar_config(gw)["redis"]
    assert r["iam"] == {"provider": "gcp", "gcp_service_account": "sa@p.iam.gserviceaccount.com",
                        "aws_serverless": False}
    assert "password" not in r and r["tls"]["enabled"]


def test_aws_iam_needs_the_user() -> None:
    ok = gateway({"mode": "standalone", "url": "rediss://cache.example:6379", "username": "gw-user",
                  "iam": {"provider": "aws", "awsRegion": "us-east-1", "awsCacheName": "my-cache"}})
    r = render_sidecar_config(ok)["redis"]
    assert r["iam"]["provider"] == "aws" and r["username"] == "gw-user" and r["tls"] == {"enabled": True}
    bad = gateway({"mode": "standalone", "url": "rediss://cache.example:6379",
                   "iam": {"provider": "aws", "awsRegion": "us-east-1", "awsCacheName": "my-cache"}})
    with pytest.raises(SpecError, match="needs username"):
        render_sidecar_config(bad)


def test_iam_and_password_are_exclusive() -> None:
    gw = gateway({"mode": "standalone", "url": "redis://h:6379", "passwordSecretRef": {"name": "r", "key": "p"},
                  "iam": {"provider": "gcp"}})
    with pytest.raises(SpecError, match="iam replaces password"):
        render_sidecar_config(gw)


def test_memorystore_example_is_valid_and_renders() -> None:
    doc = yaml.safe_load((REPO / "manifests" / "examples" / "gateway-memorystore.yaml").read_text())
    jsonschema.Draft202012Validator(to_json_schema(openapi_schema())).validate(doc)
    gw = Gateway.from_spec(doc["metadata"]["name"], doc["metadata"]["namespace"], defaulted_spec(doc["spec"]))
    r = render_sidecar_config(gw)["redis"]
    assert r["mode"] == "cluster" and r["iam"]["provider"] == "gcp" and r["tls"]["ca_file"].endswith("/ca.crt")


def test_schema_refuses_an_unknown_iam_provider() -> None:
    doc = {"apiVersion": "llmgateway.dev/v1alpha1", "kind": "LLMGateway", "metadata": {"name": "gw"},
           "spec": {"models": [{"name": "m", "provider": "mock"}],
                    "redis": {"mode": "external", "external": {"url": "redis://h:1", "iam": {"provider": "azure"}}}}}
    errors = list(jsonschema.Draft202012Validator(to_json_schema(openapi_schema())).iter_errors(doc))
    assert any("azure" in e.message for e in errors)
