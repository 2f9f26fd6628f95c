"""Beam search over reasoning steps, as a template that accepts any expander."""

from __future__ import annotations

from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph

from langgraph_specsearch.answers import extract_answer as default_extract_answer
from langgraph_specsearch.events import answer_event, emit, step_chosen_event
from langgraph_specsearch.graphs.arguments import check_template_arguments
from langgraph_specsearch.graphs.finalize import (
    ExtractAnswer,
    IsTerminal,
    completing,
    completion_target,
    final_output,
    score_path,
    start_completion,
)
from langgraph_specsearch.graphs.frontier import (
    FrontierState,
    compile_expander,
    frontier_route,
    is_final,
    start_frontier,
    take_children,
)
from langgraph_specsearch.graphs.state_schema import check_state_schema
from langgraph_specsearch.prm.base import Aggregation
from langgraph_specsearch.state import SearchInput, SearchOutput


class BeamState(FrontierState):
    """State of a beam search (plain data only)."""


def create_beam_search(
    expander: StateGraph | CompiledStateGraph,
    /,
    *,
    beam_width: int = 2,
    n: int = 4,
    max_steps: int = 6,
    aggregate: Aggregation = "last",
    complete: bool = True,
    is_terminal: IsTerminal | None = None,
    extract_answer: ExtractAnswer = default_extract_answer,
    state_schema: type[BeamState] | None = None,
) -> StateGraph:
    """Create a step-level beam search that knows nothing of models.

    Each round hands the frontier to `expander`, which returns `n` scored children per
    frontier node. Children that state a final answer (or end the text) are *completed*;
    the best `beam_width - completed` of the others by aggregated path score form the next
    frontier. The search stops when the frontier is empty, `beam_width` paths are completed,
    or `max_steps` rounds have run; the answer is read off the best completed path (the best
    open path when none completed).

    Every search ends with an answer where one can be had: the round at the depth limit is
    expanded `final` (its thoughts run to the end of the solution, not to the step delimiter),
    and if the chosen path still states no answer, its leaf gets one more `final` child, the
    completion step (`complete=False` turns that step off). `stats.answer_from` says which.

    A node can put at most `beam_width` children into the next beam, so the expander is told
    `need = min(n, beam_width)`: SpecSearch's large model only makes up a shortfall below it
    (with `regenerate="missing"`), while AR still writes `n` thoughts per node.

    Swap the expander to change the method and nothing else: `create_ar_expander` (AR),
    `create_sps_expander` (SpS), `create_speculative_expander` (SpecSearch).

    Args:
        expander: An expander subgraph (compiled or not) with `ExpanderInput` /
            `ExpanderOutput` schemas.
        beam_width: Paths kept per round.
        n: Children per frontier node per round (drafts per beam).
        max_steps: Maximum rounds, i.e. reasoning steps.
        aggregate: How per-step PRM scores become a path score (`last`, `min`, `prod`, `mean`).
        complete: Add a completion step when the chosen path states no answer.
        is_terminal: Whether a step completes its path (default: the expander's marking,
            math answers via `answers.is_terminal`); an end of text always does.
        extract_answer: Reads a step's final answer, None when it states none (default:
            `answers.extract_answer`, math answers).
        state_schema: The graph's state (default `BeamState`): a TypedDict subclass of
            `BeamState` whose extra keys (with their own reducers) nodes you add may write;
            anything else raises TypeError.

    Returns:
        An uncompiled StateGraph; input `{"question"}`, output `{"answer", "path", "stats",
        "threshold_trace"}`. Compile it (optionally with a checkpointer) and invoke it, or add
        it as a node in a parent graph. Name it when compiling, as any LangGraph graph:
        `compile(name="search")`.
    """
    check_template_arguments(
        expander,
        {"beam_width": beam_width, "n": n, "max_steps": max_steps},
        aggregate=aggregate,
        complete=complete,
        is_terminal=is_terminal,
        extract_answer=extract_answer,
    )
    schema = check_state_schema(state_schema, BeamState)
    compiled = compile_expander(expander)

    def init(state: BeamState) -> dict[str, Any]:
        # a node contributes at most `beam_width` children to the next beam
        return {**start_frontier(state["question"], n, need=beam_width), "final": max_steps <= 1}

    def select(state: BeamState, config: RunnableConfig) -> dict[str, Any]:
        new, completed, open_ids = take_children(state, is_terminal)
        if completing(state):  # the completion step's child: nothing more to select
            return {"nodes": new}
        table = {**state["nodes"], **new}
        ranked = sorted(open_ids, key=lambda i: score_path(table, i, aggregate), reverse=True)
        frontier = ranked[: max(beam_width - len(completed), 0)]
        emit(step_chosen_event("beam", table, frontier), config)
        return {
            "nodes": new,
            "completed": completed,
            "frontier": frontier,
            "expand": frontier,
            "final": is_final(table, frontier, max_steps),
        }

    def target(state: BeamState) -> str | None:
        candidates = state["completed"] or state["frontier"]
        if not complete:
            return None
        return completion_target(state["nodes"], candidates, aggregate, extract_answer)

    def start_complete(state: BeamState) -> dict[str, Any]:
        leaf = target(state)
        assert leaf is not None  # routed here only when there is one
        return start_completion(leaf)

    def finalize(state: BeamState, config: RunnableConfig) -> dict[str, Any]:
        candidates = state["completed"] or state["frontier"]
        out = final_output(
            state, candidates, aggregate, final_depth=max_steps, extract=extract_answer
        )
        emit(answer_event("beam", out), config)
        return out

    builder = StateGraph(schema, input_schema=SearchInput, output_schema=SearchOutput)
    builder.add_node("init", init)
    builder.add_node("expand", compiled)
    builder.add_node("select", select)
    builder.add_node("finalize", finalize)
    builder.add_edge(START, "init")
    builder.add_edge("init", "expand")
    builder.add_edge("expand", "select")
    ends = ["expand", "finalize"]
    if complete:
        builder.add_node("complete", start_complete)
        builder.add_edge("complete", "expand")
        ends.append("complete")
    builder.add_conditional_edges("select", frontier_route(max_steps, "finalize", target), ends)
    builder.add_edge("finalize", END)
    return builder
