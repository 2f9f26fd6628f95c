"""Shared end of every search template: pick the answer path and compute the stats."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from langgraph_specsearch.answers import extract_answer
from langgraph_specsearch.prm.base import Aggregation, aggregate
from langgraph_specsearch.state import path_to
from langgraph_specsearch.types import ModelUsage, SearchStats


def score_path(nodes: Mapping[str, Mapping[str, Any]], node_id: str, how: Aggregation) -> float:
    """Aggregated PRM score of the path ending at `node_id`."""
    scores = [float(n["score"]) for n in path_to(nodes, node_id) if n["score"] is not None]
    return aggregate(scores, how)


def compute_stats(
    usage: Mapping[str, Mapping[str, float]], wall_s: float, expansions: int
) -> SearchStats:
    """Turn summed usage counters into `SearchStats`."""

    def model(key: str) -> ModelUsage:
        u = usage.get(key, {})
        calls = int(u.get("calls", 0))
        return ModelUsage(
            calls=calls,
            generated_tokens=int(u.get("generated_tokens", 0)),
            time_s=float(u.get("time_s", 0.0)),
            accepted_draft_tokens=int(u.get("accepted_draft_tokens", 0)),
            mean_call_s=float(u.get("time_s", 0.0)) / calls if calls else None,
        )

    counts = usage.get("counts", {})
    drafts, accepted = int(counts.get("drafts", 0)), int(counts.get("accepted", 0))
    small, large, prm = model("small"), model("large"), model("prm")
    speculative = int(counts.get("decision_speculate", 0) + counts.get("decision_explore", 0))
    return SearchStats(
        speculative_expansions=speculative,
        warmup_expansions=int(counts.get("decision_warmup", 0)),
        controller_fallbacks=int(counts.get("decision_large", 0)),
        controller_explorations=int(counts.get("decision_explore", 0)),
        probes=int(counts.get("probes", 0)),
        small_drafted_share=speculative / expansions if expansions and drafts else None,
        wall_s=wall_s,
        small=small,
        large=large,
        prm=prm,
        other_s=max(wall_s - small.time_s - large.time_s - prm.time_s, 0.0),
        drafts=drafts,
        accepted=accepted,
        rejected=int(counts.get("rejected", 0)),
        acceptance_rate=(accepted / drafts) if drafts else None,
        expansions=expansions,
    )


def final_output(
    state: Mapping[str, Any], candidates: Sequence[str], how: Aggregation
) -> dict[str, Any]:
    """Output keys of a search: the best candidate's answer and path, stats, threshold trace."""
    nodes = state["nodes"]
    best = max(candidates, key=lambda i: score_path(nodes, i, how)) if candidates else None
    path = [dict(n) for n in path_to(nodes, best)] if best else []
    answer = None
    for step in reversed(path):
        answer = extract_answer(step["text"])
        if answer is not None:
            break
    # time the search was running (not the time since it started: a resume may be days later)
    wall = float(state["usage"].get("search", {}).get("active_s", 0.0))
    stats = compute_stats(state["usage"], wall, state["threshold"]["expansions"])
    return {
        "answer": answer,
        "path": path,
        "stats": stats.model_dump(),
        "threshold_trace": list(state["trace"]),
    }
