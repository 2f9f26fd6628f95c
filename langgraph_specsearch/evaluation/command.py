"""`specsearch bench`: the paper's table (accuracy, latency, speed-ups) for any models and data."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Callable, Collection
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from langgraph_specsearch.answers import is_correct
from langgraph_specsearch.api import SearchConfig
from langgraph_specsearch.cli_options import config_error, with_search_options
from langgraph_specsearch.evaluation.datasets import Problem, load_problems, warmup_problem
from langgraph_specsearch.evaluation.methods import method_config, parse_methods
from langgraph_specsearch.evaluation.records import make_record
from langgraph_specsearch.evaluation.runner import Run, Runner, one_engine
from langgraph_specsearch.evaluation.summary import markdown_table, summarize, table_rows
from langgraph_specsearch.options import (
    LENIENT,
    condition_value,
    flag,
    flat_index,
    ignored_options,
    updated,
)

err = Console(stderr=True, highlight=False)
RESULTS, CONFIG, SUMMARY_JSON, SUMMARY_MD = (
    "results.jsonl",
    "config.json",
    "summary.json",
    "summary.md",
)


class BenchError(ValueError):
    """Bad input or state of a bench run: one line, exit 2."""


def package_version() -> str:
    """The installed package's version."""
    try:
        return version("langgraph-specsearch")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "unknown"


def read_records(path: Path) -> list[dict[str, Any]]:
    """The records of an earlier (possibly interrupted) run; a torn last line is dropped."""
    if not path.exists():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # the line being written when the run was killed
    return records


def run_identity(
    dataset: str, split: str, problems: list[Problem], methods: list[str], repeats: int,
    configs: dict[str, SearchConfig],
) -> dict[str, Any]:  # fmt: skip
    """What a resumed run must share with the run it continues."""
    volatile = {"threshold_store", "small_url", "large_url", "prm_url", "timeout", "retries"}
    return {
        "dataset": dataset,
        "split": split,
        "problems": [p.id for p in problems],
        "methods": methods,
        "repeats": repeats,
        "configs": {
            m: {k: v for k, v in c.model_dump(mode="json").items() if k not in volatile}
            for m, c in configs.items()
        },
    }


def check_resume(out: Path, identity: dict[str, Any], resume: bool) -> list[dict[str, Any]]:
    """Records to keep: none for a fresh run (refusing to overwrite one), the old ones on resume."""
    results = out / RESULTS
    if not resume:
        if results.exists() and results.stat().st_size:
            raise BenchError(f"{out} already holds results: pass --resume or another --out")
        return []
    config = out / CONFIG
    if not config.exists():
        raise BenchError(f"--resume: {out} holds no {CONFIG} of an earlier run")
    before = json.loads(config.read_text(encoding="utf-8")).get("identity", {})
    for key, value in identity.items():
        if before.get(key) != value:
            raise BenchError(f"--resume: the run in {out} had another {key!r}; use another --out")
    records = read_records(results)
    # rewrite without the torn last line an interrupted run may have left
    results.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return records


class RejectRate:
    """SpecSearch's rejection rate so far in the run (for `random-rejection`)."""

    def __init__(self, default: float, records: list[dict[str, Any]]) -> None:
        self.default = default
        self.drafts = sum(r["drafts"] for r in records if r["method"] == "specsearch")
        self.rejected = sum(r["rejected"] for r in records if r["method"] == "specsearch")

    def add(self, record: dict[str, Any]) -> None:
        """Count a finished SpecSearch run."""
        if record["method"] == "specsearch":
            self.drafts += record["drafts"]
            self.rejected += record["rejected"]

    @property
    def rate(self) -> float:
        """Rejected / drafted, or the default before any draft."""
        return self.rejected / self.drafts if self.drafts else self.default


def print_table(summary: dict[str, Any], console: Console) -> None:
    """The paper-shaped table."""
    header, cells = table_rows(summary)
    table = Table(title=f"{summary['problems']} problems, {summary['runs_per_method']} runs each")
    for i, name in enumerate(header):
        table.add_column(name, justify="left" if i == 0 else "right")
    for row in cells:
        table.add_row(*row)
    console.print(table)


def refuse_ignored(
    configs: dict[str, SearchConfig], base: SearchConfig, given: Collection[str]
) -> None:
    """BenchError for an option given on the command line that no method uses: every method
    ignores it, or its preset sets the option to something else (e.g. `--regenerate missing`
    with only `specsearch-paper`)."""
    index = flat_index(SearchConfig)
    for name in sorted(given):
        ignored = []
        overridden = []
        for method, config in configs.items():
            problem = next(
                (p for p in ignored_options(config, given) if p["option"] == flag(name)), None
            )
            if problem is not None:
                ignored.append(problem)
            elif condition_value(config, ".".join(index[name].path)) != condition_value(
                base, ".".join(index[name].path)
            ):
                overridden.append(method)
        if len(ignored) + len(overridden) < len(configs):
            continue
        if overridden:
            raise BenchError(
                f"{flag(name)} is set otherwise by the presets of {', '.join(overridden)}"
                + (f" and ignored by the other methods ({ignored[0]['cli']})" if ignored else "")
            )
        raise BenchError(f"{ignored[0]['cli']}, and no method in --methods runs that way")


