"""Shared end of every search template: pick the answer path and compute the stats.

Every search ends with an answer where one can be had. At the depth limit the template marks
the last expansion `final`, so its thoughts run to the end of the solution instead of the step
delimiter. If the chosen path still states no answer (MCTS stopped before the depth limit, a
final step ran out of tokens, a path ended without one), the template sends that path's leaf
to the expander once more, `final` with one child: the completion step. `stats.answer_from`
says which happened (`search`, `final_step`, `completion`, `none`) and, when there is still
no answer, `stats.no_answer_reason` says why.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from langgraph_specsearch.answers import extract_answer
from langgraph_specsearch.prm.base import Aggregation, aggregate
from langgraph_specsearch.state import path_to
from langgraph_specsearch.types import ModelUsage, SearchStats

ExtractAnswer = Callable[[str], str | None]
"""Reads a step's final answer (None: the step states none); `answers.extract_answer` by default."""
IsTerminal = Callable[[str], bool]
"""Whether a step ends the solution; `answers.is_terminal` by default."""


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


def best_candidate(
    nodes: Mapping[str, Mapping[str, Any]], candidates: Sequence[str], how: Aggregation
) -> str | None:
    """The candidate leaf with the best aggregated path score (first on ties), None if none."""
    return max(candidates, key=lambda i: score_path(nodes, i, how)) if candidates else None


def stated_answer(
    path: Sequence[Mapping[str, Any]], extract: ExtractAnswer = extract_answer
) -> tuple[str | None, Mapping[str, Any] | None]:
    """The last answer stated along a path (read by `extract`) and the step stating it."""
    for step in reversed(path):
        answer = extract(step["text"])
        if answer is not None:
            return answer, step
    return None, None


def completion_target(
    nodes: Mapping[str, Mapping[str, Any]],
    candidates: Sequence[str],
    how: Aggregation,
    extract: ExtractAnswer = extract_answer,
) -> str | None:
    """The leaf a completion step should extend: the chosen one, if its path states no answer."""
    best = best_candidate(nodes, candidates, how)
    if best is None or stated_answer(path_to(nodes, best), extract)[0] is not None:
        return None
    return best


def start_completion(leaf: str) -> dict[str, Any]:
    """State update sending `leaf` to the expander for one final-answer child."""
    return {"expand": [leaf], "n": 1, "need": 1, "final": True, "completion": "pending"}


def completing(state: Mapping[str, Any]) -> bool:
    """Whether the expansion that just ran was the completion step."""
    return state.get("completion") == "pending"


def completion_children(state: Mapping[str, Any]) -> list[str]:
    """Ids of the kept children the completion step made."""
    return [c["id"] for c in state.get("children") or [] if not c["rejected"]]


_ENDED = {
    "length": "at the token budget",
    "eos_token": "at the end of the text",
    "stop_sequence": "at a stop string",
}


def no_answer_reason(path: Sequence[Mapping[str, Any]], completed: bool) -> str:
    """Why a path states no answer, in one line."""
    if not path:
        return "the search made no step"
    last = path[-1]
    ended = _ENDED.get(str(last.get("finish_reason")), "")
    where = f"step {last['step']} ({last['source']}) ended {ended}".replace("  ", " ").strip()
    if completed:
        return f"not even the completion step stated a final answer: {where}"
    return f"no step of the chosen path states a final answer: {where}"


def final_output(
    state: Mapping[str, Any],
    candidates: Sequence[str],
    how: Aggregation,
    *,
    final_depth: int | None = None,
    extract: ExtractAnswer = extract_answer,
) -> dict[str, Any]:
    """Output keys of a search: the best candidate's answer and path, stats, threshold trace.

    After a completion step the candidates are its children. `final_depth` is the depth whose
    steps were generated to the end (`answer_from="final_step"`); `extract` reads a step's
    final answer.
    """
    nodes = state["nodes"]
    completed = completing(state)
    if completed and completion_children(state):
        candidates = completion_children(state)
        nodes = {**nodes, **{c["id"]: c for c in state["children"]}}
    best = best_candidate(nodes, candidates, how)
    path = [dict(n) for n in path_to(nodes, best)] if best else []
    answer, step = stated_answer(path, extract)
    # time the search was running (not the time since it started: a resume may be days later)
    wall = float(state["usage"].get("search", {}).get("active_s", 0.0))
    stats = compute_stats(state["usage"], wall, state["threshold"]["expansions"])
    if step is None:
        stats.answer_from = "none"
        stats.no_answer_reason = no_answer_reason(path, completed)
    elif completed and step["id"] in completion_children(state):
        stats.answer_from = "completion"
    elif final_depth is not None and step["step"] >= final_depth:
        stats.answer_from = "final_step"
    else:
        stats.answer_from = "search"
    return {
        "answer": answer,
        "path": path,
        "stats": stats.model_dump(),
        "threshold_trace": list(state["trace"]),
    }
