"""ASGI guards in front of the TGI routes: API key, body-size limit, last-resort errors.

Plain ASGI middlewares (not `@app.middleware("http")`, whose wrapper hides client disconnects
from the routes, and `/generate` cancels the work of a client that hung up). Outermost first:
`ErrorShield` -> `BearerAuth` -> `BodyLimit` -> the routes. Every answer they give has TGI's
`{"error", "error_type"}` shape.
"""

from __future__ import annotations

import hmac
import logging

from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("langgraph_specsearch.serve")

OPEN_ROUTES = frozenset({"/health", "/info"})
"""Routes that need no API key: TGI's router keeps `/health` and `/info` open too."""

DEFAULT_PAYLOAD_LIMIT = 2_000_000
"""Largest request body in bytes (TGI's `--payload-limit` default)."""


def check_api_key(api_key: str | None) -> None:
    """Refuse an API key no client could send (empty, blank, or with line breaks)."""
    if api_key is None:
        return
    if not api_key.strip():
        raise ValueError("--api-key is empty: give a key, or leave the option out")
    if any(c in api_key for c in "\r\n\0"):
        raise ValueError("--api-key contains a line break or NUL, which no HTTP header can carry")


class BearerAuth:
    """Every route but `OPEN_ROUTES` needs `Authorization: Bearer <api_key>` (else 401).

    The scheme is case-insensitive (RFC 7235); the key is compared in constant time, as UTF-8
    bytes, so any key text works (a header's bytes are matched exactly).
    """

    def __init__(self, app: ASGIApp, api_key: str) -> None:
        check_api_key(api_key)
        self.app = app
        self.expected = api_key.encode("utf-8")

    def authorized(self, header: bytes) -> bool:
        """Whether an `Authorization` header value carries the key."""
        scheme, _, token = header.strip().partition(b" ")
        if scheme.lower() != b"bearer":
            return False
        return hmac.compare_digest(token.strip(), self.expected)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] not in OPEN_ROUTES:
            given = dict(scope["headers"]).get(b"authorization", b"")
            if not self.authorized(given):
                body = {
                    "error": "Unauthorized: missing or wrong API key",
                    "error_type": "unauthorized",
                }
                headers = {"WWW-Authenticate": "Bearer"}
                await JSONResponse(body, status_code=401, headers=headers)(scope, receive, send)
                return
        await self.app(scope, receive, send)


class BodyLimit:
    """Answers 413 to a body over `limit` bytes before anything parses it.

    A declared `Content-Length` over the limit is refused at once; otherwise the body is read
    here (at most `limit` bytes are held) and handed on to the route unchanged.
    """

    def __init__(self, app: ASGIApp, limit: int) -> None:
        if limit <= 0:
            raise ValueError(f"--payload-limit must be positive, got {limit}")
        self.app = app
        self.limit = limit

    async def refuse(self, scope: Scope, receive: Receive, send: Send, size: str) -> None:
        """TGI-shaped 413; the connection is closed (the rest of the body is not read)."""
        body = {
            "error": f"Payload too large: {size} bytes, the limit is {self.limit}"
            " (serve --payload-limit)",
            "error_type": "payload_too_large",
        }
        response = JSONResponse(body, status_code=413, headers={"Connection": "close"})
        await response(scope, receive, send)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await self.refuse(scope, receive, send, declared.decode())
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client left before sending it all
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                await self.refuse(scope, receive, send, f"more than {self.limit}")
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()  # after the body: the disconnect, when it comes

        await self.app(scope, replay, send)


class ErrorShield:
    """A route's unexpected exception becomes TGI's 500 `{"error", "error_type"}` and one
    log line (no traceback in the log, no dropped connection)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracked(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        except Exception as exc:  # noqa: BLE001 - the last line of defence, logged in one line
            log.error(
                "%s %s failed: %s: %s", scope["method"], scope["path"], type(exc).__name__, exc
            )
            if started:
                return  # a stream already under way: it just ends
            body = {"error": f"Internal error: {type(exc).__name__}", "error_type": "internal"}
            await JSONResponse(body, status_code=500)(scope, receive, send)
