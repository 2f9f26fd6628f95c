"""`solve --stream`, `solve --html` and `viz`: the CLI on scripted components."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from typing import Any

import pytest
from scripted import ScriptedBackend, ScriptedPRM, by_text
from typer.testing import CliRunner

import langgraph_specsearch.api as api
from langgraph_specsearch.cli import app
from langgraph_specsearch.events import EVENT_NAMES
from langgraph_specsearch.tree_page import render_tree_html
from langgraph_specsearch.types import SearchResult


def scripted(config: Any) -> api.Components:
    def small(prompt: str, call: int, i: int) -> str:
        return f"small c{call} {[0.9, 0.2][i % 2]}"

    def large(prompt: str, call: int, i: int) -> str:
        return "The answer is 7. 0.6" if call >= 2 else f"large c{call} 0.5"

    return api.Components(
        small=ScriptedBackend("small", small),
        large=ScriptedBackend("large", large),
        prm=ScriptedPRM(by_text),
    )


@pytest.fixture
def run_cli(monkeypatch: pytest.MonkeyPatch, tmp_path: Any):
    monkeypatch.setattr(api, "load_components", scripted)
    base = ["--n-drafts", "2", "--drafts", "2", "--beam-width", "2", "--max-steps", "5"]
    base.append("--no-carry-threshold")

    def run(*args: str) -> Any:
        ckpt = ["--checkpoint", str(tmp_path / "c.sqlite")]
        return CliRunner().invoke(app, [*args, *base, *ckpt] if args[0] == "solve" else args)

    return run


class Nodes(HTMLParser):
    """Collects the page's thought rows."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[dict[str, str]] = []
        self.remote: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if "data-id" in a:
            self.rows.append(a)
        for key in ("src", "href"):
            if a.get(key, "").startswith(("http:", "https:", "//")):
                self.remote.append(a[key])


def test_stream_json_prints_events_then_the_result(run_cli, tmp_path) -> None:
    out = run_cli("solve", "q?", "--stream", "--json", "--html", str(tmp_path / "t.html"))
    assert out.exit_code == 0, out.output
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    kinds = [line["event"] for line in lines]
    assert set(kinds[:-1]) == set(EVENT_NAMES) and kinds[-1] == "result"
    assert kinds[-2] == "answer_found" and lines[-2]["answer"] == lines[-1]["result"]["answer"]
    result = SearchResult.model_validate(lines[-1]["result"])
    page = Nodes()
    page.feed((tmp_path / "t.html").read_text())
    assert len(page.rows) == len(result.nodes) - 1 and not page.remote


def test_stream_prints_one_line_per_event(run_cli) -> None:
    out = run_cli("solve", "q?", "--stream")
    assert out.exit_code == 0, out.output
    lines = out.stdout.splitlines()
    first = lines.index(next(line for line in lines if line.startswith("Answer:")))
    events = lines[:first]
    assert events[0].startswith("regenerated") and events[-1].startswith("answer_found")
    assert sum(line.startswith("threshold_updated") for line in events) >= 2


def test_viz_page_marks_status_threshold_and_chosen_path(run_cli, tmp_path) -> None:
    out = run_cli("solve", "q?", "--json", "--quiet")
    assert out.exit_code == 0, out.output
    (tmp_path / "r.json").write_text(out.stdout)
    page_file = tmp_path / "tree.html"
    viz = run_cli("viz", str(tmp_path / "r.json"), "-o", str(page_file))
    assert viz.exit_code == 0, viz.output
    result = SearchResult.model_validate_json(out.stdout)
    text = page_file.read_text()
    assert text == render_tree_html(result)
    page = Nodes()
    page.feed(text)
    by_id = {row["data-id"]: row for row in page.rows}
    nodes = {n.id: n for n in result.nodes if n.parent_id is not None}
    assert set(by_id) == set(nodes)
    for node_id, node in nodes.items():
        status = by_id[node_id]["data-status"]
        if node.source == "small":
            assert status == ("rejected" if node.rejected else "accepted")
        else:
            assert status in ("regenerated", "large")
        assert ("chosen" in by_id[node_id]["class"]) == (node_id in {p.id for p in result.path})
    assert {"accepted", "rejected", "regenerated", "large"} <= {r["data-status"] for r in page.rows}
    beta = result.threshold_trace[1].beta
    assert beta is not None and f"β {beta:.3f}" in text


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "No such file"), ("", "empty file"), ("{}", "not a search result")],
)
def test_viz_bad_input_is_one_line(run_cli, tmp_path, content, message) -> None:
    path = tmp_path / "r.json"
    if content is not None:
        path.write_text(content)
    out = run_cli("viz", str(path), "-o", str(tmp_path / "x.html"))
    lines = [line for line in out.output.splitlines() if line.strip()]
    assert out.exit_code == 2 and len(lines) == 1 and message in lines[0], out.output


def test_html_into_a_missing_directory_fails_before_the_search(run_cli, tmp_path) -> None:
    out = run_cli("solve", "q?", "--html", str(tmp_path / "missing" / "t.html"))
    lines = [line for line in out.output.splitlines() if line.strip()]
    assert out.exit_code == 2 and len(lines) == 1 and "--html" in lines[0], out.output
