"""How SpecSearch schedules its models: the policies of the speculative expander and its controller.

The acceptance rule (`threshold.py`) says *which* drafts are kept; the options here say how the
expansion is scheduled, which decides whether speculation is faster than the large model alone:

- `pipeline`: `per_node` runs each frontier node's draft -> score -> decide -> make-up on its
  own (a node whose drafts pass never waits for another node's regeneration); `lockstep` runs
  all nodes through each phase together (the paper's shape).
- `regenerate`: `missing` asks the large model only for the shortfall below `need` kept
  children per node; `all` replaces every rejected draft (the paper).
- `concurrent`: start the large model's make-up requests while the drafts are being written
  and scored, and cancel the ones not needed; which thought is kept depends on its request
  index, never on which call finished first. `auto` turns it on when small and large run on
  different devices or endpoints (on one device the two models would only compete).
- `controller`: measure each model's call cost and the acceptance rate as the search runs and
  send an expansion to the large model alone when speculation is predicted to lose.
- `probe_every`: with `missing`, the large model may go unasked for long; after that many
  speculative expansions without a large thought, one large thought per node is requested
  (and kept as an ordinary child) so beta keeps tracking the large model's quality.

The controller's statistics are a plain dict inside the threshold state, so they checkpoint
and, with a `ThresholdStore`, carry over between problems.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import Field

from langgraph_specsearch.options import Option, OptionsModel

Pipeline = Literal["per_node", "lockstep"]
Regenerate = Literal["missing", "all"]
Toggle = Literal["auto", "on", "off"]

#: Weight of the newest observation in the controller's moving averages.
EMA_WEIGHT = 0.2


class SpeculationConfig(OptionsModel):
    """Scheduling policies of the SpecSearch expander (defaults: the fast ones)."""

    pipeline: Pipeline = "per_node"
    """per_node: each frontier node runs draft, score, decide, make-up on its own;
    lockstep: all nodes go through each phase together (the paper)."""
    regenerate: Regenerate = "missing"
    """missing: the large model makes up the shortfall below the children the template can
    use; all: it replaces every rejected draft (the paper)."""
    drafts: Annotated[int | None, Field(ge=1)] = None
    """Drafts per node (default: twice the children the template asks for when regenerating
    what is missing, as many when regenerating all)."""
    concurrent: Toggle = "auto"
    """Start the large model's make-up requests while drafting (auto: when small and large
    run on different devices or endpoints)."""
    controller: Literal["on", "off"] = "on"
    """on: send an expansion to the large model alone when the measured costs say
    speculation would lose; off: always speculate once beta exists."""
    explore_every: Annotated[int, Field(ge=1), Option(when={"controller": ("on",)})] = 16
    """While the controller prefers the large model, speculate about once in this many
    expansions (times the predicted loss ratio) to keep its estimates fresh."""
    probe_every: Annotated[int, Field(ge=0), Option(when={"regenerate": ("missing",)})] = 8
    """After this many speculative expansions without a large thought, ask the large model
    for one thought per node so beta keeps tracking it (0: never)."""
    min_cost_s: Annotated[float, Field(ge=0.0), Option(when={"controller": ("on",)})] = 0.005
    """The controller leaves alone expansions predicted to cost less than this many seconds
    either way (nothing to save; timings that small are noise)."""

    def drafts_for(self, n: int) -> int:
        """Drafts per node when the template asks for `n` children."""
        if self.drafts is not None:
            return self.drafts
        return 2 * n if self.regenerate == "missing" else n

    @classmethod
    def paper(cls) -> SpeculationConfig:
        """The paper's schedule: lock-step phases, every rejected draft regenerated."""
        return cls(pipeline="lockstep", regenerate="all", concurrent="off", controller="off")


def device_of(backend: Any) -> str:
    """Where a backend runs: its `device_key`, else an endpoint's `url`, else the local host."""
    key = getattr(backend, "device_key", None) or getattr(backend, "url", None)
    return str(key or "local")


def is_local(backend: Any) -> bool:
    """Whether a backend runs in this process (and so batches only what it is handed at once)."""
    return device_of(backend) == "local" or device_of(backend).startswith("local:")


