"""MCTS template: selection rules, exact back-propagation, final answers, SpecSearch inside."""

from __future__ import annotations

import asyncio
import math

import pytest
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.memory import InMemorySaver
from scripted import ScriptedBackend, ScriptedPRM, by_text, landscape_backend, last_label, run_full

from langgraph_specsearch.graphs.expanders import create_ar_expander, create_speculative_expander
from langgraph_specsearch.graphs.mcts import backpropagate, create_mcts, select_child, select_leaf
from langgraph_specsearch.graphs.rollout import make_rollout
from langgraph_specsearch.speculation import SpeculationConfig
from langgraph_specsearch.state import ROOT_ID, root_node

# Greedy takes A (0.9), but A's subtree is poor; B (0.6) leads to the answer 7 (0.95).
TRAP = {
    "": ["A 0.9", "B 0.6"],
    "A": ["A0 0.2", "A1 0.1"],
    "B": ["B0 The answer is 7. 0.95", "B1 0.5"],
    "B1": ["B10 The answer is 3. 0.4", "B11 The answer is 3. 0.4"],
    "A0": ["A00 The answer is 1. 0.1", "A01 The answer is 1. 0.1"],
    "A1": ["A10 The answer is 2. 0.1", "A11 The answer is 2. 0.1"],
}


def by_label(nodes: dict) -> dict[str, tuple[int, float]]:
    return {n["text"].split()[0]: (n["visits"], n["value"]) for n in nodes.values() if n["text"]}


def hand_table(children: list[tuple[int, float, float]], parent_visits: int) -> dict:
    """Root with children given as (visits, value, prm score)."""
    nodes = {ROOT_ID: {**root_node(), "visits": parent_visits}}
    for i, (visits, value, score) in enumerate(children):
        nodes[f"0.{i}"] = {
            **root_node(),
            "id": f"0.{i}",
            "parent_id": ROOT_ID,
            "step": 1,
            "text": f"c{i}",
            "source": "large",
            "score": score,
            "visits": visits,
            "value": value,
        }
    return nodes


def test_uct_picks_the_child_the_formula_says() -> None:
    nodes = hand_table([(3, 2.4, 0.5), (1, 0.5, 0.5)], parent_visits=4)
    first = 2.4 / 3 + 1.0 * math.sqrt(math.log(4) / 3)  # 1.4798
    second = 0.5 / 1 + 1.0 * math.sqrt(math.log(4) / 1)  # 1.6774
    assert second > first
    assert select_child(nodes, ROOT_ID, rule="uct", exploration=1.0) == "0.1"
    # With no exploration the higher mean (0.8 > 0.5) wins.
    assert select_child(nodes, ROOT_ID, rule="uct", exploration=0.0) == "0.0"


def test_uct_picks_an_unvisited_child_first() -> None:
    nodes = hand_table([(3, 2.9, 0.9), (0, 0.0, 0.1), (1, 0.9, 0.9)], parent_visits=4)
    assert select_child(nodes, ROOT_ID, rule="uct") == "0.1"


def test_puct_uses_the_prm_score_as_prior() -> None:
    # Same visits; b has the higher mean, a the much higher prior.
    nodes = hand_table([(1, 0.5, 0.9), (1, 0.6, 0.1)], parent_visits=4)
    a = 0.5 + 1.0 * 0.9 * math.sqrt(4) / (1 + 1)  # 1.4
    b = 0.6 + 1.0 * 0.1 * math.sqrt(4) / (1 + 1)  # 0.7
    assert a > b
    assert select_child(nodes, ROOT_ID, rule="puct", exploration=1.0) == "0.0"
    assert select_child(nodes, ROOT_ID, rule="uct", exploration=1.0) == "0.1"


def test_selection_ignores_rejected_children_and_stops_at_terminal_nodes() -> None:
    nodes = hand_table([(0, 0.0, 0.1), (1, 0.9, 0.9)], parent_visits=1)
    nodes["0.0"]["rejected"] = True
    nodes["0.1"]["terminal"] = True
    nodes["0.1.0"] = {**nodes["0.1"], "id": "0.1.0", "parent_id": "0.1", "step": 2}
    assert select_leaf(nodes) == "0.1"


def test_backpropagate_pure_helper() -> None:
    nodes = hand_table([(2, 1.0, 0.5)], parent_visits=2)
    nodes["0.0.0"] = {**nodes["0.0"], "id": "0.0.0", "parent_id": "0.0", "visits": 0, "value": 0.0}
    nodes["0.0.1"] = {**nodes["0.0.0"], "id": "0.0.1"}
    updates = backpropagate(nodes, "0.0", {"0.0.0": 0.3, "0.0.1": 0.7})
    assert (updates["0.0.0"]["visits"], updates["0.0.0"]["value"]) == (1, 0.3)
    assert (updates["0.0.1"]["visits"], updates["0.0.1"]["value"]) == (1, 0.7)
    assert updates["0.0"]["visits"] == 4 and updates["0.0"]["value"] == pytest.approx(2.0)
    assert updates[ROOT_ID]["visits"] == 4 and updates[ROOT_ID]["value"] == pytest.approx(1.0)
    # Nothing new (terminal leaf): its own Q (1.0 / 2) goes up once more.
    again = backpropagate(nodes, "0.0", {})
    assert (again["0.0"]["visits"], again["0.0"]["value"]) == (3, pytest.approx(1.5))
    assert (again[ROOT_ID]["visits"], again[ROOT_ID]["value"]) == (3, pytest.approx(0.5))


