"""MCTS rollouts: value a new node by continuing its path to an answer and scoring the end.

`create_mcts(value="rollout", rollout=...)` takes any async `rollout(question, steps) ->
float`; `make_rollout` builds the usual one from a backend (the small model, greedily) and a
PRM. Rollout steps are not added to the search tree.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from langgraph_specsearch.answers import is_terminal as default_is_terminal
from langgraph_specsearch.backends.base import Backend
from langgraph_specsearch.graphs.finalize import IsTerminal
from langgraph_specsearch.prm.base import PRM
from langgraph_specsearch.types import GenerationParams

Rollout = Callable[[str, list[str]], Awaitable[float]]
"""What `create_mcts` calls for a child's value: `await rollout(question, steps)`."""
AsyncRollout = Callable[[str, list[str]], Coroutine[Any, Any, float]]
"""What `make_rollout` returns (a coroutine function, so also a `Rollout`)."""


def make_rollout(
    small: Backend,
    prm: PRM,
    /,
    *,
    max_steps: int = 4,
    params: GenerationParams | None = None,
    is_terminal: IsTerminal = default_is_terminal,
) -> AsyncRollout:
    """Build a rollout: the small model continues greedily to an answer; returns the PRM score.

    The rollout writes at most `max_steps` more steps, one per call, stopping early once a
    step states a final answer or ends the text; the value is the PRM score of the last step
    (of the given steps when they already end in an answer). Rollout steps are not added to
    the tree.

    Args:
        small: Backend that continues the path.
        prm: Process reward model scoring the rollout's last step.
        max_steps: Most steps the rollout may add.
        params: Sampling parameters (default: greedy, temperature 0).
        is_terminal: Whether a step ends the solution (default: it states a math answer).

    Returns:
        An async callable `rollout(question, steps) -> float` for `create_mcts(value="rollout")`.
    """
    params = params or GenerationParams(temperature=0.0)
    call_params = params.model_copy(update={"stop": small.prompt_format.stop_sequences()})

    async def rollout(question: str, steps: list[str]) -> float:
        path = list(steps)
        for _ in range(max_steps):
            if path and is_terminal(path[-1]):
                break
            prompt = small.prompt_format.render(question, path)
            outputs = await small.agenerate([prompt], n=1, params=call_params)
            generation = outputs[0][0]
            path.append(generation.text)
            if generation.finish_reason == "eos_token":
                break
        if not path:
            return 0.0
        (score,) = await prm.ascore_last(question, [path])
        return float(score)

    return rollout
