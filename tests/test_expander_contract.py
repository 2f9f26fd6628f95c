"""A third-party expander built only from the public contract plugs into every template."""

from __future__ import annotations

import asyncio
from typing import Any

from langgraph.graph import END, START, StateGraph
from scripted import ScriptedBackend, ScriptedPRM, by_text, run_full

from langgraph_specsearch import create_beam_search, create_best_of_n, create_mcts
from langgraph_specsearch.expander_contract import (
    ChildNode,
    ExpanderInput,
    ExpanderOutput,
    make_child,
    next_threshold,
    steps_to,
)
from langgraph_specsearch.graphs.expanders import create_ar_expander


def counting_expander() -> StateGraph:
    """Writes "k+1" after "k" (score 0.1 * depth) and states the answer at depth 3."""

    def expand(state: ExpanderInput) -> dict[str, Any]:
        children: list[ChildNode] = []
        for parent in state["expand"]:
            depth = len(steps_to(state["nodes"], parent))
            for i in range(state["n"]):
                text = "The answer is 3." if depth == 2 else f"count {depth + 1} variant {i}"
                children.append(
                    make_child(state["nodes"], parent, text, index=i, score=0.1 * (depth + i))
                )
        return {"children": children, "threshold": next_threshold(state["threshold"])}

    builder = StateGraph(ExpanderInput, input_schema=ExpanderInput, output_schema=ExpanderOutput)
    builder.add_node("expand", expand)
    builder.add_edge(START, "expand")
    builder.add_edge("expand", END)
    return builder


def test_a_third_party_expander_runs_in_every_template() -> None:
    for template in (
        create_beam_search(counting_expander(), beam_width=2, n=2),
        create_mcts(counting_expander(), iterations=6, children_per_expansion=2),
        create_best_of_n(counting_expander(), n=2),
    ):
        out = asyncio.run(template.compile().ainvoke({"question": "count to 3"}))
        assert out["answer"] == "3"
        assert [s["text"].split()[1] for s in out["path"][:2]] == ["1", "2"]
        assert out["stats"]["expansions"] >= 2


def test_make_child_matches_the_built_in_expanders_children() -> None:
    backend = ScriptedBackend("large", lambda p, c, i: f"step {c} 0.5")
    out, state = run_full(
        create_beam_search(create_ar_expander(large=backend, prm=ScriptedPRM(by_text)))
    )
    built_in = next(n for n in state["nodes"].values() if n["parent_id"] == "0")
    mine = make_child({"0": state["nodes"]["0"]}, "0", built_in["text"], index=0, score=0.5)
    assert set(mine) == set(built_in)
    assert mine["id"] == "0.0" and mine["step"] == built_in["step"] == 1
    existing = {k: v for k, v in state["nodes"].items() if k == "0" or v["parent_id"] == "0"}
    assert make_child(existing, "0", "x", index=1)["id"] == f"0.{len(existing)}"
