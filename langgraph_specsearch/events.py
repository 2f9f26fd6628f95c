"""Live search events, sent through LangGraph's custom stream mode.

`graph.astream(inputs, stream_mode="custom")` (or `stream_mode=["custom", ...]`) yields one
small dict per event as the search runs; the `event` key says which it is:

| event               | sent by                 | when                                            |
|---------------------|-------------------------|-------------------------------------------------|
| `drafted`           | expander: draft         | the small model wrote a thought                 |
| `scored`            | expander: evaluate      | the PRM scored a thought (draft or large)       |
| `accepted`          | expander: reject        | a draft reached the threshold (or `surplus`)    |
| `rejected`          | expander: reject        | a draft fell short (or was blank)               |
| `regenerated`       | expander: regenerate    | the large model wrote a thought                 |
| `threshold_updated` | expander: merge         | an expansion ended: beta before and after       |
| `step_chosen`       | template: select        | the search chose the node(s) to go on from      |
| `answer_found`      | template: finalize      | the search ended with this answer and path      |

Thoughts inside an expansion are named by `parent_id`, `source` and `index` (their order among
that parent's new thoughts); the tree ids (`<parent>.<i>`) are given when the expansion merges,
and `step_chosen` / `answer_found` use them. Every payload is JSON-safe.

Nodes send events through the stream writer LangGraph puts in the run's config (the runtime's
`stream_writer`): the expander's nodes through a context variable their wrapper sets, the
templates' nodes by passing their `config`; so it works on Python < 3.11 too, where
`langgraph.config.get_stream_writer` does not in async runs.
Outside a streaming run the writer does nothing.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Literal, TypedDict

Writer = Callable[[Any], None]

EVENT_NAMES = (
    "drafted",
    "scored",
    "accepted",
    "rejected",
    "regenerated",
    "threshold_updated",
    "step_chosen",
    "answer_found",
)


class ThoughtEvent(TypedDict):
    """A thought written inside an expansion (`drafted` by the small model, `regenerated` by
    the large one)."""

    event: Literal["drafted", "regenerated"]
    expansion: int
    """Expansions the search had made before this one (0 for the first)."""
    parent_id: str
    step: int
    source: str
    """`small` or `large`."""
    index: int
    text: str
    tokens: int


class ScoredEvent(TypedDict):
    """The PRM's score of one thought."""

    event: Literal["scored"]
    expansion: int
    parent_id: str
    step: int
    source: str
    index: int
    score: float


class VerdictEvent(TypedDict):
    """A draft judged against the threshold."""

    event: Literal["accepted", "rejected"]
    expansion: int
    parent_id: str
    step: int
    index: int
    score: float
    threshold: float | None
    """beta at this step (None in the `random` / `accept_all` ablations, or before any
    estimate)."""
    verdict: str
    """`accepted`, `surplus` (passed, but the node already had enough) or `rejected`."""


class ThresholdEvent(TypedDict):
    """One expansion merged: its decision, counts and beta before and after."""

    event: Literal["threshold_updated"]
    expansion: int
    step: int
    decision: str
    """`warmup`, `large`, `speculate` or `explore`."""
    beta: float | None
    beta_next: float | None
    large_scores: list[float]
    accepted: int
    rejected: int


class ChosenNode(TypedDict):
    """A tree node named in `step_chosen` / `answer_found`."""

    id: str
    step: int
    source: str
    score: float | None
    text: str


class StepChosenEvent(TypedDict):
    """The template chose where the search goes next (beam: the new beam; best-of-N: the
    paths still open; MCTS: the leaf selected for expansion); `chosen` is empty when the
    search stops growing."""

    event: Literal["step_chosen"]
    search: str
    step: int
    chosen: list[ChosenNode]


class AnswerEvent(TypedDict):
    """The search ended: its answer (None when no path stated one) and the chosen path."""

    event: Literal["answer_found"]
    search: str
    answer: str | None
    path: list[ChosenNode]


SearchEvent = (
    ThoughtEvent | ScoredEvent | VerdictEvent | ThresholdEvent | StepChosenEvent | AnswerEvent
)
"""Any of the events above."""

_current: contextvars.ContextVar[Mapping[str, Any] | None] = contextvars.ContextVar(
    "specsearch_node_config", default=None
)


def writer_from_config(config: Mapping[str, Any] | None) -> Writer | None:
    """The run's custom-stream writer, read from a node's config (None if it has none)."""
    runtime = ((config or {}).get("configurable") or {}).get("__pregel_runtime")
    writer = getattr(runtime, "stream_writer", None)
    return writer if callable(writer) else None


@contextmanager
def writing_to(config: Mapping[str, Any] | None) -> Iterator[None]:
    """Make `emit` write to the stream of the node whose `config` this is (one node's call)."""
    token = _current.set(config)
    try:
        yield
    finally:
        _current.reset(token)


