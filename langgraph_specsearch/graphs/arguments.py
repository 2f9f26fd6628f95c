"""Argument checks of the graph factories: a wrong argument is a one-line TypeError or
ValueError naming it when the graph is created, not an AttributeError deep in a run."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, get_args

from langgraph.graph import StateGraph
from langgraph.graph.state import CompiledStateGraph

from langgraph_specsearch.prm.base import Aggregation


def _shown(value: Any) -> str:
    """`value`'s type, with the value itself where it is short (`str '2'`)."""
    text = repr(value)
    kind = type(value).__name__
    return kind if value is None or len(text) > 40 else f"{kind} {text}"


def check_int(name: str, value: Any, *, minimum: int = 1) -> None:
    """`value` is an int (not a bool) >= `minimum`."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {_shown(value)}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")


def check_number(name: str, value: Any, *, minimum: float = 0.0) -> None:
    """`value` is a real number (not a bool) >= `minimum`."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {_shown(value)}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum:g}, got {value}")


def check_bool(name: str, value: Any) -> None:
    """`value` is a bool."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {_shown(value)}")


def check_choice(name: str, value: Any, choices: tuple[Any, ...]) -> None:
    """`value` is one of `choices`."""
    if value not in choices:
        expected = ", ".join(repr(c) for c in choices)
        raise ValueError(f"unknown {name} {value!r} (expected one of {expected})")


def check_callable(name: str, value: Any, *, optional: bool = True) -> None:
    """`value` is callable (or None where `optional`)."""
    if (value is None and optional) or callable(value):
        return
    raise TypeError(f"{name} must be callable{' or None' if optional else ''}, got {_shown(value)}")


def check_instance(name: str, value: Any, kind: type, *, optional: bool = True) -> None:
    """`value` is a `kind` (or None where `optional`)."""
    if (value is None and optional) or isinstance(value, kind):
        return
    expected = kind.__name__ + (" or None" if optional else "")
    raise TypeError(f"{name} must be a {expected}, got {_shown(value)}")


def _check_members(
    name: str, value: Any, protocol: str, methods: tuple[str, ...], attributes: tuple[str, ...]
) -> None:
    """TypeError unless `value` has the callable `methods` and the `attributes`; what a partly
    conforming object lacks is named."""
    lacking = [f"{m}()" for m in methods if not callable(getattr(value, m, None))]
    lacking += [a for a in attributes if not hasattr(value, a)]
    if not lacking:
        return
    wanted = [f"{m}()" for m in methods] + list(attributes)
    partly = len(lacking) < len(wanted)
    raise TypeError(
        f"{name} must be a {protocol} (with {', '.join(wanted)}), got {_shown(value)}"
        + (f" without {', '.join(lacking)}" if partly else "")
    )


def check_backend(name: str, value: Any) -> None:
    """`value` looks like a `backends.base.Backend`: async `agenerate` and a `prompt_format`."""
    _check_members(name, value, "Backend", ("agenerate",), ("prompt_format",))


def check_prm(name: str, value: Any) -> None:
    """`value` looks like a `prm.base.PRM`: async `ascore` and `ascore_last`."""
    _check_members(name, value, "PRM", ("ascore", "ascore_last"), ())


def check_expander(value: Any) -> None:
    """`value` is an expander graph, compiled or not."""
    if not isinstance(value, (StateGraph, CompiledStateGraph)):
        raise TypeError(
            "expander must be a StateGraph or CompiledStateGraph (e.g. create_ar_expander(...)),"
            f" got {_shown(value)}"
        )


def check_template_arguments(
    expander: Any,
    counts: Mapping[str, Any],
    *,
    aggregate: Any,
    complete: Any,
    is_terminal: Any,
    extract_answer: Any,
) -> None:
    """What every search template takes: the expander, its counts (ints >= 1), `aggregate`,
    `complete` and the two answer callables."""
    check_expander(expander)
    for name, value in counts.items():
        check_int(name, value)
    check_choice("aggregate", aggregate, get_args(Aggregation))
    check_bool("complete", complete)
    check_callable("is_terminal", is_terminal)
    check_callable("extract_answer", extract_answer, optional=False)
