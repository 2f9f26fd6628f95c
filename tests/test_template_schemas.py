"""Templates users compose: their own state schema, a name at compile time, keyword-only models."""

from __future__ import annotations

import asyncio
import operator
from collections.abc import Callable
from typing import Annotated, Any, TypedDict

import pytest
from langgraph.graph import END, START, StateGraph
from pydantic import BaseModel
from scripted import ScriptedBackend, ScriptedPRM, by_text, run_full

from langgraph_specsearch import (
    create_ar_expander,
    create_beam_search,
    create_best_of_n,
    create_mcts,
    create_speculative_expander,
    create_sps_expander,
    make_rollout,
)
from langgraph_specsearch.graphs.beam import BeamState
from langgraph_specsearch.graphs.best_of_n import BestOfNState
from langgraph_specsearch.graphs.mcts import MCTSState
from langgraph_specsearch.state import NodeTable, SearchState


def counting_model() -> ScriptedBackend:
    """Step k of a path is "count k 0.5"; the third step states the answer 3."""

    def script(prompt: str, call: int, i: int) -> str:
        depth = prompt.split("Answer: ", 1)[1].count("\n\n")
        return "The answer is 3. 0.9" if depth >= 2 else f"count {depth + 1} 0.5"

    return ScriptedBackend("large", script)


def expander() -> StateGraph:
    return create_ar_expander(large=counting_model(), prm=ScriptedPRM(by_text))


class AuditedBeam(BeamState):
    audit: Annotated[list[int], operator.add]


class AuditedMCTS(MCTSState):
    audit: Annotated[list[int], operator.add]


class AuditedBestOfN(BestOfNState):
    audit: Annotated[list[int], operator.add]


TEMPLATES: dict[str, tuple[Callable[..., StateGraph], type, dict[str, Any]]] = {
    "beam": (create_beam_search, AuditedBeam, {"beam_width": 2, "n": 2}),
    "mcts": (create_mcts, AuditedMCTS, {"iterations": 6, "children_per_expansion": 2}),
    "best-of-n": (create_best_of_n, AuditedBestOfN, {"n": 2}),
}


def audit(state: SearchState) -> dict[str, Any]:
    """A user's node: records how many children each expansion made, in the user's own key."""
    return {"audit": [len(state["children"])]}


@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_a_subclassed_state_with_its_own_reducer_runs(name: str) -> None:
    factory, schema, kwargs = TEMPLATES[name]
    plain, _ = run_full(factory(expander(), **kwargs), "count to 3")
    builder = factory(expander(), state_schema=schema, **kwargs)
    builder.add_node("audit", audit)
    builder.add_edge("expand", "audit")  # runs beside the template's own next node
    out, state = run_full(builder, "count to 3")
    assert out["answer"] == plain["answer"] == "3"
    # one audit entry per expansion, each the children that expansion made (reducer: add)
    assert len(state["audit"]) == out["stats"]["expansions"] >= 2
    assert sum(state["audit"]) == len(state["nodes"]) - 1


class Unrelated(TypedDict):
    question: str


class RedefinesNodes(BeamState):
    nodes: NodeTable  # type: ignore[misc]  # no merge reducer: the template would break


class NotATypedDict(BaseModel):
    question: str


@pytest.mark.parametrize("name", sorted(TEMPLATES))
@pytest.mark.parametrize(
    ("schema", "message"),
    [
        (Unrelated, "is not a subclass of .*State: it lacks nodes"),
        (SearchState, "is not a subclass of .*State: it lacks"),
        (NotATypedDict, "must be a TypedDict subclass of"),
        (dict, "must be a TypedDict subclass of"),
    ],
)
def test_a_schema_that_does_not_extend_the_templates_state_is_refused(
    name: str, schema: type, message: str
) -> None:
    factory, _, _ = TEMPLATES[name]
    with pytest.raises(TypeError, match=message) as error:
        factory(expander(), state_schema=schema)
    assert "\n" not in str(error.value)


def test_redefining_a_templates_key_is_refused() -> None:
    with pytest.raises(TypeError, match="redefines nodes of BeamState"):
        create_beam_search(expander(), state_schema=RedefinesNodes)


def test_state_schema_is_keyword_only() -> None:
    with pytest.raises(TypeError):
        create_beam_search(expander(), 2, 4, state_schema=BeamState)  # type: ignore[misc]


class Parent(TypedDict, total=False):
    question: str
    answer: str | None
    reply: str


@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_a_template_named_at_compile_is_a_node_of_a_parent_graph(name: str) -> None:
    factory, _, kwargs = TEMPLATES[name]
    search = factory(expander(), **kwargs).compile(name="math_search")
    assert search.name == "math_search"
    parent = StateGraph(Parent)
    parent.add_node(search)  # the node takes the compiled graph's name
    parent.add_node("reply", lambda s: {"reply": f"It is {s['answer']}."})
    parent.add_edge(START, "math_search")
    parent.add_edge("math_search", "reply")
    parent.add_edge("reply", END)
    app = parent.compile()
    assert "math_search" in app.get_graph().nodes

    async def run() -> tuple[dict[str, Any], set[str]]:
        namespaces: set[str] = set()
        final: dict[str, Any] = {}
        async for ns, mode, chunk in app.astream(
            {"question": "count to 3"}, stream_mode=["updates", "values"], subgraphs=True
        ):
            if ns:
                namespaces.add(ns[0].split(":")[0])
            if mode == "values" and not ns and isinstance(chunk, dict):
                final = chunk
        return final, namespaces

    final, namespaces = asyncio.run(run())
    assert final["reply"] == "It is 3."
    assert namespaces == {"math_search"}  # the search's own steps stream under its name


def test_model_arguments_are_keyword_only() -> None:
    small, large, prm = counting_model(), counting_model(), ScriptedPRM(by_text)
    with pytest.raises(TypeError):
        create_speculative_expander(small, large, prm)  # type: ignore[misc]
    with pytest.raises(TypeError):
        create_ar_expander(large, prm)  # type: ignore[misc]
    with pytest.raises(TypeError):
        create_sps_expander(large, prm)  # type: ignore[misc]
    assert isinstance(create_speculative_expander(small=small, large=large, prm=prm), StateGraph)


def test_make_rollout_is_exported_and_plugs_into_mcts() -> None:
    model, prm = counting_model(), ScriptedPRM(by_text)
    rollout = make_rollout(model, prm, max_steps=3)
    out, state = run_full(
        create_mcts(expander(), iterations=2, value="rollout", rollout=rollout), "count to 3"
    )
    assert out["answer"] == "3"
    assert state["usage"]["rollout"]["calls"] >= 2
