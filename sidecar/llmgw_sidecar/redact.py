"""Configured secrets never leave the gateway: not in error bodies relayed to the app, not in log lines.

The values come from the config (upstream API keys, Redis and sentinel passwords, embedding keys, database URLs,
tokens: inline, `os.environ/NAME` or `*_file`), found by field name so that settings added later are covered too.
An upstream that quotes the key it was sent ("Incorrect API key provided: sk-...") is relayed with "***" instead.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

MASK = "***"
_MIN_LEN = 6  # shorter values would mask ordinary words; credentials are longer
_SECRET_NAME = re.compile(r"(^|_)(password|secret|token|api_key|apikey|key)$")
_SECRET_FILE = re.compile(r"(^|_)(password|secret|token|api_key|key)_file$")
_SECRET_HEADER = re.compile(r"authorization|api-key|apikey|token|secret|subscription-key", re.I)


def _url_password(value: str) -> str | None:
    if "://" not in value or "@" not in value:
        return None
    try:
        return urlsplit(value).password
    except ValueError:
        return None


def _read_small(path: str) -> str | None:
    try:
        p = Path(path)
        return p.read_text().strip() if p.stat().st_size < 65536 else None
    except (OSError, UnicodeDecodeError):
        return None


def secret_values(data: Any) -> set[str]:
    """Every credential-looking value in a config dump (nested dicts/lists)."""
    found: set[str] = set()

    def walk(node: Any, name: str = "") -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                key = str(k)
                if name == "headers" and isinstance(v, str) and _SECRET_HEADER.search(key):
                    found.add(v)
                    found.add(v.split(" ", 1)[-1])  # "Bearer <token>"
                walk(v, key.lower())
        elif isinstance(node, list):
            for v in node:
                walk(v, name)
        elif isinstance(node, str) and node:
            if _SECRET_NAME.search(name):
                found.add(node)
            elif _SECRET_FILE.search(name):
                content = _read_small(node)
                if content:
                    found.add(content)
            pw = _url_password(node)
            if pw:
                found.add(pw)

    walk(data)
    return {v for v in found if len(v) >= _MIN_LEN}


class Redactor:
    """Process-wide (logs are): every runtime adds its config's secrets; values are never removed, so a line about
    a retired runtime is still scrubbed."""

    def __init__(self) -> None:
        self._values: tuple[str, ...] = ()
        self._pattern: re.Pattern[str] | None = None

    def add(self, values: set[str]) -> None:
        new = set(self._values) | values
        if len(new) == len(self._values):
            return
        self._values = tuple(sorted(new, key=len, reverse=True))  # longest first: no partial masks
        self._pattern = re.compile("|".join(re.escape(v) for v in self._values))

    def add_config(self, config: Any) -> None:
        self.add(secret_values(config.model_dump(mode="json")))

    def scrub(self, text: str) -> str:
        if self._pattern is None or not text:
            return text
        return self._pattern.sub(MASK, text)


REDACTOR = Redactor()


class RedactingFilter(logging.Filter):
    """Scrubs the final text of every record that goes through the handler it is attached to."""

    def filter(self, record: logging.LogRecord) -> bool:
        if REDACTOR._pattern is None:
            return True
        msg = record.getMessage()
        clean = REDACTOR.scrub(msg)
        if record.exc_info and record.exc_info[1] is not None:
            import traceback

            clean += "\n" + REDACTOR.scrub("".join(traceback.format_exception(*record.exc_info)).rstrip())
            record.exc_info = None
            record.exc_text = None
        if clean != msg or record.args:
            record.msg, record.args = clean, None
        return True


def install_log_filter() -> None:
    """Attach the filter to every handler of the root logger (idempotent)."""
    for h in logging.getLogger().handlers:
        if not any(isinstance(f, RedactingFilter) for f in h.filters):
            h.addFilter(RedactingFilter())
