"""OpenAIBackend and `specsearch solve` against real llama.cpp servers no one here wrote.

The servers are llama-cpp-python's OpenAI-compatible server (`python -m llama_cpp.server`)
serving the embedded GGUFs: SmolLM2-135M (small, and the judge) and Gemma-3-270M (large).
They need the optional `llama-cpp-python[server]` (`pip install -e ".[llamacpp-server]"`);
without it these tests skip and say so. The dead-endpoint tests need no server.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from langgraph_specsearch.backends.openai import OpenAIBackend
from langgraph_specsearch.prm.judge import JudgePRM
from langgraph_specsearch.types import GenerationParams

CLI = [sys.executable, "-m", "langgraph_specsearch.cli"]
QUESTION = (
    "James decides to run 3 sprints 3 times a week.  He runs 60 meters each sprint.  "
    "How many total meters does he run a week?"
)


def _server_missing() -> str | None:
    """Why the llama.cpp server cannot run here (None when it can)."""
    for module in ("llama_cpp", "sse_starlette", "starlette_context", "pydantic_settings"):
        if importlib.util.find_spec(module) is None:
            return f"{module} is not installed (pip install -e '.[llamacpp-server]')"
    return None


needs_server = pytest.mark.skipif(
    _server_missing() is not None, reason=f"no llama.cpp server: {_server_missing()}"
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LlamaServer:
    """One `python -m llama_cpp.server` process on 127.0.0.1; its output is collected."""

    def __init__(self, gguf: Path, *extra: str) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        command = [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf)]
        command += ["--host", "127.0.0.1", "--port", str(self.port), "--n_ctx", "4096", *extra]
        self.process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        self.lines: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_ready(self, timeout_s: float = 120) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.url} exited: " + "\n".join(self.lines[-20:]))
            try:
                if httpx.get(f"{self.url}/v1/models", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"{self.url} not ready after {timeout_s}s")

    def completions_served(self) -> int:
        """`POST /v1/completions` requests answered (uvicorn's access log)."""
        return sum(1 for line in list(self.lines) if "POST /v1/completions" in line)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture(scope="module")
def servers() -> Iterator[dict[str, LlamaServer]]:
    """small (SmolLM2, logits kept for the judge's logprobs) and large (Gemma, no logprobs)."""
    from langgraph_specsearch.models import resolve_gguf

    small_gguf, large_gguf = resolve_gguf("smollm2-135m"), resolve_gguf("gemma3-270m")
    # llama-cpp-python keeps n_ctx x vocab logits when logits_all is on (its default, needed
    # for logprobs); Gemma's 262k vocabulary makes that 4 GB, and the large model needs none.
    started = {
        "small": LlamaServer(small_gguf, "--n_threads", "1"),
        "large": LlamaServer(large_gguf, "--n_threads", "1", "--logits_all", "False"),
    }
    try:
        for server in started.values():
            server.wait_ready()
        yield started
    finally:
        for server in started.values():
            server.stop()


@needs_server
@pytest.mark.integration
async def test_generate_n_stop_seed(servers: dict[str, LlamaServer]) -> None:
    backend = OpenAIBackend(servers["small"].url + "/v1", prompt_format="chatml", retries=0)
    prompt = backend.prompt_format.render("Tom has 3 apples and buys 4 more. How many?", [])
    params = GenerationParams(max_new_tokens=24, temperature=1.0, seed=7, stop=["\n\n"])
    first = await backend.agenerate([prompt, prompt], n=3, params=params)
    served = servers["small"].completions_served()
    again = await backend.agenerate([prompt, prompt], n=3, params=params)
    assert backend.owned_by == "me" and backend.model is not None
    # llama-cpp-python answers one choice whatever `n` says: the backend tops up with seeds
    assert backend.multi_choice is False
    assert servers["small"].completions_served() - served == 6
    texts = [[g.text for g in gs] for gs in first]
    assert texts == [[g.text for g in gs] for gs in again]  # same seeds, same drafts
    assert len(set(texts[0])) > 1 and texts[0] != texts[1]  # seed + j*n + i: all differ
    for gen in first[0] + first[1]:
        assert 1 <= gen.tokens <= 24 and gen.text == gen.text.strip()
        assert "\n\n" not in gen.text
        assert gen.finish_reason in ("stop_sequence", "length")
    counting = await backend.agenerate(
        ["Count: 1, 2, 3, 4,"],
        n=2,
        params=GenerationParams(max_new_tokens=16, temperature=0.0, stop=[","]),
    )
    assert [g.text for g in counting[0]] == ["5", "5"]
    assert counting[0][0].finish_reason == "stop_sequence"


@needs_server
@pytest.mark.integration
async def test_judge_logprobs_match_the_model(servers: dict[str, LlamaServer]) -> None:
    """The judge's candidate logprobs equal llama.cpp's own log-softmax, read in-process."""
    import llama_cpp
    import numpy as np

    from langgraph_specsearch.models import resolve_gguf

    backend = OpenAIBackend(servers["small"].url, prompt_format="chatml", retries=0)
    judge = JudgePRM(backend)
    prompt = judge.render("What is 2 + 2?", ["2 + 2 = 4."])
    got = (await backend.anext_token_logprobs([prompt], ["Yes", "No", "zebra"]))[0]

    llm = llama_cpp.Llama(
        str(resolve_gguf("smollm2-135m")), n_ctx=1024, n_threads=1, logits_all=True, verbose=False
    )
    tokens = llm.tokenize(prompt.encode(), add_bos=True, special=True)
    llm.eval(tokens)
    logits = np.asarray(llm.scores[len(tokens) - 1], dtype=np.float64)
    logprobs = logits - (logits.max() + np.log(np.exp(logits - logits.max()).sum()))
    top = np.argsort(-logprobs)[: backend.top_logprobs]
    texts = {int(t): llm.detokenize([int(t)]).decode("utf-8", errors="ignore") for t in top}
    for cand in ("Yes", "No"):
        ids = [t for t, text in texts.items() if text.strip() == cand]
        if ids:
            want = float(np.log(np.exp(logprobs[ids]).sum()))
            assert got[cand] == pytest.approx(want, abs=2e-3), (cand, got, texts)
        else:
            assert got[cand] == -30.0
    assert got["zebra"] == -30.0
    assert any(got[c] > -30.0 for c in ("Yes", "No")), (got, texts)
    scores = await judge.ascore_last("What is 2 + 2?", [["2 + 2 = 4."], ["2 + 2 = 5."]])
    assert all(0.0 < s < 1.0 for s in scores) and not all(math.isclose(s, 0.5) for s in scores)


def _env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "SPECSEARCH_CACHE": str(tmp_path / "cache")}


