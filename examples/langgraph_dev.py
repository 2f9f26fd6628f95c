"""Serve the search graph with `langgraph dev` and run one search through the SDK, offline.

    pip install -e ".[dev-server]"
    python examples/langgraph_dev.py ["QUESTION"]

Starts LangGraph's in-memory dev server on this repository's `langgraph.json` (127.0.0.1, no
browser, no reload, analytics off), waits until it answers, streams one search on the
`specsearch` graph with `langgraph-sdk` (custom events as they happen, then the answer), asks
the `math_agent` graph the same question, and stops the server. The server loads the embedded
models when it imports the graphs (set `SPECSEARCH_CONFIG` / `SPECSEARCH_COMPONENTS` to
choose others, see `langgraph_specsearch/deploy.py`).
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
QUESTION = (
    "James decides to run 3 sprints 3 times a week.  He runs 60 meters each sprint.  "
    "How many total meters does he run a week?"
)


def free_port() -> int:
    """An unused local TCP port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(
    port: int, env: Mapping[str, str] | None = None, timeout_s: float = 300.0
) -> subprocess.Popen[bytes]:
    """Start `langgraph dev` on `port` and wait until `/ok` answers (its log in a temp file)."""
    workdir = Path(tempfile.mkdtemp(prefix="langgraph-dev-"))  # its .langgraph_api state too
    log = workdir / "server.log"
    full_env = {**os.environ, "LANGGRAPH_CLI_NO_ANALYTICS": "1", **(env or {})}
    command = [
        sys.executable, "-c", "from langgraph_cli.cli import cli; cli()",
        "dev", "--no-browser", "--no-reload",
        "--host", "127.0.0.1", "--port", str(port), "--config", str(ROOT / "langgraph.json"),
    ]  # fmt: skip
    with log.open("wb") as out:
        server = subprocess.Popen(
            command,
            cwd=workdir,
            env=full_env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"langgraph dev exited with {server.returncode}; log: {log}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/ok", timeout=2).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    stop_server(server)
    raise RuntimeError(f"langgraph dev did not answer within {timeout_s:.0f} s; log: {log}")


def stop_server(server: subprocess.Popen[bytes]) -> None:
    """Stop the server and everything it started."""
    if server.poll() is None:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


async def search(
    url: str, question: str, on_event: Callable[[dict[str, Any]], None] | None = None
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """One run of the `specsearch` graph through the SDK: its custom events and final state."""
    from langgraph_sdk import get_client

    client = get_client(url=url)
    events: list[dict[str, Any]] = []
    final: dict[str, Any] = {}
    async for part in client.runs.stream(
        None,
        "specsearch",
        input={"question": question},
        stream_mode=["custom", "values"],
        stream_subgraphs=True,  # the expander's events come from its subgraphs
    ):
        if part.event.split("|")[0] == "custom":
            events.append(part.data)
            if on_event is not None:
                on_event(part.data)
        elif part.event == "values":
            final = part.data
        elif part.event == "error":
            raise RuntimeError(f"the server's run failed: {part.data}")
    return events, final


async def ask_agent(url: str, question: str) -> tuple[int, str]:
    """One run of the `math_agent` graph: how many search events it streamed, its reply."""
    from langgraph_sdk import get_client

    client = get_client(url=url)
    count, reply = 0, ""
    messages: Any = [{"role": "user", "content": question}]
    async for part in client.runs.stream(
        None,
        "math_agent",
        input={"messages": messages},
        stream_mode=["custom", "values"],
    ):
        if part.event == "custom":
            count += 1
        elif part.event == "values":
            reply = str(part.data["messages"][-1]["content"])
        elif part.event == "error":
            raise RuntimeError(f"the server's run failed: {part.data}")
    return count, reply


def main() -> None:
    from langgraph_specsearch.events import describe

    question = sys.argv[1] if len(sys.argv) > 1 else QUESTION
    port = free_port()
    print(f"starting langgraph dev on 127.0.0.1:{port} (loads the models) ...", flush=True)
    server = start_server(port)
    try:
        url = f"http://127.0.0.1:{port}"
        events, final = asyncio.run(search(url, question, lambda e: print(" ", describe(e))))
        print(f"specsearch: answer {final.get('answer')!r} after {len(events)} events")
        count, reply = asyncio.run(ask_agent(url, question))
        print(f"math_agent: {reply} ({count} search events)")
    finally:
        stop_server(server)


if __name__ == "__main__":
    main()
