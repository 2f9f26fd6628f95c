"""Two `specsearch serve` processes and `specsearch solve` against them: real processes, real HTTP.

Tiny random models (`--model tiny-random`), so this runs in seconds on a CPU. The servers are
started with the console command (`python -m langgraph_specsearch.cli serve`), the search with
`python -m langgraph_specsearch.cli solve --small-url ... --large-url ...`.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

CLI = [sys.executable, "-m", "langgraph_specsearch.cli"]
QUESTION = "Tom has 3 apples and buys 4 more. How many apples does he have?"


def _solve(small: str, large: str, *extra: str) -> list[str]:
    """`specsearch solve QUESTION` against two endpoints, small search settings, JSON out."""
    return [
        *CLI,
        "solve",
        QUESTION,
        "--small-url",
        small,
        "--large-url",
        large,
        "--json",
        "--n-drafts",
        "2",
        "--beam-width",
        "1",
        "--max-new-tokens",
        "8",
        "--prm",
        "combined",
        *extra,
    ]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    """One `specsearch serve --model tiny-random` process; its log lines are collected."""

    def __init__(self) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [*CLI, "serve", "--model", "tiny-random", "--port", str(self.port), "--threads", "1"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_healthy(self, timeout_s: float = 120) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.url} exited: " + "\n".join(self.lines[-20:]))
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"{self.url} not healthy after {timeout_s}s")

    def generations_served(self) -> int:
        """Generation requests answered (uvicorn's access log: `POST /` or `/generate`)."""
        return sum(1 for line in list(self.lines) if '"POST /' in line and "tokenize" not in line)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture(scope="module")
def servers() -> Iterator[dict[str, Server]]:
    """small, large, and a second large one that a test kills (started together)."""
    started = {role: Server() for role in ("small", "large", "doomed")}
    try:
        for server in started.values():
            server.wait_healthy()
        yield started
    finally:
        for server in started.values():
            server.stop()


def _env(tmp_path: Path) -> dict[str, str]:
    # The checkpoint file goes under the cache: keep it out of the user's home.
    return {**os.environ, "SPECSEARCH_CACHE": str(tmp_path / "cache")}


def test_solve_over_two_endpoints(servers: dict[str, Server], tmp_path: Path) -> None:
    small, large = servers["small"], servers["large"]
    done = subprocess.run(
        _solve(small.url, large.url, "--max-steps", "2"),
        capture_output=True,
        text=True,
        timeout=300,
        env=_env(tmp_path),
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["path"], result
    sources = {node["source"] for node in result["nodes"]}
    assert {"small", "large"} <= sources, sources
    assert result["threshold_trace"]
    assert any(point["beta_next"] is not None for point in result["threshold_trace"])
    assert small.generations_served() > 0 and large.generations_served() > 0


def test_large_endpoint_dies_mid_search(servers: dict[str, Server], tmp_path: Path) -> None:
    """SIGKILL the large server after it has answered: one error line naming it, no traceback."""
    small, doomed = servers["small"], servers["doomed"]
    # AR calls the large model at every step, so the search needs it after the kill.
    solve = subprocess.Popen(
        _solve(small.url, doomed.url, "--method", "ar", "--max-steps", "8"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(tmp_path),
    )
    try:
        deadline = time.monotonic() + 120
        while doomed.generations_served() == 0:
            assert solve.poll() is None, "solve finished before the large server answered"
            assert time.monotonic() < deadline, "the large server got no request"
            time.sleep(0.05)
        doomed.process.send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        _, stderr = solve.communicate(timeout=60)
        elapsed = time.monotonic() - killed_at
    finally:
        if solve.poll() is None:
            solve.kill()
            solve.wait()
    assert solve.returncode not in (0, None)
    assert elapsed < 60
    assert "Traceback" not in stderr, stderr
    last = [line for line in stderr.splitlines() if line.strip()][-1]
    assert last.startswith("error: TransientBackendError: "), stderr
    assert doomed.url in last and "gave up after 2 attempts" in last, last  # --retries 1


def test_client_that_hangs_up_frees_the_server() -> None:
    """A client timeout cancels its generation: a retry does not queue behind abandoned work."""
    from langgraph_specsearch.serve import background_server, build_tiny_model, create_app

    model, tokenizer = build_tiny_model()
    app = create_app(model, tokenizer, model_id="tiny-random", api_key="k")
    engine = app.state.engine
    lengths: list[int] = []
    push = engine._push

    def recording_push(row: Any, *args: Any) -> bool:
        finished: bool = push(row, *args)
        if finished:
            lengths.append(len(row.tokens))
        return finished

    engine._push = recording_push
    headers = {"Authorization": "Bearer k"}
    body = {"inputs": "Question: 1 + 1?", "parameters": {"max_new_tokens": 1000}}
    with background_server(app) as url:
        with pytest.raises(httpx.TimeoutException):
            httpx.post(f"{url}/", json=body, headers=headers, timeout=0.3)
        started = time.monotonic()
        while app.state.in_flight[0]:
            assert time.monotonic() - started < 30
            time.sleep(0.02)
        assert len(lengths) == 1 and lengths[0] < 1000, lengths  # stopped early, not at 1000
        short = {"inputs": "Question: 1 + 1?", "parameters": {"max_new_tokens": 2}}
        assert httpx.post(f"{url}/generate", json=short, headers=headers).status_code == 200
