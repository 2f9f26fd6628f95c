"""Best-of-N over reasoning steps, as a template that accepts any expander.

N independent paths are grown step by step through the expander, then a vote over their
final answers picks the answer. Because every round goes through the expander, SpecSearch's
draft -> evaluate -> reject -> regenerate (and its shared threshold beta) runs at every step
of every path.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal, get_args

from langchain_core.runnables import RunnableConfig
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph

from langgraph_specsearch.answers import extract_answer
from langgraph_specsearch.events import answer_event, emit, step_chosen_event
from langgraph_specsearch.graphs.arguments import check_choice, check_template_arguments
from langgraph_specsearch.graphs.finalize import (
    ExtractAnswer,
    IsTerminal,
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
from langgraph_specsearch.state import SearchInput, SearchOutput, path_to

Vote = Literal["weighted", "majority", "best"]
Nodes = Mapping[str, Mapping[str, Any]]


class BestOfNState(FrontierState):
    """State of a best-of-N search (plain data only)."""

    votes: dict[str, dict[str, Any]]


def normalize_answer(answer: str) -> str:
    """Canonical form for voting: numbers as `3`, `0.5`; other text stripped and lower-cased."""
    text = answer.strip().rstrip(".").replace(",", "").lstrip("$").strip()
    try:
        number = float(text)
    except ValueError:
        return text.lower()
    if number.is_integer():
        return str(int(number))
    return repr(number)


def path_answer(nodes: Nodes, node_id: str, extract: ExtractAnswer = extract_answer) -> str | None:
    """The last final answer stated along the path ending at `node_id` (read by `extract`)."""
    for step in reversed(path_to(nodes, node_id)):
        answer = extract(step["text"])
        if answer is not None:
            return answer
    return None


def tally(
    nodes: Nodes, leaves: Sequence[str], how: Aggregation, extract: ExtractAnswer = extract_answer
) -> dict[str, dict[str, Any]]:
    """Votes per normalised answer: `count`, `weight` (sum of path scores), `best`, `paths`."""
    votes: dict[str, dict[str, Any]] = {}
    for leaf in leaves:
        answer = path_answer(nodes, leaf, extract)
        if answer is None:
            continue
        score = score_path(nodes, leaf, how)
        slot = votes.setdefault(
            normalize_answer(answer), {"count": 0, "weight": 0.0, "best": score, "paths": []}
        )
        slot["count"] += 1
        slot["weight"] += score
        slot["best"] = max(slot["best"], score)
        slot["paths"].append(leaf)
    return votes


def winner(votes: Mapping[str, Mapping[str, Any]], vote: Vote) -> str | None:
    """The voted answer key (ties: the other criteria, then the first answer seen)."""
    if not votes:
        return None
    keys = {
        "majority": lambda a: (votes[a]["count"], votes[a]["weight"]),
        "weighted": lambda a: (votes[a]["weight"], votes[a]["count"]),
        "best": lambda a: (votes[a]["best"], votes[a]["count"]),
    }
    return max(votes, key=keys[vote])


def create_best_of_n(
    expander: StateGraph | CompiledStateGraph,
    /,
    *,
    n: int = 4,
    max_steps: int = 6,
    aggregate: Aggregation = "last",
    vote: Vote = "weighted",
    complete: bool = True,
    is_terminal: IsTerminal | None = None,
    extract_answer: ExtractAnswer = extract_answer,
    state_schema: type[BestOfNState] | None = None,
) -> StateGraph:
    """Create a step-level best-of-N search with answer voting that knows nothing of models.

    The first round hands the root to `expander` for `n` children, one per path; every later
    round hands it all open paths with `n=1`, so each path grows by one step per round. A path
    is complete when its last step states a final answer (or ends the text); growing stops
    when every path is complete or `max_steps` rounds have run.

    The final answer of each path (`answers.extract_answer` on its last answer-bearing step,
    normalised so that `3`, `3.0` and `3,` agree) is then voted on:

    - `majority`: the most common answer (ties: larger weight).
    - `weighted`: the answer with the largest sum of aggregated path scores (ties: count).
    - `best`: the answer of the highest-scoring path.

    The round at the depth limit is expanded `final` (thoughts run to the end of the
    solution); when still no path states an answer, the best path by score gets one more
    `final` step, the completion step. Paths that state no answer do not vote. The output
    `answer` is the voted answer in its normalised form and `path` is the best-scoring path
    that states it; with no answer anywhere, the best path by score is returned with
    `answer=None`. The tallies are kept in the `votes` state key (`{normalised answer:
    {"count", "weight", "best", "paths"}}`), outside the output schema: read them with a
    checkpointer (`graph.get_state(config).values["votes"]`) or by streaming `values`.

    Swap the expander to change the method and nothing else: `create_ar_expander` (AR),
    `create_sps_expander` (SpS), `create_speculative_expander` (SpecSearch).

    Args:
        expander: An expander subgraph (compiled or not) with `ExpanderInput` /
            `ExpanderOutput` schemas.
        n: Number of independent paths.
        max_steps: Maximum rounds, i.e. reasoning steps per path.
        aggregate: How per-step PRM scores become a path score (`last`, `min`, `prod`, `mean`).
        vote: `weighted`, `majority` or `best`.
        complete: When no path states an answer, add a completion step to the best one.
        is_terminal: Whether a step completes its path (default: the expander's marking,
            math answers via `answers.is_terminal`); an end of text always does.
        extract_answer: Reads a step's final answer, None when it states none (default:
            `answers.extract_answer`, math answers).
        state_schema: The graph's state (default `BestOfNState`): a TypedDict subclass of
            `BestOfNState` whose extra keys (with their own reducers) nodes you add may write;
            anything else raises TypeError.

    Returns:
        An uncompiled StateGraph; input `{"question"}`, output `{"answer", "path", "stats",
        "threshold_trace"}`. Compile it (optionally with a checkpointer) and invoke it, or add
        it as a node in a parent graph. Name it when compiling, as any LangGraph graph:
        `compile(name="search")`.
    """
    check_template_arguments(
        expander,
        {"n": n, "max_steps": max_steps},
        aggregate=aggregate,
        complete=complete,
        is_terminal=is_terminal,
        extract_answer=extract_answer,
    )
    check_choice("vote", vote, get_args(Vote))
    schema = check_state_schema(state_schema, BestOfNState)
    compiled = compile_expander(expander)

    def init(state: BestOfNState) -> dict[str, Any]:
        return {**start_frontier(state["question"], n), "final": max_steps <= 1}

    def collect(state: BestOfNState, config: RunnableConfig) -> dict[str, Any]:
        new, completed, frontier = take_children(state, is_terminal)
        table = {**state["nodes"], **new}
        emit(step_chosen_event("best-of-n", table, frontier), config)
        return {
            "nodes": new,
            "completed": completed,
            "frontier": frontier,
            "expand": frontier,
            "n": 1,
            "need": 1,
            "final": is_final(table, frontier, max_steps),
        }

    def target(state: BestOfNState) -> str | None:
        leaves = state["completed"] + state["frontier"]
        if not complete or tally(state["nodes"], leaves, aggregate, extract_answer):
            return None  # some path states an answer: the vote has one
        return completion_target(state["nodes"], leaves, aggregate, extract_answer)

    def start_complete(state: BestOfNState) -> dict[str, Any]:
        leaf = target(state)
        assert leaf is not None  # routed here only when there is one
        return start_completion(leaf)

    def finalize(state: BestOfNState, config: RunnableConfig) -> dict[str, Any]:
        nodes = state["nodes"]
        leaves = state["completed"] + state["frontier"]
        votes = tally(nodes, leaves, aggregate, extract_answer)
        chosen = winner(votes, vote)
        depth = max_steps
        if chosen is None:
            out = final_output(state, leaves, aggregate, final_depth=depth, extract=extract_answer)
        else:
            paths = votes[chosen]["paths"]
            out = final_output(state, paths, aggregate, final_depth=depth, extract=extract_answer)
            out = {**out, "answer": chosen}
        emit(answer_event("best-of-n", out), config)
        return {**out, "votes": votes}

    builder = StateGraph(schema, input_schema=SearchInput, output_schema=SearchOutput)
    builder.add_node("init", init)
    builder.add_node("expand", compiled)
    builder.add_node("collect", collect)
    builder.add_node("vote", finalize)
    builder.add_edge(START, "init")
    builder.add_edge("init", "expand")
    builder.add_edge("expand", "collect")
    ends = ["expand", "vote"]
    if complete:
        builder.add_node("complete", start_complete)
        builder.add_edge("complete", "expand")
        ends.append("complete")
    builder.add_conditional_edges("collect", frontier_route(max_steps, "vote", target), ends)
    builder.add_edge("vote", END)
    return builder
