"""`solve` / the API against bad input and bad endpoints: resume, types, paths, keys, timeouts."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from scripted import ScriptedBackend, ScriptedPRM, by_text
from typer.testing import CliRunner

from langgraph_specsearch import cli
from langgraph_specsearch.api import Components, SearchConfig, asolve, solve
from langgraph_specsearch.backends.base import BackendError
from langgraph_specsearch.backends.endpoint import (
    DEFAULT_RETRIES,
    DEFAULT_TIMEOUT_S,
    endpoint_backend,
)
from langgraph_specsearch.serve import background_server, build_tiny_model, create_app
from langgraph_specsearch.speculation import SpeculationConfig
from langgraph_specsearch.types import GenerationParams

CONFIG = SearchConfig(
    n_drafts=2,
    beam_width=1,
    max_steps=6,
    speculation=SpeculationConfig(pipeline="lockstep", regenerate="all", controller="off"),
    carry_threshold=False,
)
PARAMS = GenerationParams(max_new_tokens=2, temperature=0.0)


def components(fail_large_on_call: int | None = None) -> Components:
    def large(prompt: str, call: int, i: int) -> str:
        if call == fail_large_on_call:
            raise ConnectionError("large endpoint went away")
        return "The answer is 7. 0.6" if call >= 3 else f"large c{call} 0.5"

    small = ScriptedBackend("small", lambda p, c, i: f"small c{c} {[0.9, 0.1][i % 2]}")
    return Components(small=small, large=ScriptedBackend("large", large), prm=ScriptedPRM(by_text))


def test_resume_with_other_options_is_refused_and_the_checkpoint_survives(tmp_path: Path) -> None:
    db = str(tmp_path / "ckpt.sqlite")
    broken = components(fail_large_on_call=2)
    no_retries = CONFIG.model_copy(update={"retries": 0})  # a transient error fails at once
    with pytest.raises(ConnectionError):
        asyncio.run(asolve("q?", no_retries, components=broken, checkpoint=db, thread_id="t"))
    other = CONFIG.model_copy(update={"n_drafts": 3, "max_steps": 5})
    with pytest.raises(ValueError, match=r"--max-steps 6 -> 5; --n-drafts 2 -> 3"):
        asyncio.run(asolve(None, other, components=components(), checkpoint=db, thread_id="t"))
    # The refused resume left the checkpoint as it was: the right options finish the search.
    healthy = components()
    healthy.large.calls.extend(broken.large.calls[:2])
    result = asyncio.run(asolve(None, CONFIG, components=healthy, checkpoint=db, thread_id="t"))
    assert result.answer == "7" and result.path
    # Plumbing (key, timeout, retries) may change between a run and its resume.
    keyed = CONFIG.model_copy(update={"api_key": "secret-key"})
    assert "secret-key" not in str(keyed) and "secret-key" not in keyed.model_dump_json()


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: solve(b"q?"), "question must be a str, got bytes"),  # type: ignore[arg-type]
        (lambda: solve(None), "question must be a str"),  # type: ignore[arg-type]
        (lambda: solve(42), "question must be a str, got int"),  # type: ignore[arg-type]
        (lambda: solve("q?", {"n_drafts": 2}), "config must be a SearchConfig"),  # type: ignore[arg-type]
        (lambda: solve("q?", CONFIG, components="x"), "components must be a Components"),
        (lambda: solve("q?", CONFIG, checkpoint=3), "checkpoint must be a path"),
        (lambda: solve("q?", CONFIG, thread_id=7), "thread_id must be a non-empty str"),
        (lambda: asyncio.run(asolve(b"q?")), "question must be a str, got bytes"),  # type: ignore[arg-type]
    ],
)
def test_wrong_types_are_type_errors_naming_the_argument(call: Any, message: str) -> None:
    with pytest.raises(TypeError, match=message):
        call()


def test_solve_inside_a_running_loop() -> None:
    async def inside() -> str | None:
        return solve("q?", CONFIG, components=components()).answer

    assert asyncio.run(inside()) == "7"


def test_checkpoint_in_a_missing_directory_is_one_line(tmp_path: Path) -> None:
    missing = str(tmp_path / "nope" / "c.sqlite")
    with pytest.raises(ValueError, match="no directory"):
        asyncio.run(asolve("q?", CONFIG, components=components(), checkpoint=missing))


@pytest.mark.parametrize("flag", ["--tree", "--html", "--checkpoint"])
def test_cli_output_paths_checked_before_the_search(tmp_path: Path, flag: str) -> None:
    started = time.monotonic()
    bad = str(tmp_path / "missing" / "out.txt")
    result = CliRunner().invoke(cli.app, ["solve", "q?", flag, bad])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and flag in lines[0] and "no directory" in lines[0]
    result = CliRunner().invoke(cli.app, ["solve", "q?", flag, str(tmp_path)])
    assert result.exit_code == 2 and "is a directory" in result.output
    assert time.monotonic() - started < 30  # no model was loaded


def fake_asolve(exc: BaseException) -> Any:
    async def raising(*_: Any, **__: Any) -> Any:
        raise exc

    return raising


@pytest.mark.parametrize(
    ("exc", "code", "hint"),
    [
        (KeyboardInterrupt(), 130, True),
        (BackendError("http://x:1: POST / (generate) failed after 2 attempts: timed out"), 1, True),
        (BackendError("http://x:1: POST / (generate) rejected: 401 Unauthorized"), 1, False),
        (ValueError("--small-url is needed with --large-url"), 2, False),
    ],
)
def test_cli_resume_hint_only_where_it_helps(
    monkeypatch: pytest.MonkeyPatch, exc: BaseException, code: int, hint: bool
) -> None:
    monkeypatch.setattr(cli, "asolve", fake_asolve(exc))
    args = ["solve", "q?", "--thread-id", "th-1", "--quiet", "--checkpoint", "unused.sqlite"]
    result = CliRunner().invoke(cli.app, args)
    assert result.exit_code == code, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    assert ("--resume --thread-id th-1" in lines[0]) is hint, lines[0]


@pytest.fixture
def frozen_url() -> Iterator[str]:
    """A server that accepts connections and never answers (a frozen process)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        sock.close()


