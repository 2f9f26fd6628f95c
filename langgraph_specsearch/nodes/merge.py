"""Expander-level nodes: prepare (beta from the store, the controller's decision) and merge."""

from __future__ import annotations

from typing import Any

from langgraph_specsearch.answers import is_terminal
from langgraph_specsearch.events import emit
from langgraph_specsearch.nodes.common import AsyncNode, now
from langgraph_specsearch.nodes.prefetch import Prefetcher
from langgraph_specsearch.speculation import (
    SpeculationConfig,
    decide,
    note_decision,
    record,
)
from langgraph_specsearch.threshold import (
    ThresholdConfig,
    ThresholdStore,
    current_threshold,
    in_warmup,
    update,
)


def make_prepare_node(
    threshold: ThresholdConfig,
    *,
    speculation: SpeculationConfig,
    concurrent: bool,
    store: ThresholdStore | None = None,
    large_only: bool = False,
) -> AsyncNode:
    """Build the node that opens an expansion: beta from `store` if the search has none yet,
    then `warmup`, `large` (the controller's fallback), `explore` or `speculate`."""

    async def prepare(state: dict[str, Any]) -> dict[str, Any]:
        th = dict(state["threshold"])
        if store is not None and threshold.mode == "adaptive":
            th = dict(store.seed(th))  # type: ignore[arg-type]
        if large_only:
            decision = "large"
        elif in_warmup(th, threshold):  # type: ignore[arg-type]
            decision = "warmup"
        else:
            n = state["n"]
            decision = decide(
                th.get("controller", {}),
                speculation,
                drafts=speculation.drafts_for(n),
                need=state.get("need", n),
                nodes=len(state["expand"]) if speculation.pipeline == "per_node" else 1,
                concurrent=concurrent,
                expansion=th["expansions"],
            )
        return {"threshold": th, "decision": decision}

    return prepare


def make_merge_node(
    threshold: ThresholdConfig,
    *,
    store: ThresholdStore | None = None,
    prefetch: Prefetcher | None = None,
    update_beta: bool = True,
) -> AsyncNode:
    """Build the merge node: children get ids `<parent>.<i>`; beta(k+1) uses step k's scores;
    the controller's measurements take in every node pipeline's report."""

    async def merge(state: dict[str, Any]) -> dict[str, Any]:
        start = now()
        if prefetch is not None:
            prefetch.cancel_all((state["question"], state["threshold"]["expansions"]))
        nodes, expand = state["nodes"], state["expand"]
        order = {p: i for i, p in enumerate(expand)}
        candidates = sorted(
            state["done"],
            key=lambda c: (order.get(c["parent_id"], 0), c["source"] != "small", c["index"]),
        )
        before = state["threshold"]
        large_scores = [
            c["score"] for c in candidates if c["source"] == "large" and not c.get("blank")
        ]
        adaptive = update_beta and threshold.mode == "adaptive"
        after: dict[str, Any] = dict(
            update(before, large_scores, threshold) if adaptive else before
        )
        after["expansions"] = before["expansions"] + 1
        decision = state.get("decision", "large")
        speculative = decision in ("speculate", "explore")
        after["since_large"] = 0 if large_scores else before.get("since_large", 0) + speculative
        if update_beta:
            stats = dict(before.get("controller", {}))
            for report in state["reports"]:
                stats = record(stats, report)
            after["controller"] = stats if decision == "warmup" else note_decision(stats, decision)
        if store is not None and adaptive:
            store.save(after)  # type: ignore[arg-type]
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
                    # rejected / surplus drafts and blank steps are never kept
                    "rejected": c["verdict"] in ("rejected", "surplus") or bool(c.get("blank")),
                    "visits": 0,
                    "value": 0.0,
                }
            )
        point = {
            "step": max((c["step"] for c in candidates), default=0),
            "beta": current_threshold(before, threshold),  # type: ignore[arg-type]
            "beta_next": after["beta"],
            "large_scores": large_scores,
            "accepted": sum(c["verdict"] in ("accepted", "surplus") for c in candidates),
            "rejected": sum(c["verdict"] == "rejected" for c in candidates),
            "decision": decision,
            "nodes": len(expand),
            # the paper's quality condition at this step: beta(k) >= mean large score
            "large_mean": sum(large_scores) / len(large_scores) if large_scores else None,
            "probe": any(r.get("probe") for r in state["reports"]),
        }
        emit(
            {
                "event": "threshold_updated",
                "expansion": before["expansions"],
                "step": point["step"],
                "decision": decision,
                "beta": point["beta"],
                "beta_next": point["beta_next"],
                "large_scores": [float(s) for s in large_scores],
                "accepted": point["accepted"],
                "rejected": point["rejected"],
            }
        )
        active = max((r.get("active_s", 0.0) for r in state["reports"]), default=0.0)
        counts = {f"decision_{decision}": 1}
        usage = {"counts": counts, "search": {"active_s": active + now() - start}}
        return {"children": children, "threshold": after, "trace": [point], "usage": usage}

    return merge
