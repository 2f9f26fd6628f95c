"""OpenAIBackend and protocol detection against stub OpenAI-compatible servers.

The stubs answer like vLLM (`n` choices, `stop_reason`, `prompt_logprobs`) and like
llama-cpp-python (one choice whatever `n` says, no `stop_reason`); the end-to-end tests against
a real llama.cpp server are in test_llamacpp_server_e2e.py.
"""

from __future__ import annotations

import math
import random
import re
import socket
import time
from typing import Any

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse

from langgraph_specsearch.backends.base import Backend, BackendError, supports_speculation
from langgraph_specsearch.backends.endpoint import detect_protocol, endpoint_backend
from langgraph_specsearch.backends.openai import (
    OpenAIBackend,
    base_url,
    continuation_logprob,
    finish_reason,
)
from langgraph_specsearch.backends.tgi import TGIBackend
from langgraph_specsearch.prm.judge import JudgePRM
from langgraph_specsearch.serve import background_server, build_tiny_model, create_app
from langgraph_specsearch.types import GenerationParams

WORDS = ["two", "plus", "three", "is", "five", "apples", "so", "total"]
LOGPROB = {" Yes": -0.5, "Yes": -3.0, " No": -1.5, "No": -4.0}


def _tokens(text: str) -> list[str]:
    """The stubs' tokenizer: words with their leading space, other characters alone."""
    return re.findall(r" ?\w+|\s|[^\w\s]", text)


def _sample(prompt: str, seed: int | None, index: int, max_tokens: int) -> list[str]:
    """Tokens a stub 'samples': a function of prompt, seed and choice index only."""
    rng = random.Random(f"{prompt}|{seed}|{index}" if seed is not None else None)
    out = [" " + rng.choice(WORDS) for _ in range(rng.randint(1, 6))]
    out.append("\n\n" if rng.random() < 0.7 else "<eos>")
    return out[:max_tokens]


def openai_stub(
    owned_by: str, calls: list[dict[str, Any]], *, honours_n: bool, speculative: bool = False
) -> FastAPI:
    """An OpenAI-compatible server: vLLM-like (`honours_n`) or llama-cpp-python-like."""
    app = FastAPI()
    vllm = owned_by == "vllm"

    @app.get("/v1/models")
    async def models(request: Request) -> dict[str, Any]:
        calls.append({"path": "/v1/models", "auth": request.headers.get("authorization")})
        return {"object": "list", "data": [{"id": "stub-model", "owned_by": owned_by}]}

    @app.get("/metrics", response_class=PlainTextResponse)
    async def metrics() -> str:  # vLLM registers spec_decode counters with --speculative-config
        return "vllm:num_requests_running 0\n" + (
            "vllm:spec_decode_num_drafts_total 0\n" if speculative else ""
        )

    @app.post("/v1/completions")
    async def completions(request: Request) -> JSONResponse:
        body = await request.json()
        calls.append({"path": "/v1/completions", "auth": request.headers.get("authorization")})
        calls[-1].update(body)
        if body.get("model") != "stub-model":
            return JSONResponse({"error": {"message": "model not found"}}, status_code=404)
        prompt, n = body["prompt"], int(body.get("n") or 1) if honours_n else 1
        stops = body.get("stop") or []
        choices, used = [], 0
        for i in range(n):
            tokens = _sample(prompt, body.get("seed"), i, int(body["max_tokens"]))
            text, reason, matched = "", "length", None
            for k, tok in enumerate(tokens):
                if tok == "<eos>":
                    reason, tokens = "stop", tokens[:k]
                    break
                if tok in stops:
                    reason, matched, tokens = "stop", tok, tokens[: k + 1]
                    break
                text += tok
            used += len(tokens)
            choice: dict[str, Any] = {"index": i, "text": text, "finish_reason": reason}
            if vllm:
                choice["stop_reason"] = matched
            if body.get("logprobs") is not None:
                top = {" Yes": -0.7, " No": -0.9, " Maybe": -2.0}
                choice["logprobs"] = {
                    "tokens": tokens,
                    "token_logprobs": [-1.0] * len(tokens),
                    "top_logprobs": [dict(list(top.items())[: body["logprobs"]])] * len(tokens),
                }
            if vllm and body.get("prompt_logprobs") is not None:
                toks = _tokens(prompt)
                choice["prompt_logprobs"] = [None] + [
                    {str(k): {"logprob": LOGPROB.get(t, -1.0), "rank": 1, "decoded_token": t}}
                    for k, t in enumerate(toks[1:])
                ]
            choices.append(choice)
        usage = {"prompt_tokens": 7, "completion_tokens": used, "total_tokens": 7 + used}
        return JSONResponse({"object": "text_completion", "choices": choices, "usage": usage})

    return app


