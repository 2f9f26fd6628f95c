"""Best-of-N template: independent paths through the expander, then answer voting."""

from __future__ import annotations

import pytest
from scripted import ScriptedBackend, ScriptedPRM, by_text, landscape_backend, run_full

from langgraph_specsearch.graphs.best_of_n import create_best_of_n, normalize_answer, tally, winner
from langgraph_specsearch.graphs.expanders import create_ar_expander, create_speculative_expander
from langgraph_specsearch.speculation import SpeculationConfig

# Two low-scoring paths say 5 (once written "5.0"), one high-scoring path says 9.
SPLIT = {
    "": ["p0 0.5", "p1 0.5", "p2 0.5"],
    "p0": ["q0 The answer is 5. 0.3"],
    "p1": ["q1 The answer is 5.0. 0.35"],
    "p2": ["q2 The answer is 9. 0.9"],
}


def search(vote: str, backend: ScriptedBackend | None = None, **kwargs) -> tuple[dict, dict]:
    backend = backend or landscape_backend(SPLIT)
    expander = create_ar_expander(large=backend, prm=ScriptedPRM(by_text))
    return run_full(create_best_of_n(expander, n=3, vote=vote, **kwargs))  # type: ignore[arg-type]


def test_majority_and_weighted_votes_disagree() -> None:
    majority, state = search("majority")
    weighted, _ = search("weighted")
    best, _ = search("best")
    assert majority["answer"] == "5"
    assert [s["text"].split()[0] for s in majority["path"]] == ["p1", "q1"]  # best path saying 5
    assert weighted["answer"] == "9" and best["answer"] == "9"
    assert state["votes"]["5"]["count"] == 2 and state["votes"]["9"]["count"] == 1
    assert state["votes"]["5"]["weight"] == pytest.approx(0.65)
    assert state["votes"]["9"]["weight"] == pytest.approx(0.9)
    assert set(majority) == {"answer", "path", "stats", "threshold_trace"}


def test_weighted_vote_follows_the_weight_not_the_best_path() -> None:
    table = {
        "": ["p0 0.5", "p1 0.5", "p2 0.5"],
        "p0": ["q0 The answer is 5. 0.6"],
        "p1": ["q1 The answer is 5. 0.6"],
        "p2": ["q2 The answer is 9. 0.9"],
    }
    weighted, _ = search("weighted", landscape_backend(table))
    best, _ = search("best", landscape_backend(table))
    assert weighted["answer"] == "5" and best["answer"] == "9"


def test_paths_grow_one_step_per_round() -> None:
    backend = landscape_backend(SPLIT)
    search("weighted", backend)
    # Round 1: the root with n=3; round 2: the three open paths with n=1 each.
    assert [(len(prompts), n) for prompts, n in backend.calls] == [(1, 3), (3, 1)]


def test_max_steps_stops_open_paths_and_unanswered_paths_do_not_vote() -> None:
    table = {
        "": ["p0 0.5", "p1 0.5", "p2 0.5"],
        "p0": ["q0 The answer is 5. 0.3"],
        "p1": ["q1 0.95"],
        "p2": ["q2 0.8"],
        "q1": ["r1 0.99"],
        "q2": ["r2 0.99"],
    }
    backend = landscape_backend(table)
    out, state = search("best", backend, max_steps=2, complete=False)
    assert len(backend.calls) == 2
    assert set(state["votes"]) == {"5"}
    assert out["answer"] == "5"
    # Nobody answers: the best path comes back with no answer.
    silent = {"": ["p0 0.5", "p1 0.7", "p2 0.6"]}
    out, state = search("weighted", landscape_backend(silent), max_steps=1, complete=False)
    assert out["answer"] is None and state["votes"] == {}
    assert out["path"][-1]["text"] == "p1 0.7"


def test_specsearch_expander_inside_best_of_n() -> None:
    def small(prompt: str, call: int, i: int) -> str:
        return "The answer is 4. 0.9" if call == 0 else "bad 0.1"

    large = ScriptedBackend("large", lambda prompt, call, i: f"large{call}{i} 0.5")
    prm = ScriptedPRM(by_text)
    expander = create_speculative_expander(
        small=ScriptedBackend("small", small),
        large=large,
        prm=prm,
        speculation=SpeculationConfig.paper(),
    )
    out, state = run_full(create_best_of_n(expander, n=2, max_steps=3))
    trace = out["threshold_trace"]
    assert trace[0]["beta"] is None and trace[0]["large_scores"] == [0.5, 0.5]  # warm-up
    assert (trace[1]["accepted"], trace[1]["rejected"]) == (2, 0)
    assert out["answer"] == "4" and state["votes"]["4"]["count"] == 2


def test_vote_helpers() -> None:
    assert normalize_answer("5.0") == normalize_answer("5") == normalize_answer("$5") == "5"
    assert normalize_answer("1,000") == "1000" and normalize_answer("0.50") == "0.5"
    assert normalize_answer(" Yes ") == "yes"
    assert winner({}, "majority") is None
    votes = {
        "a": {"count": 1, "weight": 0.5, "best": 0.5},
        "b": {"count": 1, "weight": 0.7, "best": 0.7},
    }
    assert winner(votes, "majority") == "b"  # count tie broken by weight
    assert tally({}, [], "last") == {}


def test_bad_arguments() -> None:
    expander = create_ar_expander(large=landscape_backend(SPLIT), prm=ScriptedPRM(by_text))
    with pytest.raises(ValueError):
        create_best_of_n(expander, n=0)
    with pytest.raises(ValueError):
        create_best_of_n(expander, vote="plurality")  # type: ignore[arg-type]
