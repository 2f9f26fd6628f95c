"""SpecSearch's acceptance threshold: an EMA of the large model's step quality.

beta(k+1) = theta * beta(k) + (1 - theta) * Theta(V_k), where V_k are the PRM scores of the
large model's thoughts at step k and Theta is a non-parametric estimator. The state is a plain
dict (JSON-safe) so it lives in the LangGraph state and survives checkpoints.
"""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Sequence
from typing import Annotated, Any, Literal, TypedDict

from pydantic import Field
from typing_extensions import NotRequired

from langgraph_specsearch.options import Option, OptionsModel

Estimator = Literal["mean", "median", "quantile", "lcb"]
Mode = Literal["adaptive", "fixed", "random", "accept_all"]
ADAPTIVE = {"mode": ("adaptive",)}


class ThresholdConfig(OptionsModel):
    """How drafts are accepted: the paper's adaptive beta, or an ablation."""

    mode: Annotated[Mode, Option(name="threshold_mode")] = "adaptive"
    """adaptive (the paper's beta, an EMA of the large model's scores), or the ablations
    fixed (a constant threshold), random (reject each draft at random), accept_all."""
    theta: Annotated[float, Field(ge=0.0, le=1.0), Option(when=ADAPTIVE)] = 0.9
    """theta: weight of the previous beta in the EMA update, in [0, 1]."""
    estimator: Annotated[Estimator, Option(when=ADAPTIVE)] = "mean"
    """The statistic of a step's large-model scores that updates beta."""
    quantile: Annotated[float, Field(ge=0.0, le=1.0), Option(when={"estimator": ("quantile",)})] = (
        0.5
    )
    """q of the quantile estimator."""
    lcb_z: Annotated[float, Field(ge=0.0), Option(when={"estimator": ("lcb",)})] = 1.0
    """z of the lcb estimator: mean - z * std / sqrt(n)."""
    fixed_value: Annotated[
        float, Field(ge=0.0, le=1.0), Option(name="fixed_threshold", when={"mode": ("fixed",)})
    ] = 0.5
    """The constant threshold of the fixed threshold mode."""
    reject_rate: Annotated[float, Field(ge=0.0, le=1.0), Option(when={"mode": ("random",)})] = 0.5
    """Probability of rejecting a draft in the random threshold mode."""
    warmup_steps: Annotated[int, Field(ge=0), Option(when=ADAPTIVE)] = 1
    """Expansions made by the large model alone before drafting starts, so the first beta
    comes from real large-model scores (skipped when a threshold store has one)."""


class ThresholdState(TypedDict):
    """Serializable threshold state kept in the graph state.

    `beta` is the estimate, `updates` how many large-model steps it has seen, `expansions`
    how many expansions this search has made; `since_large` counts speculative expansions
    since the last large-model thought, and `controller` holds the scheduling controller's
    measurements (`speculation.py`). `beta`, `updates` and `controller` may come from a
    `ThresholdStore` (carried over from earlier problems); `prior` says so.
    """

    beta: float | None
    updates: int
    expansions: int
    since_large: NotRequired[int]
    controller: NotRequired[dict[str, Any]]
    prior: NotRequired[bool]


def initial_state() -> ThresholdState:
    """No estimate yet: the first expansions go to the large model."""
    return {"beta": None, "updates": 0, "expansions": 0, "since_large": 0, "controller": {}}


def estimate(scores: Sequence[float], config: ThresholdConfig) -> float:
    """Theta(V): the configured statistic of one step's large-model scores."""
    if not scores:
        raise ValueError("estimate() needs at least one score")
    values = sorted(scores)
    if config.estimator == "mean":
        return statistics.fmean(values)
    if config.estimator == "median":
        return statistics.median(values)
    if config.estimator == "quantile":
        position = config.quantile * (len(values) - 1)
        low, high = math.floor(position), math.ceil(position)
        return values[low] + (values[high] - values[low]) * (position - low)
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return statistics.fmean(values) - config.lcb_z * spread / math.sqrt(len(values))


