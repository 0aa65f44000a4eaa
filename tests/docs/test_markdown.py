"""Every Markdown file of the repository, rendered with markdown-it-py (CommonMark): code fences are closed, relative
links (and their #anchors) resolve, and every `make` target and `llmgw-sidecar` command or flag named in code exists."""

from __future__ import annotations

import functools
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
from markdown_it import MarkdownIt
from markdown_it.token import Token

REPO = Path(__file__).resolve().parents[2]
SKIP_DIRS = {".git", ".venv", ".cache", ".data", "node_modules", ".pytest_cache", ".ruff_cache", "build", "dist"}
MD = MarkdownIt("commonmark").enable("table")


def markdown_files() -> list[Path]:
    return sorted(p for p in REPO.rglob("*.md") if not SKIP_DIRS & set(p.relative_to(REPO).parts))


def tokens(path: Path) -> list[Token]:
    return MD.parse(path.read_text())


def walk(toks: list[Token]):
    for t in toks:
        yield t
        if t.children:
            yield from walk(t.children)


def code_texts(path: Path) -> list[str]:
    """Inline code and code blocks: where commands are written."""
    return [t.content for t in walk(tokens(path)) if t.type in ("code_inline", "fence", "code_block")]


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    s = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return s.replace(" ", "-")


@functools.cache
def anchors(path: Path) -> frozenset[str]:
    toks = tokens(path)
    return frozenset(slug(toks[i + 1].content) for i, t in enumerate(toks) if t.type == "heading_open")


FILES = markdown_files()
IDS = [str(p.relative_to(REPO)) for p in FILES]


def test_there_are_docs_to_check() -> None:
    names = set(IDS)
    assert {"README.md", "docs/metrics.md", "docs/configuration.md"} <= names, names


@pytest.mark.parametrize("path", FILES, ids=IDS)
def test_renders_and_every_fence_is_closed(path: Path) -> None:
    MD.render(path.read_text())
    lines = path.read_text().splitlines()
    for t in tokens(path):
        if t.type != "fence":
            continue
        start, end = t.map or (0, 0)
        # An unclosed fence runs to the end of the file and swallows everything after it (as "``` text" would).
        closing = lines[end - 1].strip() if end - 1 > start else ""
        assert closing.startswith(t.markup) and closing.strip(t.markup[0]) == "", (
            f"{path.name}:{start + 1}: code fence {t.markup}{t.info} is never closed")
        # "``` text" or "```lang" inside a fence is no closing line: the fence goes on and swallows the prose after it.
        for n, line in enumerate(t.content.splitlines(), start=start + 2):
            assert not line.lstrip().startswith(t.markup), (
                f"{path.name}:{n}: '{line.strip()[:30]}' inside the fence opened on line {start + 1}: a closing fence "
                "must stand alone on its line")


@pytest.mark.parametrize("path", FILES, ids=IDS)
def test_relative_links_resolve(path: Path) -> None:
    broken = []
    for t in walk(tokens(path)):
        target = t.attrs.get("href") if t.type == "link_open" else t.attrs.get("src") if t.type == "image" else None
        if not isinstance(target, str):
            continue
        url = urlsplit(target)
        if url.scheme or target.startswith("//"):
            continue  # external: not checked offline
        dest = (path.parent / unquote(url.path)).resolve() if url.path else path
        if not dest.exists():
            broken.append(f"{target} (no {dest.relative_to(REPO) if dest.is_relative_to(REPO) else dest})")
        elif url.fragment and dest.suffix == ".md" and url.fragment not in anchors(dest):
            broken.append(f"{target} (no heading #{url.fragment} in {dest.name})")
    assert not broken, f"{path.relative_to(REPO)}: broken links: {broken}"


def make_targets() -> set[str]:
    text = (REPO / "Makefile").read_text()
    return set(re.findall(r"^([a-z][\w-]*)\s*:", text, flags=re.M))


MAKE_CALL = re.compile(r"(?:^|[\s;&|(`])make((?:\s+[A-Za-z_]\w*=\S*)*)\s+([a-z][\w-]*)")


@pytest.mark.parametrize("path", FILES, ids=IDS)
def test_named_make_targets_exist(path: Path) -> None:
    targets = make_targets()
    named = {m.group(2) for code in code_texts(path) for m in MAKE_CALL.finditer(code)}
    assert named <= targets, f"{path.relative_to(REPO)} names make targets that do not exist: {named - targets}"


@functools.cache
def cli_help(*words: str) -> str:
    r = subprocess.run([sys.executable, "-m", "llmgw_sidecar", *words, "--help"], capture_output=True, text=True,
                       timeout=60, cwd=REPO)
    return r.stdout if r.returncode == 0 else ""


def subcommands(help_text: str) -> set[str]:
    """The commands argparse lists under a subparsers group (indented by 4 under 'COMMAND' or '{a,b}')."""
    out: set[str] = set()
    lines = help_text.splitlines()
    for i, line in enumerate(lines):
        if re.fullmatch(r"  (COMMAND|\{[\w,-]+\})", line.rstrip()):
            for sub in lines[i + 1:]:
                m = re.match(r"    ([a-z][\w-]*)(\s|$)", sub)
                if not m:
                    if sub.startswith("      "):
                        continue  # a wrapped help line
                    break
                out.add(m.group(1))
    return out


SIDECAR_CALL = re.compile(r"llmgw-sidecar((?:\s+(?:--?[\w-]+(?:=\S+)?|[a-z][\w-]*))*)")


@pytest.mark.parametrize("path", FILES, ids=IDS)
def test_named_cli_commands_and_flags_exist(path: Path) -> None:
    problems = []
    for code in code_texts(path):
        for m in SIDECAR_CALL.finditer(code):
            words, flags, helptext = [], [], cli_help()
            for w in m.group(1).split():
                if w.startswith("-"):
                    flags.append(w.split("=")[0])
                elif not flags and w in subcommands(helptext):
                    words.append(w)
                    helptext = cli_help(*words)
                else:
                    break  # an argument (a file name): the rest is not for us to check
            for f in flags:
                if f not in helptext:
                    problems.append(f"`llmgw-sidecar {' '.join(words)}` has no {f}")
    assert not problems, f"{path.relative_to(REPO)}: {problems}"


def test_cli_help_parsing_finds_the_commands() -> None:
    # The checks above rely on this: if argparse's layout changed, they would silently check nothing.
    assert {"serve", "check-config", "export-model"} <= subcommands(cli_help())
    assert "--config" in cli_help("serve")
