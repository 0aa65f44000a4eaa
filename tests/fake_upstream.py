"""A fake OpenAI-compatible upstream (real aiohttp server). Behaviour is chosen by the upstream model id:

ok            answer "echo: <last user message>" (streams in word chunks; usage chunk when asked)
tools         answer with a tool call
flaky-429     first call per prompt: 429 + Retry-After: 0, then ok
flaky-500     first call per prompt: 500, then ok
bad-400       always 400 with an OpenAI error body
slow          sleeps `slow_s` before the headers
broken-stream streams two chunks, then drops the connection without [DONE]
no-usage      answers without a usage object
bad-event     streams one chunk, then an event that is not JSON
null-event    streams one chunk, then `data: null`
error-event   streams one chunk, then an OpenAI error event (whose message quotes the upstream key)
slow-stream   streams its chunks `slow_chunk_s` apart (a long generation)
stall-error   answers 400 with the start of an error body, then stalls (never finishes the body)
echo-key      answers 401 quoting the credentials it received (as some upstreams do)
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from typing import Any

from aiohttp import web


class FakeUpstream:
    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        self.seen: Counter[str] = Counter()
        self.slow_s = 2.0
        self.chunk_delay_s = 0.0
        self.slow_chunk_s = 0.4
        self._auth = ""

    def reset(self) -> None:
        self.calls.clear()
        self.seen.clear()

    def count(self, model: str | None = None) -> int:
        return sum(1 for c in self.calls if model is None or c["body"].get("model") == model)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self.chat)
        app.router.add_post("/v1/completions", self.completions)
        app.router.add_post("/v1/embeddings", self.embeddings)
        app.router.add_post("/openai/deployments/{dep}/chat/completions", self.chat)
        return app

    async def _record(self, request: web.Request) -> dict[str, Any]:
        self._auth = request.headers.get("Authorization", "").removeprefix("Bearer ")
        body = await request.json()
        self.calls.append({"path": request.path, "query": dict(request.query), "headers": dict(request.headers),
                           "body": body})
        return body

    @staticmethod
    def _last_user(body: dict[str, Any]) -> str:
        for m in reversed(body.get("messages") or []):
            if m.get("role") == "user":
                return str(m.get("content"))
        return str(body.get("prompt", ""))

    async def _gate(self, body: dict[str, Any]) -> web.Response | None:
        model = body.get("model", "")
        key = f"{model}|{self._last_user(body)}"
        self.seen[key] += 1
        if model == "flaky-429" and self.seen[key] == 1:
            return web.json_response({"error": {"message": "slow down", "type": "rate_limit_error",
                                                "code": "rate_limit_exceeded"}}, status=429,
                                     headers={"Retry-After": "0"})
        if model == "flaky-500" and self.seen[key] == 1:
            return web.json_response({"error": {"message": "boom", "type": "server_error"}}, status=500)
        if model == "echo-key":
            return web.json_response({"error": {"message": f"Incorrect API key provided: {self._auth}",
                                                "type": "invalid_request_error", "code": "invalid_api_key"}},
                                     status=401)
        if model == "bad-400":
            return web.json_response({"error": {"message": "temperature is too hot", "type": "invalid_request_error",
                                                "param": "temperature", "code": "bad_temperature"}}, status=400)
        if model == "slow":
            await asyncio.sleep(self.slow_s)
        return None

    async def stall_error(self, request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(status=400, headers={"Content-Type": "application/json", "Content-Length": "1000"})
        await resp.prepare(request)
        await resp.write(b'{"error": {"message": "partial')
        for _ in range(300):  # until the gateway hangs up (at most 30 s)
            if request.transport is None or request.transport.is_closing():
                break
            await asyncio.sleep(0.1)
        return resp

    async def chat(self, request: web.Request) -> web.StreamResponse:
        body = await self._record(request)
        if body.get("model") == "stall-error":
            return await self.stall_error(request)
        if (early := await self._gate(body)) is not None:
            return early
        text = f"echo: {self._last_user(body)}"
        model = body["model"]
        usage = {"prompt_tokens": 11, "completion_tokens": len(text.split()), "total_tokens": 11 + len(text.split())}
        head = {"id": f"chatcmpl-{len(self.calls)}", "created": int(time.time()), "model": model,
                "system_fingerprint": "fp_fake"}
        if not body.get("stream"):
            msg: dict[str, Any] = {"role": "assistant", "content": text}
            finish = "stop"
            if model == "tools":
                msg = {"role": "assistant", "content": None, "tool_calls": [{"id": "call_1", "type": "function",
                       "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]}
                finish = "tool_calls"
            out = {**head, "object": "chat.completion",
                   "choices": [{"index": 0, "message": msg, "logprobs": None, "finish_reason": finish}]}
            if model != "no-usage":
                out["usage"] = usage
            return web.json_response(out)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)

        async def send(obj: dict[str, Any]) -> None:
            await resp.write(b"data: " + json.dumps(obj).encode() + b"\n\n")
            if self.chunk_delay_s:
                await asyncio.sleep(self.chunk_delay_s)
            if model == "slow-stream":
                await asyncio.sleep(self.slow_chunk_s)

        chunk = {**head, "object": "chat.completion.chunk"}
        if model == "tools":
            await send({**chunk, "choices": [{"index": 0, "delta": {"role": "assistant", "content": None,
                        "tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                                        "function": {"name": "get_weather", "arguments": ""}}]},
                        "finish_reason": None}]})
            for part in ('{"city"', ': "Paris"}'):
                await send({**chunk, "choices": [{"index": 0, "delta": {"tool_calls": [
                    {"index": 0, "function": {"arguments": part}}]}, "finish_reason": None}]})
            finish = "tool_calls"
        else:
            words = text.split(" ")
            for i, w in enumerate(words):
                delta = {"role": "assistant", "content": w} if i == 0 else {"content": " " + w}
                await send({**chunk, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]})
                if model == "broken-stream" and i == 1:
                    assert request.transport is not None
                    request.transport.close()
                    return resp
                bad = {"bad-event": b"data: {not json\n\n", "null-event": b"data: null\n\n",
                       "error-event": b'data: {"error": {"message": "overloaded (key sk-upstream)", "type": '
                                      b'"server_error", "code": "overloaded"}}\n\n'}.get(model)
                if bad is not None and i == 1:
                    await resp.write(bad)
                    await resp.write(b"data: [DONE]\n\n")
                    await resp.write_eof()
                    return resp
            finish = "stop"
        await send({**chunk, "choices": [{"index": 0, "delta": {}, "finish_reason": finish}]})
        if (body.get("stream_options") or {}).get("include_usage") and model != "no-usage":
            await send({**chunk, "choices": [], "usage": usage})
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp

    async def completions(self, request: web.Request) -> web.Response:
        body = await self._record(request)
        if (early := await self._gate(body)) is not None:
            return early
        return web.json_response({"id": "cmpl-1", "object": "text_completion", "created": int(time.time()),
                                  "model": body["model"], "choices": [{"index": 0, "text": f"echo: {body['prompt']}",
                                                                       "logprobs": None, "finish_reason": "stop"}],
                                  "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}})

    async def embeddings(self, request: web.Request) -> web.Response:
        body = await self._record(request)
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        data = [{"object": "embedding", "index": i, "embedding": [float(len(str(x))), 0.5, -0.5]}
                for i, x in enumerate(inputs)]
        return web.json_response({"object": "list", "data": data, "model": body["model"],
                                  "usage": {"prompt_tokens": 4, "total_tokens": 4}})
