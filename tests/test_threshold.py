import random

import pytest

from langgraph_specsearch.threshold import (
    ThresholdConfig,
    ThresholdState,
    accept,
    estimate,
    in_warmup,
    initial_state,
    update,
)


def test_first_update_takes_the_observed_estimate() -> None:
    cfg = ThresholdConfig()
    state = update(initial_state(), [0.2, 0.6], cfg)
    assert state["beta"] == pytest.approx(0.4)
    assert state["updates"] == 1


def test_ema_arithmetic() -> None:
    cfg = ThresholdConfig(theta=0.9)
    state: ThresholdState = {"beta": 0.5, "updates": 1, "expansions": 3}
    state = update(state, [0.9, 0.7], cfg)
    assert state["beta"] == pytest.approx(0.9 * 0.5 + 0.1 * 0.8)
    state = update(state, [], cfg)
    assert state["beta"] == pytest.approx(0.53)


@pytest.mark.parametrize(
    ("estimator", "expected"),
    [("mean", 0.45), ("median", 0.4), ("quantile", 0.6)],
)
def test_estimators(estimator: str, expected: float) -> None:
    extra = {"quantile": 0.75} if estimator == "quantile" else {}
    cfg = ThresholdConfig(estimator=estimator, **extra)
    assert estimate([0.1, 0.3, 0.5, 0.9], cfg) == pytest.approx(expected)


def test_lower_confidence_bound_is_below_the_mean() -> None:
    cfg = ThresholdConfig(estimator="lcb", lcb_z=1.0)
    scores = [0.2, 0.4, 0.6]
    assert estimate(scores, cfg) == pytest.approx(0.4 - 0.2 / 3**0.5)


def test_accept_rules() -> None:
    rng = random.Random(0)
    state: ThresholdState = {"beta": 0.5, "updates": 1, "expansions": 1}
    cfg = ThresholdConfig()
    assert accept(0.5, state, cfg, rng)
    assert not accept(0.49, state, cfg, rng)
    assert accept(0.0, state, ThresholdConfig(mode="accept_all"), rng)
    assert accept(0.7, state, ThresholdConfig(mode="fixed", fixed_value=0.7), rng)
    assert not accept(0.69, state, ThresholdConfig(mode="fixed", fixed_value=0.7), rng)
    random_cfg = ThresholdConfig(mode="random", reject_rate=0.3)
    kept = sum(accept(0.0, state, random_cfg, rng) for _ in range(2000))
    assert 1300 < kept < 1500


def test_warmup_until_an_estimate_exists() -> None:
    cfg = ThresholdConfig(warmup_steps=1)
    assert in_warmup(initial_state(), cfg)
    assert not in_warmup({"beta": 0.3, "updates": 1, "expansions": 1}, cfg)
    assert not in_warmup(initial_state(), ThresholdConfig(mode="fixed"))
