"""HTTP/1.1 requests as raw bytes (what a hostile client can send and http.client would refuse to), and the answer."""

from __future__ import annotations

import http.client
import json
import socket
from dataclasses import dataclass
from typing import Any


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def is_openai_error(self) -> bool:
        try:
            err = self.json()["error"]
        except (ValueError, KeyError, TypeError):
            return False
        return (self.headers.get("Content-Type", "").startswith("application/json") and isinstance(err, dict)
                and isinstance(err.get("message"), str) and isinstance(err.get("type"), str) and "code" in err)


def request(port: int, method: bytes, path: bytes, headers: list[tuple[bytes, bytes]], body: bytes = b"",
            content_length: bool = True, timeout: float = 10.0) -> Answer | None:
    """Send one request; None when the server closed the connection without an answer."""
    lines = [method + b" " + path + b" HTTP/1.1", b"Host: 127.0.0.1", b"Connection: close"]
    lines += [k + b": " + v for k, v in headers]
    if content_length:
        lines.append(b"Content-Length: " + str(len(body)).encode())
    return send(port, b"\r\n".join(lines) + b"\r\n\r\n" + body, timeout)


def send(port: int, raw: bytes, timeout: float = 10.0) -> Answer | None:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        try:
            sock.sendall(raw)
        except OSError:
            pass  # the server may refuse before reading everything; its answer is still there to read
        return read_answer(sock)


def read_answer(sock: socket.socket) -> Answer | None:
    resp = http.client.HTTPResponse(sock)
    try:
        resp.begin()
        body = resp.read()
    except (http.client.RemoteDisconnected, ConnectionResetError, http.client.IncompleteRead):
        return None
    return Answer(resp.status, dict(resp.getheaders()), body)
