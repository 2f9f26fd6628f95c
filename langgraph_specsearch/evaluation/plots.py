"""Matplotlib figures of a bench run (PNG files beside the results; extra `plot`)."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

PLOTS = (
    "beta_per_step.png",
    "quality_per_step.png",
    "acceptance_per_step.png",
    "latency_breakdown.png",
    "accuracy_vs_latency.png",
)


def _pyplot() -> Any:
    """matplotlib's pyplot on the file-only Agg backend (ImportError names the extra)."""
    try:
        import matplotlib
    except ImportError as exc:
        raise ImportError(
            "plots need matplotlib: pip install 'langgraph-specsearch[plot]'"
        ) from exc
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _by_step(records: list[dict[str, Any]], method: str, key: str) -> dict[int, list[float]]:
    """Per step, the values of `key` in the method's per-step counts."""
    out: dict[int, list[float]] = defaultdict(list)
    for r in records:
        if r["method"] == method:
            for s in r["steps"]:
                if s.get(key) is not None:
                    out[s["step"]].append(float(s[key]))
    return out


def _mean_line(ax: Any, data: dict[int, list[float]], label: str, style: str = "-o") -> None:
    steps = sorted(k for k in data if data[k])
    if steps:
        ax.plot(steps, [sum(data[k]) / len(data[k]) for k in steps], style, label=label)
    _integer_steps(ax)


def _integer_steps(ax: Any) -> None:
    """Steps are whole numbers on the x axis."""
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def plot_beta(records: list[dict[str, Any]], methods: list[str], path: Path) -> None:
    """Beta used at each step and the large model's mean PRM score there."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for m in methods:
        beta: dict[int, list[float]] = defaultdict(list)
        large: dict[int, list[float]] = defaultdict(list)
        for r in records:
            if r["method"] != m:
                continue
            for p in r["threshold_trace"]:
                if p.get("beta") is not None:
                    beta[p["step"]].append(p["beta"])
                large[p["step"]].extend(p.get("large_scores") or [])
        if beta:
            _mean_line(ax, beta, f"{m}: beta", "-o")
        if large and m != "sps":
            _mean_line(ax, large, f"{m}: large mean score", "--s")
    ax.set(xlabel="step", ylabel="PRM score", title="Threshold and large-model score per step")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_quality(records: list[dict[str, Any]], methods: list[str], path: Path) -> None:
    """Mean PRM score of small drafts and of large thoughts per step."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for m in methods:
        _mean_line(ax, _by_step(records, m, "small_score"), f"{m}: small", "-o")
        _mean_line(ax, _by_step(records, m, "large_score"), f"{m}: large", "--s")
    ax.set(xlabel="step", ylabel="mean PRM score", title="Thought quality per step")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_acceptance(records: list[dict[str, Any]], methods: list[str], path: Path) -> None:
    """Share of small drafts accepted, per step."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for m in methods:
        drafted = _by_step(records, m, "drafted")
        accepted = _by_step(records, m, "accepted")
        steps = [k for k in sorted(drafted) if sum(drafted[k])]
        if steps:
            rates = [sum(accepted[k]) / sum(drafted[k]) for k in steps]
            ax.plot(steps, rates, "-o", label=m)
    _integer_steps(ax)
    ax.set(xlabel="step", ylabel="accepted / drafted", ylim=(-0.05, 1.05))
    ax.set_title("Acceptance per step")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_latency(summary: dict[str, Any], path: Path) -> None:
    """Stacked mean seconds per problem: small, large, PRM, other."""
    plt = _pyplot()
    rows = {m: r for m, r in summary["methods"].items() if r.get("time_s")}
    fig, ax = plt.subplots(figsize=(6, 4))
    bottom = [0.0] * len(rows)
    for part in ("small", "large", "prm", "other"):
        values = [r["time_s"][part] for r in rows.values()]
        ax.bar(list(rows), values, bottom=bottom, label=part)
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    ax.set(ylabel="seconds per problem", title="Latency breakdown")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_accuracy_latency(summary: dict[str, Any], path: Path) -> None:
    """Accuracy against latency per method, with their 95 % bootstrap intervals."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for m, r in summary["methods"].items():
        if r["accuracy"] is None:
            continue
        x, y = r["latency_s"], 100 * r["accuracy"]
        xci = r.get("latency_ci") or [x, x]
        yci = [100 * v for v in (r.get("accuracy_ci") or [r["accuracy"]] * 2)]
        ax.errorbar(
            [x], [y], xerr=[[x - xci[0]], [xci[1] - x]], yerr=[[y - yci[0]], [yci[1] - y]],
            fmt="o", capsize=3, label=m,
        )  # fmt: skip
    ax.set(xlabel="latency (s/problem)", ylabel="accuracy (%)", title="Accuracy vs latency")
    ax.set_ylim(-5, 105)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_plots(
    records: list[dict[str, Any]], summary: dict[str, Any], methods: list[str], out: Path
) -> list[Path]:
    """Write every figure into `out`; returns their paths."""
    paths = [out / name for name in PLOTS]
    plot_beta(records, methods, paths[0])
    plot_quality(records, methods, paths[1])
    plot_acceptance(records, methods, paths[2])
    plot_latency(summary, paths[3])
    plot_accuracy_latency(summary, paths[4])
    return paths
