"""One source of options: SearchConfig's fields make the CLI flags, defaults agree everywhere,
and options the chosen method or search ignores are refused."""

from __future__ import annotations

import re

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from langgraph_specsearch.api import SearchConfig
from langgraph_specsearch.cli import app
from langgraph_specsearch.cli_options import search_option_leaves
from langgraph_specsearch.options import (
    LENIENT,
    flag,
    flat_index,
    given_options,
    ignored_options,
    updated,
)
from langgraph_specsearch.run_record import differences, recorded_options
from langgraph_specsearch.speculation import SpeculationConfig
from langgraph_specsearch.threshold import ThresholdConfig
from langgraph_specsearch.types import GenerationParams


def _flags(command: str) -> set[str]:
    """The long flags a command's --help lists."""
    text = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "200"}).output
    return set(re.findall(r"(--[a-z][a-z0-9-]*)", text))


def test_every_option_is_a_flag_of_solve_and_bench() -> None:
    options = {flag(leaf.flat) for leaf in search_option_leaves()}
    assert {"--theta", "--pipeline", "--max-new-tokens", "--top-p", "--lcb-z"} <= options
    assert "--stop" not in options  # a list: API only
    assert options <= _flags("solve")
    assert options - {"--method"} <= _flags("bench")


def test_nested_configs_have_one_set_of_defaults() -> None:
    config = SearchConfig()
    assert config.threshold == ThresholdConfig()
    assert config.speculation == SpeculationConfig()
    assert config.generation == GenerationParams()
    assert GenerationParams().max_new_tokens == 48 and GenerationParams().seed == 0


def test_flat_and_nested_keywords_build_the_same_config() -> None:
    flat = SearchConfig.model_validate(
        {"theta": 0.8, "max_new_tokens": 32, "pipeline": "lockstep", "threshold_mode": "adaptive"}
    )
    nested = SearchConfig(
        threshold=ThresholdConfig(theta=0.8, mode="adaptive"),
        generation=GenerationParams(max_new_tokens=32),
        speculation={"pipeline": "lockstep"},
    )
    assert flat == nested
    assert given_options(flat) == {"theta": 0.8, "max_new_tokens": 32, "pipeline": "lockstep"}
    with pytest.raises(ValidationError, match="theta given twice"):
        SearchConfig.model_validate({"theta": 0.8, "threshold": {"theta": 0.7}})
    with pytest.raises(ValidationError, match="extra"):
        SearchConfig.model_validate({"thetta": 0.8})


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"iterations": 3}, "--iterations is only used with --search mcts (here: beam)"),
        ({"search": "mcts", "beam_width": 3}, "--beam-width is only used with --search beam"),
        ({"method": "ar", "theta": 0.5}, "--theta is only used with --method specsearch"),
        ({"method": "sps", "pipeline": "lockstep"}, "--pipeline is only used with --method"),
        ({"estimator": "median", "quantile": 0.3}, "--quantile is only used with --estimator"),
        ({"threshold_mode": "fixed", "theta": 0.5}, "--theta is only used with --threshold-mode"),
        ({"reject_rate": 0.3}, "--reject-rate is only used with --threshold-mode random"),
        ({"regenerate": "all", "probe_every": 2}, "--probe-every is only used with --regenerate"),
    ],
)
def test_ignored_options_are_refused(options: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(message)):
        SearchConfig(**options)  # type: ignore[arg-type]
    # the same options are accepted where they are used
    fine = {"iterations": {"search": "mcts"}, "reject_rate": {"threshold_mode": "random"}}
    for name, setting in fine.items():
        if name in options and len(options) == 1:
            assert SearchConfig(**options, **setting)  # type: ignore[arg-type]


def test_a_full_dump_validates_again() -> None:
    """Defaults are never refused, so a config's dump round-trips."""
    config = SearchConfig(method="ar", search="mcts", iterations=3)
    assert SearchConfig.model_validate(config.model_dump()) == config


def test_lenient_configs_and_updates_keep_ignored_options() -> None:
    base = SearchConfig.model_validate(
        {"fixed_threshold": 0.6, "reject_rate": 0.3}, context={LENIENT: True}
    )
    assert {p["option"] for p in ignored_options(base)} == {"--fixed-threshold", "--reject-rate"}
    fixed = updated(base, threshold_mode="fixed", seed=3)
    assert fixed.threshold.mode == "fixed" and fixed.generation.seed == 3
    assert [p["option"] for p in ignored_options(fixed)] == ["--reject-rate"]
    with pytest.raises(ValueError, match="unknown option"):
        updated(base, nope=1)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--search", "mcts", "--beam-width", "2"], "--beam-width is only used with --search beam"),
        (["--method", "ar", "--theta", "0.9"], "--theta is only used with --method specsearch"),
        (["--controller", "off", "--explore-every", "3"], "--explore-every is only used with"),
        (["--temperature", "-1"], "--temperature: Input should be greater than or equal to 0"),
        (["--seed", "x"], "--seed: Input should be a valid integer"),
    ],
)
def test_cli_refuses_ignored_flags_in_one_line(args: list[str], message: str) -> None:
    """On the command line a flag counts as given even when it repeats the default."""
    result = CliRunner().invoke(app, ["solve", "q", *args])
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split()), result.output


def test_bench_refuses_an_option_no_method_uses(tmp_path) -> None:
    args = ["bench", "--limit", "1", "--out", str(tmp_path / "run"), "--no-plots"]
    result = CliRunner().invoke(app, [*args, "--methods", "ar,sps", "--theta", "0.5"])
    assert result.exit_code == 2, result.output
    assert "--theta is only used with --method specsearch" in result.output
    assert "no method in --methods" in result.output
    assert not (tmp_path / "run").exists()


def test_checkpoint_records_use_flat_option_names() -> None:
    recorded = recorded_options(SearchConfig.model_validate({"theta": 0.8, "pipeline": "lockstep"}))
    assert recorded["theta"] == 0.8 and recorded["pipeline"] == "lockstep"
    assert "api_key" not in recorded and "retries" not in recorded
    other = recorded_options(
        SearchConfig.model_validate({"theta": 0.7, "threshold_mode": "adaptive"})
    )
    assert differences(recorded, other) == [
        "--pipeline 'lockstep' -> 'per_node'",
        "--theta 0.8 -> 0.7",
    ]


def test_flat_names_are_unique_and_cover_every_nested_field() -> None:
    index = flat_index(SearchConfig)
    nested = {
        (group, name)
        for group, model in (
            ("threshold", ThresholdConfig),
            ("speculation", SpeculationConfig),
            ("generation", GenerationParams),
        )
        for name in model.model_fields
    }
    assert nested <= {leaf.path for leaf in index.values()}
    assert index["threshold_mode"].path == ("threshold", "mode")
    assert index["fixed_threshold"].path == ("threshold", "fixed_value")
