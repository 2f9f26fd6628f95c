"""Hand a search to an agent as a LangChain tool."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from langchain_core.runnables import RunnableConfig
from langchain_core.tools import StructuredTool
from pydantic import BaseModel, Field

from langgraph_specsearch.api import Components, SearchConfig, asolve, load_components
from langgraph_specsearch.background_loop import run_sync
from langgraph_specsearch.events import emit, writer_from_config


class SolveInput(BaseModel):
    """Arguments the agent passes."""

    question: str = Field(description="A math word problem, stated in full.")


def create_specsearch_tool(
    config: SearchConfig | None = None,
    /,
    *,
    components: Components | None = None,
    name: str = "speculative_math_search",
    description: str = (
        "Solves a math word problem by a step-by-step tree search (SpecSearch) and returns the "
        "final answer with the reasoning path."
    ),
) -> StructuredTool:
    """Create a tool that runs one search per call.

    Models are loaded on the first call (or taken from `components`) and reused after.

    Args:
        config: Search configuration (default: SpecSearch beam search on embedded models).
        components: Pre-built backends and PRM to share with the rest of the app.
        name: Tool name shown to the agent.
        description: Tool description shown to the agent.

    Returns:
        A StructuredTool with sync and async entry points; its output is a dict with
        `answer`, `steps` (text, source, score) and `acceptance_rate`. Run by a graph's tool
        node, it sends the search's live events (`events.py`) to that graph's custom stream.
    """
    search_config = config or SearchConfig()
    cache: dict[str, Components] = {} if components is None else {"c": components}
    loading = threading.Lock()  # any event loop, or none: sync and async calls share it

    def load() -> Components:
        with loading:  # concurrent first calls load the models once
            if "c" not in cache:
                cache["c"] = load_components(search_config)
            return cache["c"]

    async def arun(question: str, config: RunnableConfig) -> dict[str, Any]:
        components = cache.get("c") or await asyncio.to_thread(load)  # off the event loop
        # inside a graph (an agent's tool node) the search's events go to that graph's stream
        forward = (lambda e: emit(e, config)) if writer_from_config(config) else None  # type: ignore[arg-type]
        result = await asolve(question, search_config, components=components, on_event=forward)
        return {
            "answer": result.answer,
            "steps": [{"text": s.text, "source": s.source, "score": s.score} for s in result.path],
            "acceptance_rate": result.stats.acceptance_rate,
        }

    def run(question: str, config: RunnableConfig) -> dict[str, Any]:
        return run_sync(arun(question, config))

    return StructuredTool.from_function(
        func=run, coroutine=arun, name=name, description=description, args_schema=SolveInput
    )