@with_search_options(exclude=("method", "threshold_store"))  # stores: per method in --out
def bench(
    dataset: Annotated[str, typer.Option(help="gsm8k | math500 | a JSONL file.")] = "gsm8k",
    split: Annotated[str, typer.Option(help="Dataset split (the shipped sets: test).")] = "test",
    limit: Annotated[int | None, typer.Option(help="Keep the first N problems.")] = None,
    sample: Annotated[int | None, typer.Option(help="Draw N problems at random (--seed).")] = None,
    methods: Annotated[
        str,
        typer.Option(
            help="Comma-separated: ar, sps, specsearch, fixed-threshold, random-rejection,"
            " accept-all, large-only, beta-per-problem, beta-carried, regenerate-all,"
            " regenerate-missing, specsearch-paper."
        ),
    ] = "ar,sps,specsearch",
    concurrency: Annotated[
        int, typer.Option(help="Problems at once against endpoints (local models: 1).")
    ] = 1,
    repeats: Annotated[int, typer.Option(help="Runs per problem and method (seeds S, S+1..).")] = 1,
    out: Annotated[
        str | None, typer.Option(help="Output folder [default: specsearch-bench/START-TIME].")
    ] = None,
    resume: Annotated[
        bool, typer.Option(help="Continue the run in --out, skipping done runs.")
    ] = False,
    warmup: Annotated[
        bool, typer.Option(help="Solve one unmeasured problem per method first.")
    ] = True,
    plots: Annotated[bool, typer.Option(help="Write the PNG figures (extra 'plot').")] = True,
    *,
    options: dict[str, Any],
) -> None:
    """Run methods side by side on a dataset and print the paper's table (accuracy, latency,
    speed-up vs AR and vs SpS, with bootstrap CIs); per-problem JSONL, config and plots in --out.
    """
    started = time.perf_counter()
    try:
        if resume and out is None:
            raise BenchError("--resume needs --out (the folder of the run to continue)")
        if repeats < 1:
            raise BenchError("--repeats must be >= 1")
        if concurrency < 1:
            raise BenchError("--concurrency must be >= 1")
        names = parse_methods(methods)
        try:
            base = SearchConfig.model_validate(options, context={LENIENT: True})
        except ValidationError as exc:
            raise BenchError(config_error(exc)) from None
        seed = base.generation.seed or 0
        endpoints = bool(base.small_url or base.large_url)
        if concurrency > 1 and not endpoints:
            err.print("[dim]--concurrency: local models run one problem at a time[/]")
            concurrency = 1
        problems = load_problems(dataset, split=split, limit=limit, sample=sample, seed=seed)
        folder = Path(out) if out else Path("specsearch-bench") / time.strftime("%Y%m%d-%H%M%S")
        store_dir = folder / "thresholds"
        configs = {m: method_config(m, base, store_dir=store_dir) for m in names}
        refuse_ignored(configs, base, set(options))
        configs, engine_note = one_engine(configs)
        identity = run_identity(dataset, split, problems, names, repeats, configs)
        old = check_resume(folder, identity, resume)
    except (BenchError, ValueError) as exc:
        err.print(f"[bold red]error:[/] {escape(str(exc).splitlines()[0])}", soft_wrap=True)
        raise typer.Exit(2) from None

    if engine_note:
        err.print(f"[dim]{escape(engine_note)}[/]")
    folder.mkdir(parents=True, exist_ok=True)
    store_dir.mkdir(exist_ok=True)
    (folder / CONFIG).write_text(
        json.dumps(
            {
                "package_version": package_version(),
                "command": sys.argv,
                "identity": identity,
                "concurrency": concurrency,
                "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            },
            indent=1,
        ),
        encoding="utf-8",
    )
    done = {(r["problem_id"], r["method"], r["repeat"]) for r in old}
    rate = RejectRate(base.threshold.reject_rate, old)

    def config_for(method: str, repeat: int) -> SearchConfig:
        config = configs[method]
        update: dict[str, Any] = {"seed": seed + repeat}
        if method == "random-rejection":
            update["reject_rate"] = rate.rate
        return updated(config, **update)

    records = list(old)
    new_latency = measured_s = 0.0
    todo = len(problems) * repeats * len(names) - len(done)
    runner = Runner(names, config_for, log=lambda m: err.print(f"[dim]{escape(m)}[/]"))
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[accuracy]}"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=err,
    )

    tally = {m: [0, 0] for m in names}  # correct, runs
    finished: dict[tuple[str, int], set[str]] = {}
    for r in records:
        tally[r["method"]][0] += bool(r["correct"])
        tally[r["method"]][1] += 1
        finished.setdefault((r["problem_id"], r["repeat"]), set()).add(r["method"])

    def running_accuracy() -> str:
        return " · ".join(f"{m} {c}/{n}" for m, (c, n) in tally.items() if n)

    with (folder / RESULTS).open("a", encoding="utf-8") as sink:
        task = progress.add_task("problems", total=todo, accuracy=running_accuracy())

        def on_run(run: Run) -> None:
            nonlocal new_latency
            record = make_record(run)
            sink.write(json.dumps(record) + "\n")
            sink.flush()
            records.append(record)
            rate.add(record)
            new_latency += run.latency_s
            tally[run.method][0] += bool(record["correct"])
            tally[run.method][1] += 1
            finished.setdefault((run.problem.id, run.repeat), set()).add(run.method)
            solved = sum(len(done) == len(names) for done in finished.values())
            progress.update(
                task,
                advance=1,
                accuracy=running_accuracy(),
                description=f"problems {solved}/{len(problems) * repeats}",
            )

        async def main() -> None:
            await runner.load()
            is_correct("1", "1")  # math-verify's first call imports sympy: not in the timing
            if warmup and todo:
                await runner.warm_up(warmup_problem(dataset, problems, split=split))
            nonlocal measured_s
            t0 = time.perf_counter()
            with progress:
                await runner.run(
                    problems,
                    repeats=repeats,
                    concurrency=concurrency,
                    skip=lambda pid, m, rep: (pid, m, rep) in done,
                    on_run=on_run,
                )
            measured_s = time.perf_counter() - t0

        try:
            asyncio.run(main())
        except KeyboardInterrupt:
            err.print(
                "[bold red]error:[/] interrupted"
                f" (continue: same command with --resume --out {folder})"
            )
            raise typer.Exit(130) from None
        except ValueError as exc:
            err.print(f"[bold red]error:[/] {escape(str(exc).splitlines()[0])}", soft_wrap=True)
            raise typer.Exit(2) from None
        except Exception as exc:  # a model call failed for good
            line = str(exc).splitlines()[0] if str(exc) else ""
            err.print(
                f"[bold red]error:[/] {type(exc).__name__}: {escape(line)}"
                f" (continue: same command with --resume --out {folder})",
                soft_wrap=True,
            )
            raise typer.Exit(1) from None

    summary = summarize(records, names, seed=seed)
    overhead = max(measured_s - new_latency, 0.0)
    summary["run"] = {
        "wall_s": time.perf_counter() - started,
        "load_s": runner.load_s,
        "warmup_s": runner.warmup_s,
        "measured_s": measured_s,
        "searches_s": new_latency,
        "bench_overhead_s": overhead,
        "bench_overhead_share": overhead / measured_s if measured_s > 0 else None,
    }
    report(summary, records, names, folder, plots)


