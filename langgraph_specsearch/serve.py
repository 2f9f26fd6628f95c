"""A Text-Generation-Inference-compatible HTTP server over a local transformers model.

`create_app(model, tokenizer, model_id=...)` returns a FastAPI app speaking TGI's REST API
(docs/openapi.json of huggingface/text-generation-inference v3): `POST /generate`,
`POST /generate_stream` (server-sent events), `POST /` (compat route, `stream` flag),
`GET /info`, `GET /health`, `POST /tokenize`. huggingface_hub's `InferenceClient` /
`AsyncInferenceClient` and `TGIBackend` work against it unchanged.

Batching. Requests go to a queue; a background task collects what arrives within a few
milliseconds (up to `max_batch_size` sequences) and runs ONE `model.generate` call (left
padding) for the whole group on a single worker thread. Greedy and sampled requests share the
batch: a per-row logits processor picks every row's next token itself (argmax, or a sample from
the row's own temperature / top-k / top-p distribution drawn with the row's own
`torch.Generator`) and hands `generate` a one-hot score, while a per-row stopping criterion
applies each request's stop sequences and `max_new_tokens`. So per-request seeds are honoured
inside a shared batch: the same seed and prompt give the same tokens as long as the logits
agree, which they do up to float rounding (left padding changes the arithmetic slightly, so a
seeded sample is reproducible exactly at batch size 1 and in practice otherwise). A request
without a seed that samples gets a random seed, reported in `details.seed` like TGI.
Batches are static (no joining mid-generation): a batch runs until its last row stops.

Speculation. With `draft=(model, tokenizer)`, greedy requests without penalties are decoded
one at a time with transformers' assisted generation (`assistant_model=`; universal assisted
generation with `tokenizer=`/`assistant_tokenizer=` when the vocabularies differ), whose output
equals plain greedy decoding. Their stream events are sent when the request finishes. `/info`
reports `speculate` and `draft_model_id`.

Reported log-probabilities are `log_softmax(logits / temperature)` (raw logits when greedy),
before top-k/top-p filtering, so they are finite. `typical_p` and `watermark` are accepted and
ignored; `grammar` is rejected (422) as TGI does without grammar support. With `api_key` set,
every route except `/health` needs `Authorization: Bearer <key>` (401 otherwise).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import random
import threading
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Annotated, Any

import torch
import typer
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from transformers import (
    GenerationConfig,
    LogitsProcessor,
    LogitsProcessorList,
    StoppingCriteria,
    StoppingCriteriaList,
)

VERSION = "3.3.6-specsearch"
FLOOR_LOGPROB = -1e4


# ---------------------------------------------------------------------------- request schema


class GrammarParam(BaseModel):
    """TGI's `grammar` parameter (accepted by the schema, rejected by validation)."""

    type: str
    value: Any = None


class GenerateParameters(BaseModel):
    """TGI `GenerateParameters` (unknown fields are ignored, as TGI's serde does)."""

    model_config = ConfigDict(extra="ignore")

    adapter_id: str | None = None
    best_of: int | None = None
    decoder_input_details: bool = False
    details: bool = False
    do_sample: bool = False
    frequency_penalty: float | None = None
    grammar: GrammarParam | None = None
    max_new_tokens: int | None = None
    repetition_penalty: float | None = None
    return_full_text: bool | None = None
    seed: int | None = None
    stop: list[str] = Field(default_factory=list)
    temperature: float | None = None
    top_k: int | None = None
    top_n_tokens: int | None = None
    top_p: float | None = None
    truncate: int | None = None
    typical_p: float | None = None
    watermark: bool = False


class GenerateRequest(BaseModel):
    """TGI `GenerateRequest` / `CompatGenerateRequest`."""

    model_config = ConfigDict(extra="ignore")

    inputs: str
    parameters: GenerateParameters = Field(default_factory=GenerateParameters)
    stream: bool = False