def test_frozen_endpoint_is_given_up_on_naming_it(frozen_url: str) -> None:
    assert DEFAULT_TIMEOUT_S * (DEFAULT_RETRIES + 1) + 2 < 60  # the defaults: within a minute
    backend = endpoint_backend(frozen_url, protocol="tgi", timeout=1.0, retries=1)
    started = time.monotonic()
    with pytest.raises(BackendError, match=frozen_url) as caught:
        asyncio.run(backend.agenerate(["q"], n=1, params=PARAMS))
    assert time.monotonic() - started < 10
    assert "failed after 2 attempts" in str(caught.value)


def test_cli_frozen_endpoint_one_line(frozen_url: str, tmp_path: Path) -> None:
    args = ["solve", "q?", "--small-url", frozen_url, "--large-url", frozen_url]
    args += ["--checkpoint", str(tmp_path / "c.sqlite")]
    args += ["--protocol", "tgi", "--timeout", "1", "--retries", "0", "--quiet"]
    args += ["--no-carry-threshold", "--thread-id", "frozen-1"]
    result = CliRunner().invoke(cli.app, args)
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and frozen_url in lines[0] and "--thread-id frozen-1" in lines[0]


@pytest.fixture(scope="module")
def keyed_url() -> Iterator[str]:
    model, tokenizer = build_tiny_model()
    app = create_app(model, tokenizer, model_id="tiny", api_key="key-1")
    with background_server(app) as base:
        yield base


def test_keyed_endpoint_with_api_key_or_hf_token(
    keyed_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SPECSEARCH_API_KEY", raising=False)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    for protocol in ("auto", "tgi"):
        with pytest.raises(BackendError, match="rejected"):
            backend = endpoint_backend(keyed_url, protocol=protocol)  # type: ignore[arg-type]
            asyncio.run(backend.agenerate(["q"], n=1, params=PARAMS))
    given = endpoint_backend(keyed_url, api_key="key-1")
    assert asyncio.run(given.agenerate(["q"], n=1, params=PARAMS))[0][0].text is not None
    monkeypatch.setenv("HF_TOKEN", "key-1")
    from_env = endpoint_backend(keyed_url)
    assert asyncio.run(from_env.agenerate(["q"], n=1, params=PARAMS))[0][0].text is not None


def test_hf_hub_offline_does_not_block_a_named_endpoint(
    keyed_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    backend = endpoint_backend(keyed_url, protocol="tgi", api_key="key-1")
    assert asyncio.run(backend.agenerate(["q"], n=1, params=PARAMS))[0][0].text is not None