def test_visits_and_values_after_three_iterations_are_exact() -> None:
    backend = landscape_backend(TRAP)
    _, final = run_full(
        create_mcts(create_ar_expander(large=backend, prm=ScriptedPRM(by_text)), iterations=3)
    )
    table = by_label(final["nodes"])
    # it 1: root -> A, B.  it 2: UCT A 0.9+sqrt(ln2) > B 0.6+sqrt(ln2): expand A.
    # it 3: A 0.4+sqrt(ln4/3) = 1.08 < B 0.6+sqrt(ln4) = 1.78: expand B.
    expected = {
        "A": (3, 0.9 + 0.2 + 0.1),
        "B": (3, 0.6 + 0.95 + 0.5),
        "A0": (1, 0.2),
        "A1": (1, 0.1),
        "B0": (1, 0.95),
        "B1": (1, 0.5),
    }
    assert set(table) == set(expected)
    for label, (visits, value) in expected.items():
        assert table[label][0] == visits, label
        assert table[label][1] == pytest.approx(value), label
    root = final["nodes"][ROOT_ID]
    assert root["visits"] == 6 and root["value"] == pytest.approx(
        0.9 + 0.6 + 0.2 + 0.1 + 0.95 + 0.5
    )
    assert final["iteration"] == 3


def test_enough_iterations_find_the_path_greedy_misses() -> None:
    backend = landscape_backend(TRAP)
    out, final = run_full(
        create_mcts(create_ar_expander(large=backend, prm=ScriptedPRM(by_text)), iterations=4)
    )
    # it 4 selects B0 (terminal): no expansion, 0.95 backpropagated again.
    assert len(backend.calls) == 3
    assert by_label(final["nodes"])["B0"] == (2, pytest.approx(1.9))
    assert by_label(final["nodes"])["B"][0] == 4 and by_label(final["nodes"])["A"][0] == 3
    assert out["answer"] == "7"
    assert [s["text"].split()[0] for s in out["path"]] == ["B", "B0"]


def test_best_value_final_rule_takes_the_best_terminal() -> None:
    backend = landscape_backend(TRAP)
    out, _ = run_full(
        create_mcts(
            create_ar_expander(large=backend, prm=ScriptedPRM(by_text)),
            iterations=3,
            final="best_value",
            complete=False,
        )
    )
    assert out["answer"] == "7"
    # No terminal node yet: the most visited of the deepest nodes.
    out, _ = run_full(
        create_mcts(
            create_ar_expander(large=landscape_backend(TRAP), prm=ScriptedPRM(by_text)),
            iterations=2,
            final="best_value",
            complete=False,
        )
    )
    assert out["answer"] is None and [s["text"].split()[0] for s in out["path"]] == ["A", "A0"]


def test_terminal_nodes_are_never_expanded_and_a_solved_root_stops_the_search() -> None:
    table = {"": ["T0 The answer is 4. 0.8", "T1 The answer is 5. 0.6"]}
    backend = landscape_backend(table)
    out, final = run_full(
        create_mcts(create_ar_expander(large=backend, prm=ScriptedPRM(by_text)), iterations=10)
    )
    assert len(backend.calls) == 1
    assert final["iteration"] == 1
    assert all(n["parent_id"] in (None, ROOT_ID) for n in final["nodes"].values())
    assert out["answer"] == "4"


def test_terminal_leaf_is_reselected_without_calling_the_expander() -> None:
    table = {"": ["T The answer is 4. 0.8", "X 0.1"], "X": ["X0 0.1", "X1 0.1"]}
    backend = landscape_backend(table)
    _, final = run_full(
        create_mcts(
            create_ar_expander(large=backend, prm=ScriptedPRM(by_text)),
            iterations=5,
            exploration=0.0,
        )
    )
    # c = 0: after the first expansion T (Q 0.8) is always chosen and never expanded.
    assert len(backend.calls) == 1
    assert by_label(final["nodes"])["T"] == (5, pytest.approx(4.0))
    assert final["nodes"][ROOT_ID]["visits"] == 6


def test_max_depth_caps_the_tree() -> None:
    backend = ScriptedBackend("large", lambda prompt, call, i: f"s{call}{i} 0.5")
    _, final = run_full(
        create_mcts(
            create_ar_expander(large=backend, prm=ScriptedPRM(by_text)),
            iterations=20,
            max_depth=2,
            complete=False,
        )
    )
    assert max(n["step"] for n in final["nodes"].values()) == 2
    assert len(backend.calls) == 3  # root, then its two children; depth-2 leaves stop it.
    assert final["iteration"] == 3


