"""TGIBackend and MathShepherdTGIPRM against `specsearch serve` and stub endpoints."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.responses import JSONResponse

from langgraph_specsearch.backends.base import Backend, BackendError
from langgraph_specsearch.backends.tgi import TGIBackend
from langgraph_specsearch.prm.errors import PRMAlignmentError
from langgraph_specsearch.prm.tgi import MathShepherdTGIPRM
from langgraph_specsearch.serve import background_server, build_tiny_model, create_app
from langgraph_specsearch.types import GenerationParams

PROMPT = "Question: Natalia sold clips to 48 of her friends."


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    model, tokenizer = build_tiny_model()
    app = create_app(model, tokenizer, model_id="tiny", max_input_tokens=64, max_total_tokens=96)
    with background_server(app) as base:
        yield base


def _stub(status: int, body: dict[str, Any], calls: list[int]) -> FastAPI:
    app = FastAPI()

    @app.get("/info")
    async def info() -> dict[str, Any]:
        return {
            "model_id": "stub",
            "max_total_tokens": 100,
            "max_stop_sequences": 4,
            "max_top_n_tokens": 5,
        }

    @app.post("/")
    async def generate() -> JSONResponse:
        calls.append(1)
        return JSONResponse(body, status_code=status)

    return app


async def test_drafts_seeds_and_shapes(url: str) -> None:
    backend = TGIBackend(url, retries=0)
    assert isinstance(backend, Backend)
    params = GenerationParams(max_new_tokens=6, temperature=0.8, seed=11, stop=["\n\n"])
    first = await backend.agenerate([PROMPT, "Answer:"], n=3, params=params)
    again = await backend.agenerate([PROMPT, "Answer:"], n=3, params=params)
    assert [len(g) for g in first] == [3, 3]
    assert [[g.text for g in gs] for gs in first] == [[g.text for g in gs] for gs in again]
    assert len({g.text for g in first[0]}) > 1  # seed + i: the drafts differ
    gen = first[0][0]
    assert gen.tokens == 6 and gen.finish_reason == "length" and len(gen.logprobs or []) == 6
    greedy = await backend.agenerate(
        [PROMPT], n=2, params=GenerationParams(max_new_tokens=5, temperature=0.0)
    )
    assert greedy[0][0].text == greedy[0][1].text


async def test_clamps_to_max_total_tokens(url: str) -> None:
    backend = TGIBackend(url, retries=0)
    out = await backend.agenerate(
        [PROMPT],
        n=1,
        params=GenerationParams(
            max_new_tokens=500, temperature=0.0, stop=["a", "b", "c", "d", "e", "f"]
        ),
    )
    prompt_tokens = await backend.count_tokens(PROMPT)
    assert prompt_tokens is not None and out[0][0].tokens <= 96 - prompt_tokens


async def test_next_token_logprobs(url: str) -> None:
    backend = TGIBackend(url, retries=0)
    top = await backend.atext_generation(PROMPT, max_new_tokens=1, top_n_tokens=5)
    best = top.details.top_tokens[0][0]
    text = best["text"] if isinstance(best, dict) else best.text
    result = await backend.anext_token_logprobs([PROMPT], [text, "zzzz-never"])
    assert result[0]["zzzz-never"] == -30.0
    assert -30.0 < result[0][text] <= 0.0


async def test_validation_error_is_not_retried() -> None:
    calls: list[int] = []
    app = _stub(
        422,
        {"error": "`top_n_tokens` must be >= 0 and <= 5. Given: 9", "error_type": "validation"},
        calls,
    )
    with background_server(app) as base:
        backend = TGIBackend(base, retries=3, backoff_s=0.01)
        with pytest.raises(BackendError, match=r"top_n_tokens") as info:
            await backend.agenerate([PROMPT], n=1, params=GenerationParams())
    assert base in str(info.value) and "\n" not in str(info.value)
    assert len(calls) == 1


async def test_server_errors_are_retried() -> None:
    calls: list[int] = []
    app = _stub(503, {"error": "warming up", "error_type": "unknown"}, calls)
    with background_server(app) as base:
        backend = TGIBackend(base, retries=2, backoff_s=0.01)
        with pytest.raises(BackendError, match="after 3 attempts"):
            await backend.agenerate([PROMPT], n=1, params=GenerationParams())
    assert len(calls) == 3


async def test_dead_endpoint_fails_fast() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    backend = TGIBackend(f"http://127.0.0.1:{port}", retries=2, backoff_s=0.01)
    started = time.perf_counter()
    with pytest.raises(BackendError, match=rf"127\.0\.0\.1:{port}.*after 3 attempts"):
        await backend.agenerate([PROMPT], n=2, params=GenerationParams())
    assert time.perf_counter() - started < 5


async def test_math_shepherd_prm_on_a_model_without_its_tokens_is_an_error(url: str) -> None:
    # the tiny server's tokenizer has no "ки" / " +" tokens: once scored ~0 silently, now an
    # error naming the PRM and the step (scoring itself: tests/test_prm_models.py)
    for method in ("prefill", "top_n"):
        prm = MathShepherdTGIPRM(url, retries=0, method=method, name="ms")  # type: ignore[arg-type]
        with pytest.raises(PRMAlignmentError, match=r"^PRM ms: step 0: "):
            await prm.ascore("Q?", [["step one", "step two"]])


# ---------------------------------------------------------------------------- real model


@pytest.mark.integration
async def test_smollm2_steps_stop_at_delimiter() -> None:
    from langgraph_specsearch.models import load_pretrained

    model, tokenizer = load_pretrained("smollm2-135m")
    app = create_app(model, tokenizer, model_id="smollm2-135m")
    with background_server(app) as base:
        backend = TGIBackend(base, prompt_format="chatml", retries=0)
        prompt = backend.prompt_format.render("Tom has 3 apples and buys 4 more. How many?", [])
        out = await backend.agenerate(
            [prompt], n=2, params=GenerationParams(max_new_tokens=48, temperature=0.7, seed=1)
        )
        lps = await backend.anext_token_logprobs(["The capital of France is"], ["Paris", "x"])
    for gen in out[0]:
        assert gen.text == gen.text.strip() and "\n\n" not in gen.text
        assert gen.finish_reason in ("stop_sequence", "eos_token", "length")
    assert lps[0]["Paris"] > -5.0 and lps[0]["x"] == -30.0
