"""What a third-party expander needs: the contract types and a helper that builds children.

Every search template hands an expander subgraph an `ExpanderInput` and reads back an
`ExpanderOutput`. An expander of your own is a `StateGraph(YourState, input_schema=
ExpanderInput, output_schema=ExpanderOutput)` whose nodes, for every id in `expand`, write
`n` children (scored, e.g. by a PRM) with `make_child`, count its expansion with
`next_threshold`, and return `{"children": [...], "threshold": ..., "usage": {...},
"trace": [...]}`; `usage` and `trace` may be empty. The node table `nodes` holds every
ancestor of the nodes to expand; `steps_to(nodes, node_id)` gives the reasoning steps so far.
`emit(...)` from `events.py` adds the expander's own live events.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypedDict

from langgraph_specsearch.answers import is_terminal
from langgraph_specsearch.state import ExpanderInput, ExpanderOutput, steps_to
from langgraph_specsearch.threshold import ThresholdState

__all__ = [
    "ChildNode",
    "ExpanderInput",
    "ExpanderOutput",
    "make_child",
    "next_threshold",
    "steps_to",
]


class ChildNode(TypedDict):
    """One child in `ExpanderOutput.children` (a row of the search tree's node table)."""

    id: str
    """`<parent id>.<i>`, i counting the parent's children so far."""
    parent_id: str
    step: int
    text: str
    source: str
    """`small` or `large` (the model that wrote it)."""
    score: float | None
    tokens: int
    latency_s: float
    finish_reason: str
    terminal: bool
    """The step states a final answer, or the model ended the text."""
    rejected: bool
    """Kept in the tree but never expanded (e.g. a draft below the threshold)."""
    visits: int
    value: float


def make_child(
    nodes: Mapping[str, Mapping[str, Any]],
    parent_id: str,
    text: str,
    *,
    index: int,
    source: str = "large",
    score: float | None = None,
    tokens: int = 0,
    latency_s: float = 0.0,
    finish_reason: str = "stop_sequence",
    rejected: bool = False,
) -> ChildNode:
    """A child of `parent_id`, shaped as the templates expect.

    Args:
        nodes: The expander input's node table (must hold the parent).
        parent_id: The node expanded.
        text: The new reasoning step.
        index: Its position among the parent's new children (0, 1, ...); the id counts on
            from the children the parent already has.
        source: The model that wrote it.
        score: Its PRM score (None: unscored, which path aggregation skips).
        tokens: Tokens generated.
        latency_s: Seconds the model took.
        finish_reason: `stop_sequence`, `eos_token` or `length`.
        rejected: Keep it in the tree but out of the search.
    """
    parent = nodes[parent_id]
    existing = sum(1 for node in nodes.values() if node.get("parent_id") == parent_id)
    return {
        "id": f"{parent_id}.{existing + index}",
        "parent_id": parent_id,
        "step": int(parent["step"]) + 1,
        "text": text,
        "source": source,
        "score": score,
        "tokens": tokens,
        "latency_s": latency_s,
        "finish_reason": finish_reason,
        "terminal": is_terminal(text) or finish_reason == "eos_token",
        "rejected": rejected,
        "visits": 0,
        "value": 0.0,
    }


def next_threshold(threshold: ThresholdState) -> ThresholdState:
    """The threshold state after one more expansion (beta unchanged)."""
    return {**threshold, "expansions": threshold["expansions"] + 1}
