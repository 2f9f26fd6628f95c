"""A real `specsearch solve` killed with SIGKILL mid-search, then `--resume`d.

The search runs on the embedded models in a subprocess, streaming its events as JSON lines.
Once the first step is chosen and its checkpoint is in the SQLite file, the process gets
SIGKILL while the second step runs. The resumed run must recompute no finished step (no event
of a finished expansion), keep every checkpointed thought as it was, and carry beta and the
threshold trace over. The arithmetic PRM keeps it short (~30 s): no judge model calls.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from langgraph.checkpoint.sqlite import SqliteSaver
from scripted import ScriptedBackend, ScriptedPRM, by_text

from langgraph_specsearch.api import Components, SearchConfig, create_search_graph
from langgraph_specsearch.state import ROOT_ID

CLI = [sys.executable, "-m", "langgraph_specsearch.cli"]
QUESTION = (
    "James decides to run 3 sprints 3 times a week.  He runs 60 meters each sprint.  "
    "How many total meters does he run a week?"
)
THREAD = "durable-1"
OPTIONS = {"n_drafts": 1, "beam_width": 1, "max_steps": 2, "prm": "arithmetic"}
FLAGS = ["--n-drafts", "1", "--beam-width", "1", "--max-steps", "2", "--prm", "arithmetic"]
FLAGS += ["--max-new-tokens", "12", "--final-max-new-tokens", "12", "--controller", "off"]
FLAGS += ["--no-carry-threshold", "--no-complete", "--seed", "0", "--stream", "--json"]


def _command(db: Path, *extra: str) -> list[str]:
    return [*CLI, "solve", QUESTION, *FLAGS, "--checkpoint", str(db), "--thread-id", THREAD, *extra]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONUNBUFFERED": "1"}


def _run_until_first_step_is_saved(db: Path) -> list[dict[str, Any]]:
    """Start the search; SIGKILL it once step 1 is chosen and checkpointed (step 2 runs)."""
    process = subprocess.Popen(
        _command(db), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env()
    )
    events: list[dict[str, Any]] = []
    chosen = threading.Event()

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            event = json.loads(line)
            events.append(event)
            if event["event"] == "step_chosen" and event["step"] == 1:
                chosen.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        if not chosen.wait(timeout=300):
            stderr = process.communicate(timeout=30)[1] if process.poll() is not None else ""
            pytest.fail(f"no first step (exit {process.poll()}): {stderr[-500:]}")
        deadline = time.monotonic() + 60
        # the step is saved once its chosen children are in the tree (the `select` node's
        # checkpoint), not merely once the expansion finished (the `expand` node's)
        while not _step_saved(_checkpointed(db)):
            assert time.monotonic() < deadline, "step 1 never reached the checkpoint"
            time.sleep(0.05)
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    reader.join(timeout=10)
    assert process.returncode == -signal.SIGKILL
    assert not any(e["event"] == "answer_found" for e in events), "killed after the end"
    return events


def _step_saved(state: dict[str, Any]) -> bool:
    """Whether a checkpointed state holds a finished first step (expanded and chosen)."""
    expanded = state.get("threshold", {}).get("expansions", 0) >= 1
    return expanded and len(state.get("nodes", {})) > 1


def _checkpointed(db: Path) -> dict[str, Any]:
    """The state the killed run left, read through the same graph as the CLI's."""
    stand_in = Components(
        small=ScriptedBackend("small", lambda p, c, i: "x 0.5"),
        large=ScriptedBackend("large", lambda p, c, i: "x 0.5"),
        prm=ScriptedPRM(by_text),
    )
    graph = create_search_graph(SearchConfig(**OPTIONS), components=stand_in)  # type: ignore[arg-type]
    with SqliteSaver.from_conn_string(str(db)) as saver:
        state = graph.compile(checkpointer=saver).get_state({"configurable": {"thread_id": THREAD}})
    return dict(state.values)


@pytest.mark.integration
def test_kill_9_mid_search_then_resume_recomputes_no_finished_step(tmp_path: Path) -> None:
    db = tmp_path / "run.sqlite"
    started = time.monotonic()
    before = _run_until_first_step_is_saved(db)

    saved = _checkpointed(db)
    finished = saved["threshold"]["expansions"]
    assert finished >= 1, "the finished first step was not checkpointed"
    assert len(saved["trace"]) == finished
    beta = saved["threshold"]["beta"]
    assert beta is not None and beta == saved["trace"][-1]["beta_next"]
    # every thought the killed run wrote in a finished expansion is in the checkpoint
    written = {
        (e["parent_id"], e["source"], e["text"])
        for e in before
        if e["event"] in ("drafted", "regenerated") and e["expansion"] < finished
    }
    kept = {(n["parent_id"], n["source"], n["text"]) for n in saved["nodes"].values()}
    assert written and written <= kept

    resumed = subprocess.run(
        _command(db, "--resume"), capture_output=True, text=True, timeout=300, env=_env()
    )
    assert resumed.returncode == 0, resumed.stderr[-1000:]
    after = [json.loads(line) for line in resumed.stdout.splitlines() if line.strip()]
    result = after[-1]["result"]
    # no model call of a finished expansion was made again
    expansions = [e["expansion"] for e in after if "expansion" in e]
    assert expansions and min(expansions) == finished, sorted(set(expansions))
    # beta was restored: the first expansion after the resume starts from the saved one
    first_update = next(e for e in after if e["event"] == "threshold_updated")
    assert first_update["expansion"] == finished and first_update["beta"] == beta
    # nothing checkpointed was lost or changed
    nodes = {n["id"]: n for n in result["nodes"]}
    for node_id, node in saved["nodes"].items():
        if node_id == ROOT_ID:
            continue
        assert node_id in nodes, node_id
        for key in ("parent_id", "source", "text", "score"):
            assert nodes[node_id][key] == node[key], (node_id, key)
    trace = result["threshold_trace"]
    assert len(trace) > finished and result["stats"]["expansions"] == len(trace)
    for point, old in zip(trace, saved["trace"], strict=False):
        for key in ("step", "beta", "beta_next", "decision", "large_scores"):
            assert point[key] == old[key], (key, point, old)
    print(f"kill -9 drill: {finished} step(s) kept, {time.monotonic() - started:.1f}s in all")
