"""Scripted backends and PRMs for unit tests: they pin the algorithm's behaviour exactly."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import StateGraph

from langgraph_specsearch.prm.base import LastStepPRM
from langgraph_specsearch.prompts import FewShotFormat, PromptFormat
from langgraph_specsearch.types import Generation, GenerationParams


class ScriptedBackend:
    """Returns `script(prompt, call_index, sample_index)` for every requested sample."""

    def __init__(self, name: str, script: Callable[[str, int, int], str]) -> None:
        self.name = name
        self.prompt_format: PromptFormat = FewShotFormat(exemplars=())
        self.script = script
        self.calls: list[tuple[list[str], int]] = []

    async def agenerate(
        self, prompts: Sequence[str], *, n: int, params: GenerationParams
    ) -> list[list[Generation]]:
        call = len(self.calls)
        self.calls.append((list(prompts), n))
        out = []
        for p in prompts:
            texts = [self.script(p, call, i) for i in range(n)]
            out.append(
                [
                    Generation(
                        text=t,
                        tokens=len(t.split()),
                        finish_reason="stop_sequence",
                    )
                    for t in texts
                ]
            )
        return out

    async def anext_token_logprobs(
        self, prompts: Sequence[str], candidates: Sequence[str]
    ) -> list[dict[str, float]]:
        return [{c: -0.7 for c in candidates} for _ in prompts]

    @property
    def generated(self) -> int:
        """Samples generated so far."""
        return sum(len(p) * n for p, n in self.calls)


class ScriptedPRM(LastStepPRM):
    """Scores a step by looking its text up (default for unknown texts)."""

    name = "scripted"

    def __init__(self, scores: Callable[[str], float]) -> None:
        self.scores = scores
        self.calls: list[int] = []

    async def ascore_last(self, question: str, paths: Sequence[Sequence[str]]) -> list[float]:
        self.calls.append(len(paths))
        return [self.scores(path[-1]) for path in paths]


def by_text(text: str) -> float:
    """The score of a scripted step is its last word."""
    return float(text.split()[-1])


def last_label(prompt: str) -> str:
    """Label (first word) of the last step in a few-shot prompt; "" at the root."""
    steps = prompt.split("Answer: ", 1)[1].split("\n\n")[:-1]
    return steps[-1].split()[0] if steps else ""


def landscape_backend(table: dict[str, list[str]]) -> ScriptedBackend:
    """A backend whose i-th thought after a step labelled L is `table[L][i]`."""
    return ScriptedBackend("large", lambda prompt, call, i: table[last_label(prompt)][i])


def run_full(graph: StateGraph, question: str = "q") -> tuple[dict, dict]:
    """Run with a checkpointer; return the output and the whole final state."""
    compiled = graph.compile(checkpointer=InMemorySaver())
    config: RunnableConfig = {"configurable": {"thread_id": "t"}}
    out = asyncio.run(compiled.ainvoke({"question": question}, config))
    return out, compiled.get_state(config).values
