"""The graph factories refuse a wrong argument when the graph is created: one-line TypeError or
ValueError naming it, never an AttributeError in the middle of a run."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from scripted import ScriptedBackend, ScriptedPRM, by_text

import langgraph_specsearch as package
from langgraph_specsearch.types import GenerationParams

# Typed Any: the calls below pass wrong types on purpose.
create_ar_expander: Any = package.create_ar_expander
create_sps_expander: Any = package.create_sps_expander
create_speculative_expander: Any = package.create_speculative_expander
create_beam_search: Any = package.create_beam_search
create_best_of_n: Any = package.create_best_of_n
create_mcts: Any = package.create_mcts


def backend() -> ScriptedBackend:
    return ScriptedBackend("m", lambda prompt, call, i: f"step {call} 0.5")


def prm() -> ScriptedPRM:
    return ScriptedPRM(by_text)


def ar() -> Any:
    return create_ar_expander(large=backend(), prm=prm())


class NoFormat:
    """Has `agenerate` but no `prompt_format`."""

    async def agenerate(self, *_: Any, **__: Any) -> list[list[Any]]:
        return []


EXPANDERS: list[tuple[Callable[[], Any], type[Exception], str]] = [
    (lambda: create_ar_expander(large=None, prm=prm()), TypeError, "large must be a Backend"),
    (lambda: create_ar_expander(large="gemma", prm=prm()), TypeError, "large must be a Backend"),
    (
        lambda: create_ar_expander(large=NoFormat(), prm=prm()),
        TypeError,
        "got NoFormat without prompt_format",
    ),
    (lambda: create_ar_expander(large=backend(), prm=backend()), TypeError, "prm must be a PRM"),
    (lambda: create_sps_expander(large=prm(), prm=prm()), TypeError, "large must be a Backend"),
    (
        lambda: create_speculative_expander(small=None, large=backend(), prm=prm()),
        TypeError,
        r"small must be a Backend \(with agenerate\(\), prompt_format\), got NoneType$",
    ),
    (
        lambda: create_speculative_expander(small=backend(), large=backend(), prm=None),
        TypeError,
        "prm must be a PRM",
    ),
    (
        lambda: create_speculative_expander(
            small=backend(), large=backend(), prm=prm(), threshold={"theta": 0.8}
        ),
        TypeError,
        "threshold must be a ThresholdConfig or None, got dict",
    ),
    (
        lambda: create_ar_expander(large=backend(), prm=prm(), params={"temperature": 0}),
        TypeError,
        "params must be a GenerationParams",
    ),
]

TEMPLATES: list[tuple[Callable[[], Any], type[Exception], str]] = [
    (lambda: create_beam_search(None), TypeError, "expander must be a StateGraph"),
    (lambda: create_beam_search(backend()), TypeError, "expander must be a StateGraph"),
    (lambda: create_beam_search(ar(), beam_width="2"), TypeError, "beam_width must be an int"),
    (lambda: create_beam_search(ar(), n=2.0), TypeError, "n must be an int, got float"),
    (lambda: create_beam_search(ar(), max_steps=True), TypeError, "max_steps must be an int"),
    (lambda: create_beam_search(ar(), beam_width=0), ValueError, "beam_width must be >= 1"),
    (lambda: create_beam_search(ar(), aggregate="foo"), ValueError, "unknown aggregate 'foo'"),
    (lambda: create_beam_search(ar(), complete="no"), TypeError, "complete must be a bool"),
    (lambda: create_beam_search(ar(), is_terminal=3), TypeError, "is_terminal must be callable"),
    (lambda: create_best_of_n(None), TypeError, "expander must be a StateGraph"),
    (lambda: create_best_of_n(ar(), n="4"), TypeError, "n must be an int, got str '4'"),
    (lambda: create_best_of_n(ar(), aggregate="max"), ValueError, "unknown aggregate 'max'"),
    (lambda: create_best_of_n(ar(), vote="plurality"), ValueError, "unknown vote 'plurality'"),
    (lambda: create_best_of_n(ar(), extract_answer=None), TypeError, "extract_answer must be"),
    (lambda: create_mcts(None), TypeError, "expander must be a StateGraph"),
    (lambda: create_mcts(ar(), iterations="8"), TypeError, "iterations must be an int"),
    (lambda: create_mcts(ar(), max_depth=0), ValueError, "max_depth must be >= 1"),
    (lambda: create_mcts(ar(), exploration="1"), TypeError, "exploration must be a number"),
    (lambda: create_mcts(ar(), exploration=-1.0), ValueError, "exploration must be >= 0"),
    (lambda: create_mcts(ar(), aggregate="foo"), ValueError, "unknown aggregate 'foo'"),
    (lambda: create_mcts(ar(), rule="ucb"), ValueError, "unknown rule 'ucb'"),
    (lambda: create_mcts(ar(), rollout="x"), TypeError, "rollout must be callable"),
    (lambda: create_mcts(ar(), retry_policy=3), TypeError, "retry_policy must be a RetryPolicy"),
]


@pytest.mark.parametrize(("make", "error", "message"), EXPANDERS + TEMPLATES)
def test_wrong_argument_is_refused_at_construction(
    make: Callable[[], Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message) as raised:
        make()
    assert "\n" not in str(raised.value)


def test_right_arguments_still_build() -> None:
    params = GenerationParams(max_new_tokens=4)
    spec = create_speculative_expander(small=backend(), large=backend(), prm=prm())
    assert create_beam_search(spec, beam_width=1, n=2, aggregate="min").compile()
    assert create_best_of_n(create_ar_expander(large=backend(), prm=prm(), params=params))
    assert create_mcts(ar().compile(), exploration=0, aggregate="mean", complete=False)
