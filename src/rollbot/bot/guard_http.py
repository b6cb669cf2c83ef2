"""HTTP/1.1 for the guard service (bot/guard_service.py), on asyncio directly: keep-alive,
pipelining with answers in order, Content-Length bodies only. A general web framework spent
~300 us of CPU per check, more than 5,000 checks/s leave on one core."""

from __future__ import annotations

import asyncio
import json
from typing import Any, Protocol


class Host(Protocol):
    """What a connection needs from the service behind it."""

    connections: set[Connection]
    heads: dict[bytes, Request]  # head_of's cache: one per service, as its token check is

    def handle(self, conn: Connection, req: Request, body: bytes) -> None: ...

    def lost(self, conn: Connection) -> None: ...


MAX_HEAD = 16 * 1024
MAX_BODY = 64 * 1024
REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    405: "Method Not Allowed",
    413: "Content Too Large",
    431: "Request Header Fields Too Large",
    501: "Not Implemented",
}


class Connection(asyncio.Protocol):
    """One client connection: requests are handled one at a time, so answers stay in order."""

    def __init__(self, service: Host) -> None:
        self.service = service
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None
        self.waiting = False  # a check awaits a venue read: later requests wait their turn
        self.streaming = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.service.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.service.lost(self)
        self.transport = None

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        self.buf += data
        self.process()

    def process(self) -> None:
        while not self.waiting and not self.streaming and self.transport is not None:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buf) > MAX_HEAD:
                    self.reply(431, {"error": "headers too large"}, keep=False)
                return
            request = head_of(bytes(self.buf[:end]), self.service.heads)
            if isinstance(request, tuple):
                self.reply(request[0], {"error": request[1]}, keep=False)
                return
            total = end + 4 + request.length
            if len(self.buf) < total:
                return
            body = bytes(self.buf[end + 4 : total])
            del self.buf[:total]
            self.service.handle(self, request, body)

    def reply(self, status: int, payload: Any, *, keep: bool, extra: str = "") -> None:
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.write(answer(status, body, keep=keep, extra=extra))
        if not keep:
            self.close()

    def start_stream(self, first: bytes) -> None:
        self.streaming = True
        self.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
            b"X-Accel-Buffering: no\r\nConnection: keep-alive\r\n\r\n" + first
        )


def answer(status: int, body: bytes, *, keep: bool, extra: str = "") -> bytes:
    """One whole HTTP answer: head and body."""
    head = (
        f"HTTP/1.1 {status} {REASONS.get(status, '')}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n{extra}"
        + ("" if keep else "Connection: close\r\n")
        + "\r\n"
    )
    return head.encode() + body


class Request:
    __slots__ = ("authorized", "headers", "keep", "length", "method", "path")

    def __init__(
        self, method: str, path: str, headers: dict[str, str], length: int, keep: bool
    ) -> None:
        self.method, self.path, self.headers, self.length, self.keep = (
            method,
            path,
            headers,
            length,
            keep,
        )
        self.authorized: bool | None = None  # the service's token check, once per parsed head


MAX_HEADS = 256


def head_of(raw: bytes, heads: dict[bytes, Request]) -> Request | tuple[int, str]:
    """A trading system sends the same head with every check (its token, its Content-Length):
    parsed once. Requests are never changed once parsed, so one serves every time it comes."""
    request = heads.get(raw)
    if request is None:
        request = parse_head(raw)
        if isinstance(request, Request):
            if len(heads) >= MAX_HEADS:  # many different heads: only the cost comes back
                heads.clear()
            heads[raw] = request
    return request


def parse_head(raw: bytes) -> Request | tuple[int, str]:
    lines = raw.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        return 400, "not an HTTP/1.x request line"
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep:
            return 400, f"malformed header line {line[:50]!r}"
        headers[name.strip().lower()] = value.strip()
    if "transfer-encoding" in headers:
        return 501, "chunked bodies are not accepted: send Content-Length"
    try:
        length = int(headers.get("content-length", "0"))
    except ValueError:
        return 400, "Content-Length is not a number"
    if length < 0 or length > MAX_BODY:
        return 413, f"bodies are at most {MAX_BODY} bytes"
    connection = headers.get("connection", "").lower()
    keep = connection != "close" if parts[2] == "HTTP/1.1" else connection == "keep-alive"
    return Request(parts[0], parts[1].partition("?")[0], headers, length, keep)
