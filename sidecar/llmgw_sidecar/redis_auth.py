"""Managed Redis authentication: short-lived IAM tokens as the Redis password (GCP Memorystore, AWS ElastiCache).

A token is fetched at start, refreshed in the background after `refresh_fraction` of its lifetime (before it expires;
a failed refresh is retried while the old token is still valid), and handed to every new connection by a redis-py
CredentialProvider. Live pooled connections re-authenticate with `AUTH` before their next command once a new token
exists (IamConnection): no connection is dropped and no request fails because a token rotated. Tokens are never
logged.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from datetime import datetime
from typing import Any, Protocol

import aiohttp
from redis.asyncio.connection import Connection, SSLConnection
from redis.asyncio.sentinel import SentinelManagedConnection, SentinelManagedSSLConnection
from redis.credentials import CredentialProvider

from .config import IamProvider, RedisIamConfig

log = logging.getLogger("llmgw.redis")
GCP_SCOPE = "https://www.googleapis.com/auth/cloud-platform"
AWS_TOKEN_LIFETIME_S = 900  # ElastiCache accepts a presigned token for 15 minutes


class TokenError(Exception):
    """A token could not be obtained (the message names the endpoint and status, never a token)."""


class TokenSource(Protocol):
    async def fetch(self) -> tuple[str, float]:
        """A new token and its lifetime in seconds."""
        ...


class GcpTokenSource:
    """Memorystore IAM: an OAuth access token of the pod's identity (metadata server: GKE Workload Identity), or of
    `gcp_service_account` impersonated through the IAM Credentials API (what LiteLLM's google-cloud-iam call does)."""

    def __init__(self, cfg: RedisIamConfig, environ: Any = None) -> None:
        env = os.environ if environ is None else environ
        host = env.get("GCE_METADATA_HOST")
        self.metadata_url = f"http://{host}/computeMetadata/v1" if host else cfg.gcp_metadata_url.rstrip("/")
        self.iam_url = cfg.gcp_iam_url.rstrip("/")
        sa = cfg.gcp_service_account
        self.account = sa if not sa or sa.startswith("projects/") else f"projects/-/serviceAccounts/{sa}"
        self.timeout = aiohttp.ClientTimeout(total=cfg.token_timeout_s)

    async def fetch(self) -> tuple[str, float]:
        async with aiohttp.ClientSession(timeout=self.timeout) as s:
            url = f"{self.metadata_url}/instance/service-accounts/default/token"
            async with s.get(url, headers={"Metadata-Flavor": "Google"}) as r:
                if r.status != 200:
                    raise TokenError(f"GCP metadata server {url} answered HTTP {r.status}")
                own = await r.json(content_type=None)
            if not self.account:
                return str(own["access_token"]), float(own.get("expires_in", 3600))
            url = f"{self.iam_url}/{self.account}:generateAccessToken"
            async with s.post(url, json={"scope": [GCP_SCOPE]},
                              headers={"Authorization": f"Bearer {own['access_token']}"}) as r:
                if r.status != 200:
                    raise TokenError(f"GCP IAM generateAccessToken for {self.account} answered HTTP {r.status}")
                data = await r.json(content_type=None)
        expires = datetime.fromisoformat(str(data["expireTime"]).replace("Z", "+00:00")).timestamp()
        return str(data["accessToken"]), max(1.0, expires - time.time())


class AwsTokenSource:
    """ElastiCache IAM: a SigV4-presigned `connect` request for the IAM-enabled user, signed with the usual AWS
    credential chain (IRSA web identity, instance role, environment)."""

    def __init__(self, cfg: RedisIamConfig, user: str) -> None:
        try:
            import botocore.session  # noqa: F401 - optional extra: llmgateway[aws]
        except ImportError:
            raise TokenError("redis.iam provider aws needs botocore: pip install 'llmgateway[aws]'") from None
        self.region, self.cache, self.user, self.serverless = cfg.aws_region, cfg.aws_cache_name, user, cfg.aws_serverless

    def _sign(self) -> str:
        import botocore.session
        from botocore.auth import SigV4QueryAuth
        from botocore.awsrequest import AWSRequest

        creds = botocore.session.get_session().get_credentials()
        if creds is None:
            raise TokenError("no AWS credentials found (IRSA, instance role or AWS_ACCESS_KEY_ID)")
        params = {"Action": "connect", "User": self.user}
        if self.serverless:
            params["ResourceType"] = "ServerlessCache"
        req = AWSRequest(method="GET", url=f"http://{self.cache}/", params=params)
        SigV4QueryAuth(creds.get_frozen_credentials(), "elasticache", self.region, expires=AWS_TOKEN_LIFETIME_S).add_auth(req)
        url: str = req.url
        return url.removeprefix("http://")

    async def fetch(self) -> tuple[str, float]:
        return await asyncio.to_thread(self._sign), float(AWS_TOKEN_LIFETIME_S)


class IamCredentials(CredentialProvider):
    """The current token for new connections, and a generation number that tells live connections to re-AUTH."""

    def __init__(self, source: TokenSource, username: str | None, refresh_fraction: float,
                 on_event: Any = None) -> None:
        self.source = source
        self.username = username
        self.refresh_fraction = refresh_fraction
        self.generation = 0
        self._token: str | None = None
        self._expires_at = 0.0
        self._refresh_at = 0.0
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._on_event = on_event or (lambda kind, result: None)

    def set_on_event(self, on_event: Any) -> None:
        self._on_event = on_event

    def _args(self, token: str) -> tuple[str] | tuple[str, str]:
        return (self.username, token) if self.username else (token,)

    def get_credentials(self) -> tuple[str] | tuple[str, str]:
        if self._token is None:
            raise TokenError("no Redis IAM token yet")
        return self._args(self._token)

    async def get_credentials_async(self) -> tuple[str] | tuple[str, str]:
        if self._token is None or time.monotonic() >= self._expires_at:
            await self.refresh(force=self._token is not None)
        self._ensure_refresher()
        assert self._token is not None
        return self._args(self._token)

    async def refresh(self, force: bool = True) -> None:
        async with self._lock:
            if not force and self._token is not None and time.monotonic() < self._refresh_at:
                return  # another task refreshed meanwhile
            try:
                token, lifetime = await self.source.fetch()
            except Exception as e:
                self._on_event("refresh", "error")
                log.warning("redis IAM token refresh failed (%s: %s); the current token stays in use until it expires",
                            type(e).__name__, e)
                raise
            now = time.monotonic()
            self._token, self._expires_at = token, now + lifetime
            self._refresh_at = now + lifetime * self.refresh_fraction
            self.generation += 1
            self._on_event("refresh", "ok")

    def _ensure_refresher(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._refresher())

    async def _refresher(self) -> None:
        while True:
            await asyncio.sleep(max(0.05, self._refresh_at - time.monotonic()))
            try:
                await self.refresh()
            except Exception:  # noqa: BLE001 - logged in refresh(); retry soon, before the current token expires
                self._refresh_at = time.monotonic() + min(5.0, max(0.1, (self._expires_at - time.monotonic()) / 4))

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()


class _ReauthMixin:
    """Before a command on a live connection, AUTH again when a newer token exists. A command is only sent on a
    connection with no reply pending, so the AUTH reply is read right here and never mixes with another."""

    _llmgw_generation = -1

    async def on_connect_check_health(self, check_health: bool = True) -> None:
        cp = self.credential_provider  # type: ignore[attr-defined]
        if isinstance(cp, IamCredentials):
            await cp.get_credentials_async()  # a token exists before the connection authenticates with it
            self._llmgw_generation = cp.generation
        await super().on_connect_check_health(check_health)  # type: ignore[misc]

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        cp = self.credential_provider  # type: ignore[attr-defined]
        if isinstance(cp, IamCredentials) and self._llmgw_generation != cp.generation and self.is_connected:  # type: ignore[attr-defined]
            self._llmgw_generation = cp.generation
            args = await cp.get_credentials_async()
            await super().send_packed_command(self.pack_command("AUTH", *args), check_health=False)  # type: ignore[misc,attr-defined]
            await self.read_response()  # type: ignore[attr-defined]
            cp._on_event("reauth", "ok")
        await super().send_packed_command(command, check_health)  # type: ignore[misc]


class IamConnection(_ReauthMixin, Connection):
    pass


class IamSSLConnection(_ReauthMixin, SSLConnection):
    pass


class IamSentinelConnection(_ReauthMixin, SentinelManagedConnection):
    pass


class IamSentinelSSLConnection(_ReauthMixin, SentinelManagedSSLConnection):
    pass


def make_credentials(cfg: RedisIamConfig, username: str | None, on_event: Any = None) -> IamCredentials:
    source: TokenSource
    if cfg.provider == IamProvider.gcp:
        source = GcpTokenSource(cfg)
    else:
        assert username, "validated: aws needs redis.username"
        source = AwsTokenSource(cfg, username)
    return IamCredentials(source, username, cfg.refresh_fraction, on_event)
