"""What the templates share: the compiled expander; the frontier rounds of beam and best-of-N."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from langgraph.graph import StateGraph
from langgraph.graph.state import CompiledStateGraph

from langgraph_specsearch.graphs.finalize import IsTerminal, completing
from langgraph_specsearch.state import ROOT_ID, SearchState, start_search


class FrontierState(SearchState):
    """A search that grows a frontier of open paths round by round (plain data only)."""

    frontier: list[str]
    completed: list[str]


def compile_expander(expander: StateGraph | CompiledStateGraph) -> CompiledStateGraph:
    """The expander as a compiled subgraph (compiled here if it is not yet)."""
    # not checkpointed inside: a step is the unit of recovery (a failed step reruns whole), which
    # keeps checkpoint writes per step few; a compiled expander is used as it is
    return (
        expander
        if isinstance(expander, CompiledStateGraph)
        else expander.compile(checkpointer=False)
    )


def start_frontier(question: str, n: int, need: int | None = None) -> dict[str, Any]:
    """The first update of a frontier search: expand the root into `n` children.

    `need` is how many children of a node the template can use (default `n`).
    """
    return {
        **start_search(question),
        "frontier": [ROOT_ID],
        "completed": [],
        "expand": [ROOT_ID],
        "n": n,
        "need": n if need is None else min(need, n),
    }


def retag(children: list[dict[str, Any]], is_terminal: IsTerminal | None) -> list[dict[str, Any]]:
    """Children with `terminal` decided by the template's rule (unchanged without one)."""
    if is_terminal is None:
        return children
    return [
        {**c, "terminal": is_terminal(c["text"]) or c["finish_reason"] == "eos_token"}
        for c in children
    ]


def take_children(
    state: FrontierState, is_terminal: IsTerminal | None = None
) -> tuple[dict[str, Any], list[str], list[str]]:
    """The expander's children by id, the completed paths with the new ones, the open ones
    (`is_terminal`: the template's rule for a completed path, else the expander's)."""
    children = retag(state["children"], is_terminal)
    new = {c["id"]: c for c in children}
    live = [c for c in children if not c["rejected"]]
    completed = state["completed"] + [c["id"] for c in live if c["terminal"]]
    return new, completed, [c["id"] for c in live if not c["terminal"]]


def frontier_route(
    max_steps: int,
    done: str,
    target: Callable[[Any], str | None] | None = None,
) -> Callable[[FrontierState], str]:
    """Route to "expand" while the frontier is open and shallower than `max_steps`; then to
    "complete" when `target` names a leaf to complete (once), else to `done`."""

    def route(state: FrontierState) -> str:
        if completing(state):
            return done
        frontier = state["frontier"]
        if frontier and state["nodes"][frontier[0]]["step"] < max_steps:
            return "expand"
        if target is not None and target(state) is not None:
            return "complete"
        return done

    return route


def is_final(nodes: Mapping[str, Mapping[str, Any]], frontier: list[str], max_steps: int) -> bool:
    """Whether expanding `frontier` makes the last step the depth limit allows."""
    return bool(frontier) and nodes[frontier[0]]["step"] + 1 >= max_steps
