"""`specsearch serve`: TGI's API over a local model, checked with huggingface_hub's clients.

Fast tests use a tiny randomly initialised Llama (`build_tiny_model`); `integration` tests use
the embedded SmolLM2-135M-Instruct.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from huggingface_hub import AsyncInferenceClient, InferenceClient
from huggingface_hub.errors import GenerationError, ValidationError

from langgraph_specsearch.serve import background_server, build_tiny_model, create_app
from langgraph_specsearch.server.tiny import build_tiny_gemma3

PROMPT = "Question: Natalia sold clips to 48 of her friends."


@pytest.fixture(scope="module")
def tiny() -> tuple[Any, Any]:
    return build_tiny_model()


@pytest.fixture(scope="module")
def url(tiny: tuple[Any, Any]) -> Iterator[str]:
    model, tokenizer = tiny
    app = create_app(
        model, tokenizer, model_id="tiny-random", max_input_tokens=64, max_total_tokens=96
    )
    with background_server(app) as base:
        yield base


def test_info_health_tokenize(url: str) -> None:
    info = httpx.get(f"{url}/info").json()
    assert info["model_id"] == "tiny-random"
    assert (info["max_input_tokens"], info["max_total_tokens"]) == (64, 96)
    assert info["max_top_n_tokens"] == 5 and info["speculate"] == 0
    assert httpx.get(f"{url}/health").status_code == 200
    tokens = httpx.post(f"{url}/tokenize", json={"inputs": PROMPT}).json()
    assert "".join(t["text"] for t in tokens) == PROMPT
    assert all(PROMPT[t["start"] : t["stop"]] == t["text"] for t in tokens)


def test_inference_client_sync(url: str) -> None:
    client = InferenceClient(base_url=url)
    text = client.text_generation(PROMPT, max_new_tokens=5)
    assert isinstance(text, str)
    out: Any = client.text_generation(
        PROMPT, max_new_tokens=5, details=True, top_n_tokens=3, decoder_input_details=True
    )
    assert out.details.generated_tokens == 5 and out.details.finish_reason == "length"
    assert len(out.details.tokens) == 5 and len(out.details.top_tokens) == 5
    assert all(len(step) == 3 for step in out.details.top_tokens)
    assert out.details.prefill[0].logprob is None and out.details.prefill[1].logprob < 0
    pieces = list(client.text_generation(PROMPT, max_new_tokens=4, stream=True))
    assert len(pieces) == 4
    events: list[Any] = list(
        client.text_generation(PROMPT, max_new_tokens=4, stream=True, details=True)
    )
    assert events[-1].details.finish_reason == "length"
    assert events[-1].generated_text == text[: len(events[-1].generated_text)]


async def test_inference_client_async(url: str) -> None:
    async with AsyncInferenceClient(base_url=url) as client:
        greedy = await client.text_generation(PROMPT, max_new_tokens=6)
        streamed = [
            piece
            async for piece in await client.text_generation(PROMPT, max_new_tokens=6, stream=True)
        ]
        assert "".join(streamed) == greedy
        a = await client.text_generation(
            PROMPT, max_new_tokens=6, do_sample=True, seed=7, details=True
        )
        b = await client.text_generation(PROMPT, max_new_tokens=6, do_sample=True, seed=7)
        assert a.generated_text == b and a.details.seed == 7
        best = await client.text_generation(
            PROMPT, max_new_tokens=3, best_of=2, temperature=0.7, details=True
        )
        assert len(best.details.best_of_sequences) == 1


@pytest.mark.parametrize(
    ("parameters", "message"),
    [
        ({"max_new_tokens": 0}, "`max_new_tokens` must be strictly positive"),
        ({"top_n_tokens": 9}, "`top_n_tokens` must be >= 0 and <= 5"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "`stop` supports up to 4 stop sequences"),
        ({"temperature": 0}, "`temperature` must be strictly positive"),
        ({"max_new_tokens": 90}, "`inputs` tokens + `max_new_tokens` must be <= 96"),
        ({"best_of": 2}, "you must use sampling when `best_of` is > 1"),
    ],
)
def test_validation_errors(url: str, parameters: dict[str, Any], message: str) -> None:
    response = httpx.post(f"{url}/generate", json={"inputs": PROMPT, "parameters": parameters})
    assert response.status_code == 422
    body = response.json()
    assert body["error_type"] == "validation" and message in body["error"]


def test_too_long_and_stream_errors(url: str) -> None:
    response = httpx.post(f"{url}/generate", json={"inputs": "x y " * 200})
    assert response.status_code == 422 and "`inputs` must have less than 64" in response.text
    client = InferenceClient(base_url=url)
    with pytest.raises(ValidationError, match="top_n_tokens"):
        list(client.text_generation(PROMPT, max_new_tokens=3, top_n_tokens=8, stream=True))
    events = httpx.post(
        f"{url}/generate_stream",
        json={"inputs": PROMPT, "parameters": {"decoder_input_details": True}},
    ).text

    error = json.loads(events.strip()[len("data:") :])
    assert error["error_type"] == "validation" and "decoder_input_details" in error["error"]


def test_stream_error_mid_generation_closes(tiny: tuple[Any, Any]) -> None:
    model, tokenizer = tiny
    app = create_app(model, tokenizer, model_id="tiny")
    engine = app.state.engine
    original = engine._push

    def push(row: Any, token: int, lp: float, top: Any) -> bool:
        if len(row.tokens) == 2:
            raise RuntimeError("boom")
        return bool(original(row, token, lp, top))

    engine._push = push
    with background_server(app) as base:
        client = InferenceClient(base_url=base, timeout=30)
        seen = []
        with pytest.raises(GenerationError, match="boom"):
            for piece in client.text_generation(PROMPT, max_new_tokens=10, stream=True):
                seen.append(piece)
        assert len(seen) == 2
        response = httpx.post(f"{base}/generate", json={"inputs": PROMPT})
        assert response.status_code == 424 and response.json()["error_type"] == "generation"


async def test_concurrent_requests_are_batched(tiny: tuple[Any, Any]) -> None:
    model, tokenizer = tiny
    app = create_app(model, tokenizer, model_id="tiny", batch_wait_s=0.05)
    with background_server(app) as base:
        async with httpx.AsyncClient(timeout=60) as http:
            body = {"inputs": PROMPT, "parameters": {"max_new_tokens": 8}}
            single = (await http.post(f"{base}/generate", json=body)).json()
            before = app.state.engine.batches_run
            prompts = [PROMPT[: 20 + 3 * i] for i in range(8)]
            outs = await asyncio.gather(
                *(
                    http.post(
                        f"{base}/generate", json={"inputs": p, "parameters": {"max_new_tokens": 8}}
                    )
                    for p in prompts
                )
            )
            assert all(o.status_code == 200 for o in outs)
            assert app.state.engine.batches_run - before <= 2
            assert single["generated_text"]


async def test_overloaded_429(tiny: tuple[Any, Any]) -> None:
    model, tokenizer = tiny
    app = create_app(model, tokenizer, model_id="tiny", max_concurrent_requests=1)
    with background_server(app) as base:
        async with httpx.AsyncClient(timeout=60) as http:
            long = asyncio.ensure_future(
                http.post(
                    f"{base}/generate",
                    json={"inputs": PROMPT, "parameters": {"max_new_tokens": 900}},
                )
            )
            while not app.state.in_flight[0]:
                await asyncio.sleep(0.005)
            response = await http.post(
                f"{base}/generate", json={"inputs": PROMPT, "parameters": {"max_new_tokens": 1}}
            )
            assert response.status_code == 429
            assert response.json() == {"error": "Model is overloaded", "error_type": "overloaded"}
            assert (await long).status_code == 200


def test_api_key(tiny: tuple[Any, Any]) -> None:
    model, tokenizer = tiny
    app = create_app(model, tokenizer, model_id="tiny", api_key="sekrit")
    with background_server(app) as base:
        body = {"inputs": PROMPT, "parameters": {"max_new_tokens": 2}}
        assert httpx.post(f"{base}/generate", json=body).status_code == 401
        assert (
            httpx.post(
                f"{base}/generate", json=body, headers={"Authorization": "Bearer nope"}
            ).status_code
            == 401
        )
        assert httpx.get(f"{base}/health").status_code == 200
        client = InferenceClient(base_url=base, api_key="sekrit")
        assert isinstance(client.text_generation(PROMPT, max_new_tokens=2), str)


def test_draft_model_same_vocab_equals_greedy(tiny: tuple[Any, Any]) -> None:
    model, tokenizer = tiny
    draft_model, _ = build_tiny_model(seed=1)
    plain = create_app(model, tokenizer, model_id="tiny")
    assisted = create_app(
        model,
        tokenizer,
        model_id="tiny",
        draft=(draft_model, tokenizer),
        draft_model_id="tiny-draft",
    )
    body = {"inputs": PROMPT, "parameters": {"max_new_tokens": 12, "details": True}}
    with background_server(plain) as a, background_server(assisted) as b:
        info = httpx.get(f"{b}/info").json()
        assert info["speculate"] == 4 and info["draft_model_id"] == "tiny-draft"
        assert info["speculation"]["sampling"] and info["speculation"]["shared_vocabulary"]
        want = httpx.post(f"{a}/generate", json=body, timeout=60).json()
        got = httpx.post(f"{b}/generate", json=body, timeout=60).json()
        assert got["generated_text"] == want["generated_text"]
        assert [t["id"] for t in got["details"]["tokens"]] == [
            t["id"] for t in want["details"]["tokens"]
        ]
        kept, calls = got["details"]["accepted_draft_tokens"], got["details"]["target_calls"]
        assert kept + calls >= 12 and calls >= 1  # each target call commits kept drafts + 1
        assert "accepted_draft_tokens" not in want["details"]
        lines = [
            json.loads(line[5:])
            for line in httpx.post(f"{b}/generate_stream", json=body, timeout=60).text.splitlines()
            if line.startswith("data:")
        ]
        assert lines[-1]["generated_text"] == want["generated_text"]


# ---------------------------------------------------------------------------- real model


@pytest.fixture(scope="module")
def smol() -> tuple[Any, Any]:
    from langgraph_specsearch.models import load_pretrained

    return load_pretrained("smollm2-135m")


@pytest.mark.integration
async def test_smollm2_batched_greedy_equals_single(smol: tuple[Any, Any]) -> None:
    model, tokenizer = smol
    app = create_app(model, tokenizer, model_id="smollm2-135m", batch_wait_s=0.05)
    prompts = ["The capital of France is", "2 + 2 =", "Once upon a time, there"]
    with background_server(app) as base:
        async with AsyncInferenceClient(base_url=base) as client:
            alone = [await client.text_generation(p, max_new_tokens=8) for p in prompts]
            together = await asyncio.gather(
                *(client.text_generation(p, max_new_tokens=8) for p in prompts)
            )
            stopped = await client.text_generation(
                "Count: 1, 2, 3,", max_new_tokens=20, stop=[" 5"], details=True
            )
    assert together == alone
    assert stopped.details.finish_reason == "stop_sequence"
    assert stopped.generated_text.endswith(" 5") or " 5" in stopped.generated_text


@pytest.mark.integration
def test_smollm2_universal_assisted_equals_greedy(
    smol: tuple[Any, Any], tiny: tuple[Any, Any]
) -> None:
    """A draft with a different tokenizer (universal assisted generation) keeps greedy output."""
    model, tokenizer = smol
    plain = create_app(model, tokenizer, model_id="smollm2-135m")
    assisted = create_app(model, tokenizer, model_id="smollm2-135m", draft=tiny)
    body = {"inputs": "The capital of France is", "parameters": {"max_new_tokens": 10}}
    with background_server(plain) as a, background_server(assisted) as b:
        want = httpx.post(f"{a}/generate", json=body, timeout=120).json()
        got = httpx.post(f"{b}/generate", json=body, timeout=120).json()
    assert got == want


# ---------------------------------------------------------------- continuous batching


def _row(ids: list[int], max_new_tokens: int) -> Any:
    from langgraph_specsearch.server.engine import Row

    return Row(
        ids=ids,
        max_new_tokens=max_new_tokens,
        do_sample=False,
        temperature=1.0,
        top_p=1.0,
        top_k=0,
        repetition_penalty=1.0,
        frequency_penalty=0.0,
        seed=None,
        stop=[],
        top_n=0,
    )


@pytest.mark.parametrize("arch", ["llama", "gemma3-sliding-window"])
def test_rows_join_and_leave_mid_batch_greedy_equals_generate(
    tiny: tuple[Any, Any], arch: str
) -> None:
    """Rows joining between decode steps and leaving when done decode as `generate` alone."""
    import torch

    from langgraph_specsearch.server.engine import Engine

    model, tokenizer = tiny
    if arch != "llama":
        model = build_tiny_gemma3(tokenizer, sliding_window=6)
    engine = Engine(model, tokenizer, draft=None, max_batch_size=8, batch_wait_s=0)
    assert engine.continuous
    generator = torch.Generator().manual_seed(0)
    vocab = model.config.vocab_size
    prompts = [torch.randint(3, vocab, (n,), generator=generator).tolist() for n in (5, 17, 9, 3)]
    lengths = [20, 7, 25, 4]
    rows = [_row(p, n) for p, n in zip(prompts, lengths, strict=True)]
    joins = {0: [0, 1], 3: [2], 9: [3]}  # decode step -> rows admitted before it
    sizes = []
    for step in range(40):
        engine._step([rows[i] for i in joins.get(step, [])])
        sizes.append(len(engine._batch) if engine._batch is not None else 0)
    assert max(sizes) == 3 and sizes[-1] == 0  # row 1 left before row 3 joined
    for prompt, n, row in zip(prompts, lengths, rows, strict=True):
        with torch.inference_mode():
            out = model.generate(
                torch.tensor([prompt]),
                attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                max_new_tokens=n,
                do_sample=False,
                pad_token_id=engine.pad_id,
            )
        assert row.tokens == out[0, len(prompt) :].tolist()
        assert row.finish_reason == "length" and row.error is None


async def test_short_request_joins_and_leaves_a_running_batch(tiny: tuple[Any, Any]) -> None:
    """A request arriving mid-generation is answered while a long one keeps decoding."""
    model, tokenizer = tiny
    app = create_app(model, tokenizer, model_id="tiny")
    engine = app.state.engine
    assert engine.continuous
    with background_server(app) as base:
        async with httpx.AsyncClient(timeout=60) as http:
            long_body = {"inputs": PROMPT, "parameters": {"max_new_tokens": 900}}
            long = asyncio.ensure_future(http.post(f"{base}/generate", json=long_body))
            while engine._batch is None or not engine._batch.rows[0].tokens:
                await asyncio.sleep(0.002)
            short_body = {
                "inputs": "Answer:",
                "parameters": {"max_new_tokens": 3, "details": True},
            }
            short = await http.post(f"{base}/generate", json=short_body)
            assert short.status_code == 200
            assert short.json()["details"]["generated_tokens"] == 3
            assert not long.done()  # the long request did not finish first
            running = engine._batch
            assert running is not None and len(running.rows) == 1  # the short row left
            response = await long
    assert response.status_code == 200


def test_static_fallback_still_serves(tiny: tuple[Any, Any]) -> None:
    """Models the continuous path cannot handle use one `generate` per batch."""
    model, tokenizer = tiny
    app = create_app(model, tokenizer, model_id="tiny")
    body = {"inputs": PROMPT, "parameters": {"max_new_tokens": 6, "details": True}}
    with background_server(app) as base:
        want = httpx.post(f"{base}/generate", json=body, timeout=60).json()
        app.state.engine.continuous = False
        got = httpx.post(f"{base}/generate", json=body, timeout=60).json()
    assert got["generated_text"] == want["generated_text"]
    assert [t["id"] for t in got["details"]["tokens"]] == [
        t["id"] for t in want["details"]["tokens"]
    ]