@needs_server
@pytest.mark.integration
def test_solve_against_two_llama_cpp_servers(
    servers: dict[str, LlamaServer], tmp_path: Path
) -> None:
    small, large = servers["small"], servers["large"]
    before = small.completions_served(), large.completions_served()
    done = subprocess.run(
        [
            *CLI,
            "solve",
            QUESTION,
            "--small-url",
            small.url,  # detected: no /info, answers /v1/models
            "--large-url",
            large.url + "/v1",
            "--max-steps",
            "2",
            "--n-drafts",
            "2",
            "--max-new-tokens",
            "32",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env=_env(tmp_path),
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["path"] and "answer" in result, result
    sources = {node["source"] for node in result["nodes"]}
    assert {"small", "large"} <= sources, sources
    assert result["stats"]["large"]["generated_tokens"] > 0
    assert small.completions_served() > before[0] and large.completions_served() > before[1]


def _dead_url() -> str:
    return f"http://127.0.0.1:{_free_port()}"


def test_dead_endpoint_is_one_line(tmp_path: Path) -> None:
    dead = _dead_url()
    common = [*CLI, "solve", QUESTION, "--small-url", dead, "--large-url", dead]
    detect = subprocess.run(common, capture_output=True, text=True, timeout=120, env=_env(tmp_path))
    assert detect.returncode == 2, detect.stderr
    lines = [line for line in detect.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in detect.stderr, detect.stderr
    assert lines[0].startswith(f"error: {dead}: no server answers"), lines

    told = subprocess.run(
        [*common, "--protocol", "openai"],
        capture_output=True,
        text=True,
        timeout=120,
        env=_env(tmp_path),
    )
    assert told.returncode == 1, told.stderr
    last = [line for line in told.stderr.splitlines() if line.strip()][-1]
    assert "Traceback" not in told.stderr, told.stderr
    # retried by the graph node (transient), then one line naming the endpoint and how to resume
    assert last.startswith(f"error: TransientBackendError: {dead}: GET /v1/models failed"), last
    assert "--resume --thread-id" in last, last
