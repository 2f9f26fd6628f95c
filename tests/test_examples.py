"""Every example in examples/ runs as written, on the embedded models, as a user would run it.

Each example is started as its own process (`python examples/NAME.py`) from the repository
root, with only what its docstring tells a user to pass, and the test reads what it prints.
The examples that need servers start them themselves, as their docstrings say.
"""

from __future__ import annotations

import importlib.util
import inspect
import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from langgraph_specsearch.tool import create_specsearch_tool

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
TESTED = {"agent_tool.py", "parent_graph.py", "langgraph_dev.py", "two_endpoints.py"}

pytestmark = pytest.mark.integration


def run_example(name: str, *args: str, env: dict[str, str] | None = None, timeout: int) -> str:
    """Run `python examples/NAME ARGS...` from the repository root; its stdout (exit 0 asserted)."""
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, f"{name} exited {done.returncode}:\n{done.stderr[-3000:]}"
    return done.stdout


def test_every_example_has_a_test_here() -> None:
    assert {p.name for p in EXAMPLES.glob("*.py")} == TESTED


def test_agent_tool_example_calls_the_search_and_answers() -> None:
    out = run_example("agent_tool.py", timeout=300)
    tool = inspect.signature(create_specsearch_tool).parameters["name"].default
    assert re.search(rf"^agent: calls {tool}\(\{{'question': '.+'\}}\)$", out, re.M), out
    assert re.search(r"^  search: drafted|^  search: regenerated", out, re.M), out
    found = re.search(r"^  search: answer_found +(\S+) \(path of \d+ steps\)$", out, re.M)
    assert found, out
    # the tool's JSON result goes back to the agent, which answers from it
    result = re.search(r'^tools \(tool\): \{"answer": "([^"]*)"', out, re.M)
    assert result and result.group(1) == found.group(1), out
    assert re.search(rf"^agent \(ai\): The answer is {re.escape(found.group(1))}\b", out, re.M)


def test_parent_graph_example_answers_through_the_search_node() -> None:
    out = run_example("parent_graph.py", timeout=300)
    reply = re.search(r"^Answer: (\S+)  \((.+)\)$", out, re.M | re.S)
    assert reply, out
    assert reply.group(1) != "None", out
    assert re.match(r"\[(small|large)\] ", reply.group(2)), out


@pytest.mark.skipif(
    importlib.util.find_spec("langgraph_api") is None
    or importlib.util.find_spec("langgraph_cli") is None,
    reason="langgraph-cli[inmem] is not installed (pip install -e '.[dev-server]')",
)
def test_langgraph_dev_example_serves_the_search_and_the_agent() -> None:
    # a small search, through the variable the example's docstring documents
    config = {"beam_width": 1, "n_drafts": 2, "max_steps": 2}
    out = run_example(
        "langgraph_dev.py", env={"SPECSEARCH_CONFIG": json.dumps(config)}, timeout=400
    )
    assert "starting langgraph dev on 127.0.0.1:" in out
    search = re.search(r"^specsearch: answer '?(.+?)'? after (\d+) events$", out, re.M)
    assert search and int(search.group(2)) > 0, out
    assert re.search(r"^  answer_found +\S+ \(path of \d+ steps\)$", out, re.M), out
    agent = re.search(r"^math_agent: The answer is \S+.* \((\d+) search events\)$", out, re.M)
    assert agent and int(agent.group(1)) > 0, out


def listening(url: str) -> bool:
    """Whether something accepts connections at `http://127.0.0.1:PORT`."""
    port = int(url.rsplit(":", 1)[1])
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_two_endpoints_example_starts_both_servers_searches_and_stops_them() -> None:
    out = run_example("two_endpoints.py", timeout=500)
    servers = dict(re.findall(r"^(small|large): \S+ at (http://127\.0\.0\.1:\d+)$", out, re.M))
    assert set(servers) == {"small", "large"}, out
    assert re.search(r"^small: smollm2-135m at ", out, re.M), out
    assert re.search(r"^large: gemma3-270m at ", out, re.M), out
    assert re.search(r"^\[(small|large)\] ", out, re.M), out
    assert re.search(r"^answer: (?!None$)\S+$", out, re.M), out
    assert re.search(r"^small model: \d+ thoughts in the tree, \d+ kept$", out, re.M), out
    assert re.search(r"^acceptance rate: ", out, re.M), out
    assert not any(listening(url) for url in servers.values())  # both servers stopped
