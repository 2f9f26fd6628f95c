"""`specsearch` command line: `solve` runs a search, `serve` a TGI-compatible server."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Callable
from typing import Annotated, Any, NoReturn

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape

from langgraph_specsearch.api import SearchConfig, asolve
from langgraph_specsearch.cli_options import config_error, with_search_options
from langgraph_specsearch.options import GIVEN
from langgraph_specsearch.threshold import ThresholdStore
from langgraph_specsearch.types import SearchResult

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
    help="Speculative search (SpecSearch) for tree-search LLM reasoning, as LangGraph graphs.",
)
err = Console(stderr=True, highlight=False)


@app.callback()
def _root() -> None:
    """Speculative search (SpecSearch) for tree-search LLM reasoning, as LangGraph graphs."""


def fail(message: str, code: int = 2) -> NoReturn:
    """Print a one-line error and exit."""
    err.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True)
    raise typer.Exit(code)


def _progress(node: str, update: dict[str, Any]) -> None:
    """One stderr line per model call and per finished expansion."""
    name = node.rsplit("/", 1)[-1]
    # a node pipeline's own output repeats the usage its nodes already reported
    usage = {} if name in ("pipeline", "expand") else update.get("usage") or {}
    for model in ("small", "large", "prm"):
        if "/" in node and model in usage:
            u = usage[model]
            what = (
                f"scored {int(u.get('scored', 0))}"
                if model == "prm"
                else (f"{int(u.get('generated_tokens', 0))} tokens")
            )
            err.print(f"[dim]  {name:<10} {model:<5} {what}, {u.get('time_s', 0.0):.1f} s[/]")
    if name == "merge" and update.get("trace"):
        point = update["trace"][-1]
        beta = "—" if point["beta_next"] is None else f"{point['beta_next']:.3f}"
        err.print(
            f"[dim]step {point['step']}: kept {point['accepted']}, rejected {point['rejected']},"
            f" beta -> {beta}[/]"
        )


def _event_printer(as_json: bool) -> Callable[[dict[str, Any]], None]:
    """Print each search event on its own stdout line as it arrives (`--stream`)."""
    import json

    from langgraph_specsearch.events import describe

    def show(event: dict[str, Any]) -> None:
        sys.stdout.write((json.dumps(event) if as_json else describe(event)) + "\n")
        sys.stdout.flush()

    return show


def print_human(result: SearchResult) -> None:
    """The answer, the path with sources and scores, and where the time went."""
    out = Console(highlight=False)
    out.print(f"[bold]Answer:[/] {escape(str(result.answer))}")
    if result.answer is None and result.stats.no_answer_reason:
        out.print(f"[dim]  ({escape(result.stats.no_answer_reason)})[/]")
    elif result.stats.answer_from in ("final_step", "completion"):
        how = "the last step" if result.stats.answer_from == "final_step" else "a completion step"
        out.print(f"[dim]  (stated by {how}, generated to the end of the solution)[/]")
    out.print(f"[bold]Path[/] ({result.method}, {result.search}):")
    for step in result.path:
        score = "  —  " if step.score is None else f"{step.score:.3f}"
        text = escape(step.text.replace("\n", " "))
        out.print(f"  {step.step}. [cyan]{step.source:5}[/] {score}  {text}")
    s = result.stats
    if s.drafts:
        out.print(f"[bold]Acceptance:[/] {s.accepted}/{s.drafts} drafts ({s.acceptance_rate:.0%})")
    if result.method == "specsearch":
        out.print(
            f"[bold]Expansions:[/] {s.expansions} ({s.speculative_expansions} drafted by the small"
            f" model, {s.warmup_expansions} warm-up, {s.controller_fallbacks} sent to the large"
            f" model by the controller, {s.probes} probes)"
        )
    out.print(
        f"[bold]Tokens:[/] small {s.small.generated_tokens}, large {s.large.generated_tokens}"
    )
    out.print(
        f"[bold]Time:[/] {s.wall_s:.1f} s (small {s.small.time_s:.1f} s,"
        f" large {s.large.time_s:.1f} s, PRM {s.prm.time_s:.1f} s, other {s.other_s:.1f} s)"
    )


def with_cli_store(options: dict[str, Any]) -> dict[str, Any]:
    """The CLI's threshold store: a JSON file in the cache, so beta carries across runs (when
    SpecSearch runs with `--carry-threshold` and no `--threshold-store` is given)."""
    if (
        options.get("method", "specsearch") != "specsearch"
        or not options.get("carry_threshold", True)
        or options.get("threshold_store")
    ):
        return options
    from langgraph_specsearch.models import cache_dir

    try:
        cache_dir().mkdir(parents=True, exist_ok=True)
    except OSError:
        return options  # the in-memory store: beta carries within this run only
    return {**options, "threshold_store": str(cache_dir() / "thresholds.json")}


@app.command()
@with_search_options()
def solve(
    question: Annotated[str, typer.Argument(help="The problem to solve.")] = "",
    checkpoint: Annotated[
        str | None,
        typer.Option(help="SQLite checkpoint file [default: checkpoints.sqlite in the cache]."),
    ] = None,
    thread_id: Annotated[
        str | None, typer.Option(help="Checkpoint thread id [default: a new one].")
    ] = None,
    resume: Annotated[
        bool, typer.Option(help="Resume --thread-id after a failure (same options).")
    ] = False,
    tree: Annotated[
        str | None, typer.Option(help="Write the explored tree as mermaid to this file.")
    ] = None,
    show_tree: Annotated[bool, typer.Option(help="Print the explored tree.")] = False,
    stream: Annotated[
        bool,
        typer.Option(help="Print search events as they happen (JSON lines with --json)."),
    ] = False,
    html: Annotated[
        str | None, typer.Option(help="Write the explored tree as a self-contained HTML page.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    quiet: Annotated[bool, typer.Option(help="No progress lines.")] = False,
    *,
    options: dict[str, Any],
) -> None:
    """Solve QUESTION with a tree search over reasoning steps.

    Options the chosen method or search would ignore are refused.
    """
    if resume and thread_id is None:
        fail("--resume needs --thread-id (printed when a search fails)")
    if not resume and not question.strip():
        fail("question must not be empty")
    try:
        config = SearchConfig.model_validate(with_cli_store(options), context={GIVEN: set(options)})
    except ValidationError as exc:
        fail(config_error(exc))
    for flag, path in (("--html", html), ("--tree", tree), ("--checkpoint", checkpoint)):
        if path:
            problem = _unwritable(path)
            if problem:
                fail(f"{flag} {path}: {problem}")
    if checkpoint is None:
        from langgraph_specsearch.models import cache_dir

        try:
            cache_dir().mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            fail(f"cache {cache_dir()}: {exc.strerror or exc} (pass --checkpoint FILE)")
        checkpoint = str(cache_dir() / "checkpoints.sqlite")
    if resume and question.strip():  # "same command + --resume": the question must be its own
        held = _checkpointed_question(checkpoint, str(thread_id))
        if held is not None and held.strip() != question.strip():
            shown = held if len(held) <= 60 else held[:57] + "..."
            fail(
                f"--resume continues thread {thread_id!r}, whose question is {shown!r}, not this"
                " one: give its question or none (or drop --resume for a new search)"
            )
    thread_id = thread_id or f"run-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    resume_hint = f" (resume: same command with --resume --thread-id {thread_id})"
    try:
        result = asyncio.run(
            asolve(
                None if resume else question,
                config,
                checkpoint=checkpoint,
                thread_id=thread_id,
                on_update=None if quiet or stream else _progress,
                on_event=_event_printer(as_json) if stream else None,
            )
        )
    except (ValueError, TypeError) as exc:  # configuration: resuming would not help
        fail(str(exc).splitlines()[0])
    except KeyboardInterrupt:
        fail(f"interrupted{resume_hint}", 130)
    except Exception as exc:  # a model call failed after retries: say so in one line
        text = str(exc).splitlines()[0] if str(exc) else ""
        hint = resume_hint if _resumable(exc) else ""
        fail(f"{type(exc).__name__}: {text}{hint}", 1)
    unwritten = []  # the result is printed even when a file cannot be written
    if html:
        from langgraph_specsearch.tree_page import write_tree_html

        try:
            write_tree_html(result, html)
        except OSError as exc:
            unwritten.append(f"{html}: {exc.strerror or exc}")
    if tree:
        from langgraph_specsearch.viz import search_tree_mermaid

        try:
            with open(tree, "w", encoding="utf-8") as fh:
                fh.write(search_tree_mermaid(result))
        except OSError as exc:
            unwritten.append(f"{tree}: {exc.strerror or exc}")
    _print_result(result, as_json=as_json, stream=stream, show_tree=show_tree)
    if unwritten:
        fail("; ".join(unwritten), 1)


def _checkpointed_question(checkpoint: str, thread_id: str) -> str | None:
    """The question of the search checkpointed as `thread_id` in `checkpoint`, None when there
    is none (a missing file or thread is left to `asolve`'s own error)."""
    if not os.path.isfile(checkpoint):
        return None
    from langgraph.checkpoint.sqlite import SqliteSaver

    with SqliteSaver.from_conn_string(checkpoint) as saver:
        saved = saver.get_tuple({"configurable": {"thread_id": thread_id}})
    question = saved.checkpoint["channel_values"].get("question") if saved else None
    return question if isinstance(question, str) else None


def _unwritable(path: str) -> str | None:
    """Why `path` cannot be written (checked before a search starts), or None."""
    target = os.path.abspath(path)
    folder = os.path.dirname(target)
    if os.path.isdir(target):
        return "is a directory"
    if not os.path.isdir(folder):
        return f"no directory {folder}"
    if os.path.exists(target):
        return None if os.access(target, os.W_OK) else "not writable"
    return None if os.access(folder, os.W_OK) else f"directory {folder} not writable"


def _resumable(exc: BaseException) -> bool:
    """Whether `--resume` can help: an endpoint that failed after its retries (it may come
    back), not one that rejected the request (4xx) nor a configuration error."""
    from langgraph_specsearch.backends.base import BackendError

    if isinstance(exc, BackendError):
        return " rejected:" not in str(exc)
    return isinstance(exc, (ConnectionError, TimeoutError, OSError))


def _print_result(result: SearchResult, *, as_json: bool, stream: bool, show_tree: bool) -> None:
    """The tree (with --show-tree) and the result, as text or JSON."""
    if show_tree:
        from langgraph_specsearch.viz import search_tree_rich

        Console(stderr=as_json).print(search_tree_rich(result))
    if as_json and stream:  # the last JSON line: the whole result
        sys.stdout.write('{"event": "result", "result": ' + result.model_dump_json() + "}\n")
    elif as_json:
        sys.stdout.write(result.model_dump_json() + "\n")
    else:
        print_human(result)


@app.command()
@with_search_options(exclude=("method", "carry_threshold"))
def calibrate(
    problems: Annotated[int, typer.Option(help="GSM8K test problems to run (shipped).")] = 3,
    *,
    options: dict[str, Any],
) -> None:
    """Fill the threshold store: run SpecSearch on a few problems so later runs start calibrated.

    Every step whose large-model thoughts are scored updates beta; the store keeps beta and the
    controller's cost measurements for this model pair and PRM, and `solve` starts from them
    (no large-only warm-up).
    """
    if problems < 1:
        fail("--problems must be >= 1")
    import json as _json
    from importlib.resources import files

    rows = files("langgraph_specsearch").joinpath("data/gsm8k_test_head50.jsonl").read_text()
    shipped = [_json.loads(line)["question"] for line in rows.splitlines() if line.strip()]
    if problems > len(shipped):
        fail(f"--problems must be <= {len(shipped)} (the shipped GSM8K problems)")
    try:
        config = SearchConfig.model_validate(with_cli_store(options), context={GIVEN: set(options)})
    except ValidationError as exc:
        fail(config_error(exc))
    questions = shipped[-problems:]

    async def run_all() -> None:
        from langgraph_specsearch.api import load_components

        components = await asyncio.to_thread(load_components, config)
        for i, question in enumerate(questions):
            result = await asolve(question, config, components=components)
            point = result.threshold_trace[-1] if result.threshold_trace else None
            beta = "—" if point is None or point.beta_next is None else f"{point.beta_next:.3f}"
            err.print(f"problem {i + 1}/{len(questions)}: beta -> {beta}")

    try:
        asyncio.run(run_all())
    except ValueError as exc:
        fail(str(exc).splitlines()[0])
    except Exception as exc:  # a model call failed after retries
        fail(f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}", 1)
    from langgraph_specsearch.api import threshold_store as _store

    entry = (_store(config) or ThresholdStore()).load() or {}
    Console(highlight=False).print(
        f"stored beta {entry.get('beta')} ({entry.get('updates')} updates) in"
        f" {config.threshold_store} for {config.store_key()}"
    )


@app.command()
def viz(
    result_file: Annotated[
        str, typer.Argument(help="A result from `solve --json` (or `--stream --json`).")
    ],
    output: Annotated[
        str, typer.Option("--output", "-o", help="HTML file to write.")
    ] = "tree.html",
) -> None:
    """Draw a search result's explored tree as one self-contained HTML page."""
    import json as _json

    from langgraph_specsearch.tree_page import write_tree_html

    try:
        with open(result_file, encoding="utf-8") as fh:
            lines = [line for line in fh.read().splitlines() if line.strip()]
        if not lines:
            fail(f"{result_file}: empty file")
        data = _json.loads(lines[-1])  # `--stream --json`: the last line holds the result
        if isinstance(data, dict) and data.get("event") == "result":
            data = data["result"]
        result = SearchResult.model_validate(data)
    except OSError as exc:
        fail(f"{result_file}: {exc.strerror or exc}")
    except ValueError as exc:  # JSON or validation error
        fail(f"{result_file}: not a search result ({str(exc).splitlines()[0]})")
    try:
        write_tree_html(result, output)
    except OSError as exc:
        fail(f"{output}: {exc.strerror or exc}")
    err.print(f"wrote {output} ({len(result.nodes)} nodes)")


def _register_serve() -> None:
    """`specsearch serve`: the TGI-compatible server (imported lazily: FastAPI, uvicorn)."""
    from langgraph_specsearch.serve import serve

    app.command("serve")(serve)


_register_serve()


def _register_prm_eval() -> None:
    """`specsearch prm-eval`: ProcessBench with any PRM."""
    from langgraph_specsearch.prm_eval import prm_eval

    app.command("prm-eval")(prm_eval)


_register_prm_eval()


def _register_bench() -> None:
    """`specsearch bench`: methods side by side on a dataset, the paper's table."""
    from langgraph_specsearch.evaluation.command import bench

    app.command("bench")(bench)


_register_bench()


def main() -> None:
    """Console-script entry point: a usage error (an unknown option, a missing value, an extra
    argument) is one `error:` line and exit 2, like every other bad input."""
    try:
        # not standalone: click's usage errors come here instead of as typer's boxed message;
        # `--help`, `typer.Exit(code)` and Ctrl-C (130) come back as an exit code
        code = app(standalone_mode=False)
    except Exception as exc:
        usage_error_exit(exc)
    sys.exit(code if isinstance(code, int) else 0)


def usage_error_exit(exc: Exception) -> NoReturn:
    """Exit for an exception out of the non-standalone app: a click error (typer vendors its
    own click, so it is recognised by its `format_message` / `exit_code`) as one line, an
    abort (EOF at a prompt) as click says it; anything else is raised again."""
    if type(exc).__name__ == "Abort":
        err.print("Aborted!")
        sys.exit(1)
    if not (hasattr(exc, "format_message") and isinstance(getattr(exc, "exit_code", None), int)):
        raise exc
    code = int(getattr(exc, "exit_code"))  # noqa: B009
    message = " ".join(str(exc.format_message()).split())
    if type(exc).__name__ == "NoArgsIsHelpError":  # no arguments: the help (rich printed it)
        if message:
            err.print(exc.format_message(), markup=False, highlight=False)
        sys.exit(code)
    ctx = getattr(exc, "ctx", None)
    where = getattr(ctx, "command_path", None)
    hint = f" (see '{where} --help')" if where else ""
    err.print(f"[bold red]error:[/] {escape(message)}{hint}", soft_wrap=True)
    sys.exit(code)


if __name__ == "__main__":
    main()
