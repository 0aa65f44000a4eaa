"""Virtual keys of a shared gateway: bearer keys handed out by the gateway's owner, each mapped to a named scope with
optional limits and a budget of its own.

The operator projects every Secret labelled `llmgateway.dev/virtual-key: <gateway>` into one folder, one sub-folder per
Secret (files `key`, `scope`, `rpm`, `tpm`, `maxParallel`, `budgetUsd`, `budgetPeriod`). Only the sha256 of each key
is kept in memory; a presented key is hashed and looked up. The folder is re-read when the kubelet swaps it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

from ..context import Caller, KeyPolicy

log = logging.getLogger("llmgw.auth")

VIRTUAL_KEY_PREFIX = "vk:"  # namespace of a virtual-key caller: never a valid Kubernetes namespace name
RECHECK_S = 2.0
MIN_KEY_LEN = 16  # shorter keys are guessable: refused when loading


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True)
class KeyEntry:
    name: str  # the Secret (folder) name: identifies the key in spend and logs, never the key itself
    scope: str
    policy: KeyPolicy | None

    def caller(self, digest: str) -> Caller:
        # The scope name stands where a namespace would: keys sharing a scope share its cache, limits and budgets.
        return Caller(namespace=VIRTUAL_KEY_PREFIX + self.scope, pod="-", service_account=self.name,
                      api_key_hash=digest[:16], policy=self.policy)


def _read(folder: Path, name: str) -> str | None:
    try:
        return (folder / name).read_text().strip() or None
    except OSError:
        return None


def _int(folder: Path, name: str) -> int | None:
    raw = _read(folder, name)
    if raw is None:
        return None
    value = int(raw)
    if value < 1:
        raise ValueError(f"{name} must be >= 1")
    return value


def load_entry(folder: Path) -> tuple[str, KeyEntry] | None:
    """(sha256 of the key, entry) of one key folder; None (logged) when the folder holds no usable key."""
    key = _read(folder, "key")
    if key is None:
        log.warning("virtual key %s: no 'key' in the Secret; ignored", folder.name)
        return None
    if len(key) < MIN_KEY_LEN:
        log.warning("virtual key %s: shorter than %d characters; ignored", folder.name, MIN_KEY_LEN)
        return None
    try:
        budget_raw = _read(folder, "budgetUsd")
        budget = float(budget_raw) if budget_raw is not None else None
        if budget is not None and budget <= 0:
            raise ValueError("budgetUsd must be > 0")
        period = _read(folder, "budgetPeriod") or "day"
        if period not in ("day", "month"):
            raise ValueError("budgetPeriod must be day or month")
        policy: KeyPolicy | None = KeyPolicy(rpm=_int(folder, "rpm"), tpm=_int(folder, "tpm"),
                                             max_parallel=_int(folder, "maxParallel"),
                                             budget_usd=budget, budget_period=period)
    except ValueError as e:
        log.warning("virtual key %s: %s; ignored", folder.name, e)
        return None
    if policy == KeyPolicy(budget_period=period):
        policy = None
    scope = _read(folder, "scope") or folder.name
    return key_hash(key), KeyEntry(folder.name, scope, policy)


class VirtualKeys:
    """The keys of one folder, reloaded at most every RECHECK_S when anything in it changed."""

    def __init__(self, folder: str | None) -> None:
        self.folder = Path(folder) if folder else None
        self._by_hash: dict[str, KeyEntry] = {}
        self._stamp: tuple[tuple[str, int], ...] | None = None
        self._next_check = 0.0
        self.reload()

    def _current_stamp(self) -> tuple[tuple[str, int], ...]:
        assert self.folder is not None
        out = []
        try:
            # The kubelet swaps a `..data` symlink on update; a plain folder (tests, hand runs) changes mtimes.
            for dirpath, _dirs, files in os.walk(self.folder, followlinks=True):
                for f in files:
                    p = os.path.join(dirpath, f)
                    try:
                        out.append((p, os.stat(p).st_mtime_ns))
                    except OSError:
                        continue
        except OSError:
            return ()
        return tuple(sorted(out))

    def reload(self) -> bool:
        if self.folder is None:
            return False
        stamp = self._current_stamp()
        if stamp == self._stamp:
            return False
        self._stamp = stamp
        keys: dict[str, KeyEntry] = {}
        try:
            folders = sorted(p for p in self.folder.iterdir() if p.is_dir() and not p.name.startswith(".."))
        except OSError:
            folders = []
        for sub in folders:
            loaded = load_entry(sub)
            if loaded is None:
                continue
            digest, entry = loaded
            if digest in keys:
                log.warning("virtual keys %s and %s are the same key; keeping %s", keys[digest].name, entry.name,
                            keys[digest].name)
                continue
            keys[digest] = entry
        self._by_hash = keys
        log.info("virtual keys loaded: %d", len(keys))
        return True

    def __len__(self) -> int:
        return len(self._by_hash)

    def lookup(self, token: str) -> Caller | None:
        now = time.monotonic()
        if now >= self._next_check:
            self._next_check = now + RECHECK_S
            self.reload()
        digest = key_hash(token)
        entry = self._by_hash.get(digest)
        return entry.caller(digest) if entry is not None else None
