"""Optional PostgreSQL sink: one row per record, idempotent by record id (a re-committed batch inserts nothing)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from .records import SpendRecord

TABLE_DDL = """
CREATE TABLE IF NOT EXISTS llmgw_spend (
    id                text PRIMARY KEY,
    ts                timestamptz NOT NULL,
    gateway           text NOT NULL,
    scope             text NOT NULL,
    namespace         text NOT NULL,
    service_account   text NOT NULL,
    pod               text NOT NULL,
    api_key_hash      text,
    model             text NOT NULL,
    prompt_tokens     integer NOT NULL,
    completion_tokens integer NOT NULL,
    cached_tokens     integer NOT NULL,
    cost_usd          numeric(20, 9) NOT NULL,
    saved_usd         numeric(20, 9) NOT NULL,
    cache_result      text NOT NULL,
    status            integer NOT NULL,
    estimated         boolean NOT NULL,
    priced            boolean NOT NULL
)"""

INSERT = """
INSERT INTO llmgw_spend (id, ts, gateway, scope, namespace, service_account, pod, api_key_hash, model, prompt_tokens,
    completion_tokens, cached_tokens, cost_usd, saved_usd, cache_result, status, estimated, priced)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)
ON CONFLICT (id) DO NOTHING"""

_NANO = Decimal(1_000_000_000)


class PostgresSink:
    def __init__(self, url: str, gateway: str) -> None:
        self.url = url
        self.gateway = gateway
        self.pool: Any = None

    async def _pool(self) -> Any:
        if self.pool is None:
            import asyncpg  # optional dependency: only needed with spend.database_url

            pool = await asyncpg.create_pool(self.url, min_size=1, max_size=2, command_timeout=10)
            async with pool.acquire() as con:
                await con.execute(TABLE_DDL)
            self.pool = pool
        return self.pool

    async def write(self, records: list[SpendRecord]) -> None:
        """Insert a batch in one transaction; raises on failure (the batch then stays in processing and is retried)."""
        rows = [(
            r.id, datetime.fromtimestamp(r.ts, UTC), self.gateway, r.scope, r.namespace, r.service_account, r.pod,
            r.api_key_hash, r.model, r.prompt_tokens, r.completion_tokens, r.cached_tokens,
            Decimal(r.cost_nusd) / _NANO, Decimal(r.saved_nusd) / _NANO, r.cache, r.status, r.estimated, r.priced,
        ) for r in records]
        pool = await self._pool()
        async with pool.acquire() as con, con.transaction():
            await con.executemany(INSERT, rows)

    async def close(self) -> None:
        if self.pool is not None:
            await self.pool.close()
            self.pool = None
