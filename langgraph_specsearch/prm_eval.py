"""`specsearch prm-eval`: score ProcessBench with any PRM and print the benchmark's F1."""

from __future__ import annotations

import asyncio
import sys
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape

from langgraph_specsearch.cli_options import config_error, with_search_options

err = Console(stderr=True, highlight=False)


def _fail(message: str, code: int = 2) -> None:
    err.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True)
    raise typer.Exit(code)


def build_eval_prm(config: Any) -> Any:
    """The PRM of a `SearchConfig`; the built-in judge runs on `config.small` (or `prm_url`)."""
    from langgraph_specsearch.api import build_prm
    from langgraph_specsearch.prm.registry import is_model_prm

    judge = None
    if not is_model_prm(config.prm) and config.prm != "arithmetic" and not config.prm_url:
        from langgraph_specsearch.backends.transformers import TransformersBackend
        from langgraph_specsearch.models import check_model_name

        check_model_name(config.small)
        try:
            judge = TransformersBackend.load(config.small)
        except OSError as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ValueError(f"cannot load model: {first}") from exc
    return build_prm(config, judge)


PRM_OPTIONS = (
    "prm", "prm_model", "prm_url", "prm_engine", "prm_device", "prm_dtype", "prm_batch_size",
    "prm_tgi_method", "small", "protocol", "prompt_format", "api_key", "timeout", "retries",
)  # fmt: skip
"""The `SearchConfig` options that decide a PRM (`small`: the judge of the built-in ones)."""


@with_search_options(include=PRM_OPTIONS)
def prm_eval(
    dataset: Annotated[
        str, typer.Option(help="processbench-gsm8k | processbench-math | a JSON/JSONL file.")
    ] = "processbench-gsm8k",
    limit: Annotated[
        int | None, typer.Option(help="N records: the first N/2 erroneous and N/2 correct.")
    ] = None,
    threshold: Annotated[
        float, typer.Option(help="A step scored below this is predicted wrong.")
    ] = 0.5,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    quiet: Annotated[bool, typer.Option(help="No progress lines.")] = False,
    *,
    options: dict[str, Any],
) -> None:
    """ProcessBench with a PRM: predicted earliest wrong step vs the human label; F1."""
    from langgraph_specsearch.api import SearchConfig
    from langgraph_specsearch.prm.processbench import evaluate, load_records

    if limit is not None and limit < 1:
        _fail("--limit must be >= 1")
    if not 0.0 <= threshold <= 1.0:
        _fail("--threshold must be in [0, 1]")
    try:
        config = SearchConfig.model_validate(options)
    except ValidationError as exc:
        _fail(config_error(exc))
    try:
        records = load_records(dataset, limit)
        scorer = build_eval_prm(config)
    except ValueError as exc:
        _fail(str(exc).splitlines()[0])

    def progress(i: int, record: Any, scores: list[float]) -> None:
        if not quiet:
            shown = " ".join(f"{s:.2f}" for s in scores)
            err.print(f"[dim]{i + 1}/{len(records)} {record.id} label {record.label}: {shown}[/]")

    try:
        report = asyncio.run(
            evaluate(scorer, records, dataset=dataset, threshold=threshold, on_record=progress)
        )
    except ValueError as exc:
        _fail(str(exc).splitlines()[0])
    except Exception as exc:  # an endpoint failed after its retries
        _fail(f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}", 1)
    if as_json:
        sys.stdout.write(report.model_dump_json() + "\n")
        return
    out = Console(highlight=False)
    out.print(
        f"{report.dataset} with {escape(report.prm)} (threshold {report.threshold}):"
        f" n={report.n} ({report.n_erroneous} erroneous, {report.n_correct} correct)"
    )
    out.print(
        f"acc_err {report.acc_err:.1f}  acc_cor {report.acc_cor:.1f}  F1 {report.f1:.1f}"
        f"  ({report.seconds:.1f} s)"
    )
