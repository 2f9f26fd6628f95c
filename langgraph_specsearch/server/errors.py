"""TGI's error shape for everything FastAPI itself rejects, and `TGIError`s raised by routes.

`/generate_stream` reports an error before its first token as its only server-sent event, with
the error's status; the other routes as a JSON body `{"error", "error_type"}`.
"""

from __future__ import annotations

import json

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from langgraph_specsearch.server.schema import TGIError, validation_error


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers that answer every error in TGI's shape."""

    @app.exception_handler(TGIError)
    async def _tgi_error(_: Request, exc: TGIError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status)

    def _sse_error(exc: TGIError) -> Response:
        payload = f"data:{json.dumps(exc.body())}\n\n"
        return Response(payload, status_code=exc.status, media_type="text/event-stream")

    @app.exception_handler(RequestValidationError)
    async def _bad_body(request: Request, exc: RequestValidationError) -> Response:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        message = f"Failed to deserialize the JSON body: {where}: {first.get('msg', 'invalid')}"
        if request.url.path == "/generate_stream":
            return _sse_error(validation_error(message))
        return JSONResponse({"error": message, "error_type": "validation"}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        # An unparsable body is a 422 validation error in TGI's document (not FastAPI's 400).
        status = 422 if exc.status_code == 400 else exc.status_code
        kind = "validation" if status == 422 else "http"
        if status == 422 and request.url.path == "/generate_stream":
            return _sse_error(TGIError(status, str(exc.detail), kind))
        return JSONResponse(
            {"error": str(exc.detail), "error_type": kind},
            status_code=status,
            headers=getattr(exc, "headers", None),
        )
