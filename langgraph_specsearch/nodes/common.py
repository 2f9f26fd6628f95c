"""Helpers shared by the expander nodes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from typing import Any

from langchain_core.runnables import RunnableConfig, RunnableLambda

from langgraph_specsearch.background_loop import run_sync
from langgraph_specsearch.events import writing_to
from langgraph_specsearch.prompts import PromptFormat
from langgraph_specsearch.types import Generation, GenerationParams

AsyncNode = Callable[[dict[str, Any]], Coroutine[Any, Any, dict[str, Any]]]


def as_node(afunc: AsyncNode, name: str) -> RunnableLambda:
    """Wrap an async node: events it `emit`s go to the run's custom stream.

    Under `ainvoke` / `astream` it runs on the caller's event loop. Under the sync `invoke` /
    `stream` its coroutine runs on the process-wide background loop (`background_loop`),
    never through `asyncio.run`, so sync runs work inside a running loop too.
    """

    async def anode(state: dict[str, Any], config: RunnableConfig) -> dict[str, Any]:
        with writing_to(config):
            return await afunc(state)

    def node(state: dict[str, Any], config: RunnableConfig) -> dict[str, Any]:
        return run_sync(anode(state, config))

    return RunnableLambda(node, afunc=anode, name=name)


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


#: A finishing step's token budget when `final_max_new_tokens` is unset: this many steps' worth.
FINAL_BUDGET_STEPS = 4


def step_params(
    params: GenerationParams, fmt: PromptFormat, state: dict[str, Any]
) -> GenerationParams:
    """The call's stop strings and budget: to the step delimiter, or for a `final` expansion
    to the end of the solution (the format's other stops) with `final_max_new_tokens`."""
    stops = fmt.stop_sequences()
    if not state.get("final"):
        return params.model_copy(update={"stop": stops})
    budget = params.final_max_new_tokens or FINAL_BUDGET_STEPS * params.max_new_tokens
    finishing = [s for s in stops if s != fmt.delimiter]
    return params.model_copy(update={"stop": finishing, "max_new_tokens": budget})
