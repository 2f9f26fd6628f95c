"""The batching engine behind `specsearch serve` (worker thread, torch, transformers).

Batching. Requests go to a queue and are decoded by ONE worker thread with iteration-level
("continuous") batching: `Engine.run` admits what has arrived (up to `max_batch_size`
sequences; an idle engine first waits `batch_wait_s` to collect a group), the worker prefills
the newcomers together (left padding, attention mask, position ids, a fresh `DynamicCache`)
and merges them into the running batch (`kvbatch.RunningBatch`: the shorter cache is
left-padded), then runs one decode step for every running row. A row that stops (EOS, a stop
sequence, `max_new_tokens`, a cancelled request) leaves the batch at once: its rows are dropped
from the cache, mask and positions, and its request is answered. New requests join between
decode steps, so a short request never waits for a long one to finish.

Every row's next token is picked by the engine itself (`choice.choose_token`): argmax, or a sample
from the row's own temperature / top-k / top-p distribution drawn with the row's own
`torch.Generator`, after its repetition / frequency penalties. Each request's stop sequences and
`max_new_tokens` are applied per row (`Engine._push`). So per-request seeds are honoured
inside a shared batch: the same seed and prompt give the same tokens as long as the logits
agree, which they do up to float rounding (padding and batch size change the arithmetic
slightly, so a seeded sample is reproducible exactly at batch size 1 and in practice
otherwise); greedy rows equal unbatched greedy `model.generate` the same way.

Models whose cache is not a plain `DynamicCache` of `DynamicLayer`s (checked once with a tiny
probe forward) fall back to static batching: one left-padded `model.generate` per group, with
the same per-row choice (`RowChooser`) and stops (`RowStopper`); such a batch runs until its
last row stops. Gemma-3's sliding-window layers are fine on the continuous path: without a
config, `DynamicCache` keeps full keys for every layer and the sliding window is applied by the
attention mask, which indexes cache slots.

Speculation. With `draft=(model, tokenizer)`, requests without repetition / frequency
penalties, greedy or sampled, are decoded one at a time by `speculative.SpeculativeDecoder`
(speculative sampling: the output keeps the target's distribution, and greedy output equals
plain greedy decoding; vocabularies may differ); the running batch pauses meanwhile. Each
such row counts its kept draft tokens and target forward passes.

Reported log-probabilities are `log_softmax(logits / temperature)` (raw logits when greedy),
before top-k/top-p filtering, so they are finite.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch
from transformers import (
    DynamicCache,
)

from langgraph_specsearch.backends.prefix import CachedForward
from langgraph_specsearch.backends.transformers import input_device, token_id_set
from langgraph_specsearch.server.choice import choose_token, top_logprobs
from langgraph_specsearch.server.kvbatch import RunningBatch, supports_cache
from langgraph_specsearch.server.rows import Row, future_of, resolve
from langgraph_specsearch.server.schema import TGIError
from langgraph_specsearch.server.speculative import (
    SpeculativeDecoder,
)
from langgraph_specsearch.server.static_batching import generate_static

CANCEL_WAIT_S = 5.0
"""How long a cancelled request waits for its running rows to leave the batch."""

ADMISSION_POLL_S = 0.05
"""How often a queued request checks whether it was admitted (for its queue timeout)."""


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
        draft_tokens: int = 4,
        queue_timeout_s: float | None = None,
    ) -> None:
        self.model = model
        self.queue_timeout_s = queue_timeout_s
        """A request whose rows are not all admitted within this many seconds gets 429."""
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
        self.speculator = (
            SpeculativeDecoder(
                model, tokenizer, draft[0], draft[1], self.eos_ids, draft_tokens=draft_tokens
            )
            if draft is not None
            else None
        )
        self.batches_run = 0
        """Groups admitted (one prefill each on the continuous path, one `generate` otherwise)."""
        self._forward = CachedForward.of(model)
        self.device = input_device(model)
        """Where inputs and caches are created (the model's input embedding's device)."""
        self._batch: RunningBatch | None = None
        self.continuous = self._probe_continuous()

    # -- batching loop ------------------------------------------------------------------

    async def submit(self, rows: list[Row]) -> None:
        """Queue rows and wait until every one is finished.

        Cancelled (the client went away), the rows are marked cancelled and, for the rows the
        engine already decodes, this waits (a few seconds at most) until they have left the
        batch, so the request's slot is freed only once its work has stopped. Rows still
        queued after `queue_timeout_s` are withdrawn the same way and the request fails with
        TGI's 429 `overloaded` error.
        """
        assert self.queue is not None, "engine not started (use the app's lifespan)"
        loop = asyncio.get_running_loop()
        futures = []
        for row in rows:
            fut: asyncio.Future[None] = loop.create_future()
            futures.append(fut)
            self.queue.put_nowait((row, fut))
        everything = asyncio.gather(*(asyncio.shield(f) for f in futures))
        try:
            if self.queue_timeout_s is not None:
                deadline = loop.time() + self.queue_timeout_s
                while not all(r.admitted for r in rows):
                    done, _ = await asyncio.wait({everything}, timeout=ADMISSION_POLL_S)
                    if done:
                        break
                    if loop.time() > deadline:
                        raise TGIError(
                            429,
                            f"Model is overloaded: not scheduled within {self.queue_timeout_s:g}"
                            " s (serve --queue-timeout)",
                            "overloaded",
                        )
            await everything
        except (asyncio.CancelledError, TGIError):
            for row in rows:
                row.cancelled = True
            running = [f for r, f in zip(rows, futures, strict=True) if r.admitted]
            if running:
                await asyncio.wait(running, timeout=CANCEL_WAIT_S)
            for fut in futures:
                if fut.done() and not fut.cancelled():
                    fut.exception()  # retrieved: nobody reads a cancelled request's error
            raise
        finally:
            if not everything.done():
                everything.cancel()
            with contextlib.suppress(BaseException):
                everything.exception()

    async def run(self) -> None:
        """Admit requests between decode steps and decode the running batch (see module doc)."""
        self.queue = asyncio.Queue()
        loop = asyncio.get_running_loop()
        active: list[tuple[Row, asyncio.Future[None]]] = []
        while True:
            items: list[tuple[Row, asyncio.Future[None]]] = []
            if not active:
                items.append(await self.queue.get())
                if self.batch_wait_s > 0:
                    await asyncio.sleep(self.batch_wait_s)
            room = self.max_batch_size - len(active)
            while len(items) < room and not self.queue.empty():
                items.append(self.queue.get_nowait())
            for row, fut in items:
                if row.cancelled:
                    resolve(row, fut)
                row.admitted = True
            items = [(r, f) for r, f in items if not r.cancelled and not f.done()]
            plain = [(r, f) for r, f in items if not self._use_draft(r)]
            for item in items:
                if self._use_draft(item[0]):
                    await self._run_group([item], self._generate_speculative, item[0])
            if not self.continuous:
                if plain:
                    await self._run_static(plain)
                continue
            if plain:
                self.batches_run += 1
                active.extend(plain)
            if not active:
                continue
            new_rows = [r for r, _ in plain]
            try:
                await loop.run_in_executor(self.executor, self._step, new_rows)
            except Exception as exc:  # noqa: BLE001 - reported to every running request
                self._batch = None
                for row, _ in active:
                    row.error = exc
            still: list[tuple[Row, asyncio.Future[None]]] = []
            for row, fut in active:
                if row.error is not None or row.finish_reason is not None:
                    resolve(row, fut)
                else:
                    still.append((row, fut))
            active = still

    async def _run_group(
        self,
        group: list[tuple[Row, asyncio.Future[None]]],
        work: Callable[[Any], None],
        arg: Any,
    ) -> None:
        """Run `work(arg)` on the worker thread and answer every request of the group."""
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self.executor, work, arg)
        except Exception as exc:  # noqa: BLE001 - reported to every waiting request
            for row, _ in group:
                row.error = exc
        self.batches_run += 1
        for row, fut in group:
            resolve(row, fut)

    async def _run_static(self, group: list[tuple[Row, asyncio.Future[None]]]) -> None:
        """One `generate` for the group; if it fails as a whole, each row again alone."""
        loop = asyncio.get_running_loop()
        rows = [r for r, _ in group]
        try:
            await loop.run_in_executor(self.executor, self._generate_batch, rows)
        except Exception as exc:  # noqa: BLE001 - isolated below
            for row in rows:
                if len(rows) == 1 or row.tokens:
                    row.error = exc  # a lone row, or one that already streamed tokens
            for row in rows:
                if row.error is None:
                    await self._run_group(
                        [(row, future_of(group, row))], self._generate_batch, [row]
                    )
        self.batches_run += 1
        for row, fut in group:
            resolve(row, fut)

    def _use_draft(self, row: Row) -> bool:
        return (
            self.speculator is not None
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
        return top_logprobs(logprobs, n)

    # -- continuous batching (worker thread) ---------------------------------------------

    def _probe_continuous(self) -> bool:
        """Whether the model's KV cache is one `RunningBatch` can edit (else: static batches)."""
        config = getattr(self.model, "config", None)
        if config is None or getattr(config, "is_encoder_decoder", False):
            return False
        params = inspect.signature(self.model.forward).parameters
        if "position_ids" not in params or self._forward.cache_kw not in params:
            return False
        try:
            cache = DynamicCache()
            ids = torch.tensor([[self.pad_id, self.pad_id]], dtype=torch.long, device=self.device)
            positions = torch.tensor([[0, 1]], device=self.device)
            with torch.inference_mode():
                self._forward(ids, torch.ones_like(ids), positions, cache)
            return supports_cache(cache, 2)
        except Exception:  # noqa: BLE001 - any surprise: use the static path
            return False

    def _step(self, new_rows: list[Row]) -> None:
        """Admit `new_rows` (prefill + merge), then one decode step for the running batch."""
        with torch.inference_mode():
            if new_rows:
                try:
                    self._admit(new_rows)
                except Exception as exc:  # noqa: BLE001 - isolated: each row again alone
                    for row in new_rows:
                        if len(new_rows) == 1 or row.tokens:
                            row.error = exc
                    for row in new_rows:
                        if row.error is None:
                            try:
                                self._admit([row])
                            except Exception as alone:  # noqa: BLE001 - this row's request fails
                                row.error = alone
            if self._batch is not None:
                try:
                    self._decode()
                except Exception as exc:  # noqa: BLE001 - reported to the running requests
                    for row in self._batch.rows:
                        row.error = exc
                    self._batch = None

    def _left_padded(self, rows: list[Row]) -> tuple[torch.Tensor, torch.Tensor]:
        """Seed the sampling rows' generators; left-padded input ids and attention mask."""
        for row in rows:
            if row.do_sample:
                row.generator = torch.Generator().manual_seed(int(row.seed or 0))
        width = max(len(r.ids) for r in rows)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long, device=self.device)
        mask = torch.zeros((len(rows), width), dtype=torch.long, device=self.device)
        for i, row in enumerate(rows):
            ids[i, width - len(row.ids) :] = torch.tensor(
                row.ids, dtype=torch.long, device=self.device
            )
            mask[i, width - len(row.ids) :] = 1
        return ids, mask

    def _admit(self, rows: list[Row]) -> None:
        """Prefill `rows` together, pick their first tokens, merge the survivors."""
        ids, mask = self._left_padded(rows)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        cache = DynamicCache()
        logits = self._forward(ids, mask, positions, cache)
        group = RunningBatch(rows, cache, mask, mask.sum(-1), ids[:, -1].clone())
        keep = self._advance(group, logits)
        if not keep:
            return
        group.select(keep)
        if self._batch is None:
            self._batch = group
        else:
            self._batch.merge(group)

    def _decode(self) -> None:
        """One decode step for the running batch; finished rows leave it."""
        batch = self._batch
        assert batch is not None
        ones = torch.ones((len(batch), 1), dtype=batch.mask.dtype, device=batch.mask.device)
        mask = torch.cat([batch.mask, ones], 1)
        logits = self._forward(batch.last[:, None], mask, batch.positions[:, None], batch.cache)
        batch.mask = mask
        batch.positions = batch.positions + 1
        keep = self._advance(batch, logits)
        if not keep:
            self._batch = None
        elif len(keep) < len(batch):
            batch.select(keep)

    def _advance(self, batch: RunningBatch, logits: torch.Tensor) -> list[int]:
        """Pick and record every row's next token (`batch.last`); the rows still running."""
        logits = logits.cpu()  # sampling uses the rows' CPU generators
        keep = []
        for i, row in enumerate(batch.rows):
            try:
                seen = None
                if row.repetition_penalty != 1.0 or row.frequency_penalty != 0.0:
                    seen = torch.tensor(
                        row.ids + row.tokens, dtype=torch.long, device=logits.device
                    )
                token = self._choose(row, logits[i], seen)
                batch.last[i] = token
                finished = self._push(row, token, row.pending_lp, row.pending_top)
            except Exception as exc:  # noqa: BLE001 - this row's request fails, not the batch
                row.error = exc
                finished = True
            if not finished:
                keep.append(i)
        return keep

    def _choose(self, row: Row, scores: torch.Tensor, seen: torch.Tensor | None) -> int:
        """The row's next token (`choice.choose_token`)."""
        return choose_token(row, scores, seen)

    # -- static batching (models the continuous path cannot handle) ---------------------

    def _generate_batch(self, rows: list[Row]) -> None:
        """One left-padded `model.generate` for the rows (`static_batching.py`)."""
        generate_static(self, rows)

    def _generate_speculative(self, row: Row) -> None:
        """Speculative decoding of one row with the draft model (worker thread)."""
        assert self.speculator is not None
        if row.do_sample:
            row.generator = torch.Generator().manual_seed(int(row.seed or 0))
        with torch.inference_mode():
            self.speculator.run(row, self._push, self._top)

    def prefill(self, ids: list[int]) -> list[float | None]:
        """Log-probability of every prompt token given the ones before it (first: None)."""
        with self.lock, torch.inference_mode():
            inputs = torch.tensor([ids], dtype=torch.long, device=self.device)
            logits = self.model(input_ids=inputs).logits[0]
            targets = torch.tensor(ids[1:], dtype=torch.long, device=logits.device)
            picked = []
            for start in range(0, len(ids) - 1, PREFILL_CHUNK):  # log_softmax a slice at a time
                chunk = torch.log_softmax(logits[start : start + PREFILL_CHUNK].float(), dim=-1)
                rows = targets[start : start + PREFILL_CHUNK]
                picked.append(chunk.gather(-1, rows[:, None])[:, 0])
            del logits
        values = torch.cat(picked).tolist() if picked else []
        return [None, *(float(v) for v in values)]


PREFILL_CHUNK = 128
"""Prompt positions whose log-softmax is taken at once (bounds `prefill`'s extra memory)."""
