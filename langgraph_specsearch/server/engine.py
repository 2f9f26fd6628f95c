"""The batching engine behind `specsearch serve` (worker thread, torch, transformers).

Batching. Requests go to a queue; `Engine.run` collects what arrives within a few milliseconds
(up to `max_batch_size` sequences) and runs ONE `model.generate` call (left padding) for the
whole group on a single worker thread. Greedy and sampled requests share the batch: a per-row
logits processor (`RowChooser`) picks every row's next token itself (argmax, or a sample from
the row's own temperature / top-k / top-p distribution drawn with the row's own
`torch.Generator`) and hands `generate` a one-hot score, while a per-row stopping criterion
(`RowStopper`) applies each request's stop sequences and `max_new_tokens`. So per-request seeds
are honoured inside a shared batch: the same seed and prompt give the same tokens as long as
the logits agree, which they do up to float rounding (left padding changes the arithmetic
slightly, so a seeded sample is reproducible exactly at batch size 1 and in practice
otherwise). Batches are static (no joining mid-generation): a batch runs until its last row
stops.

Speculation. With `draft=(model, tokenizer)`, greedy requests without penalties are decoded
one at a time with transformers' assisted generation (`assistant_model=`; universal assisted
generation with `tokenizer=`/`assistant_tokenizer=` when the vocabularies differ), whose output
equals plain greedy decoding.

Reported log-probabilities are `log_softmax(logits / temperature)` (raw logits when greedy),
before top-k/top-p filtering, so they are finite.
"""

from __future__ import annotations

import asyncio
import math
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import (
    GenerationConfig,
    LogitsProcessor,
    LogitsProcessorList,
    StoppingCriteria,
    StoppingCriteriaList,
)

from langgraph_specsearch.backends.transformers import token_id_set
from langgraph_specsearch.server.schema import Prepared

FLOOR_LOGPROB = -1e4


@dataclass
class Row:
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
    on_token: Callable[[Row, int], None] | None = None
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

    @classmethod
    def from_prepared(
        cls, prep: Prepared, seed: int | None, on_token: Callable[[Row, int], None] | None = None
    ) -> Row:
        """One row of a validated request."""
        p = prep.request.parameters
        return cls(
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


class Engine:
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
        self.queue: asyncio.Queue[tuple[Row, asyncio.Future[None]]] | None = None
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="specsearch-gen")
        self.lock = threading.Lock()
        self.eos_ids = token_id_set(getattr(model.generation_config, "eos_token_id", None))
        if not self.eos_ids:
            self.eos_ids = token_id_set(tokenizer.eos_token_id)
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

    async def submit(self, rows: list[Row]) -> None:
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

    def _use_draft(self, row: Row) -> bool:
        return (
            self.draft is not None
            and row.greedy
            and row.repetition_penalty == 1.0
            and row.frequency_penalty == 0.0
        )

    # -- token bookkeeping (worker thread) ----------------------------------------------

    def _push(self, row: Row, token: int, logprob: float, top: list[tuple[int, float]]) -> bool:
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

    def _generate_batch(self, rows: list[Row]) -> None:
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
                logits_processor=LogitsProcessorList([RowChooser(self, rows)]),
                stopping_criteria=StoppingCriteriaList([RowStopper(self, rows)]),
            )
        for row in rows:
            if row.finish_reason is None:
                row.finish_reason = "length"

    def _generate_assisted(self, row: Row) -> None:
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
                stopping_criteria=StoppingCriteriaList([StopStrings(self, row, len(row.ids))]),
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


class RowChooser(LogitsProcessor):
    """Picks each active row's next token itself and returns a one-hot score."""

    def __init__(self, engine: Engine, rows: list[Row]) -> None:
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
            token = sample_token(lp, row) if row.do_sample else int(torch.argmax(lp))
            row.pending_lp = float(lp[token])
            row.pending_top = self.engine._top(lp, row.top_n)
            out[i, token] = 0.0
        return out  # type: ignore[return-value]


def sample_token(lp: torch.Tensor, row: Row) -> int:
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


class RowStopper(StoppingCriteria):
    """Records each row's new token and applies its stop sequences and length."""

    def __init__(self, engine: Engine, rows: list[Row]) -> None:
        self.engine = engine
        self.rows = rows

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **_: Any) -> Any:
        done = []
        for i, row in enumerate(self.rows):
            if row.finish_reason is None:
                self.engine._push(row, int(input_ids[i, -1]), row.pending_lp, row.pending_top)
            done.append(row.finish_reason is not None)
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


class StopStrings(StoppingCriteria):
    """Stop sequences for assisted generation (tokens are recorded after `generate`)."""

    def __init__(self, engine: Engine, row: Row, prompt_len: int) -> None:
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