def _completions(calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [c for c in calls if c["path"] == "/v1/completions"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_base_url_and_finish_reasons() -> None:
    assert base_url("http://h:1/v1/") == base_url("http://h:1/") == "http://h:1"
    assert finish_reason({"finish_reason": "length"}, ["\n\n"]) == "length"
    assert finish_reason({"finish_reason": "stop", "stop_reason": "\n\n"}, []) == "stop_sequence"
    assert finish_reason({"finish_reason": "stop", "stop_reason": None}, ["x"]) == "eos_token"
    assert finish_reason({"finish_reason": "stop", "stop_reason": 2}, ["x"]) == "eos_token"
    assert finish_reason({"finish_reason": "stop", "matched_stop": "x"}, ["x"]) == "stop_sequence"
    assert finish_reason({"finish_reason": "stop"}, ["\n\n"]) == "stop_sequence"
    assert finish_reason({"finish_reason": "stop"}, []) == "eos_token"


async def test_vllm_like_server_one_request_per_prompt() -> None:
    calls: list[dict[str, Any]] = []
    params = GenerationParams(max_new_tokens=8, temperature=0.8, seed=5, stop=["\n\n"])
    with background_server(openai_stub("vllm", calls, honours_n=True)) as url:
        backend = OpenAIBackend(url + "/v1", retries=0)
        assert isinstance(backend, Backend)
        out = await backend.agenerate(["p0", "p0"], n=3, params=params)
        again = await backend.agenerate(["p0", "p0"], n=3, params=params)
    sent = _completions(calls)
    assert backend.model == "stub-model" and backend.multi_choice is True
    assert len(sent) == 4 and {c["n"] for c in sent} == {3}
    assert sorted(c["seed"] for c in sent[:2]) == [5, 8]  # seed + j*n: same prompt, other seed
    assert sent[0]["stop"] == ["\n\n"] and sent[0]["top_p"] == 0.95
    assert [[g.text for g in gs] for gs in out] == [[g.text for g in gs] for gs in again]
    assert [g.text for g in out[0]] != [g.text for g in out[1]]
    for gen in out[0] + out[1]:
        assert gen.text == gen.text.strip() and "\n" not in gen.text
        assert gen.finish_reason in ("stop_sequence", "eos_token", "length")
        assert gen.tokens >= 1
    # the stub's own stop reasons come back mapped
    expected = []
    for i in range(3):
        toks = _sample("p0", 5, i, 8)
        expected.append(
            "stop_sequence" if "\n\n" in toks else "eos_token" if "<eos>" in toks else "length"
        )
    assert [g.finish_reason for g in out[0]] == expected


async def test_server_ignoring_n_is_topped_up_with_seeded_requests() -> None:
    calls: list[dict[str, Any]] = []
    params = GenerationParams(max_new_tokens=8, temperature=0.8, seed=11, stop=["\n\n"])
    with background_server(openai_stub("some-engine", calls, honours_n=False)) as url:
        backend = OpenAIBackend(url, retries=0)
        first = await backend.agenerate(["q"], n=3, params=params)
        before = len(_completions(calls))
        second = await backend.agenerate(["q"], n=3, params=params)
    sent = _completions(calls)
    assert backend.multi_choice is False
    assert before == 3 and len(sent) == 6  # 1 (n=3, one choice) + 2 top-ups; then 3 of n=1
    assert [c["n"] for c in sent[3:]] == [1, 1, 1]
    assert (
        sorted(c["seed"] for c in sent[:3]) == sorted(c["seed"] for c in sent[3:]) == [11, 12, 13]
    )
    assert [g.text for g in first[0]] == [g.text for g in second[0]]
    for i, gen in enumerate(first[0]):
        toks = _sample("q", 11 + i, 0, 8)
        # one choice per response: its token count is the usage's, stop tokens included
        assert gen.tokens == len(toks[: toks.index("<eos>")] if "<eos>" in toks else toks)


async def test_known_single_choice_servers_are_not_probed() -> None:
    calls: list[dict[str, Any]] = []
    params = GenerationParams(max_new_tokens=8, temperature=0.8, seed=11, stop=["\n\n"])
    with background_server(openai_stub("me", calls, honours_n=False)) as url:  # llama-cpp-python
        await OpenAIBackend(url, retries=0).agenerate(["q"], n=3, params=params)
    assert [c["n"] for c in _completions(calls)] == [1, 1, 1]


async def test_server_refusing_n_gets_single_requests() -> None:
    """llama.cpp's llama-server answers n > 1 with HTTP 500: one probe, no retries, then n=1."""
    calls: list[dict[str, Any]] = []
    app = FastAPI()

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"data": [{"id": "m", "owned_by": "someone"}]}

    @app.post("/v1/completions")
    async def completions(request: Request) -> JSONResponse:
        body = await request.json()
        calls.append(body)
        if body.get("n", 1) != 1:
            error = {"code": 500, "message": "Only one completion choice is allowed"}
            return JSONResponse({"error": error}, status_code=500)
        choice = {"index": 0, "text": f"s{body['seed']}", "finish_reason": "length"}
        return JSONResponse({"choices": [choice], "usage": {"completion_tokens": 2}})

    with background_server(app) as url:
        backend = OpenAIBackend(url, retries=3, backoff_s=0.01)
        params = GenerationParams(max_new_tokens=2, temperature=0.5, seed=4)
        out = await backend.agenerate(["a"], n=2, params=params)
        again = await backend.agenerate(["a"], n=2, params=params)
    assert [g.text for g in out[0]] == [g.text for g in again[0]] == ["s4", "s5"]
    assert [c["n"] for c in calls] == [2, 1, 1, 1, 1]


async def test_greedy_is_sent_once() -> None:
    calls: list[dict[str, Any]] = []
    with background_server(openai_stub("me", calls, honours_n=False)) as url:
        backend = OpenAIBackend(url, retries=0)
        out = await backend.agenerate(
            ["a", "b"], n=4, params=GenerationParams(max_new_tokens=4, temperature=0.0, seed=1)
        )
    assert len(_completions(calls)) == 2 and [len(g) for g in out] == [4, 4]
    assert len({g.text for g in out[0]}) == 1


async def test_judge_reads_top_logprobs() -> None:
    calls: list[dict[str, Any]] = []
    with background_server(openai_stub("me", calls, honours_n=False)) as url:
        backend = OpenAIBackend(url, retries=0, top_logprobs=2)
        lps = await backend.anext_token_logprobs(["Answer:"], ["Yes", "No", "Maybe"])
        score = await JudgePRM(backend).ascore_last("Q?", [["a step"]])
    assert lps == [{"Yes": -0.7, "No": -0.9, "Maybe": -30.0}]
    sent = _completions(calls)
    assert sent[0]["logprobs"] == 2 and sent[0]["max_tokens"] == 1
    assert score[0] == pytest.approx(1 / (1 + math.exp(-0.9 + 0.7)))


async def test_judge_uses_vllm_prompt_logprobs() -> None:
    calls: list[dict[str, Any]] = []
    with background_server(openai_stub("vllm", calls, honours_n=True)) as url:
        backend = OpenAIBackend(url, retries=0)
        exact = await backend.anext_token_logprobs(["Is it? Answer:"], ["Yes", "No"])
    # ":" is a token of its own here, so both "Yes" and " Yes" line up and are combined
    assert exact[0]["Yes"] == pytest.approx(math.log(math.exp(-3.0) + math.exp(-0.5)))
    assert exact[0]["No"] == pytest.approx(math.log(math.exp(-4.0) + math.exp(-1.5)))
    sent = _completions(calls)
    assert len(sent) == 4 and all(c["prompt_logprobs"] == 0 for c in sent)
    assert {c["prompt"] for c in sent} == {
        "Is it? Answer:" + v for v in ("Yes", " Yes", "No", " No")
    }


def test_continuation_must_line_up_with_tokens() -> None:
    def entries(*tokens: str) -> list[Any]:
        return [None] + [{"1": {"logprob": -1.0, "decoded_token": t}} for t in tokens]

    assert continuation_logprob(entries("Q", ":", " Yes"), " Yes") == -1.0
    assert continuation_logprob(entries("Q", " Y", "es"), " Yes") == -2.0
    assert continuation_logprob(entries("Q", "xYes"), "Yes") is None  # merged with the prompt
    two = [None, {"7": {"logprob": -1.0, "decoded_token": "Yes"}, "9": {"logprob": -2.0}}]
    assert continuation_logprob(two, "Yes") is None  # which entry is the prompt's: unknown
    assert continuation_logprob(two, "Yes", token_ids=[1, 7]) == -1.0  # prompt_token_ids say


async def test_prompt_logprobs_missing_falls_back_to_top_tokens() -> None:
    calls: list[dict[str, Any]] = []
    with background_server(openai_stub("me", calls, honours_n=False)) as url:
        backend = OpenAIBackend(url, retries=0, judge_logprobs="prompt_logprobs")
        lps = await backend.anext_token_logprobs(["Answer:"], ["Yes", "No"])
    assert lps == [{"Yes": -0.7, "No": -0.9}]
    assert _completions(calls)[-1]["logprobs"] == 5


async def test_errors_name_the_endpoint() -> None:
    calls: list[dict[str, Any]] = []
    app = FastAPI()

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"data": [{"id": "m", "owned_by": "x"}]}

    @app.post("/v1/completions")
    async def completions(request: Request) -> JSONResponse:
        body = await request.json()
        calls.append(body)
        if body["prompt"] == "bad":
            msg = {"error": {"message": "max_tokens must be at least 1", "type": "invalid"}}
            return JSONResponse(msg, status_code=400)
        return JSONResponse({"error": {"message": "busy\nwarming up"}}, status_code=503)

    params = GenerationParams(max_new_tokens=4)
    with background_server(app) as url:
        backend = OpenAIBackend(url, retries=2, backoff_s=0.01)
        with pytest.raises(BackendError, match="HTTP 400: max_tokens must be") as bad:
            await backend.agenerate(["bad"], n=1, params=params)
        assert len(calls) == 1
        with pytest.raises(BackendError, match="after 3 attempts: HTTP 503: busy warming up"):
            await backend.agenerate(["ok"], n=1, params=params)
        assert len(calls) == 4
    assert str(bad.value).startswith(url) and "\n" not in str(bad.value)


