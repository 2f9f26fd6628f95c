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
    # bench runs every method (so no --method) and keeps each method's beta in its --out
    assert options - {"--method", "--threshold-store"} <= _flags("bench")


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
        ({"iterations": 3}, "iterations is only used with search='mcts' (here: 'beam')"),
        ({"search": "mcts", "beam_width": 3}, "beam_width is only used with search='beam'"),
        ({"method": "ar", "theta": 0.5}, "theta is only used with method='specsearch'"),
        ({"method": "sps", "pipeline": "lockstep"}, "pipeline is only used with method="),
        ({"estimator": "median", "quantile": 0.3}, "quantile is only used with estimator="),
        ({"threshold_mode": "fixed", "theta": 0.5}, "theta is only used with threshold_mode="),
        ({"threshold_mode": "fixed", "warmup_steps": 2}, "warmup_steps is only used with"),
        ({"reject_rate": 0.3}, "reject_rate is only used with threshold_mode='random'"),
        ({"regenerate": "all", "probe_every": 2}, "probe_every is only used with regenerate="),
        (
            {"carry_threshold": False, "threshold_store": "b.json"},
            "threshold_store is only used with carry_threshold=True (here: False)",
        ),
        ({"timeout": 5.0}, "timeout is only used with an endpoint (small_url, large_url or"),
        ({"prm": "arithmetic", "prm_url": "http://x"}, "prm_url is only used with a PRM that"),
        ({"prm_batch_size": 2}, "prm_batch_size is only used with a model PRM"),
        (
            {"small_url": "http://a", "large_url": "http://b", "device": "cuda"},
            "device is only used with local models (no small_url or large_url)",
        ),
    ],
)
def test_ignored_options_are_refused(options: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(message)):
        SearchConfig.model_validate(options)


@pytest.mark.parametrize(
    "options",
    [
        {"search": "mcts", "iterations": 3},
        {"threshold_mode": "random", "reject_rate": 0.3},
        {"prm": "math-shepherd", "prm_batch_size": 2},
        {"small_url": "http://a", "large_url": "http://b", "timeout": 5.0},
        {"prm_url": "http://p", "device": "cpu"},  # a judge endpoint, local models
        {"estimator": "lcb", "lcb_z": 2.0},
    ],
)
def test_the_same_options_are_accepted_where_they_are_used(options: dict[str, object]) -> None:
    assert set(given_options(SearchConfig.model_validate(options))) == set(options)


def test_values_are_checked_on_assignment_and_never_nan() -> None:
    config = SearchConfig()
    with pytest.raises(ValidationError):
        config.threshold.theta = 7.0
    with pytest.raises(ValidationError, match="finite"):
        SearchConfig.model_validate({"temperature": float("nan")})
    with pytest.raises(ValidationError):
        SearchConfig.model_validate({"seed": -1})


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
        (["--timeout", "5"], "--timeout is only used with an endpoint (--small-url, --large-url"),
        (
            ["--no-carry-threshold", "--threshold-store", "b.json"],
            "--threshold-store is only used with --carry-threshold (here: --no-carry-threshold)",
        ),
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
    preset = CliRunner().invoke(
        app, [*args, "--methods", "specsearch-paper", "--regenerate", "missing"]
    )
    assert preset.exit_code == 2, preset.output
    assert "--regenerate is set otherwise by the presets of specsearch-paper" in preset.output


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
