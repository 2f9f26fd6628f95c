"""Judge + arithmetic: an LLM judge whose score is corrected by exact equation checks."""

from __future__ import annotations

from collections.abc import Sequence

from langgraph_specsearch.prm.arithmetic import ArithmeticPRM, check_step, step_score
from langgraph_specsearch.prm.base import PRM, LastStepPRM

FALSE_EQUATION_CAP = 0.2


class CombinedPRM(LastStepPRM):
    """Blend a judge PRM with `ArithmeticPRM` on the last step of each path.

    - Step with checkable arithmetic: `(1 - weight) * judge + weight * arithmetic`.
    - Step without any: the judge score alone (a neutral arithmetic score would otherwise
      pull every such step toward 0.5).
    - Step with any false equation: the blend is capped at `cap` (default 0.2), so a
      confident judge cannot rescue a step whose arithmetic is provably wrong.

    The judge is called once for all paths.
    """

    def __init__(
        self,
        judge: PRM,
        arithmetic: ArithmeticPRM | None = None,
        *,
        weight: float = 0.5,
        cap: float = FALSE_EQUATION_CAP,
        name: str | None = None,
    ) -> None:
        """Combine `judge` with `arithmetic` (a default `ArithmeticPRM` when None)."""
        if not 0.0 <= weight <= 1.0:
            raise ValueError("weight must be in [0, 1]")
        self.judge = judge
        self.arithmetic = arithmetic or ArithmeticPRM()
        self.weight = weight
        self.cap = cap
        self.name = name or f"{judge.name}+{self.arithmetic.name}"

    def combine(self, judge_score: float, step: str) -> float:
        """Blend one judge score with the arithmetic check of `step`."""
        check = check_step(step)
        if not check.checkable:
            return judge_score
        arith = step_score(check, self.arithmetic.neutral)
        score = (1.0 - self.weight) * judge_score + self.weight * arith
        return score if check.all_hold else min(score, self.cap)

    async def ascore_last(self, question: str, paths: Sequence[Sequence[str]]) -> list[float]:
        """Judge every path once, then correct each score with its last step's arithmetic."""
        if not paths:
            return []
        judged = await self.judge.ascore_last(question, paths)
        return [self.combine(j, p[-1]) if p else j for j, p in zip(judged, paths, strict=True)]
