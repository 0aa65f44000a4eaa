"""Per-entry hit counts (cache/hits.py): the companion key is under the key prefix and outside the entries' SCAN
patterns, and the in-memory counts are bounded. Writing them to Redis is tested in tests/ops (standalone and
cluster)."""

from __future__ import annotations

import asyncio

import pytest
from redis.crc import key_slot

from llmgw_sidecar.cache.hits import HitCounter, companion_key
from llmgw_sidecar.cache.keys import exact_key

FP = "ab" * 32


@pytest.mark.parametrize("prefix", ["llmgw", "{llmgw}", "team:{x}:cache", "a}b{"])
def test_companion_is_under_the_prefix_and_no_entry(prefix: str) -> None:
    entry = exact_key(prefix, "gw:team-a/gw|ns:team-a", "my ns", FP, generation=3, model="gpt-4o")
    companion = companion_key(prefix, entry)
    assert companion == f"{prefix}:hits:exact:gw:team-a/gw|ns:team-a|g:3|cns:my%20ns|m:gpt-4o:{FP}"
    if "{" in prefix and "}" in prefix.split("{", 1)[1]:  # a hash tag in the prefix: the same slot, too
        assert key_slot(companion.encode()) == key_slot(entry.encode())
    # Outside the SCAN patterns of entries (`{prefix}:exact:...`, `{prefix}:sem:...`): never listed or parsed as one.
    assert not companion.startswith((prefix + ":exact:", prefix + ":sem:"))


async def test_pending_counts_are_bounded() -> None:
    counter = HitCounter(redis=None, guard=None, prefix="p", interval_s=3600, max_pending=2)  # type: ignore[arg-type]
    try:
        for key in ("a", "a", "b", "c", "c", "a"):
            counter.hit(key, 1.0)
        assert counter.pending == {("a", 1.0): 3, ("b", 1.0): 1}
        assert counter.not_counted == 2  # "c" twice: counted again from the next interval on
        counter.hit("a", 2.0)  # the same key stored again is another entry
        assert ("a", 2.0) not in counter.pending
    finally:
        assert counter._task is not None
        counter._task.cancel()
        await asyncio.sleep(0)