async def test_dead_endpoint_and_api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    port = _free_port()
    backend = OpenAIBackend(f"http://127.0.0.1:{port}/v1", retries=1, backoff_s=0.01)
    started = time.perf_counter()
    with pytest.raises(BackendError, match=rf"^http://127\.0\.0\.1:{port}: GET /v1/models failed"):
        await backend.agenerate(["x"], n=1, params=GenerationParams())
    assert time.perf_counter() - started < 5
    calls: list[dict[str, Any]] = []
    monkeypatch.setenv("SPECSEARCH_API_KEY", "sk-test")
    with background_server(openai_stub("me", calls, honours_n=False)) as url:
        await OpenAIBackend(url).agenerate(["x"], n=1, params=GenerationParams(max_new_tokens=2))
    assert {c["auth"] for c in calls} == {"Bearer sk-test"}


def test_speculation_is_read_from_vllm_metrics() -> None:
    with (
        background_server(openai_stub("vllm", [], honours_n=True, speculative=True)) as spec,
        background_server(openai_stub("vllm", [], honours_n=True)) as plain,
        background_server(openai_stub("me", [], honours_n=False, speculative=True)) as other,
    ):
        assert supports_speculation(OpenAIBackend(spec), sampling=True)
        assert not supports_speculation(OpenAIBackend(plain), sampling=False)
        assert not supports_speculation(OpenAIBackend(other), sampling=False)  # not vLLM
        assert supports_speculation(OpenAIBackend(other, speculative=True), sampling=True)


def test_detect_protocol() -> None:
    calls: list[dict[str, Any]] = []
    model, tokenizer = build_tiny_model()
    with (
        background_server(create_app(model, tokenizer, model_id="tiny")) as tgi,
        background_server(openai_stub("vllm", calls, honours_n=True)) as oai,
    ):
        assert detect_protocol(tgi) == "tgi"
        assert detect_protocol(oai) == "openai"
        assert detect_protocol(oai + "/v1/") == "openai"
        assert isinstance(endpoint_backend(tgi), TGIBackend)
        backend = endpoint_backend(oai + "/v1", prompt_format="chatml")
        assert isinstance(backend, OpenAIBackend) and backend.url == oai
        assert isinstance(endpoint_backend(oai, protocol="tgi"), TGIBackend)
        with pytest.raises(ValueError, match="neither TGI"):
            detect_protocol(oai + "/nothing-here")
    port = _free_port()
    with pytest.raises(ValueError, match=rf"^http://127\.0\.0\.1:{port}: no server answers"):
        detect_protocol(f"http://127.0.0.1:{port}", attempts=2, backoff_s=0.01)
