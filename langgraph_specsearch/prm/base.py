"""The process-reward-model protocol and score aggregation."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal, Protocol, runtime_checkable

Aggregation = Literal["last", "min", "prod", "mean"]


@runtime_checkable
class PRM(Protocol):
    """Scores reasoning steps; every score is in [0, 1] (higher is better)."""

    name: str

    async def ascore(self, question: str, paths: Sequence[Sequence[str]]) -> list[list[float]]:
        """Per-step scores of every path (inner lists follow each path's steps)."""
        ...

    async def ascore_last(self, question: str, paths: Sequence[Sequence[str]]) -> list[float]:
        """Score of the last step of every path, given the steps before it (batched)."""
        ...


def aggregate(step_scores: Sequence[float], how: Aggregation = "last") -> float:
    """Collapse per-step scores to one path score."""
    if not step_scores:
        return 0.0
    if how == "last":
        return float(step_scores[-1])
    if how == "min":
        return float(min(step_scores))
    if how == "prod":
        return float(math.prod(step_scores))
    if how == "mean":
        return float(sum(step_scores) / len(step_scores))
    raise ValueError(f"unknown aggregation {how!r}")


class LastStepPRM:
    """Mixin: derive `ascore` (every step) from `ascore_last` over all prefixes in one batch."""

    async def ascore_last(self, question: str, paths: Sequence[Sequence[str]]) -> list[float]:
        """Implemented by subclasses."""
        raise NotImplementedError

    async def ascore(self, question: str, paths: Sequence[Sequence[str]]) -> list[list[float]]:
        """Score each prefix's last step, then regroup per path."""
        prefixes = [list(path[: i + 1]) for path in paths for i in range(len(path))]
        flat = await self.ascore_last(question, prefixes) if prefixes else []
        out: list[list[float]] = []
        position = 0
        for path in paths:
            out.append(flat[position : position + len(path)])
            position += len(path)
        return out
