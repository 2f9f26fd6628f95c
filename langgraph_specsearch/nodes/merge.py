"""Merge node: turn candidates into tree nodes and fold the large model's scores into beta."""

from __future__ import annotations

from typing import Any

from langgraph_specsearch.answers import is_terminal
from langgraph_specsearch.nodes.common import AsyncNode
from langgraph_specsearch.threshold import ThresholdConfig, current_threshold, update


def make_merge_node(threshold: ThresholdConfig) -> AsyncNode:
    """Build the merge node: children get ids `<parent>.<i>`; beta(k+1) uses step k's scores."""

    async def merge(state: dict[str, Any]) -> dict[str, Any]:
        nodes, candidates = state["nodes"], state["candidates"]
        before = state["threshold"]
        large_scores = [c["score"] for c in candidates if c["source"] == "large"]
        after = (
            update(before, large_scores, threshold)
            if threshold.mode == "adaptive"
            else dict(before)
        )
        after["expansions"] = before["expansions"] + 1
        taken: dict[str, int] = {}
        children = []
        for c in candidates:
            parent = c["parent_id"]
            index = taken.get(parent, len([k for k in nodes if nodes[k]["parent_id"] == parent]))
            taken[parent] = index + 1
            children.append(
                {
                    "id": f"{parent}.{index}",
                    "parent_id": parent,
                    "step": c["step"],
                    "text": c["text"],
                    "source": c["source"],
                    "score": c["score"],
                    "tokens": c["tokens"],
                    "latency_s": c["latency_s"],
                    "finish_reason": c["finish_reason"],
                    "terminal": is_terminal(c["text"]) or c["finish_reason"] == "eos_token",
                    # a blank step (the model emitted the delimiter first) is never kept
                    "rejected": c["verdict"] == "rejected" or not c["text"].strip(),
                    "visits": 0,
                    "value": 0.0,
                }
            )
        point = {
            "step": max((c["step"] for c in candidates), default=0),
            "beta": current_threshold(before, threshold),
            "beta_next": after["beta"],
            "large_scores": large_scores,
            "accepted": sum(c["verdict"] == "accepted" for c in candidates),
            "rejected": sum(c["verdict"] == "rejected" for c in candidates),
        }
        return {"children": children, "threshold": after, "trace": [point]}

    return merge
