"""Helpers shared by the expander nodes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from typing import Any

from langchain_core.runnables import RunnableLambda

from langgraph_specsearch.types import Generation

AsyncNode = Callable[[dict[str, Any]], Coroutine[Any, Any, dict[str, Any]]]


def as_node(afunc: AsyncNode, name: str) -> RunnableLambda:
    """Wrap an async node so the graph also runs under the sync `invoke`."""

    def sync(state: dict[str, Any]) -> dict[str, Any]:
        return asyncio.run(afunc(state))

    return RunnableLambda(sync, afunc=afunc, name=name)


def usage_entry(generations: list[Generation], seconds: float) -> dict[str, float]:
    """One call's usage counters."""
    return {
        "calls": 1,
        "generated_tokens": sum(g.tokens for g in generations),
        "time_s": seconds,
        "accepted_draft_tokens": sum(g.accepted_draft_tokens or 0 for g in generations),
    }


def candidate(
    parent: dict[str, Any], generation: Generation, source: str, index: int = 0
) -> dict[str, Any]:
    """A not-yet-scored child of `parent` made from one generation (`index`: its order)."""
    return {
        "index": index,
        "parent_id": parent["id"],
        "step": parent["step"] + 1,
        "text": generation.text,
        "source": source,
        "score": None,
        "tokens": generation.tokens,
        "latency_s": generation.latency_s,
        "finish_reason": generation.finish_reason,
        "verdict": None,
    }


def now() -> float:
    """The running event loop's clock (a simulator's virtual clock too), else a monotonic one."""
    try:
        return asyncio.get_running_loop().time()
    except RuntimeError:
        return time.perf_counter()


class Clock:
    """Measures one model call (on the event loop's clock)."""

    def __enter__(self) -> Clock:
        self.start = now()
        self.seconds = 0.0
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = now() - self.start
