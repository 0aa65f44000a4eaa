"""A fake GCP token service (real aiohttp server on loopback): the metadata server's token endpoint and the IAM
Credentials generateAccessToken call. Every access token it issues becomes a valid password of the Redis user, and
tokens older than the previous one stop being valid: a client that keeps using an expired token is refused."""

from __future__ import annotations

import itertools
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import redis
from aiohttp import web

SERVICE_ACCOUNT = "projects/-/serviceAccounts/gateway@proj.iam.gserviceaccount.com"


class TokenServer:
    def __init__(self, admins: list[redis.Redis], user: str, lifetime_s: float) -> None:
        self.admins = admins  # one admin connection per Redis node whose ACL we rotate
        self.user = user
        self.lifetime_s = lifetime_s
        self.issued: list[tuple[float, str]] = []
        self._n = itertools.count(1)
        self._lock = threading.Lock()
        self.valid: list[str] = []

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/computeMetadata/v1/instance/service-accounts/default/token", self.metadata)
        app.router.add_post("/v1/{account:.+}:generateAccessToken", self.generate)
        return app

    async def metadata(self, request: web.Request) -> web.Response:
        if request.headers.get("Metadata-Flavor") != "Google":
            return web.json_response({"error": "missing Metadata-Flavor"}, status=403)
        return web.json_response({"access_token": "source-token", "expires_in": 3600, "token_type": "Bearer"})

    async def generate(self, request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != "Bearer source-token":
            return web.json_response({"error": "unauthenticated"}, status=401)
        if request.match_info["account"] != SERVICE_ACCOUNT:
            return web.json_response({"error": "no such account"}, status=404)
        body: dict[str, Any] = await request.json()
        assert body["scope"] == ["https://www.googleapis.com/auth/cloud-platform"]
        token = f"ya29.token-{next(self._n)}"
        self.rotate(token)
        expire = datetime.now(UTC) + timedelta(seconds=self.lifetime_s)
        return web.json_response({"accessToken": token, "expireTime": expire.isoformat().replace("+00:00", "Z")})

    def rotate(self, token: str) -> None:
        with self._lock:
            expired, self.valid = self.valid[:-1], [*self.valid[-1:], token]
            self.issued.append((time.monotonic(), token))
            for admin in self.admins:
                admin.execute_command("ACL", "SETUSER", self.user, "on", f">{token}", *[f"<{t}" for t in expired],
                                      "~*", "&*", "+@all")


def lock_down(port: int, user: str = "default") -> redis.Redis:
    """Give a fresh Redis an admin user, and leave `user` without any valid password until a token is issued."""
    r = redis.Redis(port=port)
    r.execute_command("ACL", "SETUSER", "admin", "on", ">adminpw", "~*", "&*", "+@all")
    r.execute_command("ACL", "SETUSER", user, "on", "resetpass", "~*", "&*", "+@all")
    r.close()
    return redis.Redis(port=port, username="admin", password="adminpw")
