"""PostgreSQL sink with a real server (initdb + postgres as the postgres user, loopback, socket in a temp dir).

The Redis totals are committed first and the batch goes to a sink outbox in the same atomic step; the sink takes it
from there (idempotent by record id). So a PostgreSQL outage never stops the totals that budgets read, and a batch
written twice after a crash inserts nothing twice."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from llmgw_sidecar.devredis import free_port
from llmgw_sidecar.spend import SpendService, daily_totals_key
from llmgw_sidecar.spend.postgres import PostgresSink
from tests.limits.helpers import client, config, metrics
from tests.spend.helpers import day_totals, expected, make_records, today
from tests.spend.procs import metric_value, sidecar_config, start_sidecars, stop_all

PG_BIN = Path("/usr/lib/postgresql/15/bin")


def _as_postgres(args: list[str], **kw: Any) -> subprocess.Popen[bytes]:
    cmd = args if os.geteuid() != 0 else ["runuser", "-u", "postgres", "--", *args]
    return subprocess.Popen(cmd, **kw)


class PgServer:
    """One PostgreSQL server that a test may stop and start again (same data, same port)."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.data = tmp / "data"
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def init(self) -> PgServer:
        init = _as_postgres([str(PG_BIN / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres",
                             "--no-sync"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        _, err = init.communicate(timeout=120)
        assert init.returncode == 0, err.decode()
        return self

    def start(self) -> PgServer:
        self.proc = _as_postgres([str(PG_BIN / "postgres"), "-D", str(self.data), "-p", str(self.port), "-k",
                                  str(self.tmp), "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while subprocess.run([str(PG_BIN / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port)],
                             capture_output=True).returncode != 0:
            assert self.proc.poll() is None and time.monotonic() < deadline, "postgres did not start"
            time.sleep(0.1)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()  # smart shutdown; runuser passes the signal on
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None


@pytest.fixture(scope="module")
def pg() -> Iterator[PgServer]:
    if not (PG_BIN / "initdb").exists():
        pytest.skip("PostgreSQL 15 binaries not installed")
    tmp = Path(tempfile.mkdtemp(prefix="llmgw-pg-"))
    if os.geteuid() == 0:
        shutil.chown(tmp, "postgres", "postgres")
    srv = PgServer(tmp).init().start()
    yield srv
    srv.stop()
    shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture
def postgres_url(pg: PgServer) -> str:
    if pg.proc is None:
        pg.start()  # a test that stopped it and failed before starting it again
    return pg.url


async def _rows(url: str, gateway: str, ids: list[str] | None = None) -> tuple[int, Any]:
    import asyncpg

    con = await asyncpg.connect(url)
    try:
        if ids is None:
            return tuple(await con.fetchrow("SELECT count(*), sum(cost_usd) FROM llmgw_spend WHERE gateway = $1",
                                            gateway))
        return tuple(await con.fetchrow("SELECT count(*), sum(cost_usd) FROM llmgw_spend WHERE gateway = $1 AND "
                                        "id = ANY($2)", gateway, ids))
    finally:
        await con.close()


async def test_rows_idempotent_by_record_id(redis_standalone: str, postgres_url: str) -> None:
    cfg = config({"url": redis_standalone}, spend={"database_url": postgres_url, "batch_size": 40})
    r = client(cfg)
    svc = SpendService(cfg, r, metrics())
    recs = make_records(100)
    gateway = "team-a/gw"
    for rec in recs:
        svc.add(rec)
    await svc.buffer.handoff()
    await svc.flusher.acquire()
    assert await svc.flusher.drain() == 3  # the totals first: three batches committed, three in the sink outbox
    assert await r.llen(svc.flusher.keys["outbox"]) == 3
    # A flusher that wrote the first batch to PostgreSQL and died before taking it out of the outbox:
    early = PostgresSink(postgres_url, gateway)
    await early.write(recs[:40])
    await early.close()
    try:
        assert await svc.flusher.drain_sinks() == 3
        n, cost = await _rows(postgres_url, gateway, [x.id for x in recs])
    finally:
        await svc.close()
    exp = expected(recs)
    assert n == 100
    assert int(cost * 1_000_000_000) == exp["cost_nusd"]
    assert await r.llen(svc.flusher.keys["outbox"]) == 0
    tot = await day_totals(r, daily_totals_key(cfg.redis.key_prefix, "team-a", "gw", today()))
    assert tot["requests"] == 100 and tot["cost_nusd"] == exp["cost_nusd"]


async def test_database_down_totals_still_committed(redis_standalone: str) -> None:
    port = free_port()  # nothing listens there
    cfg = config({"url": redis_standalone}, spend={"database_url": f"postgresql://postgres@127.0.0.1:{port}/x",
                                                   "sink_backlog_batches": 2})
    m = metrics()
    svc = SpendService(cfg, svc_r := client(cfg), m)
    for i in range(3):
        for rec in make_records(10, seed=i):
            svc.add(rec)
        await svc.buffer.handoff()  # one batch per round
    await svc.flusher.acquire()
    assert await svc.flusher.drain() == 3  # committed without the database
    with pytest.raises(OSError):
        await svc.flusher.drain_sinks()
    tot = await day_totals(svc_r, daily_totals_key(cfg.redis.key_prefix, "team-a", "gw", today()))
    assert tot["requests"] == 30
    assert await svc_r.llen(svc.flusher.keys["outbox"]) == 2  # bounded: the oldest batch was given up, and counted
    assert m.spend_records.labels("sink_dropped")._value.get() == 1
    assert await svc_r.llen(svc.flusher.keys["processing"]) == 0
    await svc.close()


@pytest.mark.timeout(180)  # start 30 s + spend until refused 30 s + PostgreSQL back 30 s + drain 30 s
async def test_budget_enforced_while_postgres_is_down(redis_standalone: str, pg: PgServer, tmp_path: Path) -> None:
    """Real sidecars with a PostgreSQL sink that is stopped: budgets still refuse once spent; when PostgreSQL is back,
    every record reaches it."""
    cfg = sidecar_config({"url": redis_standalone}, spend={"flush_interval_s": 0.1, "database_url": pg.url})
    cfg["budgets"] = [{"scope": "namespace", "period": "day", "max_usd": 0.0001}]  # ~2 mock calls
    cfg["gateway"] = {"name": f"pgdown{free_port()}", "namespace": "team-a"}  # its own rows in the shared table
    gateway = f"team-a/{cfg['gateway']['name']}"
    pg.stop()
    cars = start_sidecars(tmp_path, cfg, n=2)
    try:
        codes: list[str] = []
        async with aiohttp.ClientSession() as s:
            deadline = time.monotonic() + 30
            while not codes or codes[-1] != "budget_exceeded":
                assert time.monotonic() < deadline, codes
                body = {"model": "m", "messages": [{"role": "user", "content": f"spend {len(codes)}"}]}
                async with s.post(cars[len(codes) % 2].url + "/v1/chat/completions", json=body) as r:
                    data = await r.json()
                    if not (r.status == 503 and data["error"]["code"] == "rate_limiter_timeout"):  # undecided: again
                        codes.append(data["error"]["code"] if r.status == 429 else "ok")
                        assert r.status in (200, 429), data
                await asyncio.sleep(0.05)
        ok = codes.count("ok")
        assert 2 <= ok <= 12, codes  # spent becomes visible after hand-off + commit (~2 flush intervals)
        texts = [c.metrics_text() for c in cars]
        assert sum(metric_value(t, "llmgw_spend_flushes_total", result="sink_error") for t in texts) > 0
        assert sum(metric_value(t, "llmgw_spend_buffer_depth", stage="sink") for t in texts) > 0
        pg.start()
        deadline = time.monotonic() + 30
        while True:  # the outbox drains into PostgreSQL now: every answered request, once
            try:
                n, _ = await _rows(pg.url, gateway)
            except Exception:  # noqa: BLE001 - the table appears with the first write
                n = 0
            if n == ok:
                break
            assert time.monotonic() < deadline and n < ok, (n, ok)
            await asyncio.sleep(0.2)
    finally:
        stop_all(cars)
        if pg.proc is None:
            pg.start()
