"""The paper's table from per-problem records: accuracy, latency, speed-ups, bootstrap CIs.

Only problems every method finished are compared (a resumed or interrupted run may hold
more for some methods). Latency is the mean wall time per problem; a speed-up is the ratio of
two methods' mean latencies over the same problems, so the table's speed-ups are the ratios
of its latencies. Confidence intervals (95 %, percentile bootstrap) resample problems, all
repeats of a problem together, and recompute the statistic on each resample.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np

BOOTSTRAP = 2000
LEVEL = 0.95


def _interval(samples: np.ndarray) -> list[float]:
    """The percentile interval of bootstrap samples."""
    tail = (1 - LEVEL) / 2 * 100
    low, high = np.nanpercentile(samples, [tail, 100 - tail])
    return [float(low), float(high)]


def paired(records: list[dict[str, Any]], methods: list[str]) -> list[dict[str, Any]]:
    """Records of the (problem, repeat) pairs every method finished."""
    have: dict[tuple[str, int], set[str]] = defaultdict(set)
    for r in records:
        have[(r["problem_id"], r["repeat"])].add(r["method"])
    full = {k for k, done in have.items() if set(methods) <= done}
    return [r for r in records if (r["problem_id"], r["repeat"]) in full and r["method"] in methods]


def summarize(
    records: list[dict[str, Any]], methods: list[str], *, seed: int = 0
) -> dict[str, Any]:
    """Per method: accuracy, latency, time split, tokens, acceptance, speed-ups with CIs."""
    rows = paired(records, methods)
    units = sorted({r["problem_id"] for r in rows})
    index = {u: i for i, u in enumerate(units)}
    n_units = len(units)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n_units, size=(BOOTSTRAP, n_units)) if n_units else None

    per: dict[str, dict[str, np.ndarray]] = {}
    for m in methods:
        arrays = {k: np.zeros(n_units) for k in ("correct", "runs", "latency")}
        for r in rows:
            if r["method"] == m:
                i = index[r["problem_id"]]
                arrays["correct"][i] += bool(r["correct"])
                arrays["runs"][i] += 1
                arrays["latency"][i] += r["latency_s"]
        per[m] = arrays

    out: dict[str, Any] = {
        "problems": n_units,
        "runs_per_method": len(rows) // max(len(methods), 1),
    }
    table: dict[str, Any] = {}
    for m in methods:
        a = per[m]
        mine = [r for r in rows if r["method"] == m]
        runs = a["runs"].sum()
        row: dict[str, Any] = {
            "runs": int(runs),
            "correct": int(a["correct"].sum()),
            "accuracy": float(a["correct"].sum() / runs) if runs else None,
            "latency_s": float(a["latency"].sum() / runs) if runs else None,
            "total_latency_s": float(a["latency"].sum()),
            "answered": sum(r["answer"] is not None for r in mine),
            "answer_from": {
                k: sum(r.get("answer_from") == k for r in mine)
                for k in ("search", "final_step", "completion", "none")
            },
        }
        if runs:
            row["time_s"] = {
                k: float(np.mean([r["time_s"][k] for r in mine]))
                for k in ("small", "large", "prm", "other")
            }
            row["tokens"] = {
                k: float(np.mean([r["tokens"][k] for r in mine])) for k in ("small", "large")
            }
            drafts = sum(r["drafts"] for r in mine)
            row["acceptance"] = sum(r["accepted"] for r in mine) / drafts if drafts else None
        if draws is not None and runs:
            acc = a["correct"][draws].sum(1) / a["runs"][draws].sum(1)
            lat = a["latency"][draws].sum(1) / a["runs"][draws].sum(1)
            row["accuracy_ci"] = _interval(acc)
            row["latency_ci"] = _interval(lat)
        for base in ("ar", "sps"):
            key = f"speedup_vs_{base}"
            if base not in per or not runs or not per[base]["runs"].sum():
                row[key] = None
                continue
            b = per[base]
            row[key] = (
                float(b["latency"].sum() / a["latency"].sum()) if a["latency"].sum() else None
            )
            if draws is not None:
                with np.errstate(divide="ignore", invalid="ignore"):
                    ratio = b["latency"][draws].sum(1) / a["latency"][draws].sum(1)
                row[f"{key}_ci"] = _interval(ratio)
        table[m] = row
    out["methods"] = table
    return out


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.1f}"


def _ci(values: list[float] | None, scale: float = 1.0, digits: int = 2) -> str:
    if not values:
        return ""
    return f" [{values[0] * scale:.{digits}f}, {values[1] * scale:.{digits}f}]"


def table_rows(summary: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Header and cells of the paper-shaped table (strings, for rich and markdown)."""
    header = [
        "Method",
        "Accuracy (%) [95% CI]",
        "Latency (s/problem)",
        "Speed-up vs AR [95% CI]",
        "Speed-up vs SpS [95% CI]",
        "Acceptance",
    ]
    cells = []
    for name, row in summary["methods"].items():
        accuracy = f"{_pct(row['accuracy'])}{_ci(row.get('accuracy_ci'), 100, 1)}"
        latency = "—" if row["latency_s"] is None else f"{row['latency_s']:.3f}"
        speedups = []
        for base in ("ar", "sps"):
            value = row.get(f"speedup_vs_{base}")
            text = "—" if value is None else f"{value:.2f}x{_ci(row.get(f'speedup_vs_{base}_ci'))}"
            speedups.append(text)
        acceptance = row.get("acceptance")
        cells.append(
            [
                name,
                accuracy,
                latency,
                *speedups,
                "—" if acceptance is None else f"{100 * acceptance:.0f}%",
            ]
        )
    return header, cells


def markdown_table(summary: dict[str, Any]) -> str:
    """The table as GitHub markdown."""
    header, cells = table_rows(summary)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in cells]
    return "\n".join(lines) + "\n"
