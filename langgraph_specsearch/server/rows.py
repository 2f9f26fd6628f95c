"""`Row`: one sequence a request asks for, and how its waiting request is answered."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from langgraph_specsearch.server.schema import Prepared


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
    admitted: bool = False
    accepted_draft_tokens: int | None = None
    """Draft tokens kept (speculative rows only)."""
    drafted_tokens: int = 0
    target_calls: int = 0
    """Target forward passes of a speculative row (its prompt's prefill included)."""

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


def future_of(group: list[tuple[Row, asyncio.Future[None]]], row: Row) -> asyncio.Future[None]:
    """The future of `row` in `group`."""
    return next(f for r, f in group if r is row)


def resolve(row: Row, fut: asyncio.Future[None]) -> None:
    """Answer a request's future (unless its client already gave up)."""
    if fut.done():
        return
    if row.error is not None:
        fut.set_exception(row.error)
    else:
        fut.set_result(None)
