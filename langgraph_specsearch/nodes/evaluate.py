"""Evaluate node: the PRM scores every unscored candidate in one batched call."""

from __future__ import annotations

from typing import Any

from langgraph_specsearch.events import emit, scored_event
from langgraph_specsearch.nodes.common import AsyncNode, Clock, now
from langgraph_specsearch.prm.base import PRM
from langgraph_specsearch.state import steps_to


def make_evaluate_node(prm: PRM) -> AsyncNode:
    """Build the evaluate node (used after drafting and again after regeneration).

    A blank candidate (the model wrote the delimiter first) is not sent to the PRM: it gets
    score 0 and `blank=True`, and the reject node rejects it.
    """

    async def evaluate(state: dict[str, Any]) -> dict[str, Any]:
        start = now()
        nodes = state["nodes"]
        candidates = [dict(c) for c in state["candidates"]]
        for c in candidates:
            if c["score"] is None and not c["text"].strip():
                c["score"], c["blank"] = 0.0, True
        todo = [c for c in candidates if c["score"] is None]
        report = dict(state.get("report") or {})
        if not todo:
            return {"candidates": candidates}
        paths = [[*steps_to(nodes, c["parent_id"]), c["text"]] for c in todo]
        with Clock() as clock:
            scores = await prm.ascore_last(state["question"], paths)
        for c, score in zip(todo, scores, strict=True):
            c["score"] = float(score)
            emit(scored_event(c, state["threshold"]["expansions"]))
        usage = {"prm": {"calls": 1, "time_s": clock.seconds, "scored": len(todo)}}
        report.setdefault("prm_s", clock.seconds)
        report["active_s"] = report.get("active_s", 0.0) + now() - start
        return {"candidates": candidates, "usage": usage, "report": report}

    return evaluate


def route_after_evaluate(state: dict[str, Any]) -> str:
    """Unjudged drafts go to `reject`; otherwise the node's expansion is complete."""
    pending = any(c["source"] == "small" and c["verdict"] is None for c in state["candidates"])
    return "reject" if pending else "finish"