class TGIError(Exception):
    """An error TGI reports as `{"error": ..., "error_type": ...}` with an HTTP status."""

    def __init__(self, status: int, message: str, error_type: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.error_type = error_type

    def body(self) -> dict[str, str]:
        """TGI's `ErrorResponse`."""
        return {"error": self.message, "error_type": self.error_type}


def _validation(message: str) -> TGIError:
    return TGIError(422, message, "validation")


# ---------------------------------------------------------------------------- engine


@dataclass
class _Row:
    """One sequence to generate (a request with `best_of` = k has k rows)."""

    ids: list[int]
    max_new_tokens: int
    do_sample: bool
    temperature: float
    top_p: float
    top_k: int
    repetition_penalty: float
    frequency_penalty: float
    seed: int | None
    stop: list[str]
    top_n: int
    on_token: Callable[[_Row, int], None] | None = None
    cancelled: bool = False
    generator: torch.Generator | None = None
    tokens: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    top: list[list[tuple[int, float]]] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    text: str = ""
    finish_reason: str | None = None
    error: BaseException | None = None
    pending_lp: float = 0.0
    pending_top: list[tuple[int, float]] = field(default_factory=list)

    @property
    def greedy(self) -> bool:
        return not self.do_sample


class _Engine:
    """Model, tokenizer and the batching loop."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        draft: tuple[Any, Any] | None,
        max_batch_size: int,
        batch_wait_s: float,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.draft = draft
        self.max_batch_size = max_batch_size
        self.batch_wait_s = batch_wait_s
        self.queue: asyncio.Queue[tuple[_Row, asyncio.Future[None]]] | None = None
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="specsearch-gen")
        self.lock = threading.Lock()
        eos = getattr(model.generation_config, "eos_token_id", None)
        if eos is None:
            eos = tokenizer.eos_token_id
        self.eos_ids: set[int] = set(
            eos if isinstance(eos, list) else [eos] if eos is not None else []
        )
        pad = tokenizer.pad_token_id
        if pad is None:
            pad = next(iter(self.eos_ids), 0)
        self.pad_id = int(pad)
        self.special_ids = set(getattr(tokenizer, "all_special_ids", []) or [])
        self.same_vocab = draft is not None and (
            draft[1].get_vocab() == tokenizer.get_vocab() if draft is not None else False
        )
        self.batches_run = 0

    # -- batching loop ------------------------------------------------------------------

    async def submit(self, rows: list[_Row]) -> None:
        """Queue rows and wait until every one is finished."""
        assert self.queue is not None, "engine not started (use the app's lifespan)"
        loop = asyncio.get_running_loop()
        futures = []
        for row in rows:
            fut: asyncio.Future[None] = loop.create_future()
            futures.append(fut)
            self.queue.put_nowait((row, fut))
        try:
            await asyncio.gather(*futures)
        except asyncio.CancelledError:
            for row in rows:
                row.cancelled = True
            raise

    async def run(self) -> None:
        """Collect requests arriving within `batch_wait_s` and generate them together."""
        self.queue = asyncio.Queue()
        loop = asyncio.get_running_loop()
        while True:
            first = await self.queue.get()
            if self.batch_wait_s > 0:
                await asyncio.sleep(self.batch_wait_s)
            items = [first]
            while len(items) < self.max_batch_size and not self.queue.empty():
                items.append(self.queue.get_nowait())
            items = [(r, f) for r, f in items if not r.cancelled and not f.done()]
            speculative = [(r, f) for r, f in items if self._use_draft(r)]
            plain = [(r, f) for r, f in items if not self._use_draft(r)]
            groups = [[item] for item in speculative] + ([plain] if plain else [])
            for group in groups:
                rows = [r for r, _ in group]
                try:
                    if self._use_draft(rows[0]):
                        await loop.run_in_executor(self.executor, self._generate_assisted, rows[0])
                    else:
                        await loop.run_in_executor(self.executor, self._generate_batch, rows)
                except Exception as exc:  # noqa: BLE001 - reported to every waiting request
                    for row in rows:
                        row.error = exc
                self.batches_run += 1
                for row, fut in group:
                    if not fut.done():
                        if row.error is not None:
                            fut.set_exception(row.error)
                        else:
                            fut.set_result(None)

    def _use_draft(self, row: _Row) -> bool:
        return (
            self.draft is not None
            and row.greedy
            and row.repetition_penalty == 1.0
            and row.frequency_penalty == 0.0
        )

    # -- token bookkeeping (worker thread) ----------------------------------------------

    def _push(self, row: _Row, token: int, logprob: float, top: list[tuple[int, float]]) -> bool:
        """Record one generated token; return True when the row is finished."""
        row.tokens.append(token)
        row.logprobs.append(logprob)
        row.top.append(top)
        special = token in self.special_ids
        full = self.tokenizer.decode(row.tokens, skip_special_tokens=True)
        if special:
            piece = self.tokenizer.decode([token], skip_special_tokens=False)
        elif full.endswith("\ufffd"):
            piece = ""  # an incomplete UTF-8 sequence: the next token completes it
        else:
            piece = full[len(row.text) :] if full.startswith(row.text) else full[len(row.text) :]
        row.texts.append(piece)
        previous = row.text
        if not full.endswith("\ufffd"):
            row.text = full
        if token in self.eos_ids:
            row.finish_reason = "eos_token"
        elif row.stop:
            window = max(len(s) for s in row.stop)
            tail_from = max(0, len(previous) - window)
            if any(s in full[tail_from:] for s in row.stop if s):
                row.finish_reason = "stop_sequence"
        if row.finish_reason is None and (len(row.tokens) >= row.max_new_tokens or row.cancelled):
            row.finish_reason = "length"
        if row.on_token is not None:
            row.on_token(row, len(row.tokens) - 1)
        return row.finish_reason is not None

    def _top(self, logprobs: torch.Tensor, n: int) -> list[tuple[int, float]]:
        if n <= 0:
            return []
        values, indices = torch.topk(logprobs, n)
        return [(int(i), float(v)) for i, v in zip(indices.tolist(), values.tolist(), strict=True)]

    def _generate_batch(self, rows: list[_Row]) -> None:
        """One left-padded `model.generate` for the rows (worker thread)."""
        for row in rows:
            if row.do_sample:
                row.generator = torch.Generator().manual_seed(int(row.seed or 0))
        width = max(len(r.ids) for r in rows)
        input_ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            input_ids[i, width - len(row.ids) :] = torch.tensor(row.ids, dtype=torch.long)
            mask[i, width - len(row.ids) :] = 1
        config = GenerationConfig(
            max_new_tokens=max(r.max_new_tokens for r in rows),
            do_sample=False,
            pad_token_id=self.pad_id,
            eos_token_id=sorted(self.eos_ids) or None,
        )
        with torch.inference_mode():
            self.model.generate(
                input_ids=input_ids,
                attention_mask=mask,
                generation_config=config,
                logits_processor=LogitsProcessorList([_RowChooser(self, rows)]),
                stopping_criteria=StoppingCriteriaList([_RowStopper(self, rows)]),
            )
        for row in rows:
            if row.finish_reason is None:
                row.finish_reason = "length"

    def _generate_assisted(self, row: _Row) -> None:
        """Greedy assisted generation with the draft model (worker thread)."""
        assert self.draft is not None
        draft_model, draft_tokenizer = self.draft
        ids = torch.tensor([row.ids], dtype=torch.long)
        kwargs: dict[str, Any] = {"assistant_model": draft_model}
        if not self.same_vocab:
            kwargs.update(tokenizer=self.tokenizer, assistant_tokenizer=draft_tokenizer)
        config = GenerationConfig(
            max_new_tokens=row.max_new_tokens,
            do_sample=False,
            pad_token_id=self.pad_id,
            eos_token_id=sorted(self.eos_ids) or None,
            output_logits=True,
            return_dict_in_generate=True,
        )
        with torch.inference_mode():
            out = self.model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                generation_config=config,
                stopping_criteria=StoppingCriteriaList([_StopStrings(self, row, len(row.ids))]),
                **kwargs,
            )
        new = out.sequences[0, len(row.ids) :].tolist()
        for position, token in enumerate(new):
            lp = torch.log_softmax(out.logits[position][0].float(), dim=-1)
            if self._push(row, int(token), float(lp[int(token)]), self._top(lp, row.top_n)):
                break
        if row.finish_reason is None:
            row.finish_reason = "length"

    def prefill(self, ids: list[int]) -> list[float | None]:
        """Log-probability of every prompt token given the ones before it (first: None)."""
        with self.lock, torch.inference_mode():
            logits = self.model(input_ids=torch.tensor([ids], dtype=torch.long)).logits[0]
        lps = torch.log_softmax(logits.float(), dim=-1)
        out: list[float | None] = [None]
        for i in range(1, len(ids)):
            out.append(float(lps[i - 1, ids[i]]))
        return out


class _RowChooser(LogitsProcessor):
    """Picks each active row's next token itself and returns a one-hot score."""

    def __init__(self, engine: _Engine, rows: list[_Row]) -> None:
        self.engine = engine
        self.rows = rows

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        out = torch.full_like(scores, -math.inf)
        for i, row in enumerate(self.rows):
            if row.finish_reason is not None:
                out[i, self.engine.pad_id] = 0.0
                continue
            logits = scores[i].float()
            if row.repetition_penalty != 1.0 or row.frequency_penalty != 0.0:
                logits = logits.clone()
                seen = input_ids[i][-(len(row.ids) + len(row.tokens)) :]
                if row.repetition_penalty != 1.0:
                    picked = logits[seen]
                    logits[seen] = torch.where(
                        picked < 0, picked * row.repetition_penalty, picked / row.repetition_penalty
                    )
                if row.frequency_penalty != 0.0 and row.tokens:
                    counts = torch.bincount(
                        torch.tensor(row.tokens, dtype=torch.long), minlength=logits.shape[-1]
                    ).to(logits.dtype)
                    logits = logits - row.frequency_penalty * counts
            if row.do_sample:
                logits = logits / max(row.temperature, 1e-4)
            lp = torch.log_softmax(logits, dim=-1)
            if not bool(torch.isfinite(lp).any()):  # extreme penalties overflowed: drop them
                lp = torch.log_softmax(scores[i].float(), dim=-1)
            lp = torch.nan_to_num(lp, nan=-math.inf, neginf=FLOOR_LOGPROB)
            token = _sample(lp, row) if row.do_sample else int(torch.argmax(lp))
            row.pending_lp = float(lp[token])
            row.pending_top = self.engine._top(lp, row.top_n)
            out[i, token] = 0.0
        return out  # type: ignore[return-value]


def _sample(lp: torch.Tensor, row: _Row) -> int:
    """Sample from `lp` after top-k / top-p filtering, with the row's own generator."""
    probs = lp.exp()
    if row.top_k > 0 and row.top_k < probs.shape[-1]:
        kth = torch.topk(probs, row.top_k).values[-1]
        probs = torch.where(probs >= kth, probs, torch.zeros_like(probs))
    if row.top_p < 1.0:
        sorted_probs, order = torch.sort(probs, descending=True)
        cumulative = torch.cumsum(sorted_probs, dim=-1)
        drop = cumulative - sorted_probs > row.top_p * cumulative[-1]
        sorted_probs[drop] = 0.0
        probs = torch.zeros_like(probs).scatter(0, order, sorted_probs)
    return int(torch.multinomial(probs, 1, generator=row.generator))


class _RowStopper(StoppingCriteria):
    """Records each row's new token and applies its stop sequences and length."""

    def __init__(self, engine: _Engine, rows: list[_Row]) -> None:
        self.engine = engine
        self.rows = rows

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **_: Any) -> Any:
        done = []
        for i, row in enumerate(self.rows):
            if row.finish_reason is None:
                self.engine._push(row, int(input_ids[i, -1]), row.pending_lp, row.pending_top)
            done.append(row.finish_reason is not None)
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


