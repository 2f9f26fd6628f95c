"""One definition of every search option: pydantic fields that the API, the CLI and the
checkpoint records all read.

Each option is a field of `SearchConfig` or of one of its nested configs (`ThresholdConfig`,
`SpeculationConfig`, `GenerationParams`), with its type, default, bounds and help text (the
field's docstring) written once. On top of that a field may carry an `Option` marker in its
`Annotated` metadata:

- `name`: its flat name where it differs from the field's (`ThresholdConfig.mode` is
  `threshold_mode`, flag `--threshold-mode`). Flat names are what `SearchConfig(...)` accepts
  as keywords and what the CLI turns into flags; they are unique across the nested configs.
- `when`: the settings under which the option is used, e.g. `{"search": ("beam",)}` for the
  beam width. An option given explicitly where it would be ignored is refused with one line
  (`--iterations is only used with --search mcts (here: beam)`), so a mistyped run never
  silently does something else. Only options *given* are checked (pydantic's
  `model_fields_set`), never defaults.
- `cli`: False keeps an option out of the command line (lists, callables).
"""

from __future__ import annotations

import types
import typing
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationInfo, model_validator
from pydantic.fields import FieldInfo
from pydantic_core import PydanticCustomError

LENIENT = "allow_ignored_options"
"""Validation-context key: derived configs (e.g. a bench method's) may carry ignored options."""
GIVEN = "given_options"
"""Validation-context key: the flat options the user gave (the CLI's flags), each checked
whatever its value; without it, options set to something other than their default."""


@dataclass(frozen=True)
class Option:
    """How an option is named, when it is used, and whether the CLI shows it."""

    name: str | None = None
    when: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)
    cli: bool = True
    panel: str | None = None


class OptionsModel(BaseModel):
    """Base of the option models: field docstrings are their help, unknown keys are errors,
    values are checked on assignment too, no NaN or infinity, and options given where they
    are ignored are refused."""

    model_config = ConfigDict(
        extra="forbid",
        use_attribute_docstrings=True,
        validate_assignment=True,
        allow_inf_nan=False,
    )
    conditions: ClassVar[dict[str, str]] = {}
    """Properties that `Option.when` may name, each with what it means when true (option
    names in braces: `{small_url}`), for the error message."""

    @model_validator(mode="after")
    def _refuse_ignored(self, info: ValidationInfo) -> OptionsModel:
        context = info.context or {}
        if context.get(LENIENT):
            return self
        for problem in ignored_options(self, context.get(GIVEN)):
            raise PydanticCustomError("ignored_option", "{python}", problem)
        return self


def option_of(info: FieldInfo) -> Option:
    """The `Option` marker of a field (a default one when it has none)."""
    for item in info.metadata:
        if isinstance(item, Option):
            return item
    return Option()


def flat_name(name: str, info: FieldInfo) -> str:
    """A field's flat option name."""
    return option_of(info).name or name


def nested_model(info: FieldInfo) -> type[OptionsModel] | None:
    """The option model a field holds, when it holds one."""
    kind = info.annotation
    return kind if isinstance(kind, type) and issubclass(kind, OptionsModel) else None


@dataclass(frozen=True)
class Leaf:
    """One option as the CLI and the flat keywords see it."""

    flat: str
    path: tuple[str, ...]
    info: FieldInfo
    panel: str | None


def leaves(model: type[BaseModel], prefix: tuple[str, ...] = ()) -> Iterator[Leaf]:
    """Every option of `model`, nested configs flattened, in declaration order."""
    for name, info in model.model_fields.items():
        inner = nested_model(info)
        if inner is not None:
            for leaf in leaves(inner, (*prefix, name)):
                panel = leaf.panel or option_of(info).panel
                yield Leaf(leaf.flat, leaf.path, leaf.info, panel)
        else:
            yield Leaf(flat_name(name, info), (*prefix, name), info, option_of(info).panel)


def flat_index(model: type[BaseModel]) -> dict[str, Leaf]:
    """Flat name -> option, checked to be unique."""
    index: dict[str, Leaf] = {}
    for leaf in leaves(model):
        if leaf.flat in index:
            raise TypeError(f"option name {leaf.flat!r} is defined twice in {model.__name__}")
        index[leaf.flat] = leaf
    return index


def nest(model: type[BaseModel], data: Mapping[str, Any]) -> dict[str, Any]:
    """Move flat option keywords (`theta=0.8`) into their nested configs (`threshold`)."""
    index = flat_index(model)
    flat = {k: v for k, v in data.items() if k in index and len(index[k].path) > 1}
    out: dict[str, Any] = {k: v for k, v in data.items() if k not in flat}
    for key, value in flat.items():
        leaf = index[key]
        *groups, last = leaf.path
        target = out
        for group in groups:
            existing = target.get(group, {})
            if isinstance(existing, BaseModel):
                existing = existing.model_dump(exclude_unset=True)
            elif not isinstance(existing, dict):
                raise ValueError(f"{key} given both flat and inside {group!r}")
            target[group] = existing = dict(existing)
            target = existing
        if last in target:
            raise ValueError(f"{key} given twice (flat and inside {groups[-1]!r})")
        target[last] = value
    return out


