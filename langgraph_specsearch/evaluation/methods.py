"""Method names for `specsearch bench`: the paper's baselines and ablations as SearchConfig options.

- `ar`: the large model only (`method="ar"`); `sps`: the large model with token-level
  speculative decoding (`method="sps"`); `specsearch`: SpecSearch as configured (default:
  per-node pipelines, regenerate what is missing, beta carried across problems).
- The paper's ablations: `fixed-threshold` (drafts kept iff score >= `--fixed-threshold`,
  `threshold_mode="fixed"`); `random-rejection` (drafts rejected at random at the rejection
  rate SpecSearch has had so far in the run, `--reject-rate` until it has one;
  `threshold_mode="random"`); `accept-all` (no rejection, `threshold_mode="accept_all"`);
  `large-only` (SpecSearch's schedule with every draft rejected, so every thought is the
  large model's: `threshold_mode="random"`, `reject_rate=1`).
- The project's own: `beta-per-problem` (beta from scratch per problem, with the large-only
  warm-up each time: `carry_threshold=False`) vs `beta-carried` (the default);
  `regenerate-all` (the large model replaces every rejected draft, the paper's rule) vs
  `regenerate-missing` (only the shortfall, the default); `specsearch-paper` (the paper's
  whole schedule: `SpeculationConfig.paper()` and beta per problem).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from langgraph_specsearch.api import SearchConfig
from langgraph_specsearch.options import updated
from langgraph_specsearch.speculation import SpeculationConfig

METHODS: dict[str, str] = {
    "ar": "large model only (AR)",
    "sps": "large model with token-level speculative decoding (SpS)",
    "specsearch": "SpecSearch as configured",
    "fixed-threshold": "fixed threshold",
    "random-rejection": "random rejection at SpecSearch's rate",
    "accept-all": "no rejection (every draft kept)",
    "large-only": "every draft rejected (all thoughts from the large model)",
    "beta-per-problem": "beta from scratch per problem",
    "beta-carried": "beta carried across problems",
    "regenerate-all": "regenerate every rejected draft",
    "regenerate-missing": "regenerate only the shortfall",
    "specsearch-paper": "the paper's schedule",
}


def parse_methods(text: str) -> list[str]:
    """Comma-separated method names, checked (one-line error naming the unknown one)."""
    names = [m.strip() for m in text.split(",") if m.strip()]
    if not names:
        raise ValueError("--methods: give at least one method")
    for name in names:
        if name not in METHODS:
            raise ValueError(f"--methods: unknown method {name!r} (known: {', '.join(METHODS)})")
    if len(set(names)) != len(names):
        raise ValueError("--methods: a method is named twice")
    return names


def method_config(
    name: str,
    base: SearchConfig,
    *,
    reject_rate: float | None = None,
    store_dir: str | Path | None = None,
) -> SearchConfig:
    """The SearchConfig of method `name` on top of `base` (the run's shared options).

    `reject_rate` is the rate for `random-rejection` (SpecSearch's rate so far in the run);
    None keeps `base.threshold.reject_rate`. With `store_dir`, a method that carries beta
    keeps it in `<store_dir>/<name>.json`.
    """
    updates: dict[str, Any]
    if name in ("ar", "sps"):
        updates = {"method": name}
    elif name in ("specsearch", "beta-carried", "regenerate-missing"):
        updates = {"method": "specsearch"}
        if name == "beta-carried":
            updates["carry_threshold"] = True
        if name == "regenerate-missing":
            updates["regenerate"] = "missing"
    elif name == "fixed-threshold":
        updates = {"method": "specsearch", "threshold_mode": "fixed"}
    elif name == "random-rejection":
        rate = base.threshold.reject_rate if reject_rate is None else reject_rate
        updates = {"method": "specsearch", "threshold_mode": "random", "reject_rate": rate}
    elif name == "accept-all":
        updates = {"method": "specsearch", "threshold_mode": "accept_all"}
    elif name == "large-only":
        updates = {"method": "specsearch", "threshold_mode": "random", "reject_rate": 1.0}
    elif name == "beta-per-problem":
        updates = {"method": "specsearch", "carry_threshold": False}
    elif name == "regenerate-all":
        updates = {"method": "specsearch", "regenerate": "all"}
    elif name == "specsearch-paper":
        paper = SpeculationConfig.paper()
        spec = {k: getattr(paper, k) for k in paper.model_fields_set}
        updates = {"method": "specsearch", "carry_threshold": False, **spec}
    else:
        raise ValueError(f"unknown method {name!r}")
    config = updated(base, **updates)
    if store_dir is not None and config.method == "specsearch" and config.carry_threshold:
        # each method carries its own beta (never another's), and keeps it across --resume
        config = updated(config, threshold_store=str(Path(store_dir) / f"{name}.json"))
    return config
