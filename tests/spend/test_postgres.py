"""PostgreSQL sink with a real server (initdb + postgres as the postgres user, loopback, socket in a temp dir):
rows are written before the Redis commit and are idempotent by record id, so a batch committed again after a
crash between the two inserts nothing twice."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from llmgw_sidecar.devredis import free_port
from llmgw_sidecar.spend import SpendService, daily_totals_key
from llmgw_sidecar.spend.postgres import PostgresSink
from tests.limits.helpers import client, config, metrics
from tests.spend.helpers import day_totals, expected, make_records, today

PG_BIN = Path("/usr/lib/postgresql/15/bin")


def _as_postgres(args: list[str], **kw: Any) -> subprocess.Popen[bytes]:
    cmd = args if os.geteuid() != 0 else ["runuser", "-u", "postgres", "--", *args]
    return subprocess.Popen(cmd, **kw)


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    if not (PG_BIN / "initdb").exists():
        pytest.skip("PostgreSQL 15 binaries not installed")
    tmp = Path(tempfile.mkdtemp(prefix="llmgw-pg-"))
    if os.geteuid() == 0:
        shutil.chown(tmp, "postgres", "postgres")
    data = tmp / "data"
    init = _as_postgres([str(PG_BIN / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync"],
                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, err = init.communicate(timeout=120)
    assert init.returncode == 0, err.decode()
    port = free_port()
    srv = _as_postgres([str(PG_BIN / "postgres"), "-D", str(data), "-p", str(port), "-k", str(tmp),
                        "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while subprocess.run([str(PG_BIN / "pg_isready"), "-h", "127.0.0.1", "-p", str(port)],
                         capture_output=True).returncode != 0:
        assert srv.poll() is None and time.monotonic() < deadline, "postgres did not start"
        time.sleep(0.1)
    yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    srv.terminate()
    try:
        srv.wait(15)
    except subprocess.TimeoutExpired:
        srv.kill()
    shutil.rmtree(tmp, ignore_errors=True)


async def test_rows_idempotent_by_record_id(redis_standalone: str, postgres_url: str) -> None:
    import asyncpg

    cfg = config({"url": redis_standalone}, spend={"database_url": postgres_url, "batch_size": 40})
    r = client(cfg)
    svc = SpendService(cfg, r, metrics())
    recs = make_records(100)
    gateway = "team-a/gw"
    # A flusher that wrote the first batch to PostgreSQL and died before its Redis commit:
    early = PostgresSink(postgres_url, gateway)
    await early.write(recs[:40])
    await early.close()
    for rec in recs:
        svc.add(rec)
    await svc.buffer.handoff()
    await svc.flusher.acquire()
    assert await svc.flusher.drain() == 3
    con = await asyncpg.connect(postgres_url)
    try:
        n, cost = await con.fetchrow("SELECT count(*), sum(cost_usd) FROM llmgw_spend WHERE gateway = $1 AND id = ANY($2)",
                                     gateway, [x.id for x in recs])
    finally:
        await con.close()
        await svc.close()
    exp = expected(recs)
    assert n == 100
    assert int(cost * 1_000_000_000) == exp["cost_nusd"]
    tot = await day_totals(r, daily_totals_key(cfg.redis.key_prefix, "team-a", "gw", today()))
    assert tot["requests"] == 100 and tot["cost_nusd"] == exp["cost_nusd"]


async def test_database_down_keeps_batch_in_processing(redis_standalone: str) -> None:
    port = free_port()  # nothing listens there
    cfg = config({"url": redis_standalone}, spend={"database_url": f"postgresql://postgres@127.0.0.1:{port}/x"})
    svc = SpendService(cfg, client(cfg), metrics())
    for rec in make_records(10):
        svc.add(rec)
    await svc.buffer.handoff()
    await svc.flusher.acquire()
    with pytest.raises(OSError):
        await svc.flusher.drain()
    assert await svc.redis.llen(svc.flusher.keys["processing"]) == 1  # not lost: retried on the next round
    assert await svc.redis.hget(daily_totals_key(cfg.redis.key_prefix, "team-a", "gw", today()), "requests") is None