def given_options(config: BaseModel, *, with_defaults: bool = False) -> dict[str, Any]:
    """The options set explicitly, by flat name, nested ones included: those set to something
    other than their default, or every one set (`with_defaults`)."""
    out: dict[str, Any] = {}
    for name in config.model_fields_set:
        info = type(config).model_fields[name]
        value = getattr(config, name)
        if isinstance(value, OptionsModel):
            out.update(given_options(value, with_defaults=with_defaults))
        elif with_defaults or value != info.get_default(call_default_factory=True):
            out[flat_name(name, info)] = value
    return out


def ignored_options(
    config: BaseModel, given: Collection[str] | None = None
) -> list[dict[str, str]]:
    """The options given where the rest of `config` says they are not used.

    `given`: flat names that count as given (a command line's flags); None: the options set
    to something other than their default, so a config's full dump validates again.
    """
    problems = []
    chosen = set(given_options(config)) if given is None else set(given)
    for name in sorted(config.model_fields_set):
        info = type(config).model_fields[name]
        value = getattr(config, name)
        if isinstance(value, OptionsModel):
            inner = given_options(value, with_defaults=given is not None)
            names = sorted(set(inner) & chosen)
        else:
            names = [n for n in [flat_name(name, info)] if n in chosen]
        used = True
        for key, allowed in option_of(info).when.items():
            actual = condition_value(config, key)
            if actual in allowed:
                continue
            used = False
            problems += [ignored_problem(config, option, key, allowed, actual) for option in names]
        if used and isinstance(value, OptionsModel):
            problems.extend(ignored_options(value, given))
    return problems


def condition_value(config: BaseModel, key: str) -> Any:
    """A condition's value: a field, a dotted path into nested configs, or a property."""
    value: Any = config
    for part in key.split("."):
        value = getattr(value, part)
    return value


def ignored_problem(
    config: BaseModel, option: str, key: str, allowed: tuple[Any, ...], actual: Any
) -> dict[str, str]:
    """Why `option` is refused, phrased for Python (`python`) and for the CLI (`cli`)."""
    label = getattr(type(config), "conditions", {}).get(key)
    if label is not None:
        cli = f"{flag(option)} is only used with {label.format_map(_Names(flag))}"
        python = f"{option} is only used with {label.format_map(_Names(str))}"
    elif isinstance(actual, bool):  # a flag: `--carry-threshold` / `--no-carry-threshold`
        leaf = _key_leaf(config, key)
        on, off = flag(leaf), "--no-" + flag(leaf)[2:]
        wanted, here = (off, on) if actual else (on, off)
        cli = f"{flag(option)} is only used with {wanted} (here: {here})"
        python = f"{option} is only used with {leaf}={not actual} (here: {actual})"
    else:
        leaf = _key_leaf(config, key)
        values = " or ".join(str(a) for a in allowed)
        cli = f"{flag(option)} is only used with {flag(leaf)} {values} (here: {actual})"
        wanted = " or ".join(repr(a) for a in allowed)
        python = f"{option} is only used with {leaf}={wanted} (here: {actual!r})"
    return {"option": flag(option), "cli": cli, "python": python}


class _Names(dict[str, str]):
    """`{small_url}` -> `--small-url` (CLI) or `small_url` (Python)."""

    def __init__(self, style: Any) -> None:
        super().__init__()
        self.style = style

    def __missing__(self, key: str) -> str:
        return str(self.style(key))


def _key_leaf(config: BaseModel, key: str) -> str:
    """The flat option name of a condition's field (`threshold.mode` -> `threshold_mode`)."""
    *groups, last = key.split(".")
    model: Any = config
    for group in groups:
        model = getattr(model, group)
    return key_name(model, last)


def key_name(config: BaseModel, key: str) -> str:
    """The flat name of field `key` of `config`."""
    return flat_name(key, type(config).model_fields[key])


def flag(name: str) -> str:
    """`probe_every` -> `--probe-every`."""
    return "--" + name.replace("_", "-")


def choices(annotation: Any) -> tuple[Any, ...] | None:
    """The values of a `Literal` (or optional `Literal`) annotation, else None."""
    if typing.get_origin(annotation) is Literal:
        return typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            found = choices(arg)
            if found:
                return found
    return None


M = TypeVar("M", bound=BaseModel)


def updated(config: M, **options: Any) -> M:
    """A copy of `config` with flat options replaced (`updated(c, seed=1, theta=0.5)`),
    validated, but leniently: for configs derived by code, which may carry options the new
    settings ignore (a bench run's shared options across methods)."""
    index = flat_index(type(config))
    unknown = sorted(set(options) - set(index))
    if unknown:
        raise ValueError(f"unknown options {unknown}")
    data = _set_values(config)
    for name, value in options.items():
        *groups, last = index[name].path
        target = data
        for group in groups:
            target = target.setdefault(group, {})
        target[last] = value
    return type(config).model_validate(data, context={LENIENT: True})


def _set_values(config: BaseModel) -> dict[str, Any]:
    """The explicitly set fields of a config (nested configs as dicts), secrets included."""
    out: dict[str, Any] = {}
    for name in config.model_fields_set:
        value = getattr(config, name)
        out[name] = _set_values(value) if isinstance(value, OptionsModel) else value
    return out