def report(
    summary: dict[str, Any],
    records: list[dict[str, Any]],
    names: list[str],
    folder: Path,
    plots: bool,
    console: Callable[[], Console] = lambda: Console(highlight=False),
) -> None:
    """Write summary.json / summary.md (and the plots); print the table."""
    (folder / SUMMARY_JSON).write_text(json.dumps(summary, indent=1), encoding="utf-8")
    (folder / SUMMARY_MD).write_text(markdown_table(summary), encoding="utf-8")
    out = console()
    print_table(summary, out)
    run = summary.get("run", {})
    if run.get("bench_overhead_share") is not None:
        out.print(
            f"bench overhead {run['bench_overhead_s']:.2f} s"
            f" ({100 * run['bench_overhead_share']:.2f} % of the measured phase's"
            f" {run['measured_s']:.1f} s); models loaded in {run['load_s']:.1f} s, warm-up"
            f" {run['warmup_s']:.1f} s (not measured); wall {run['wall_s']:.1f} s"
        )
    for name, row in summary["methods"].items():
        none = row["answer_from"]["none"]
        if none:
            out.print(
                f"[dim]{name}: {none} run(s) ended without an answer (see no_answer_reason)[/]"
            )
    if plots:
        try:
            from langgraph_specsearch.evaluation.plots import write_plots

            written = write_plots(records, summary, names, folder)
            out.print(f"plots: {', '.join(p.name for p in written)}")
        except ImportError as exc:
            out.print(f"[dim]no plots: {escape(str(exc))}[/]")
    out.print(f"results in {folder}/ ({RESULTS}, {CONFIG}, {SUMMARY_JSON}, {SUMMARY_MD})")