def emit(event: SearchEvent, config: Mapping[str, Any] | None = None) -> None:
    """Send one event to the running graph's custom stream (a no-op when nothing listens).

    The writer comes from `config` (a node's config) when given, else from the node wrapper
    (`writing_to`), else from `langgraph.config.get_stream_writer` (Python >= 3.11 only in
    async code).
    """
    config = config if config is not None else _current.get()
    writer = writer_from_config(config)
    if writer is None:
        try:
            from langgraph.config import get_stream_writer

            get_stream_writer()(event)
        except Exception:  # outside a graph run, or no context on Python < 3.11
            pass
        return
    # LangGraph's writer reads the node's namespace from the current runnable config, which
    # Python < 3.11 does not carry into async tasks or executor threads: set it for the call.
    from langchain_core.runnables.config import var_child_runnable_config

    token = var_child_runnable_config.set(config)  # type: ignore[arg-type]
    try:
        writer(event)
    finally:
        var_child_runnable_config.reset(token)


def chosen_node(node: Mapping[str, Any]) -> ChosenNode:
    """The public view of a tree node in an event."""
    score = node.get("score")
    return {
        "id": str(node["id"]),
        "step": int(node["step"]),
        "source": str(node["source"]),
        "score": None if score is None else float(score),
        "text": str(node["text"]),
    }


def thought_event(
    kind: Literal["drafted", "regenerated"], c: Mapping[str, Any], expansion: int
) -> ThoughtEvent:
    """A `drafted` / `regenerated` event from a candidate."""
    return {
        "event": kind,
        "expansion": expansion,
        "parent_id": str(c["parent_id"]),
        "step": int(c["step"]),
        "source": str(c["source"]),
        "index": int(c["index"]),
        "text": str(c["text"]),
        "tokens": int(c["tokens"]),
    }


def scored_event(c: Mapping[str, Any], expansion: int) -> ScoredEvent:
    """A `scored` event from a scored candidate."""
    return {
        "event": "scored",
        "expansion": expansion,
        "parent_id": str(c["parent_id"]),
        "step": int(c["step"]),
        "source": str(c["source"]),
        "index": int(c["index"]),
        "score": float(c["score"]),
    }


def verdict_event(c: Mapping[str, Any], expansion: int, threshold: float | None) -> VerdictEvent:
    """An `accepted` / `rejected` event from a judged draft."""
    return {
        "event": "rejected" if c["verdict"] == "rejected" else "accepted",
        "expansion": expansion,
        "parent_id": str(c["parent_id"]),
        "step": int(c["step"]),
        "index": int(c["index"]),
        "score": float(c["score"]),
        "threshold": threshold,
        "verdict": str(c["verdict"]),
    }


def describe(event: Mapping[str, Any]) -> str:
    """One human-readable line for an event (what `specsearch solve --stream` prints)."""
    kind = event.get("event")
    if kind in ("drafted", "regenerated"):
        text = " ".join(str(event["text"]).split())
        return (
            f"{kind:<17} step {event['step']} {event['source']:<5} under {event['parent_id']}"
            f" #{event['index']}: {text[:80]}"
        )
    if kind == "scored":
        return (
            f"{kind:<17} step {event['step']} {event['source']:<5} under {event['parent_id']}"
            f" #{event['index']}: {event['score']:.3f}"
        )
    if kind in ("accepted", "rejected"):
        beta = "—" if event["threshold"] is None else f"{event['threshold']:.3f}"
        extra = " (surplus)" if event["verdict"] == "surplus" else ""
        return (
            f"{kind:<17} step {event['step']} small under {event['parent_id']}"
            f" #{event['index']}: {event['score']:.3f} vs beta {beta}{extra}"
        )
    if kind == "threshold_updated":
        before = "—" if event["beta"] is None else f"{event['beta']:.3f}"
        after = "—" if event["beta_next"] is None else f"{event['beta_next']:.3f}"
        return (
            f"{kind:<17} step {event['step']} ({event['decision']}): beta {before} -> {after},"
            f" kept {event['accepted']}, rejected {event['rejected']}"
        )
    if kind == "step_chosen":
        ids = ", ".join(f"{n['id']} ({n['source']})" for n in event["chosen"]) or "none"
        return f"{kind:<17} step {event['step']} ({event['search']}): {ids}"
    if kind == "answer_found":
        return f"{kind:<17} {event['answer']} (path of {len(event['path'])} steps)"
    return str(dict(event))


def step_chosen_event(
    search: str, nodes: Mapping[str, Mapping[str, Any]], chosen: list[str]
) -> StepChosenEvent:
    """A `step_chosen` event: the nodes `chosen` (ids into the tree table `nodes`); empty when
    the search goes no further (its step is then the deepest step reached)."""
    picked = [chosen_node(nodes[i]) for i in chosen if i in nodes]
    step = max((n["step"] for n in picked or nodes.values()), default=0)
    return {"event": "step_chosen", "search": search, "step": step, "chosen": picked}


def answer_event(search: str, output: Mapping[str, Any]) -> AnswerEvent:
    """An `answer_found` event from a template's output (`answer`, `path`)."""
    path = [chosen_node(n) for n in output.get("path", []) if n.get("parent_id") is not None]
    answer = output.get("answer")
    return {
        "event": "answer_found",
        "search": search,
        "answer": None if answer is None else str(answer),
        "path": path,
    }
