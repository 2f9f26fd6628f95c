"""Templates with injected answer rules (`is_terminal`, `extract_answer`): non-math answers."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from scripted import ScriptedBackend, ScriptedPRM

from langgraph_specsearch import create_beam_search, create_best_of_n, create_mcts
from langgraph_specsearch.graphs.expanders import create_ar_expander


def colour_model() -> ScriptedBackend:
    """Two thinking steps, then `FINAL: blue` (no number anywhere)."""

    def script(prompt: str, call: int, i: int) -> str:
        depth = prompt.split("Answer: ", 1)[1].count("\n\n")
        return "FINAL: blue" if depth >= 2 else f"the sky looks {['clear', 'bright'][i % 2]}"

    return ScriptedBackend("large", script)


def is_final(text: str) -> bool:
    return text.startswith("FINAL:")


def final_answer(text: str) -> str | None:
    return text.removeprefix("FINAL:").strip() if is_final(text) else None


TEMPLATES: dict[str, Any] = {
    "beam": lambda e, **kw: create_beam_search(e, beam_width=2, n=2, max_steps=5, **kw),
    "mcts": lambda e, **kw: create_mcts(e, iterations=8, children_per_expansion=2, **kw),
    "best-of-n": lambda e, **kw: create_best_of_n(e, n=2, max_steps=5, **kw),
}


@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_injected_rules_find_a_non_math_answer(name: str) -> None:
    expander = create_ar_expander(large=colour_model(), prm=ScriptedPRM(lambda text: 0.5))
    graph = TEMPLATES[name](expander, is_terminal=is_final, extract_answer=final_answer)
    out = asyncio.run(graph.compile().ainvoke({"question": "What colour is the sky?"}))
    assert out["answer"] == "blue"
    assert out["path"][-1]["text"] == "FINAL: blue" and out["path"][-1]["terminal"]
    assert len(out["path"]) == 3


@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_the_default_math_rules_do_not_read_it(name: str) -> None:
    expander = create_ar_expander(large=colour_model(), prm=ScriptedPRM(lambda text: 0.5))
    out = asyncio.run(
        TEMPLATES[name](expander).compile().ainvoke({"question": "What colour is the sky?"})
    )
    assert out["answer"] is None
    assert not any(step["terminal"] for step in out["path"])
