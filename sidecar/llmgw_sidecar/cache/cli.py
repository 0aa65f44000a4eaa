"""`llmgw-sidecar cache ls|show|rm|purge|savings`: talks to Redis directly with the sidecar's config, through the same
CacheAdmin as the admin HTTP API (so both select, page and delete the same way).

Deletions here are not counted in llmgw_cache_invalidations_total: this process ends before anything could scrape it,
the stack has no Pushgateway, and a count kept in Redis for the sidecars to export would be exported by every replica
of the gateway at once (summing over pods would multiply it). They are logged instead, on stderr, with who asked:
`cli user=... host=... pid=...` plus `--actor` (in a pod, host is the pod's name; who ran `kubectl exec` is in the
API server's audit log).
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import re
import socket
import sys
from typing import Any

import orjson

from ..config import Config
from ..redis_topology import make_client
from ..spend.scopes import read_scopes
from .admin import KINDS, CacheAdmin, Entry, Selector, parse_duration


def add_parser(sub: Any, load: Any) -> None:
    """Register the `cache` subcommand; `load(path)` returns a Config or exits 2."""
    c = sub.add_parser("cache", help="inspect and invalidate this gateway's cache; per-scope savings")
    verbs = c.add_subparsers(dest="verb", required=True)

    def common(p: argparse.ArgumentParser, selectors: bool = True) -> None:
        p.add_argument("--config", "-c", required=True, help="the sidecar's config file (in a pod: "
                       "/etc/llmgw/config.yaml)")
        p.add_argument("--json", action="store_true", help="print JSON instead of a table")
        if selectors:
            p.add_argument("--scope", help="ns:<namespace>, sa:<ns>/<name>, pod:<ns>/<pod>, key:<hash>, gateway or "
                           "global; also selects the narrower scopes inside it")
            p.add_argument("--model", help="public model name")
            p.add_argument("--older-than", type=parse_duration, metavar="AGE", help="e.g. 90s, 15m, 2h, 7d")
            p.add_argument("--generation", type=int, help="entries written under this cache.generation")
            p.add_argument("--stale-generations", action="store_true",
                           help="entries of any generation but the configured cache.generation")
            p.add_argument("--cache", choices=[*KINDS, "all"], default="all")

    ls = verbs.add_parser("ls", help="list entries (paged SCAN, never KEYS)")
    common(ls)
    ls.add_argument("--limit", type=int, default=100, help="stop after this many entries (0: all)")
    show = verbs.add_parser("show", help="one entry: fingerprint, size, age, TTL, usage")
    common(show, selectors=False)
    show.add_argument("key")
    rm = verbs.add_parser("rm", help="delete entries by key or request fingerprint")
    common(rm, selectors=False)
    rm.add_argument("keys", nargs="+")
    purge = verbs.add_parser("purge", help="delete every entry the selectors match (exact and semantic)")
    common(purge)
    for p in (rm, purge):
        p.add_argument("--actor", default=os.environ.get("LLMGW_ACTOR", ""),
                       help="who asks (a name, a ticket), for the log line of the deletion; default $LLMGW_ACTOR")
    purge.add_argument("--all", action="store_true", help="no selector: every entry of this gateway")
    purge.add_argument("--dry-run", action="store_true", help="count, delete nothing")
    sav = verbs.add_parser("savings", help="hits, misses, tokens and USD saved per cache scope")
    common(sav, selectors=False)
    sav.add_argument("--scope", help="one scope (and the narrower ones inside it), e.g. ns:team-x")
    sav.add_argument("--last", type=int, default=30, help="days, today included")
    sav.add_argument("--top", type=int, help="only the N biggest savers")
    c.set_defaults(fn=lambda args: run(args, load(args.config)))


def _selector(args: argparse.Namespace) -> Selector:
    return Selector(scope=args.scope, model=args.model, older_than_s=args.older_than, generation=args.generation,
                    stale_generations=args.stale_generations,
                    kinds=KINDS if args.cache == "all" else (args.cache,))


_ACTOR = re.compile(r"[^A-Za-z0-9@._:/+-]")  # the admin API's X-LLMGW-Actor rule: one token, no log injection


def _who(actor: str = "") -> str:
    try:
        user = getpass.getuser()
    except Exception:  # noqa: BLE001 - no passwd entry in a container: still say it was the CLI
        user = "unknown"
    actor = _ACTOR.sub("", actor)[:64] or "unnamed"
    return f"cli actor={actor} user={user} host={socket.gethostname()} pid={os.getpid()}"


def _row(e: Entry) -> str:
    age = f"{e.age_s:.0f}s" if e.age_s is not None else "-"
    ttl = f"{e.ttl_s:.0f}s" if e.ttl_s is not None else "-"
    return f"{e.cache:8} {e.model or '-':20} {e.scope:40} g{e.generation} {age:>8} {ttl:>8} {e.size_bytes or 0:>9}  {e.key}"


def run(args: argparse.Namespace, cfg: Config) -> int:
    return asyncio.run(_run(args, cfg))


async def _run(args: argparse.Namespace, cfg: Config) -> int:
    redis = make_client(cfg.redis)
    admin = CacheAdmin(redis, cfg, None)  # no metrics: see the module docstring
    out = sys.stdout
    try:
        if args.verb == "ls":
            sel = _selector(args)
            rows: list[Entry] = []
            async for e in admin.iter(sel):
                rows.append(e)
                if args.limit and len(rows) >= args.limit:
                    break
            if args.json:
                out.write(orjson.dumps([e.to_dict() for e in rows]).decode() + "\n")
            else:
                out.write(f"{'cache':8} {'model':20} {'scope':40} gen {'age':>8} {'ttl':>8} {'bytes':>9}  key\n")
                out.writelines(_row(e) + "\n" for e in rows)
        elif args.verb == "show":
            shown = await admin.show(args.key)
            if shown is None:
                print(f"llmgw-sidecar: no entry {args.key} in this gateway's cache", file=sys.stderr)
                return 1
            out.write(orjson.dumps(shown.to_dict(), option=orjson.OPT_INDENT_2).decode() + "\n")
        elif args.verb == "rm":
            result = await admin.delete_keys(args.keys, _who(args.actor))
            out.write(orjson.dumps(result).decode() + "\n")
            return 0 if not result["skipped"] else 1
        elif args.verb == "purge":
            sel = _selector(args)
            if sel.by() == "all" and not args.all:
                print("llmgw-sidecar: purge needs a selector (--scope, --model, --older-than, --generation, "
                      "--stale-generations) or --all", file=sys.stderr)
                return 2
            counts = await admin.delete(sel, _who(args.actor), dry_run=args.dry_run)
            verb = "would delete" if args.dry_run else "deleted"
            if args.json:
                out.write(orjson.dumps({"deleted": counts, "dry_run": args.dry_run}).decode() + "\n")
            else:
                out.write(f"{verb} {counts['exact']} exact and {counts['semantic']} semantic entries "
                          f"({sel.describe()})\n")
        elif args.verb == "savings":
            g = cfg.gateway
            doc = await read_scopes(redis, cfg.redis.key_prefix, g.namespace, g.name, last=args.last,
                                    scope=args.scope, top=args.top)
            if args.json:
                out.write(orjson.dumps(doc).decode() + "\n")
            else:
                out.write(f"{doc['gateway']} {doc['days'][0]}..{doc['days'][1]}\n")
                out.write(f"{'scope':40} {'hits':>8} {'misses':>8} {'ratio':>6} {'tokens saved':>13} {'USD saved':>12}\n")
                for r in doc["scopes"]:
                    out.write(f"{r['scope']:40} {r['hits']:>8} {r['misses']:>8} {r['hit_ratio']:>6.2f} "
                              f"{r['saved_tokens']:>13} {r['saved_usd']:>12.6f}\n")
        return 0
    finally:
        await redis.aclose()
