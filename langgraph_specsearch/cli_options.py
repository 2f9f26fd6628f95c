"""Command-line flags made from `SearchConfig`'s fields, so each option is defined once.

`with_search_options()` adds one keyword-only typer option per config option (nested configs
flattened: `--theta`, `--pipeline`, `--max-new-tokens`) with the field's type, default and
docstring as help, grouped in help panels. The command receives `options`: only the options
given on the command line, which `SearchConfig.model_validate` turns into a config whose
`model_fields_set` is exactly what the user asked for (so ignored options can be refused).
"""

from __future__ import annotations

import functools
import inspect
import types
import typing
from collections.abc import Callable, Collection
from typing import Annotated, Any, TypeVar

import typer
from pydantic import ValidationError

from langgraph_specsearch.api import SearchConfig
from langgraph_specsearch.options import Leaf, choices, flag, flat_index, option_of

F = TypeVar("F", bound=Callable[..., Any])
_DEFAULTS = ("DEFAULT", "DEFAULT_MAP")
"""Where a value came from when the user did not give it (by name: typer vendors click)."""


def _metavar(annotation: Any) -> str:
    """What a flag's value looks like in --help: INT, FLOAT, TEXT, or the choices."""
    if typing.get_origin(annotation) is Annotated:
        return _metavar(typing.get_args(annotation)[0])
    values = choices(annotation)
    if values:
        return "|".join(str(v) for v in values)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _metavar(args[0]) if len(args) == 1 else "TEXT"
    return {int: "INT", float: "FLOAT"}.get(annotation, "TEXT")


def _help(leaf: Leaf) -> str:
    """The field's docstring as one paragraph of help."""
    return " ".join((leaf.info.description or "").split()).replace("`", "")


def search_option_leaves(
    exclude: Collection[str] = (), include: Collection[str] | None = None
) -> list[Leaf]:
    """The config options a command shows (all, or `include`, less `exclude`), in
    declaration order."""
    index = flat_index(SearchConfig)
    unknown = (set(exclude) | set(include or ())) - set(index)
    if unknown:
        raise TypeError(f"no such options: {sorted(unknown)}")
    return [
        leaf
        for name, leaf in index.items()
        if name not in exclude and (include is None or name in include) and option_of(leaf.info).cli
    ]


def _none(value: Any, optional: bool) -> Any:
    """`--seed none` unsets an optional option (None in Python)."""
    return None if optional and isinstance(value, str) and value.lower() == "none" else value


def _parameter(leaf: Leaf) -> inspect.Parameter:
    """A keyword-only typer option for one config option.

    Values reach pydantic as text (booleans as flags), so a bad value gets the same one-line
    error, named like the flag, as any other invalid option.
    """
    default = leaf.info.get_default(call_default_factory=True)
    panel = leaf.panel or "Search"
    if leaf.info.annotation is bool:
        decls = f"{flag(leaf.flat)}/--no-{flag(leaf.flat)[2:]}"
        option = typer.Option(decls, help=_help(leaf), rich_help_panel=panel)
        annotation: Any = Annotated[bool, option]
    else:
        option = typer.Option(
            flag(leaf.flat),
            help=_help(leaf),
            rich_help_panel=panel,
            metavar=_metavar(leaf.info.annotation),
            show_default=not (leaf.info.exclude or leaf.info.repr is False),
        )
        annotation = Annotated[str | None, option]
    return inspect.Parameter(
        leaf.flat, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation
    )


def with_search_options(
    *, exclude: Collection[str] = (), include: Collection[str] | None = None
) -> Callable[[F], F]:
    """Add every `SearchConfig` option (or those in `include`), but `exclude`, to a typer
    command as a flag.

    The decorated function takes `options: dict[str, Any]`: the flat options given on the
    command line (defaults left out), ready for `SearchConfig.model_validate`.
    """
    leaves = search_option_leaves(exclude, include)
    names = {leaf.flat for leaf in leaves}
    optional = {leaf.flat: type(None) in typing.get_args(leaf.info.annotation) for leaf in leaves}

    def decorate(func: F) -> F:
        own = inspect.signature(func, eval_str=True)
        kept = [p for p in own.parameters.values() if p.name != "options"]
        clash = names & {p.name for p in kept}
        if clash:
            raise TypeError(f"{func.__name__} already has options {sorted(clash)}")
        context = inspect.Parameter(
            "cli_context", inspect.Parameter.KEYWORD_ONLY, annotation=typer.Context
        )
        parameters = kept + [_parameter(leaf) for leaf in leaves] + [context]

        @functools.wraps(func)
        def command(*, cli_context: typer.Context, **kwargs: Any) -> Any:
            given = {
                name: _none(kwargs[name], optional[name])
                for name in names
                if getattr(cli_context.get_parameter_source(name), "name", None) not in _DEFAULTS
            }
            rest = {k: v for k, v in kwargs.items() if k not in names}
            return func(**rest, options=given)

        command.__signature__ = own.replace(parameters=parameters)  # type: ignore[attr-defined]
        command.__annotations__ = {p.name: p.annotation for p in parameters}
        return command  # type: ignore[return-value]

    return decorate


def config_error(exc: ValidationError) -> str:
    """The first problem of a config as one line, named like the CLI flag."""
    first = exc.errors()[0]
    if first["type"] == "ignored_option":
        return str((first.get("ctx") or {}).get("cli", first["msg"]))
    index = flat_index(SearchConfig)
    path = tuple(x for x in first["loc"] if isinstance(x, str))
    name = next((leaf.flat for leaf in index.values() if leaf.path == path), None)
    if name is None and path:
        name = path[-1]
    message = str(first["msg"]).removeprefix("Value error, ")
    return f"{flag(name)}: {message}" if name else message