def use_concurrency(config: SpeculationConfig, small: Any, large: Any) -> bool:
    """Whether the large model's make-up requests start while drafting."""
    if config.concurrent == "auto":
        return device_of(small) != device_of(large)
    return config.concurrent == "on"


# -- the controller's statistics (plain data) --------------------------------------------------


def empty_stats() -> dict[str, Any]:
    """No measurement yet."""
    return {}


def _ema(old: float | None, new: float) -> float:
    return new if old is None else (1 - EMA_WEIGHT) * old + EMA_WEIGHT * new


def record(stats: Mapping[str, Any], report: Mapping[str, Any]) -> dict[str, Any]:
    """Fold one node pipeline's report into the statistics.

    A report holds the seconds of each model call it made (`small_s`, `prm_s`, `large_s`), the
    number of sequences in each (`small_n`, `large_n`), the drafts judged and accepted.
    """
    out = dict(stats)
    for key in ("small", "prm", "large"):
        seconds = report.get(f"{key}_s")
        if seconds is not None:
            out[f"{key}_s"] = _ema(out.get(f"{key}_s"), float(seconds))
    if report.get("large_makeup_s") is not None:
        out["makeup_s"] = _ema(out.get("makeup_s"), float(report["large_makeup_s"]))
    judged = int(report.get("judged", 0))
    if judged:
        rate = int(report.get("accepted", 0)) / judged
        out["accept"] = _ema(out.get("accept"), rate)
    return out


def shortfall_probability(accept: float, drafts: int, need: int) -> float:
    """P(fewer than `need` of `drafts` independent drafts pass), each with probability `accept`."""
    if need <= 0:
        return 0.0
    if need > drafts:
        return 1.0
    return sum(math.comb(drafts, k) * accept**k * (1 - accept) ** (drafts - k) for k in range(need))


def predicted_costs(
    stats: Mapping[str, Any], *, drafts: int, need: int, nodes: int, concurrent: bool
) -> tuple[float, float] | None:
    """(speculative, large-only) expected seconds of one expansion, or None before data.

    Large-only: one large call and one PRM call. Speculative: per node, a draft call and a PRM
    call, then with probability p (fewer than `need` drafts pass) a large make-up call and a
    PRM call; the expansion waits for its slowest node, so the make-up cost is paid with
    probability 1 - (1 - p)^nodes. With `concurrent`, the make-up call started with the drafts
    and only what outlasts drafting and scoring is paid.
    """
    needed = ("small_s", "prm_s", "large_s", "accept")
    if any(stats.get(k) is None for k in needed):
        return None
    small, prm, large = float(stats["small_s"]), float(stats["prm_s"]), float(stats["large_s"])
    makeup = float(stats.get("makeup_s") or large)
    p_node = shortfall_probability(float(stats["accept"]), drafts, need)
    p_any = 1 - (1 - p_node) ** max(nodes, 1)
    head = small + prm
    tail = max(head, makeup) + prm if concurrent else head + makeup + prm
    speculative = (1 - p_any) * head + p_any * tail
    return speculative, large + prm


def decide(
    stats: Mapping[str, Any],
    config: SpeculationConfig,
    *,
    drafts: int,
    need: int,
    nodes: int,
    concurrent: bool,
    expansion: int,
) -> str:
    """`speculate`, `large` (predicted to lose) or `explore` (speculate to refresh estimates)."""
    if config.controller == "off":
        return "speculate"
    costs = predicted_costs(stats, drafts=drafts, need=need, nodes=nodes, concurrent=concurrent)
    if costs is None or costs[0] <= costs[1] or costs[1] < config.min_cost_s:
        return "speculate"
    # the bigger the predicted loss, the rarer the exploration that pays it
    patience = config.explore_every * max(1.0, costs[0] / costs[1])
    fallbacks = int(stats.get("fallbacks_in_row", 0))
    return "explore" if fallbacks + 1 >= patience else "large"


def note_decision(stats: Mapping[str, Any], decision: str) -> dict[str, Any]:
    """Count consecutive fallbacks (exploration resets the count)."""
    out = dict(stats)
    out["fallbacks_in_row"] = int(out.get("fallbacks_in_row", 0)) + 1 if decision == "large" else 0
    return out
