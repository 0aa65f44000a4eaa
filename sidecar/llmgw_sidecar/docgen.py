"""Shared by the generated doc sections: rewrite the block between two markers in a Markdown file."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path


def write_block(path: Path, begin: str, end: str, block: str) -> None:
    text = path.read_text()
    start, stop = text.index(begin), text.index(end) + len(end)
    path.write_text(text[:start] + block + text[stop:])


def cli(begin: str, end: str, generate: Callable[[], str]) -> None:
    """No argument: print the block. `--write FILE`: replace the block inside FILE."""
    if len(sys.argv) == 3 and sys.argv[1] == "--write":
        write_block(Path(sys.argv[2]), begin, end, generate())
    else:
        print(generate())
