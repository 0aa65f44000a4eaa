"""What the semantic cache compares and what must match exactly: the question (last user message) split from its
context, the context and scope hashes, and which requests are eligible at all (tools: exact cache only)."""

from __future__ import annotations

import hashlib
from typing import Any

from .keys import canonical

_TOOL_FIELDS = ("tools", "functions", "tool_choice", "function_call")


def uses_tools(body: dict[str, Any]) -> bool:
    """Tools offered, a tool result or a tool/function call anywhere in the conversation: the answer depends on
    things a paraphrase does not carry (the tool's state, its result), so such requests are exact-cache only."""
    if any(body.get(f) for f in _TOOL_FIELDS):
        return True
    for m in body.get("messages") or ():
        if isinstance(m, dict) and (m.get("role") in ("tool", "function") or m.get("tool_calls")
                                    or m.get("function_call")):
            return True
    return False


def question_and_context(body: dict[str, Any], max_chars: int, tools: bool = True
                         ) -> tuple[str, dict[str, Any]] | None:
    """Split a chat request into (the text to embed, the rest that must match exactly), or None if ineligible."""
    if not tools and uses_tools(body):
        return None
    msgs = body.get("messages")
    if not isinstance(msgs, list) or not msgs or not isinstance(msgs[-1], dict):
        return None
    last = msgs[-1]
    if last.get("role") != "user":
        return None  # a tool result or assistant prefill is not a question
    content = last.get("content")
    if isinstance(content, list):
        parts = []
        for p in content:
            if not isinstance(p, dict) or p.get("type") != "text" or not isinstance(p.get("text"), str):
                return None  # images, audio, files: the embedding would not see them
            parts.append(p["text"])
        text = "\n".join(parts)
    elif isinstance(content, str):
        text = content
    else:
        return None
    text = text.strip()
    if not text or len(text) > max_chars:
        return None
    rest = dict(body)
    rest["messages"] = [*msgs[:-1], {k: v for k, v in last.items() if k != "content"}]
    return text, rest


def context_hash(upstream: str, rest: dict[str, Any]) -> str:
    """The exact part of a request: canonical request (cache.keys rules, upstream identity included) without the last
    user message's text."""
    return hashlib.sha256(canonical("chat", upstream, rest)).hexdigest()[:32]


def scope_hash(scope: str, namespace: str | None, generation: int = 0) -> str:
    # The generation (cache.generation) is part of the scope: raising it hides every older entry at once.
    return hashlib.sha256(f"{scope}\x00{namespace or ''}\x00{generation}".encode()).hexdigest()[:24]
