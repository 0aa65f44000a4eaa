"""The control-plane fixture itself: versions, admin access, ServiceAccount tokens (TokenRequest + TokenReview)."""

from __future__ import annotations

from pathlib import Path

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from tests.apiserver.cluster import ApiServer


def test_server_answers_as_admin(apiserver: ApiServer) -> None:
    info = client.VersionApi(apiserver.client()).get_code()
    assert (info.major, info.minor) == ("1", "20"), info
    assert apiserver.version.startswith("v1.20")
    names = [n.metadata.name for n in client.CoreV1Api(apiserver.client()).list_namespace().items]
    assert "kube-system" in names


def test_service_account_kubeconfig_is_that_account(apiserver: ApiServer, tmp_path: Path) -> None:
    path = apiserver.service_account_kubeconfig("fixture-check", "reader", tmp_path / "kubeconfig")
    sa_api = apiserver.client_for(path)
    # Authenticated, but RBAC grants nothing: a 403 (not 401) proves the token was accepted.
    with pytest.raises(ApiException) as err:
        client.CoreV1Api(sa_api).list_namespace()
    assert err.value.status == 403
    assert "system:serviceaccount:fixture-check:reader" in (err.value.body or "")

    token = apiserver.service_account_token("fixture-check", "reader", audiences=["llmgw-test"])
    review = client.AuthenticationV1Api(apiserver.client()).create_token_review(
        {"spec": {"token": token, "audiences": ["llmgw-test"]}})
    assert review.status.authenticated, review.status
    assert review.status.user.username == "system:serviceaccount:fixture-check:reader"
