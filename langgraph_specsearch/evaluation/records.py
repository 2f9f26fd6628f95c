"""One JSONL record per measured search: answer, grade, time split, tokens, per-step counts."""

from __future__ import annotations

import statistics
from typing import Any

from langgraph_specsearch.answers import is_correct
from langgraph_specsearch.evaluation.runner import Run
from langgraph_specsearch.types import SearchResult, Thought


def _mean(values: list[float]) -> float | None:
    """Mean, None for no values."""
    return statistics.fmean(values) if values else None


def per_step(nodes: list[Thought]) -> list[dict[str, Any]]:
    """Per depth: drafts, accepted drafts, large thoughts, mean PRM score of each model's."""
    steps: dict[int, dict[str, list[Thought]]] = {}
    for node in nodes:
        if node.source == "root":
            continue
        steps.setdefault(node.step, {"small": [], "large": []})[node.source].append(node)
    out = []
    for step in sorted(steps):
        small, large = steps[step]["small"], steps[step]["large"]
        out.append(
            {
                "step": step,
                "drafted": len(small),
                "accepted": sum(not n.rejected for n in small),
                "regenerated": len(large),
                "small_score": _mean([n.score for n in small if n.score is not None]),
                "large_score": _mean([n.score for n in large if n.score is not None]),
            }
        )
    return out


def time_split(result: SearchResult, latency_s: float) -> dict[str, float]:
    """Seconds in the small model, the large model, the PRM, and the rest of the latency.

    Model times overlap when calls run concurrently; `other` is then clamped at 0 and the
    overlap reported as `overlap`.
    """
    s = result.stats
    models = s.small.time_s + s.large.time_s + s.prm.time_s
    return {
        "small": s.small.time_s,
        "large": s.large.time_s,
        "prm": s.prm.time_s,
        "other": max(latency_s - models, 0.0),
        "overlap": max(models - latency_s, 0.0),
    }


def make_record(run: Run) -> dict[str, Any]:
    """The JSONL record of one run (graded with `answers.is_correct`)."""
    r, s, th = run.result, run.result.stats, run.config.threshold
    return {
        "problem_id": run.problem.id,
        "repeat": run.repeat,
        "method": run.method,
        "position": run.position,
        "seed": run.config.generation.seed,
        "question": run.problem.question,
        "answer": r.answer,
        "gold": run.problem.gold,
        "correct": is_correct(r.answer, run.problem.gold),
        "answer_from": s.answer_from,
        "no_answer_reason": s.no_answer_reason,
        "latency_s": run.latency_s,
        "search_wall_s": s.wall_s,
        "time_s": time_split(r, run.latency_s),
        "tokens": {"small": s.small.generated_tokens, "large": s.large.generated_tokens},
        "calls": {"small": s.small.calls, "large": s.large.calls, "prm": s.prm.calls},
        "drafts": s.drafts,
        "accepted": s.accepted,
        "rejected": s.rejected,
        "acceptance": s.acceptance_rate,
        "expansions": s.expansions,
        "speculative_expansions": s.speculative_expansions,
        "controller_fallbacks": s.controller_fallbacks,
        "small_drafted_share": s.small_drafted_share,
        "reject_rate": th.reject_rate if th.mode == "random" else None,
        "path_sources": [t.source for t in r.path],
        "steps": per_step(r.nodes),
        "threshold_trace": [p.model_dump() for p in r.threshold_trace],
    }