class _StopStrings(StoppingCriteria):
    """Stop sequences for assisted generation (tokens are recorded after `generate`)."""

    def __init__(self, engine: _Engine, row: _Row, prompt_len: int) -> None:
        self.engine = engine
        self.row = row
        self.prompt_len = prompt_len

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **_: Any) -> Any:
        stop = self.row.cancelled
        if self.row.stop and not stop:
            text = self.engine.tokenizer.decode(
                input_ids[0, self.prompt_len :], skip_special_tokens=True
            )
            stop = any(s in text for s in self.row.stop if s)
        return torch.tensor([stop], dtype=torch.bool, device=input_ids.device)


# ---------------------------------------------------------------------------- the app


@dataclass
class _Limits:
    max_concurrent_requests: int
    max_input_tokens: int
    max_total_tokens: int
    max_best_of: int
    max_stop_sequences: int
    max_top_n_tokens: int


class _Prepared(BaseModel):
    """A validated request: its rows' parameters and the prompt tokens."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    request: GenerateRequest
    ids: list[int]
    offsets: list[tuple[int, int]]
    max_new_tokens: int
    do_sample: bool
    temperature: float
    top_p: float
    top_k: int
    best_of: int
    seed: int | None
    top_n: int


def _token_json(
    tokenizer: Any, special_ids: set[int], token: int, text: str, lp: float | None
) -> dict[str, Any]:
    return {"id": token, "text": text, "logprob": lp, "special": token in special_ids}


def create_app(
    model: Any,
    tokenizer: Any,
    *,
    model_id: str,
    draft: tuple[Any, Any] | None = None,
    draft_model_id: str | None = None,
    max_concurrent_requests: int = 128,
    max_input_tokens: int = 4095,
    max_total_tokens: int = 4096,
    max_batch_size: int = 8,
    max_best_of: int = 2,
    max_stop_sequences: int = 4,
    max_top_n_tokens: int = 5,
    api_key: str | None = None,
    batch_wait_s: float = 0.004,
) -> FastAPI:
    """A FastAPI app serving `model` with TGI's API (see the module docstring)."""
    positions = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    if isinstance(positions, int) and max_total_tokens > positions:
        max_total_tokens = positions
        max_input_tokens = min(max_input_tokens, positions - 1)
    if max_input_tokens >= max_total_tokens:
        raise ValueError("max_input_tokens must be < max_total_tokens")
    model.eval()
    if draft is not None:
        draft[0].eval()
    engine = _Engine(
        model, tokenizer, draft=draft, max_batch_size=max_batch_size, batch_wait_s=batch_wait_s
    )
    limits = _Limits(
        max_concurrent_requests,
        max_input_tokens,
        max_total_tokens,
        max_best_of,
        max_stop_sequences,
        max_top_n_tokens,
    )
    in_flight = [0]

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        task = asyncio.create_task(engine.run())
        while engine.queue is None:
            await asyncio.sleep(0)
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            engine.executor.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(title="specsearch TGI-compatible server", version=VERSION, lifespan=lifespan)
    app.state.engine = engine
    app.state.in_flight = in_flight

    @app.middleware("http")
    async def _auth(request: Request, call_next: Any) -> Response:
        if api_key is not None and request.url.path != "/health":
            header = request.headers.get("authorization", "")
            if header != f"Bearer {api_key}":
                return JSONResponse(
                    {
                        "error": "Unauthorized: missing or wrong API key",
                        "error_type": "unauthorized",
                    },
                    status_code=401,
                )
        response: Response = await call_next(request)
        return response

    @app.exception_handler(TGIError)
    async def _tgi_error(_: Request, exc: TGIError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status)

    from fastapi.exceptions import RequestValidationError

    def _sse_error(exc: TGIError) -> Response:
        payload = f"data:{json.dumps(exc.body())}\n\n"
        return Response(payload, status_code=exc.status, media_type="text/event-stream")

    @app.exception_handler(RequestValidationError)
    async def _bad_body(request: Request, exc: RequestValidationError) -> Response:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        message = f"Failed to deserialize the JSON body: {where}: {first.get('msg', 'invalid')}"
        if request.url.path == "/generate_stream":
            return _sse_error(_validation(message))
        return JSONResponse({"error": message, "error_type": "validation"}, status_code=422)

    from starlette.exceptions import HTTPException as StarletteHTTPException

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

    def tokenize(text: str) -> tuple[list[int], list[tuple[int, int]]]:
        enc = tokenizer(text, return_offsets_mapping=True)
        return list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]]

    def prepare(req: GenerateRequest, *, stream: bool) -> _Prepared:
        p = req.parameters
        if p.grammar is not None:
            raise _validation("Grammar and tools are not supported by this backend")
        if p.adapter_id not in (None, "", "null"):
            raise _validation(f"LoRA adapter {p.adapter_id!r} is not loaded")
        best_of = 1 if p.best_of is None else p.best_of
        if best_of <= 0 or best_of > limits.max_best_of:
            raise _validation(
                f"`best_of` must be > 0 and <= {limits.max_best_of}. Given: {best_of}"
            )
        if stream and best_of != 1:
            raise _validation("`best_of` != 1 is not supported when streaming tokens")
        if stream and p.decoder_input_details:
            raise _validation(
                "`decoder_input_details` == true is not supported when streaming tokens"
            )
        sampling = (
            p.do_sample
            or p.temperature is not None
            or p.top_k is not None
            or p.top_p is not None
            or p.typical_p is not None
        )
        if best_of > 1 and not sampling:
            raise _validation("you must use sampling when `best_of` is > 1")
        if best_of > 1 and p.seed is not None:
            raise _validation("`seed` must not be set when `best_of` > 1")
        if p.temperature is not None and not p.temperature > 0:
            raise _validation("`temperature` must be strictly positive")
        if p.repetition_penalty is not None and not p.repetition_penalty > 0:
            raise _validation("`repetition_penalty` must be strictly positive")
        if p.frequency_penalty is not None and not -2.0 <= p.frequency_penalty <= 2.0:
            raise _validation("`frequency_penalty` must be >= -2.0 and <= 2.0")
        if p.top_p is not None and not 0.0 < p.top_p < 1.0:
            raise _validation("`top_p` must be > 0.0 and < 1.0")
        if p.typical_p is not None and not 0.0 < p.typical_p < 1.0:
            raise _validation("`typical_p` must be > 0.0 and < 1.0")
        if p.top_k is not None and p.top_k <= 0:
            raise _validation("`top_k` must be strictly positive")
        top_n = p.top_n_tokens or 0
        if top_n < 0 or top_n > limits.max_top_n_tokens:
            raise _validation(
                f"`top_n_tokens` must be >= 0 and <= {limits.max_top_n_tokens}. Given: {top_n}"
            )
        if len(p.stop) > limits.max_stop_sequences:
            raise _validation(
                f"`stop` supports up to {limits.max_stop_sequences} stop sequences."
                f" Given: {len(p.stop)}"
            )
        if p.seed is not None and p.seed < 0:
            raise _validation("`seed` must be >= 0")
        if p.max_new_tokens is not None and p.max_new_tokens <= 0:
            raise _validation("`max_new_tokens` must be strictly positive")
        if not req.inputs:
            raise _validation("`inputs` cannot be empty")
        ids, offsets = tokenize(req.inputs)
        if p.truncate is not None:
            if p.truncate <= 0 or p.truncate > limits.max_input_tokens:
                raise _validation(
                    "`truncate` must be strictly positive and less than"
                    f" {limits.max_input_tokens}. Given: {p.truncate}"
                )
            ids, offsets = ids[-p.truncate :], offsets[-p.truncate :]
        if not ids:
            raise _validation("`inputs` cannot be empty")
        if len(ids) > limits.max_input_tokens:
            raise _validation(
                f"`inputs` must have less than {limits.max_input_tokens} tokens. Given: {len(ids)}"
            )
        max_new = (
            p.max_new_tokens if p.max_new_tokens is not None else limits.max_total_tokens - len(ids)
        )
        if len(ids) + max_new > limits.max_total_tokens:
            raise _validation(
                f"`inputs` tokens + `max_new_tokens` must be <= {limits.max_total_tokens}."
                f" Given: {len(ids)} `inputs` tokens and {max_new} `max_new_tokens`"
            )
        seed = p.seed
        if sampling and seed is None and best_of == 1:
            seed = random.randrange(1, 2**63)
        return _Prepared(
            request=req,
            ids=ids,
            offsets=offsets,
            max_new_tokens=max_new,
            do_sample=sampling,
            temperature=p.temperature if p.temperature is not None else 1.0,
            top_p=p.top_p if p.top_p is not None else 1.0,
            top_k=p.top_k or 0,
            best_of=best_of,
            seed=seed,
            top_n=top_n,
        )

    def make_row(prep: _Prepared, seed: int | None, on_token: Any = None) -> _Row:
        p = prep.request.parameters
        return _Row(
            ids=prep.ids,
            max_new_tokens=prep.max_new_tokens,
            do_sample=prep.do_sample,
            temperature=prep.temperature,
            top_p=prep.top_p,
            top_k=prep.top_k,
            repetition_penalty=p.repetition_penalty or 1.0,
            frequency_penalty=p.frequency_penalty or 0.0,
            seed=seed,
            stop=list(p.stop),
            top_n=prep.top_n,
            on_token=on_token,
        )

    def tokens_json(row: _Row) -> list[dict[str, Any]]:
        return [
            _token_json(tokenizer, engine.special_ids, t, s, lp)
            for t, s, lp in zip(row.tokens, row.texts, row.logprobs, strict=True)
        ]

    def top_json(row: _Row) -> list[list[dict[str, Any]]]:
        if not row.top_n:
            return []
        return [
            [
                _token_json(tokenizer, engine.special_ids, t, tokenizer.decode([t]), lp)
                for t, lp in step
            ]
            for step in row.top
        ]

    def acquire() -> None:
        if in_flight[0] >= limits.max_concurrent_requests:
            raise TGIError(429, "Model is overloaded", "overloaded")
        in_flight[0] += 1

    def release() -> None:
        in_flight[0] -= 1

    async def generate_json(req: GenerateRequest) -> dict[str, Any]:
        acquire()
        try:
            prep = prepare(req, stream=False)
            p = req.parameters
            seeds = (
                [prep.seed]
                if prep.best_of == 1
                else [random.randrange(1, 2**63) for _ in range(prep.best_of)]
            )
            rows = [make_row(prep, s) for s in seeds]
            prefill_task = None
            if p.decoder_input_details:
                loop = asyncio.get_running_loop()
                prefill_task = loop.run_in_executor(None, engine.prefill, prep.ids)
            try:
                await engine.submit(rows)
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
                    text = req.inputs[start:stop] if stop > start else tokenizer.decode([token])
                    prefill.append({"id": token, "text": text, "logprob": lp})
            prefix = req.inputs if p.return_full_text else ""

            def seq(row: _Row) -> dict[str, Any]:
                return {
                    "generated_text": prefix + row.text,
                    "finish_reason": row.finish_reason or "length",
                    "generated_tokens": len(row.tokens),
                    "prefill": prefill,
                    "seed": row.seed,
                    "tokens": tokens_json(row),
                    "top_tokens": top_json(row),
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
            release()

    def sse(payload: dict[str, Any]) -> bytes:
        return f"data:{json.dumps(payload)}\n\n".encode()

    async def stream_events(req: GenerateRequest, prep: _Prepared) -> AsyncIterator[bytes]:
        rows: list[_Row] = []
        try:
            loop = asyncio.get_running_loop()
            events: asyncio.Queue[int] = asyncio.Queue()

            def on_token(row: _Row, index: int) -> None:
                loop.call_soon_threadsafe(events.put_nowait, index)

            row = make_row(prep, prep.seed, on_token)
            rows.append(row)
            job = asyncio.ensure_future(engine.submit([row]))
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
                    "token": _token_json(
                        tokenizer,
                        engine.special_ids,
                        row.tokens[index],
                        row.texts[index],
                        row.logprobs[index],
                    ),
                    "top_tokens": [
                        _token_json(tokenizer, engine.special_ids, t, tokenizer.decode([t]), lp)
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
            release()

    async def _error_event(exc: TGIError) -> AsyncIterator[bytes]:
        yield sse(exc.body())

    def stream_response(req: GenerateRequest, *, json_errors: bool = False) -> Response:
        # Errors before the first token (overloaded, validation) keep their HTTP status, as
        # the OpenAPI document declares: on /generate_stream as the stream's only event, on
        # the compat route `/` as a JSON body (which huggingface_hub's client parses).
        def error(exc: TGIError) -> Response:
            if json_errors:
                return JSONResponse(exc.body(), status_code=exc.status)
            return StreamingResponse(
                _error_event(exc), status_code=exc.status, media_type="text/event-stream"
            )

        try:
            acquire()
        except TGIError as exc:
            return error(exc)
        try:
            prep = prepare(req, stream=True)
        except TGIError as exc:
            release()
            return error(exc)
        return StreamingResponse(
            stream_events(req, prep),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    @app.post("/generate")
    async def generate(req: GenerateRequest) -> JSONResponse:
        """TGI `generate`."""
        return JSONResponse(await generate_json(req))

    @app.post("/generate_stream", response_model=None)
    async def generate_stream(req: GenerateRequest) -> Response:
        """TGI `generate_stream` (server-sent events; errors are sent as an error event)."""
        return stream_response(req)

    @app.post("/", response_model=None)
    async def compat_generate(req: GenerateRequest) -> Response:
        """TGI `compat_generate`: `/generate` (as a one-element list) or `/generate_stream`."""
        if req.stream:
            return stream_response(req, json_errors=True)
        return JSONResponse([await generate_json(req)])

    @app.get("/info")
    async def info() -> dict[str, Any]:
        """TGI `Info`, plus `speculate` and `draft_model_id`."""
        return {
            "model_id": model_id,
            "model_sha": None,
            "model_pipeline_tag": "text-generation",
            "max_concurrent_requests": limits.max_concurrent_requests,
            "max_best_of": limits.max_best_of,
            "max_stop_sequences": limits.max_stop_sequences,
            "max_input_tokens": limits.max_input_tokens,
            "max_total_tokens": limits.max_total_tokens,
            "max_top_n_tokens": limits.max_top_n_tokens,
            "max_client_batch_size": max_batch_size,
            "max_batch_size": max_batch_size,
            "validation_workers": 1,
            "router": "text-generation-router",
            "version": VERSION,
            "sha": None,
            "docker_label": None,
            "speculate": "draft-model" if draft is not None else None,
            "draft_model_id": draft_model_id if draft is not None else None,
        }

    @app.get("/health")
    async def health() -> Response:
        """200 once the model is loaded and the batching loop runs."""
        if engine.queue is None:
            return JSONResponse(
                {"error": "unhealthy", "error_type": "healthcheck"}, status_code=503
            )
        return Response(status_code=200)

    @app.post("/tokenize")
    async def tokenize_route(req: GenerateRequest) -> list[dict[str, Any]]:
        """TGI `tokenize`: ids with character offsets into `inputs`."""
        ids, offsets = tokenize(req.inputs)
        if req.parameters.truncate:
            ids, offsets = ids[-req.parameters.truncate :], offsets[-req.parameters.truncate :]
        return [
            {
                "id": token,
                "text": req.inputs[start:stop] if stop > start else tokenizer.decode([token]),
                "start": start,
                "stop": stop,
            }
            for token, (start, stop) in zip(ids, offsets, strict=True)
        ]

    return app


# ---------------------------------------------------------------------------- running it


def build_tiny_model(seed: int = 0) -> tuple[Any, Any]:
    """A randomly initialised 2-layer Llama with a byte-level BPE tokenizer (tests, demos)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<pad>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    corpus = [
        "Question: Natalia sold clips to 48 of her friends. Answer: 48 / 2 = 24. "
        "The answer is 72.\n\nSteps are separated by blank lines. 0123456789 + - * / =",
    ] * 4
    core.train_from_iterator(corpus, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core, bos_token="<s>", eos_token="</s>", pad_token="<pad>"
    )
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = LlamaForCausalLM(config).eval()
    return model, tokenizer


def load_model(name: str) -> tuple[Any, Any]:
    """`tiny-random` (tests), or a name `langgraph_specsearch.models.load_pretrained` knows."""
    if name == "tiny-random":
        return build_tiny_model()
    from langgraph_specsearch.models import load_pretrained

    return load_pretrained(name)  # type: ignore[no-any-return]


def run_server(
    model: Any,
    tokenizer: Any,
    *,
    model_id: str,
    host: str = "127.0.0.1",
    port: int = 8080,
    log_level: str = "info",
    **app_kwargs: Any,
) -> None:
    """Serve with uvicorn until SIGINT/SIGTERM (graceful shutdown stops the batching task)."""
    import uvicorn

    app = create_app(model, tokenizer, model_id=model_id, **app_kwargs)
    uvicorn.run(app, host=host, port=port, log_level=log_level)


def serve(
    model: Annotated[
        str, typer.Option("--model", help="Model name (smollm2-135m, gemma3-270m, tiny-random).")
    ],
    draft_model: Annotated[
        str | None,
        typer.Option("--draft-model", help="Draft model for greedy assisted generation."),
    ] = None,
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8080,
    max_concurrent_requests: Annotated[
        int, typer.Option(help="Requests in flight before 429.")
    ] = 128,
    max_input_tokens: Annotated[int, typer.Option(help="Longest prompt in tokens.")] = 4095,
    max_total_tokens: Annotated[int, typer.Option(help="Prompt + new tokens limit.")] = 4096,
    max_batch_size: Annotated[int, typer.Option(help="Sequences per generate() call.")] = 8,
    api_key: Annotated[
        str | None,
        typer.Option(help="Require `Authorization: Bearer KEY`.", envvar="SPECSEARCH_API_KEY"),
    ] = None,
    threads: Annotated[int | None, typer.Option(help="torch CPU threads.")] = None,
) -> None:
    """Serve a local model over HTTP with Text Generation Inference's API."""
    if threads:
        torch.set_num_threads(threads)
    started = time.perf_counter()
    m, tok = load_model(model)
    draft = load_model(draft_model) if draft_model else None
    typer.echo(f"loaded {model} in {time.perf_counter() - started:.1f}s", err=True)
    run_server(
        m,
        tok,
        model_id=model,
        host=host,
        port=port,
        draft=draft,
        draft_model_id=draft_model,
        max_concurrent_requests=max_concurrent_requests,
        max_input_tokens=max_input_tokens,
        max_total_tokens=max_total_tokens,
        max_batch_size=max_batch_size,
        api_key=api_key,
    )


@contextlib.contextmanager
def background_server(app: FastAPI, host: str = "127.0.0.1", port: int = 0) -> Any:
    """Run `app` with uvicorn in a daemon thread; yields its base URL, stops it on exit."""
    import socket

    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    config = uvicorn.Config(app, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("server did not start")
        time.sleep(0.01)
    try:
        yield f"http://{host}:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


if __name__ == "__main__":
    typer.run(serve)
