"""Graphs for `langgraph dev` / LangGraph Server (`langgraph.json` at the repository root).

- `specsearch`: the search graph for `SearchConfig` (input `{"question"}`, output `{"answer",
  "path", "stats", "threshold_trace"}`); its live events (`events.py`) come through the custom
  stream mode with `stream_subgraphs=True`.
- `math_agent`: the small agent of `agent.py`, which calls the search as a tool; the search's
  events reach its custom stream directly.

Both are built once per server process. Environment variables choose what they run on:

- `SPECSEARCH_CONFIG`: a `SearchConfig` as JSON (default: SpecSearch beam search on the
  embedded models; the server then loads them at startup, ~1 minute the first time).
- `SPECSEARCH_COMPONENTS`: `module:function` returning `Components` for a config (e.g. your own
  endpoint backends); default `load_components`.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from functools import cache

from langgraph.graph.state import CompiledStateGraph

from langgraph_specsearch.api import Components, SearchConfig, create_search_graph, load_components

CONFIG_ENV = "SPECSEARCH_CONFIG"
COMPONENTS_ENV = "SPECSEARCH_COMPONENTS"


def server_config() -> SearchConfig:
    """The search configuration from `$SPECSEARCH_CONFIG` (JSON), else the defaults."""
    raw = os.environ.get(CONFIG_ENV)
    return SearchConfig.model_validate_json(raw) if raw else SearchConfig()


def _factory() -> Callable[[SearchConfig], Components]:
    """The components factory named by `$SPECSEARCH_COMPONENTS` (`module:function`)."""
    spec = os.environ.get(COMPONENTS_ENV)
    if not spec:
        return load_components
    module, _, name = spec.partition(":")
    if not module or not name:
        raise ValueError(f"{COMPONENTS_ENV} must be 'module:function', got {spec!r}")
    factory: Callable[[SearchConfig], Components] = getattr(importlib.import_module(module), name)
    return factory


@cache
def server_components() -> Components:
    """The server's backends and PRM (built once per process)."""
    return _factory()(server_config())


def make_search_graph() -> CompiledStateGraph:
    """The search graph the server runs (the server adds its own checkpointer)."""
    config = server_config()
    graph = create_search_graph(config, components=server_components())
    return graph.compile(name="specsearch")


def make_math_agent() -> CompiledStateGraph:
    """The agent that calls the search as a tool (a rule-based stand-in model, see agent.py)."""
    from langgraph_specsearch.agent import MathRouterChatModel, create_math_agent
    from langgraph_specsearch.tool import create_specsearch_tool

    tool = create_specsearch_tool(server_config(), components=server_components())
    return create_math_agent(MathRouterChatModel(), tool=tool)
