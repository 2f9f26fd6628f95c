"""Graph state: TypedDicts with reducers holding plain data, and helpers over the node table.

The search tree is a flat table `{node_id: Thought.model_dump()}`; the root has id "0" and
children are named `<parent>.<i>`. Everything here is JSON-safe so it checkpoints.
"""

from __future__ import annotations

import operator
import time
from collections.abc import Mapping
from typing import Annotated, Any, TypedDict

from typing_extensions import NotRequired

from langgraph_specsearch.threshold import ThresholdState, initial_state

ROOT_ID = "0"
NodeTable = dict[str, dict[str, Any]]
Usage = dict[str, dict[str, float]]


def merge_nodes(left: NodeTable | None, right: NodeTable | None) -> NodeTable:
    """Reducer: upsert nodes by id (later values win, e.g. updated visit counts)."""
    return {**(left or {}), **(right or {})}


def add_usage(left: Usage | None, right: Usage | None) -> Usage:
    """Reducer: sum counters per key (`{"small": {"calls": 1, ...}, "counts": {...}}`)."""
    out: Usage = {k: dict(v) for k, v in (left or {}).items()}
    for key, counters in (right or {}).items():
        slot = out.setdefault(key, {})
        for name, value in counters.items():
            slot[name] = slot.get(name, 0) + value
    return out


class ExpanderInput(TypedDict):
    """What a search template hands an expander.

    `n` children are asked of every node in `expand`; `need` (default `n`) is how many of
    them the template can actually use, e.g. a beam of width B keeps at most B children of a
    node, so SpecSearch's large model only has to make up a shortfall below `need`. `final`
    (default False) marks the children as the last step (the depth limit, or a completion
    step): they are generated to the end of the solution, not to the step delimiter, with the
    larger `final_max_new_tokens` budget.
    """

    question: str
    nodes: NodeTable
    expand: list[str]
    n: int
    need: NotRequired[int]
    threshold: ThresholdState
    final: NotRequired[bool]


class ExpanderOutput(TypedDict):
    """What an expander hands back: scored children plus usage and threshold updates."""

    children: list[dict[str, Any]]
    threshold: ThresholdState
    usage: Annotated[Usage, add_usage]
    trace: Annotated[list[dict[str, Any]], operator.add]


class ExpanderState(ExpanderInput, ExpanderOutput):
    """Private state of an expander subgraph: the node pipelines' results before merging."""

    decision: str
    done: Annotated[list[dict[str, Any]], operator.add]
    reports: Annotated[list[dict[str, Any]], operator.add]


class PipelineInput(TypedDict):
    """What one node pipeline (draft -> evaluate -> reject -> regenerate) starts from."""

    question: str
    nodes: NodeTable
    expand: list[str]
    n: int
    need: int
    threshold: ThresholdState
    decision: str
    final: NotRequired[bool]


class PipelineOutput(TypedDict):
    """What a node pipeline hands back: its scored candidates and a report for the controller."""

    done: Annotated[list[dict[str, Any]], operator.add]
    reports: Annotated[list[dict[str, Any]], operator.add]
    usage: Annotated[Usage, add_usage]


class PipelineState(PipelineInput, PipelineOutput):
    """Private state of a node pipeline."""

    candidates: list[dict[str, Any]]
    regen: list[str]
    report: dict[str, Any]


class SearchInput(TypedDict):
    """Input of every search graph."""

    question: str


class SearchOutput(TypedDict):
    """Output of every search graph: a drop-in node reads these keys."""

    answer: str | None
    path: list[dict[str, Any]]
    stats: dict[str, Any]
    threshold_trace: list[dict[str, Any]]


class SearchState(TypedDict):
    """Keys every search template shares: the tree, the expander's channels, the output."""

    question: str
    nodes: Annotated[NodeTable, merge_nodes]
    expand: list[str]
    n: int
    children: list[dict[str, Any]]
    threshold: ThresholdState
    need: int
    usage: Annotated[Usage, add_usage]
    trace: Annotated[list[dict[str, Any]], operator.add]
    started_at: float
    final: bool
    completion: str
    answer: str | None
    path: list[dict[str, Any]]
    stats: dict[str, Any]
    threshold_trace: list[dict[str, Any]]


def start_search(question: str) -> dict[str, Any]:
    """The first update of every search: a tree holding only the root, no threshold yet."""
    if not question.strip():
        raise ValueError("question must not be empty")
    return {
        "nodes": {ROOT_ID: root_node()},
        "threshold": initial_state(),
        "started_at": time.time(),
    }


def path_to(nodes: Mapping[str, Mapping[str, Any]], node_id: str) -> list[Mapping[str, Any]]:
    """Nodes from the first step down to `node_id` (the root excluded)."""
    chain: list[Mapping[str, Any]] = []
    current: str | None = node_id
    while current is not None and current != ROOT_ID:
        node = nodes[current]
        chain.append(node)
        current = node["parent_id"]
    return chain[::-1]


def steps_to(nodes: Mapping[str, Mapping[str, Any]], node_id: str) -> list[str]:
    """Texts of the steps from the first one down to `node_id`."""
    return [n["text"] for n in path_to(nodes, node_id)]


def root_node() -> dict[str, Any]:
    """The root of every tree: the question itself, no text."""
    return {
        "id": ROOT_ID,
        "parent_id": None,
        "step": 0,
        "text": "",
        "source": "root",
        "score": None,
        "tokens": 0,
        "latency_s": 0.0,
        "finish_reason": "",
        "terminal": False,
        "rejected": False,
        "visits": 0,
        "value": 0.0,
    }


def ancestry(nodes: Mapping[str, Mapping[str, Any]], ids: list[str]) -> NodeTable:
    """The part of the table a pipeline needs: the given nodes and their ancestors."""
    out: NodeTable = {}
    for node_id in ids:
        current: str | None = node_id
        while current is not None and current not in out:
            out[current] = dict(nodes[current])
            current = nodes[current]["parent_id"]
    return out


def children_of(nodes: Mapping[str, Mapping[str, Any]], node_id: str) -> list[str]:
    """Ids of the (kept) children of a node, in creation order."""
    return [
        nid
        for nid, node in nodes.items()
        if node["parent_id"] == node_id and not node.get("rejected", False)
    ]
