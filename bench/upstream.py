"""A minimal OpenAI-compatible upstream with zero delay, run as its own process by the benchmarks."""

from __future__ import annotations

import sys
import time

import orjson
import uvloop
from aiohttp import web


async def chat(request: web.Request) -> web.Response:
    body = orjson.loads(await request.read())
    text = "echo: " + str(body["messages"][-1].get("content"))
    out = {"id": "chatcmpl-bench", "object": "chat.completion", "created": int(time.time()), "model": body["model"],
           "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": None,
                        "finish_reason": "stop"}],
           "usage": {"prompt_tokens": 20, "completion_tokens": 40, "total_tokens": 60}}
    return web.Response(body=orjson.dumps(out), content_type="application/json")


def main() -> None:
    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    uvloop.install()
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)


if __name__ == "__main__":
    main()
