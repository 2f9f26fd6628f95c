"""An LLM-as-judge PRM: P(Yes) that the newest step is correct, from next-token logprobs."""

from __future__ import annotations

import math
from collections.abc import Sequence

from langgraph_specsearch.backends.base import Backend
from langgraph_specsearch.prm.base import LastStepPRM
from langgraph_specsearch.prompts import ChatFormat

JUDGE_SYSTEM = "You check math solutions one step at a time."
JUDGE_QUESTION = "Is the new step correct? Answer Yes or No."
DEFAULT_TEMPLATE = "Question: {question}\n\nPrevious steps:\n{previous}\n\nNew step:\n{step}\n\n"


def _clip(text: str, max_chars: int) -> str:
    """Keep the last `max_chars` characters of a step (its conclusion matters most)."""
    text = text.strip()
    return text if len(text) <= max_chars else "..." + text[-max_chars:]


def yes_probability(logprobs: dict[str, float], yes: str = "Yes", no: str = "No") -> float:
    """P(yes) / (P(yes) + P(no)) from two log-probabilities (0.5 when neither is finite)."""
    lp_yes = logprobs.get(yes, -math.inf)
    lp_no = logprobs.get(no, -math.inf)
    if math.isinf(lp_yes) and math.isinf(lp_no):
        return 0.5
    if lp_yes >= lp_no:
        return 1.0 / (1.0 + math.exp(lp_no - lp_yes))
    odds = math.exp(lp_yes - lp_no)
    return odds / (1.0 + odds)


class JudgePRM(LastStepPRM):
    """Asks a backend whether the last step of a path is correct; score = P(Yes | Yes or No).

    The prompt holds the question, up to `max_previous` earlier steps and the new step, then
    asks "Is the new step correct? Answer Yes or No.". With a `ChatFormat` backend it is a
    system + user message rendered by the format's `apply_template` (which appends the
    generation prompt); otherwise plain text ending in "Answer:". Every path is judged in a
    single `anext_token_logprobs` call.
    """

    def __init__(
        self,
        backend: Backend,
        *,
        template: str | None = None,
        name: str | None = None,
        max_previous: int = 4,
        max_step_chars: int = 600,
        candidates: tuple[str, str] = ("Yes", "No"),
    ) -> None:
        """Create a judge over `backend`.

        Args:
            backend: any backend implementing `anext_token_logprobs`.
            template: format string with `{question}`, `{previous}` and `{step}` fields; the
                yes/no question is appended after it.
            name: PRM name; defaults to `judge:<backend name>`.
            max_previous: how many steps before the judged one are shown as context.
            max_step_chars: each shown step keeps at most this many trailing characters.
            candidates: the (yes, no) tokens whose logprobs are compared.
        """
        self.backend = backend
        self.template = template or DEFAULT_TEMPLATE
        self.name = name or f"judge:{getattr(backend, 'name', 'backend')}"
        self.max_previous = max_previous
        self.max_step_chars = max_step_chars
        self.candidates = candidates

    def user_message(self, question: str, steps: Sequence[str]) -> str:
        """The judge question about the last of `steps`, given the ones before it."""
        previous = list(steps[:-1])[-self.max_previous :] if self.max_previous > 0 else []
        shown = "\n".join(f"- {_clip(s, self.max_step_chars)}" for s in previous) or "(none)"
        step = _clip(steps[-1], self.max_step_chars) if steps else "(empty)"
        body = self.template.format(question=question.strip(), previous=shown, step=step)
        return body + JUDGE_QUESTION

    def render(self, question: str, steps: Sequence[str]) -> str:
        """Full prompt for the backend: chat template when available, else plain text."""
        user = self.user_message(question, steps)
        fmt = getattr(self.backend, "prompt_format", None)
        if isinstance(fmt, ChatFormat):
            return fmt.apply_template(
                [{"role": "system", "content": JUDGE_SYSTEM}, {"role": "user", "content": user}]
            )
        return f"{JUDGE_SYSTEM}\n\n{user}\nAnswer:"

    async def ascore_last(self, question: str, paths: Sequence[Sequence[str]]) -> list[float]:
        """P(Yes) for the last step of every path, in one batched logprob call."""
        if not paths:
            return []
        prompts = [self.render(question, path) for path in paths]
        logprobs = await self.backend.anext_token_logprobs(prompts, list(self.candidates))
        if len(logprobs) != len(prompts):
            raise ValueError(f"backend returned {len(logprobs)} results for {len(prompts)} prompts")
        yes, no = self.candidates
        return [yes_probability(lp, yes, no) for lp in logprobs]
