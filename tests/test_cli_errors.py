"""The `specsearch` entry point on bad command lines: one `error:` line and exit 2, as a user
sees it (a subprocess through `cli.main`), while help, exit codes and Ctrl-C keep theirs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from langgraph_specsearch import cli


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """`python -m langgraph_specsearch.cli ARGS` (what the `specsearch` script runs)."""
    return subprocess.run(
        [sys.executable, "-m", "langgraph_specsearch.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["solve", "Q", "--bogus"], "No such option: --bogus"),
        (["solve", "Q", "--device-map"], "'--device-map' requires an argument"),
        (["solve", "Q", "--complete=no"], "'--complete' does not take a value"),
        (["solve", "Q", "extra"], "unexpected extra argument"),
        (["solve", "Q", "--n-drafts", "abc"], "--n-drafts"),
        (["no-such-command"], "No such command 'no-such-command'"),
        (["viz"], "Missing argument"),
    ],
)
def test_usage_errors_are_one_line_exit_2(
    args: list[str], message: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setattr(sys, "argv", ["specsearch", *args])
    with pytest.raises(SystemExit) as stop:
        cli.main()
    out, errors = capsys.readouterr()
    assert stop.value.code == 2, errors
    lines = [line for line in (out + errors).splitlines() if line.strip()]
    assert len(lines) == 1, errors
    assert lines[0].startswith("error: ") and message in lines[0], lines[0]


def test_usage_error_as_the_user_sees_it() -> None:
    done = run_cli("solve", "Q", "--bogus")
    assert done.returncode == 2 and not done.stdout, done.stderr
    assert done.stderr.startswith("error: No such option: --bogus"), done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "╭" not in done.stderr


def test_help_and_exit_codes_are_kept(tmp_path: Path) -> None:
    shown = run_cli("solve", "--help")
    assert shown.returncode == 0 and "--beam-width" in shown.stdout and not shown.stderr
    bare = run_cli()  # no arguments: the help, exit 2 (typer's no_args_is_help)
    assert bare.returncode == 2 and "solve" in bare.stdout + bare.stderr
    missing = run_cli("viz", str(tmp_path / "none.json"))  # the command's own typer.Exit(2)
    assert missing.returncode == 2 and missing.stderr.startswith("error: "), missing.stderr


def test_ctrl_c_still_exits_130(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import langgraph_specsearch.tree_page as tree_page

    result = tmp_path / "r.json"
    result.write_text(
        '{"question": "q", "answer": null, "path": [], "nodes": [], "stats": {},'
        ' "threshold_trace": []}'
    )

    def interrupted(*_: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(tree_page, "write_tree_html", interrupted)
    monkeypatch.setattr(sys, "argv", ["specsearch", "viz", str(result)])
    with pytest.raises(SystemExit) as stop:
        cli.main()
    assert stop.value.code == 130


def test_calibrate_refuses_more_problems_than_shipped(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setattr(sys, "argv", ["specsearch", "calibrate", "--problems", "100"])
    with pytest.raises(SystemExit) as stop:
        cli.main()
    errors = capsys.readouterr().err
    assert stop.value.code == 2 and errors.strip() == (
        "error: --problems must be <= 50 (the shipped GSM8K problems)"
    )


def test_resume_refuses_another_question(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    import asyncio

    from test_api import CONFIG, components

    from langgraph_specsearch.api import asolve

    db = str(tmp_path / "c.sqlite")
    asyncio.run(
        asolve("How many apples?", CONFIG, components=components(), checkpoint=db, thread_id="t")
    )
    resumed: list[str | None] = []

    async def fake_asolve(question: str | None, *_: object, **__: object) -> object:
        resumed.append(question)
        raise ValueError("stop here")

    monkeypatch.setattr(cli, "asolve", fake_asolve)
    base = ["specsearch", "solve", "--resume", "--thread-id", "t", "--checkpoint", db, "--quiet"]
    monkeypatch.setattr(sys, "argv", [*base, "How many pears?"])
    with pytest.raises(SystemExit) as stop:
        cli.main()
    errors = capsys.readouterr().err
    assert stop.value.code == 2 and len(errors.strip().splitlines()) == 1, errors
    assert "'How many apples?'" in errors and "--resume" in errors
    assert resumed == []  # refused before anything ran
    for question in ("How many apples?", ""):  # the same command + --resume, or no question
        monkeypatch.setattr(sys, "argv", [*base, question])
        with pytest.raises(SystemExit):
            cli.main()
        assert "stop here" in capsys.readouterr().err
    assert resumed == [None, None]  # resumed from the checkpoint's own question