def update(
    state: ThresholdState, large_scores: Sequence[float], config: ThresholdConfig
) -> ThresholdState:
    """Fold one step's large-model scores into the estimate (no scores: unchanged)."""
    if not large_scores:
        return dict(state)  # type: ignore[return-value]
    observed = estimate(large_scores, config)
    beta = state["beta"]
    new_beta = observed if beta is None else config.theta * beta + (1 - config.theta) * observed
    return {**state, "beta": new_beta, "updates": state["updates"] + 1}


def in_warmup(state: ThresholdState, config: ThresholdConfig) -> bool:
    """Whether the next expansion is made by the large model alone."""
    if config.mode != "adaptive":
        return False
    if state["beta"] is None:
        return True
    # a beta carried over from earlier problems (a prior) needs no warm-up in this one
    return not state.get("prior", False) and state["expansions"] < config.warmup_steps


def current_threshold(state: ThresholdState, config: ThresholdConfig) -> float | None:
    """The value drafts are compared against now (None: no comparison applies)."""
    if config.mode == "fixed":
        return config.fixed_value
    if config.mode == "adaptive":
        return state["beta"]
    return None


def accept(
    score: float, state: ThresholdState, config: ThresholdConfig, rng: random.Random
) -> bool:
    """Keep a draft iff its score reaches beta (or by the ablation's rule)."""
    if config.mode == "accept_all":
        return True
    if config.mode == "random":
        return rng.random() >= config.reject_rate
    threshold = current_threshold(state, config)
    return threshold is not None and score >= threshold


class ThresholdStore:
    """Carries beta and the controller's measurements from one problem to the next.

    A search whose threshold state has no estimate starts from the store's (and skips the
    large-only warm-up); every update is written back. With `path`, the store is a small JSON
    file (one entry per `key`, e.g. one per model pair), so `specsearch calibrate` can fill it
    once and later runs start calibrated; without it, it lives in memory (one process).
    Entries are plain data: `{"beta", "updates", "since_large", "controller"}` (`since_large`
    keeps the probe schedule running across problems).
    """

    def __init__(self, path: str | None = None, *, key: str = "default") -> None:
        self.path = path
        self.key = key
        self._memory: dict[str, dict[str, Any]] = {}

    def _read_all(self) -> dict[str, dict[str, Any]]:
        if self.path is None:
            return self._memory
        import json
        import os

        if not os.path.exists(self.path):
            return {}
        with open(self.path, encoding="utf-8") as fh:
            data = json.load(fh)
        if not isinstance(data, dict):
            raise ValueError(f"threshold store {self.path} is not a JSON object")
        return data

    def load(self) -> dict[str, Any] | None:
        """The stored entry for this key, or None."""
        entry = self._read_all().get(self.key)
        return dict(entry) if isinstance(entry, dict) else None

    def save(self, state: ThresholdState) -> None:
        """Store beta, its update count and the controller's measurements."""
        if state["beta"] is None:
            return
        entry = {
            "beta": state["beta"],
            "updates": state["updates"],
            "since_large": state.get("since_large", 0),
            "controller": dict(state.get("controller", {})),
        }
        data = dict(self._read_all())
        data[self.key] = entry
        if self.path is None:
            self._memory = data
            return
        import json
        import os

        tmp = f"{self.path}.tmp"
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(data, fh)
        os.replace(tmp, self.path)

    def seed(self, state: ThresholdState) -> ThresholdState:
        """`state` with the stored estimate when it has none of its own (else unchanged)."""
        if state["beta"] is not None:
            return state
        entry = self.load()
        if not entry or entry.get("beta") is None:
            return state
        return {
            **state,
            "beta": float(entry["beta"]),
            "updates": int(entry.get("updates", 0)),
            "since_large": int(entry.get("since_large", 0)),
            "controller": dict(entry.get("controller") or {}),
            "prior": True,
        }
