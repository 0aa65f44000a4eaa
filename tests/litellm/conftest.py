"""The sidecar integration fixtures (fake upstream, gateways under test) for the LiteLLM drop-in tests."""

from tests.integration.conftest import fake_upstream, gateway, make_gateway  # noqa: F401 - fixtures
