"""Monte Carlo tree search over reasoning steps, as a template that accepts any expander.

One iteration is select -> expand -> evaluate -> backpropagate:

- **select** walks from the root to a leaf (a node without kept children, or a terminal
  node) by UCT or PUCT (`uct_score`, `puct_score`, `select_child`).
- **expand** hands that leaf to the expander subgraph (`expand=[leaf]`,
  `n=children_per_expansion`), so with `create_speculative_expander` SpecSearch's
  draft -> evaluate -> reject -> regenerate runs at every expansion.
- **evaluate** values each new kept child: its aggregated path score (with the default
  `aggregate="last"`, its PRM score), or the float returned by an async `rollout(question,
  steps)` (see `make_rollout` in `graphs/rollout.py`).
- **backpropagate** (`backpropagate`) counts each child's evaluation as one simulation: the
  child gets `visits=1, value=v`, and the leaf and all its ancestors get `visits += 1` and
  `value += v` per child. Hence a node's visits are its own evaluation plus its children's
  visits, and `Q = value / visits` is the mean evaluation of its subtree. A terminal leaf
  (or a leaf at `max_depth`) is never expanded: selecting it backpropagates its own `Q` once
  more. Visits and values live in the node table's `visits` / `value` fields and are written
  through the `merge_nodes` reducer, so they survive checkpoints.

**The shared threshold beta under MCTS.** The state holds one scalar EMA (`threshold`),
exactly as under beam search. Every expansion reads it, whatever the depth of the selected
leaf, and the expander's merge node updates it after every expansion that had large-model
thoughts (the first `warmup_steps` expansions are made by the large model alone). Under MCTS
consecutive updates may come from different depths and branches; the trace point of each
update records the depth (`step`, the depth of the new children) at which it was made, so
`threshold_trace` shows how beta moved as the search jumped around the tree.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Mapping
from typing import Any, Literal, get_args

from langchain_core.runnables import RunnableConfig
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.types import RetryPolicy

from langgraph_specsearch.answers import extract_answer as default_extract_answer
from langgraph_specsearch.events import answer_event, emit, step_chosen_event
from langgraph_specsearch.graphs.arguments import (
    check_callable,
    check_choice,
    check_instance,
    check_number,
    check_template_arguments,
)
from langgraph_specsearch.graphs.finalize import (
    ExtractAnswer,
    IsTerminal,
    completing,
    completion_target,
    final_output,
    score_path,
    start_completion,
)
from langgraph_specsearch.graphs.frontier import compile_expander, retag
from langgraph_specsearch.graphs.rollout import Rollout
from langgraph_specsearch.graphs.state_schema import check_state_schema
from langgraph_specsearch.nodes.common import Clock, as_node
from langgraph_specsearch.prm.base import Aggregation
from langgraph_specsearch.retries import DEFAULT_RETRY_POLICY, graph_retried
from langgraph_specsearch.state import (
    ROOT_ID,
    NodeTable,
    SearchInput,
    SearchOutput,
    SearchState,
    children_of,
    start_search,
    steps_to,
)

Rule = Literal["uct", "puct"]
ValueSource = Literal["prm", "rollout"]
FinalRule = Literal["most_visited", "best_value"]
Nodes = Mapping[str, Mapping[str, Any]]


class MCTSState(SearchState):
    """State of an MCTS search (plain data only)."""

    leaf: str
    iteration: int
    values: dict[str, float]


def mean_value(node: Mapping[str, Any]) -> float:
    """Q = value / visits (0 for an unvisited node)."""
    return float(node["value"]) / node["visits"] if node["visits"] else 0.0


def uct_score(child: Mapping[str, Any], parent_visits: int, exploration: float) -> float:
    """UCT: `Q + c * sqrt(ln N_parent / N_child)`; infinite for an unvisited child."""
    if not child["visits"]:
        return math.inf
    bonus = math.sqrt(math.log(max(parent_visits, 1)) / child["visits"])
    return mean_value(child) + exploration * bonus


def puct_score(child: Mapping[str, Any], parent_visits: int, exploration: float) -> float:
    """PUCT with the PRM score as prior: `Q + c * P * sqrt(N_parent) / (1 + N_child)`."""
    prior = float(child["score"]) if child["score"] is not None else 0.0
    bonus = prior * math.sqrt(parent_visits) / (1 + child["visits"])
    return mean_value(child) + exploration * bonus


def select_child(
    nodes: Nodes, node_id: str, *, rule: Rule = "uct", exploration: float = 1.0
) -> str | None:
    """The kept child the rule picks (ties: creation order), or None at a leaf."""
    kids = children_of(nodes, node_id)
    if not kids:
        return None
    if rule == "uct":
        unvisited = [k for k in kids if not nodes[k]["visits"]]
        if unvisited:
            return unvisited[0]
    score = uct_score if rule == "uct" else puct_score
    parent_visits = int(nodes[node_id]["visits"])
    return max(kids, key=lambda k: score(nodes[k], parent_visits, exploration))


def select_leaf(nodes: Nodes, *, rule: Rule = "uct", exploration: float = 1.0) -> str:
    """Walk from the root by the rule until a leaf or a terminal node."""
    current = ROOT_ID
    while not nodes[current]["terminal"]:
        nxt = select_child(nodes, current, rule=rule, exploration=exploration)
        if nxt is None:
            break
        current = nxt
    return current


def backpropagate(nodes: Nodes, leaf_id: str, values: Mapping[str, float]) -> NodeTable:
    """Updated copies of the touched nodes after one iteration.

    With `values` (new children of `leaf_id` -> evaluation) each child gets one visit and
    every node from the leaf to the root gets one visit and the value per child; with none
    (an unexpandable leaf) the leaf's own Q is backpropagated once.
    """
    updates: NodeTable = {}
    for child_id, v in values.items():
        updates[child_id] = {**nodes[child_id], "visits": 1, "value": float(v)}
    if values:
        visits, total = len(values), float(sum(values.values()))
    else:
        visits, total = 1, mean_value(nodes[leaf_id])
    current: str | None = leaf_id
    while current is not None:
        node = nodes[current]
        updates[current] = {
            **node,
            "visits": node["visits"] + visits,
            "value": float(node["value"]) + total,
        }
        current = node["parent_id"]
    return updates


def is_solved(nodes: Nodes, node_id: str, max_depth: int) -> bool:
    """Terminal, at `max_depth`, or with kept children that are all solved."""
    node = nodes[node_id]
    if node["terminal"] or node["step"] >= max_depth:
        return True
    kids = children_of(nodes, node_id)
    return bool(kids) and all(is_solved(nodes, k, max_depth) for k in kids)


def most_visited_leaf(nodes: Nodes) -> str:
    """Walk from the root taking the most visited kept child (ties: higher Q, then first)."""
    current = ROOT_ID
    while kids := children_of(nodes, current):
        current = max(kids, key=lambda k: (nodes[k]["visits"], mean_value(nodes[k])))
    return current


def final_candidates(nodes: Nodes, final: FinalRule) -> list[str]:
    """Ids `final_output` chooses the answer path from, under the final-answer rule."""
    if final == "best_value":
        terminal = [i for i, n in nodes.items() if n["terminal"] and not n["rejected"]]
        if terminal:
            return terminal
        kept = [i for i, n in nodes.items() if i != ROOT_ID and not n["rejected"]]
        if kept:
            depth = max(nodes[i]["step"] for i in kept)
            deepest = [i for i in kept if nodes[i]["step"] == depth]
            return [max(deepest, key=lambda i: nodes[i]["visits"])]
        return []
    leaf = most_visited_leaf(nodes)
    return [leaf] if leaf != ROOT_ID else []


def create_mcts(
    expander: StateGraph | CompiledStateGraph,
    /,
    *,
    iterations: int = 8,
    exploration: float = 1.0,
    rule: Rule = "uct",
    max_depth: int = 6,
    children_per_expansion: int = 2,
    value: ValueSource = "prm",
    rollout: Rollout | None = None,
    final: FinalRule = "most_visited",
    aggregate: Aggregation = "last",
    complete: bool = True,
    is_terminal: IsTerminal | None = None,
    extract_answer: ExtractAnswer = default_extract_answer,
    state_schema: type[MCTSState] | None = None,
    retry_policy: RetryPolicy | None = None,
) -> StateGraph:
    """Create a step-level Monte Carlo tree search that knows nothing of models.

    Each iteration selects a leaf from the root, hands it to `expander` for
    `children_per_expansion` scored children, values the new children and backpropagates
    the values to the root (see the module docstring for the exact counting).

    - **Selection.** `uct`: `Q + c * sqrt(ln N_parent / N_child)`, unvisited children first.
      `puct`: `Q + c * P * sqrt(N_parent) / (1 + N_child)` with the child's PRM score as the
      prior `P`. Ties go to the first-created child. The walk stops at a node without kept
      children or at a terminal node (rejected drafts are never selected).
    - **Expansion.** Only non-terminal leaves above `max_depth` are expanded; selecting a
      terminal leaf (or one at `max_depth`) backpropagates its own Q once more.
    - **Value.** `prm`: the child's aggregated path score under `aggregate`. `rollout`:
      `await rollout(question, steps)` for the path ending at the child (`make_rollout`
      builds one from a small model and a PRM).
    - **Stopping.** After `iterations` iterations, or earlier once the root is solved (every
      path below it ends at a terminal node or at `max_depth`).
    - **Final answer.** `most_visited`: walk from the root taking the most visited child
      (ties: higher Q) down to a leaf; the answer is read off that path. `best_value`: the
      terminal node with the best aggregated path score; when no terminal node exists, the
      most visited node among the deepest ones.
    - **Every search ends with an answer** where one can be had: an expansion whose children
      reach `max_depth` is `final` (its thoughts run to the end of the solution, not to the
      step delimiter); if the chosen path still states no answer (e.g. the iterations ran out
      above `max_depth`), its leaf gets one more `final` child, the completion step, which is
      evaluated and backpropagated like any expansion (`complete=False` turns it off).

    Swap the expander to change the method and nothing else: `create_ar_expander` (AR),
    `create_sps_expander` (SpS), `create_speculative_expander` (SpecSearch).

    Args:
        expander: An expander subgraph (compiled or not) with `ExpanderInput` /
            `ExpanderOutput` schemas.
        iterations: Select-expand-evaluate-backpropagate iterations.
        exploration: The exploration constant `c`.
        rule: `uct` or `puct`.
        max_depth: Deepest step the tree may reach.
        children_per_expansion: Children asked of the expander per expansion.
        value: `prm` or `rollout`.
        rollout: Async `rollout(question, steps) -> float`; required with `value="rollout"`.
        final: `most_visited` or `best_value`.
        aggregate: How per-step PRM scores become a path score (`last`, `min`, `prod`, `mean`).
        complete: Add a completion step when the chosen path states no answer.
        is_terminal: Whether a step ends its path (default: the expander's marking, math
            answers via `answers.is_terminal`); an end of text always does.
        extract_answer: Reads a step's final answer, None when it states none (default:
            `answers.extract_answer`, math answers).
        state_schema: The graph's state (default `MCTSState`): a TypedDict subclass of
            `MCTSState` whose extra keys (with their own reducers) nodes you add may write;
            anything else raises TypeError.
        retry_policy: LangGraph `RetryPolicy` of the `evaluate` node, which calls the models
            when the values are rollouts; default `retries.DEFAULT_RETRY_POLICY` (one retry
            of a transient failure). The expander's nodes have their own.

    Returns:
        An uncompiled StateGraph; input `{"question"}`, output `{"answer", "path", "stats",
        "threshold_trace"}`. Compile it (optionally with a checkpointer: the tree with its
        visit counts and values is in the `nodes` state key) and invoke it, or add it as a
        node in a parent graph. Name it when compiling, as any LangGraph graph:
        `compile(name="search")`.
    """
    check_template_arguments(
        expander,
        {
            "iterations": iterations,
            "max_depth": max_depth,
            "children_per_expansion": children_per_expansion,
        },
        aggregate=aggregate,
        complete=complete,
        is_terminal=is_terminal,
        extract_answer=extract_answer,
    )
    check_number("exploration", exploration)
    check_choice("rule", rule, get_args(Rule))
    check_choice("final rule", final, get_args(FinalRule))
    check_choice("value", value, get_args(ValueSource))
    check_callable("rollout", rollout)
    check_instance("retry_policy", retry_policy, RetryPolicy)
    if value == "rollout" and rollout is None:
        raise ValueError("value='rollout' needs a rollout callable (see make_rollout)")
    schema = check_state_schema(state_schema, MCTSState)
    compiled = compile_expander(expander)

    def init(state: MCTSState) -> dict[str, Any]:
        return {
            **start_search(state["question"]),
            "iteration": 0,
        }

    def select(state: MCTSState, config: RunnableConfig) -> dict[str, Any]:
        leaf = select_leaf(state["nodes"], rule=rule, exploration=exploration)
        emit(step_chosen_event("mcts", state["nodes"], [leaf]), config)
        return {
            "leaf": leaf,
            "expand": [leaf],
            "n": children_per_expansion,
            "need": children_per_expansion,
            "values": {},
            "children": [],
            "final": state["nodes"][leaf]["step"] + 1 >= max_depth,
        }

    def route_select(state: MCTSState) -> str:
        leaf = state["nodes"][state["leaf"]]
        return "backpropagate" if leaf["terminal"] or leaf["step"] >= max_depth else "expand"

    async def evaluate(state: dict[str, Any]) -> dict[str, Any]:
        children = retag(state["children"], is_terminal)
        new = {c["id"]: c for c in children}
        table = {**state["nodes"], **new}
        kept = [c["id"] for c in children if not c["rejected"]]
        if value == "prm" or rollout is None:
            return {"nodes": new, "values": {i: score_path(table, i, aggregate) for i in kept}}
        with Clock() as clock:
            results = await asyncio.gather(
                *(rollout(state["question"], steps_to(table, i)) for i in kept)
            )
        usage = {
            "rollout": {"calls": len(kept), "time_s": clock.seconds},
            "search": {"active_s": clock.seconds},
        }
        return {
            "nodes": new,
            "values": dict(zip(kept, map(float, results), strict=True)),
            "usage": usage,
        }

    def backprop(state: MCTSState) -> dict[str, Any]:
        updates = backpropagate(state["nodes"], state["leaf"], state["values"])
        return {"nodes": updates, "iteration": state["iteration"] + 1}

    def target(state: MCTSState) -> str | None:
        if not complete:
            return None
        candidates = final_candidates(state["nodes"], final)
        return completion_target(state["nodes"], candidates, aggregate, extract_answer)

    def route_backprop(state: MCTSState) -> str:
        if completing(state):
            return "finalize"
        done = state["iteration"] >= iterations or is_solved(state["nodes"], ROOT_ID, max_depth)
        if not done:
            return "select"
        return "complete" if target(state) is not None else "finalize"

    def start_complete(state: MCTSState) -> dict[str, Any]:
        leaf = target(state)
        assert leaf is not None  # routed here only when there is one
        return {**start_completion(leaf), "leaf": leaf, "values": {}, "children": []}

    def finalize(state: MCTSState, config: RunnableConfig) -> dict[str, Any]:
        candidates = final_candidates(state["nodes"], final)
        out = final_output(
            state, candidates, aggregate, final_depth=max_depth, extract=extract_answer
        )
        emit(answer_event("mcts", out), config)
        return out

    builder = StateGraph(schema, input_schema=SearchInput, output_schema=SearchOutput)
    builder.add_node("init", init)
    builder.add_node("select", select)
    builder.add_node("expand", compiled)
    policy = retry_policy or DEFAULT_RETRY_POLICY
    builder.add_node(
        "evaluate", as_node(graph_retried(evaluate, policy), "evaluate"), retry_policy=policy
    )
    builder.add_node("backpropagate", backprop)
    builder.add_node("finalize", finalize)
    builder.add_edge(START, "init")
    builder.add_edge("init", "select")
    builder.add_conditional_edges("select", route_select, ["expand", "backpropagate"])
    builder.add_edge("expand", "evaluate")
    builder.add_edge("evaluate", "backpropagate")
    ends = ["select", "finalize"]
    if complete:
        builder.add_node("complete", start_complete)
        builder.add_edge("complete", "expand")
        ends.append("complete")
    builder.add_conditional_edges("backpropagate", route_backprop, ends)
    builder.add_edge("finalize", END)
    return builder