def test_rollout_values() -> None:
    seen: list[list[str]] = []

    async def rollout(question: str, steps: list[str]) -> float:
        seen.append(steps)
        return 0.25 if steps[-1].startswith("A") else 0.75

    backend = landscape_backend(TRAP)
    _, final = run_full(
        create_mcts(
            create_ar_expander(large=backend, prm=ScriptedPRM(by_text)),
            iterations=1,
            value="rollout",
            rollout=rollout,
            complete=False,
        )
    )
    assert sorted(seen) == [["A 0.9"], ["B 0.6"]]
    assert by_label(final["nodes"]) == {"A": (1, 0.25), "B": (1, 0.75)}
    assert final["usage"]["rollout"]["calls"] == 2
    with pytest.raises(ValueError, match="rollout"):
        create_mcts(create_ar_expander(large=backend, prm=ScriptedPRM(by_text)), value="rollout")


def test_make_rollout_continues_greedily_to_an_answer() -> None:
    def script(prompt: str, call: int, i: int) -> str:
        return "The answer is 3. 0.8" if call == 1 else "more 0.3"

    small = ScriptedBackend("small", script)
    rollout = make_rollout(small, ScriptedPRM(by_text), max_steps=4)
    assert asyncio.run(rollout("q", ["first 0.5"])) == pytest.approx(0.8)
    assert len(small.calls) == 2 and all(n == 1 for _, n in small.calls)
    # A path that already states its answer is just scored.
    assert asyncio.run(rollout("q", ["The answer is 9. 0.6"])) == pytest.approx(0.6)
    assert len(small.calls) == 2
    # max_steps caps the rollout.
    capped = make_rollout(
        ScriptedBackend("small", lambda p, c, i: "more 0.3"), ScriptedPRM(by_text), max_steps=2
    )
    assert asyncio.run(capped("q", [])) == pytest.approx(0.3)


def test_specsearch_expander_inside_mcts() -> None:
    small = ScriptedBackend("small", lambda prompt, call, i: f"small{call}{i} {[0.9, 0.2][i]}")
    large = ScriptedBackend("large", lambda prompt, call, i: f"large{call}{i} 0.5")
    prm = ScriptedPRM(by_text)
    paper = SpeculationConfig.paper()  # N drafts, every rejected one regenerated
    expander = create_speculative_expander(small=small, large=large, prm=prm, speculation=paper)
    out, final = run_full(create_mcts(expander, iterations=3, complete=False))
    trace = out["threshold_trace"]
    assert len(trace) == 3
    # Warm-up: the large model makes the first expansion (at the root, depth 1).
    assert trace[0]["beta"] is None and trace[0]["large_scores"] == [0.5, 0.5]
    assert trace[0]["step"] == 1 and last_label(large.calls[0][0][0]) == ""
    # Then drafts: 0.9 kept, 0.2 rejected and regenerated; beta is read at depth 2.
    assert trace[1]["step"] == 2 and trace[1]["beta"] == pytest.approx(0.5)
    assert (trace[1]["accepted"], trace[1]["rejected"]) == (1, 1)
    assert len(small.calls) == 2  # 3 expansions, the first one by the large model alone
    assert [last_label(p) for (p,), _ in small.calls] == ["large00", "large01"]
    assert out["stats"]["drafts"] == 4 and out["stats"]["expansions"] == 3
    rejected = [n for n in final["nodes"].values() if n["rejected"]]
    assert rejected and all(n["visits"] == 0 for n in rejected)


def test_tree_statistics_survive_a_checkpoint() -> None:
    backend = landscape_backend(TRAP)
    graph = create_mcts(
        create_ar_expander(large=backend, prm=ScriptedPRM(by_text)), iterations=2, complete=False
    ).compile(checkpointer=InMemorySaver())
    config: RunnableConfig = {"configurable": {"thread_id": "ckpt"}}
    graph.invoke({"question": "q"}, config)
    nodes = graph.get_state(config).values["nodes"]
    assert nodes[ROOT_ID]["visits"] == 4
    assert by_label(nodes)["A"] == (3, pytest.approx(1.2))
    history = list(graph.get_state_history(config))
    assert len(history) > 5


def test_puct_search_runs_and_sync_invoke_works() -> None:
    backend = landscape_backend(TRAP)
    graph = create_mcts(
        create_ar_expander(large=backend, prm=ScriptedPRM(by_text)), iterations=4, rule="puct"
    ).compile()
    out = graph.invoke({"question": "q"})
    assert set(out) == {"answer", "path", "stats", "threshold_trace"}


def test_bad_arguments_and_empty_question() -> None:
    expander = create_ar_expander(large=landscape_backend(TRAP), prm=ScriptedPRM(by_text))
    with pytest.raises(ValueError):
        create_mcts(expander, iterations=0)
    with pytest.raises(ValueError):
        create_mcts(expander, rule="ucb")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="question must not be empty"):
        create_mcts(expander).compile().invoke({"question": " "})
