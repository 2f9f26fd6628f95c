"""`Generation`: what `/generate`, `/generate_stream` and `/` do between a body and its answer.

A request is admitted (429 past `max_concurrent_requests`), its body parsed, validated and
tokenised on a validation thread, its rows handed to the engine; a `/generate` whose client
hangs up is cancelled, a stream sends one event per token and errors as events.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from langgraph_specsearch.server.engine import Engine, Row
from langgraph_specsearch.server.responses import speculation_json, sse, tokens_json, top_json
from langgraph_specsearch.server.schema import (
    GenerateRequest,
    Limits,
    Prepared,
    TGIError,
    parse_request,
    prepare,
    token_json,
)

DISCONNECT_POLL_S = 0.25
"""How often a waiting `/generate` request checks whether its client is still there."""


class Generation:
    """The generation routes' work: admission (429), parsing and validation on the
    validation threads, waiting on the engine, and the JSON / event-stream answers."""

    def __init__(
        self,
        engine: Engine,
        tokenizer: Any,
        limits: Limits,
        validators: ThreadPoolExecutor,
    ) -> None:
        self.engine = engine
        self.tokenizer = tokenizer
        self.limits = limits
        self.validators = validators
        self.in_flight = [0]
        """Requests admitted and not yet answered (a list: tests and the app share it)."""

    def tokenize(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
        """Token ids and character offsets of `text`."""
        enc = self.tokenizer(text, return_offsets_mapping=True)
        return list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]]

    def acquire(self) -> None:
        if self.in_flight[0] >= self.limits.max_concurrent_requests:
            raise TGIError(429, "Model is overloaded", "overloaded")
        self.in_flight[0] += 1

    def release(self) -> None:
        self.in_flight[0] -= 1

    async def submit_while_connected(self, rows: list[Row], request: Request | None) -> None:
        """`self.engine.submit(rows)`; a client that hangs up (e.g. its timeout) cancels its rows,
        so a retried request does not queue behind work nobody will read."""
        job = asyncio.ensure_future(self.engine.submit(rows))
        if request is None:
            await job
            return
        while True:
            done, _ = await asyncio.wait({job}, timeout=DISCONNECT_POLL_S)
            if done:
                job.result()
                return
            if await request.is_disconnected():
                job.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await job
                raise TGIError(499, "Client closed the request", "cancelled")

    async def checked(
        self, request: Request, stream: bool | None
    ) -> tuple[GenerateRequest, Prepared]:
        """Parse, validate and tokenise a body on a validation thread (`stream` None: its own
        `stream` flag, the compat route)."""
        body = await request.body()

        def work() -> tuple[GenerateRequest, Prepared]:
            req = parse_request(body)
            return req, prepare(
                req, self.limits, self.tokenize, stream=req.stream if stream is None else stream
            )

        return await asyncio.get_running_loop().run_in_executor(self.validators, work)

    async def generate_json(self, request: Request) -> dict[str, Any]:
        self.acquire()
        try:
            req, prep = await self.checked(request, stream=False)
            p = req.parameters
            seeds = (
                [prep.seed]
                if prep.best_of == 1
                else [random.randrange(1, 2**63) for _ in range(prep.best_of)]
            )
            rows = [Row.from_prepared(prep, s) for s in seeds]
            prefill_task = None
            if p.decoder_input_details:
                loop = asyncio.get_running_loop()
                prefill_task = loop.run_in_executor(None, self.engine.prefill, prep.ids)
            try:
                await self.submit_while_connected(rows, request)
            except TGIError:
                raise
            except Exception as exc:
                raise TGIError(
                    424, f"Request failed during generation: {exc}", "generation"
                ) from exc
            prefill: list[dict[str, Any]] = []
            if prefill_task is not None:
                lps = await prefill_task
                for i, (token, lp) in enumerate(zip(prep.ids, lps, strict=True)):
                    start, stop = prep.offsets[i]
                    text = (
                        req.inputs[start:stop] if stop > start else self.tokenizer.decode([token])
                    )
                    prefill.append({"id": token, "text": text, "logprob": lp})
            prefix = req.inputs if p.return_full_text else ""

            def seq(row: Row) -> dict[str, Any]:
                return {
                    "generated_text": prefix + row.text,
                    "finish_reason": row.finish_reason or "length",
                    "generated_tokens": len(row.tokens),
                    "prefill": prefill,
                    "seed": row.seed,
                    "tokens": tokens_json(self.engine.special_ids, row),
                    "top_tokens": top_json(self.engine.special_ids, self.tokenizer, row),
                    **speculation_json(row),
                }

            best = max(rows, key=lambda r: sum(r.logprobs))
            body: dict[str, Any] = {"generated_text": prefix + best.text}
            if p.details:
                details = seq(best)
                details.pop("generated_text")
                if prep.best_of > 1:
                    details["best_of_sequences"] = [seq(r) for r in rows if r is not best]
                body["details"] = details
            return body
        finally:
            self.release()

    async def stream_events(self, req: GenerateRequest, prep: Prepared) -> AsyncIterator[bytes]:
        rows: list[Row] = []
        try:
            loop = asyncio.get_running_loop()
            events: asyncio.Queue[int] = asyncio.Queue()

            def on_token(row: Row, index: int) -> None:
                loop.call_soon_threadsafe(events.put_nowait, index)

            row = Row.from_prepared(prep, prep.seed, on_token)
            rows.append(row)
            job = asyncio.ensure_future(self.engine.submit([row]))
            sent = 0
            p = req.parameters
            prefix = req.inputs if p.return_full_text else ""
            while True:
                getter = asyncio.ensure_future(events.get())
                done, _ = await asyncio.wait({getter, job}, return_when=asyncio.FIRST_COMPLETED)
                if getter not in done:
                    getter.cancel()
                    if job.exception() is not None:
                        exc = job.exception()
                        yield sse(
                            {
                                "error": f"Request failed during generation: {exc}",
                                "error_type": "generation",
                            }
                        )
                        return
                    if events.empty():
                        break
                    index = events.get_nowait()
                else:
                    index = getter.result()
                last = row.finish_reason is not None and index == len(row.tokens) - 1
                event: dict[str, Any] = {
                    "index": index,
                    "token": token_json(
                        self.engine.special_ids,
                        row.tokens[index],
                        row.texts[index],
                        row.logprobs[index],
                    ),
                    "top_tokens": [
                        token_json(self.engine.special_ids, t, self.tokenizer.decode([t]), lp)
                        for t, lp in row.top[index]
                    ],
                    "generated_text": None,
                    "details": None,
                }
                if last:
                    event["generated_text"] = prefix + row.text
                    if p.details:
                        event["details"] = {
                            "finish_reason": row.finish_reason,
                            "generated_tokens": len(row.tokens),
                            "seed": row.seed,
                            "input_length": len(prep.ids),
                            **speculation_json(row),
                        }
                yield sse(event)
                sent += 1
                if last:
                    break
            with contextlib.suppress(Exception):
                await job
        except asyncio.CancelledError:
            for r in rows:
                r.cancelled = True
            raise
        except Exception as exc:  # noqa: BLE001 - reported in-band, then the stream closes
            yield sse(
                {"error": f"Request failed during generation: {exc}", "error_type": "generation"}
            )
        finally:
            for r in rows:
                if r.finish_reason is None:
                    r.cancelled = True
            self.release()

    async def _error_event(self, exc: TGIError) -> AsyncIterator[bytes]:
        yield sse(exc.body())

    async def stream_response(
        self, request: Request, *, json_errors: bool = False, checked_body: Any = None
    ) -> Response:
        # Errors before the first token (overloaded, validation) keep their HTTP status, as
        # the OpenAPI document declares: on /generate_stream as the stream's only event, on
        # the compat route `/` as a JSON body (which huggingface_hub's client parses).
        def error(exc: TGIError) -> Response:
            if json_errors:
                return JSONResponse(exc.body(), status_code=exc.status)
            return StreamingResponse(
                self._error_event(exc), status_code=exc.status, media_type="text/event-stream"
            )

        try:
            self.acquire()
        except TGIError as exc:
            return error(exc)
        try:
            req, prep = checked_body or await self.checked(request, stream=True)
        except TGIError as exc:
            self.release()
            return error(exc)
        except BaseException:
            self.release()
            raise
        return StreamingResponse(
            self.stream_events(req, prep),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
