"""The `state_schema` a template accepts: its own state, or a TypedDict that extends it."""

from __future__ import annotations

import typing
from typing import Any

from typing_extensions import is_typeddict


def _hints(schema: type) -> dict[str, Any]:
    """A TypedDict's keys with their annotations, reducers (`Annotated` metadata) included."""
    return typing.get_type_hints(schema, include_extras=True)


def check_state_schema(schema: type[Any] | None, base: type[Any]) -> type[Any]:
    """`schema` (default `base`) once it is a TypedDict that extends `base`, else a one-line error.

    A TypedDict subclass loses its TypedDict bases at run time, so "extends" is checked by
    keys: every key of `base` with the same annotation and reducer; extra keys are free.
    """
    if schema is None or schema is base:
        return base
    if not isinstance(schema, type) or not is_typeddict(schema):
        raise TypeError(
            f"state_schema must be a TypedDict subclass of {base.__name__}, got {schema!r}"
        )
    own, theirs = _hints(base), _hints(schema)
    missing = [key for key in own if key not in theirs]
    if missing:
        raise TypeError(
            f"state_schema {schema.__name__} is not a subclass of {base.__name__}: "
            f"it lacks {', '.join(missing)}"
        )
    changed = [key for key, hint in own.items() if theirs[key] != hint]
    if changed:
        raise TypeError(
            f"state_schema {schema.__name__} redefines {', '.join(changed)} of {base.__name__}; "
            "subclass it and add keys instead"
        )
    return schema
