"""`specsearch serve` under hostile input and load: isolation, limits, strict validation, auth.

All on the tiny random Llama (`build_tiny_model`), each server with the limit under test set low.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import typer
from typer.testing import CliRunner

from langgraph_specsearch.serve import background_server, build_tiny_model, create_app, serve
from langgraph_specsearch.server.app import token_limits

PROMPT = "Question: Natalia sold clips to 48 of her friends."


@pytest.fixture(scope="module")
def tiny() -> tuple[Any, Any]:
    return build_tiny_model()


@pytest.fixture(scope="module")
def url(tiny: tuple[Any, Any]) -> Iterator[str]:
    model, tokenizer = tiny
    app = create_app(
        model,
        tokenizer,
        model_id="tiny",
        max_total_tokens=96,
        payload_limit=4000,
        prefill_logprobs_tokens=8,
    )
    with background_server(app) as base:
        yield base


def post_raw(url: str, path: str, body: bytes, **headers: str) -> httpx.Response:
    return httpx.post(
        f"{url}{path}",
        content=body,
        headers={"Content-Type": "application/json", **headers},
        timeout=60,
    )


def assert_tgi_error(response: httpx.Response, status: int, error_type: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "error_type"} and body["error_type"] == error_type, body


def test_max_total_tokens_alone_derives_max_input_tokens(url: str) -> None:
    info = httpx.get(f"{url}/info").json()
    assert (info["max_input_tokens"], info["max_total_tokens"]) == (95, 96)
    assert token_limits(None, 50, 4096) == (49, 50)
    assert token_limits(None, None, 2048) == (2047, 2048)
    assert token_limits(3000, None, None) == (3000, 4096)
    with pytest.raises(ValueError, match="must be < --max-total-tokens"):
        token_limits(100, 100, None)


@pytest.mark.parametrize(
    ("body", "where"),
    [
        (b'{"inputs": "x", "parameters": {"temperature": NaN}}', "temperature"),
        (b'{"inputs": "x", "parameters": {"temperature": 1e999}}', "temperature"),
        (b'{"inputs": "x", "parameters": {"top_p": Infinity}}', "top_p"),
        (b'{"inputs": "x", "parameters": {"max_new_tokens": "5"}}', "max_new_tokens"),
        (b'{"inputs": "x", "parameters": {"max_new_tokens": true}}', "max_new_tokens"),
        (b'{"inputs": "x", "parameters": {"max_new_tokens": 2.5}}', "max_new_tokens"),
        (b'{"inputs": "x", "parameters": {"seed": 18446744073709551616}}', "seed"),
        (b'{"inputs": "x", "parameters": {"do_sample": "true"}}', "do_sample"),
        (b'{"inputs": "x", "parameters": {"temperature": "0.5"}}', "temperature"),
        (b'{"inputs": "x", "parameters": {"stop": [1]}}', "stop"),
        (b'{"inputs": 5}', "inputs"),
        (b'{"inputs": "x", "parameters": null}', "parameters"),
        (b"[1, 2]", "body"),
        (b'{"inputs": "x"', "JSON"),
        (b"", "JSON"),
    ],
)
def test_strict_validation(url: str, body: bytes, where: str) -> None:
    for path in ("/generate", "/generate_stream", "/"):
        response = post_raw(url, path, body)
        assert response.status_code == 422, (path, response.text)
        text = response.text.removeprefix("data:").strip()
        error = json.loads(text)
        assert error["error_type"] == "validation" and where in error["error"], error


def test_integral_numbers_are_integers(url: str) -> None:
    body = b'{"inputs": "Natalia", "parameters": {"max_new_tokens": 2.0, "seed": 7.0}}'
    response = post_raw(url, "/generate", body)
    assert response.status_code == 200, response.text


def test_body_limit_413_before_parsing(url: str) -> None:
    big = json.dumps({"inputs": "x" * 5000}).encode()
    assert_tgi_error(post_raw(url, "/generate", big), 413, "payload_too_large")

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted while read
        for _ in range(10):
            yield b" " * 1000

    response = httpx.post(f"{url}/tokenize", content=chunks(), timeout=60)
    assert_tgi_error(response, 413, "payload_too_large")
    assert httpx.get(f"{url}/health").status_code == 200


def test_prefill_logprobs_bounded(url: str) -> None:
    params = {"max_new_tokens": 1, "decoder_input_details": True, "details": True}
    long = httpx.post(f"{url}/generate", json={"inputs": PROMPT, "parameters": params})
    assert_tgi_error(long, 422, "validation")
    assert "--prefill-logprobs-tokens" in long.json()["error"]
    short = httpx.post(f"{url}/generate", json={"inputs": "Natalia sold", "parameters": params})
    assert short.status_code == 200
    prefill = short.json()["details"]["prefill"]
    assert prefill[0]["logprob"] is None and all(p["logprob"] <= 0 for p in prefill[1:])


async def test_bad_row_fails_alone_in_a_shared_prefill(tiny: tuple[Any, Any]) -> None:
    """A request that breaks the shared prefill fails alone; its batch-mates are answered."""
    model, tokenizer = tiny
    app = create_app(model, tokenizer, model_id="tiny", batch_wait_s=0.2)
    engine = app.state.engine
    admit = engine._admit

    def fragile_admit(rows: list[Any]) -> None:
        if any(r.seed == 13 for r in rows):
            raise RuntimeError("this row's parameter breaks the prefill")
        admit(rows)

    engine._admit = fragile_admit
    params = {"max_new_tokens": 3, "do_sample": True}
    with background_server(app) as base:
        async with httpx.AsyncClient(timeout=60) as http:
            bad, *good = await asyncio.gather(
                http.post(
                    f"{base}/generate",
                    json={"inputs": PROMPT, "parameters": {**params, "seed": 13}},
                ),
                *(
                    http.post(
                        f"{base}/generate",
                        json={"inputs": PROMPT, "parameters": {**params, "seed": s}},
                    )
                    for s in (1, 2, 3)
                ),
            )
    assert_tgi_error(bad, 424, "generation")
    assert [r.status_code for r in good] == [200, 200, 200]
    assert engine.batches_run == 1  # all four were admitted together


async def test_queue_timeout_429(tiny: tuple[Any, Any]) -> None:
    model, tokenizer = tiny
    app = create_app(model, tokenizer, model_id="tiny", max_batch_size=1, queue_timeout_s=0.3)
    with background_server(app) as base:
        async with httpx.AsyncClient(timeout=60) as http:
            long = asyncio.ensure_future(
                http.post(
                    f"{base}/generate",
                    json={"inputs": PROMPT, "parameters": {"max_new_tokens": 600}},
                )
            )
            while not app.state.engine.batches_run:
                await asyncio.sleep(0.01)
            queued = await http.post(
                f"{base}/generate", json={"inputs": PROMPT, "parameters": {"max_new_tokens": 1}}
            )
            assert_tgi_error(queued, 429, "overloaded")
            assert "--queue-timeout" in queued.json()["error"]
            assert (await long).status_code == 200


def test_unexpected_exception_is_a_tgi_500(tiny: tuple[Any, Any]) -> None:
    model, tokenizer = tiny

    class Fragile:
        """The real tokenizer, except on the text "boom"."""

        def __getattr__(self, name: str) -> Any:
            return getattr(tokenizer, name)

        def __call__(self, text: str, **kwargs: Any) -> Any:
            if text == "boom":
                raise RuntimeError("tokenizer exploded")
            return tokenizer(text, **kwargs)

    app = create_app(model, Fragile(), model_id="tiny")
    with background_server(app) as base:
        response = httpx.post(f"{base}/tokenize", json={"inputs": "boom"})
        assert_tgi_error(response, 500, "internal")
        assert httpx.post(f"{base}/tokenize", json={"inputs": "fine"}).status_code == 200


def test_api_key_any_text_constant_time_open_routes(tiny: tuple[Any, Any]) -> None:
    model, tokenizer = tiny
    key = "s\u00e9same-\u043a\u043b\u044e\u0447-\U0001f511"
    app = create_app(model, tokenizer, model_id="tiny", api_key=key)
    body = {"inputs": PROMPT, "parameters": {"max_new_tokens": 1}}
    with background_server(app) as base:
        for header in (
            b"Bearer " + key.encode(),
            b"bearer " + key.encode(),
            b"BEARER  " + key.encode(),
        ):
            response = httpx.post(f"{base}/generate", json=body, headers={b"Authorization": header})
            assert response.status_code == 200, header
        for header in (b"Bearer wrong", b"Basic " + key.encode(), key.encode(), b"\xff\xfe"):
            response = httpx.post(f"{base}/generate", json=body, headers={b"Authorization": header})
            assert_tgi_error(response, 401, "unauthorized")
        assert_tgi_error(httpx.post(f"{base}/tokenize", json=body), 401, "unauthorized")
        assert httpx.get(f"{base}/health").status_code == 200
        assert httpx.get(f"{base}/info").json()["model_id"] == "tiny"
    for empty in ("", "  "):
        with pytest.raises(ValueError, match="empty"):
            create_app(model, tokenizer, model_id="tiny", api_key=empty)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "no-such-model"], "unknown model 'no-such-model'"),
        (["--model", "tiny-random", "--port", "70000"], "--port must be in 0..65535"),
        (["--model", "tiny-random", "--api-key", ""], "--api-key is empty"),
        (["--model", "tiny-random", "--max-total-tokens", "1"], "--max-total-tokens must be"),
        (
            ["--model", "tiny-random", "--max-input-tokens", "200", "--max-total-tokens", "100"],
            "--max-input-tokens (200) must be < --max-total-tokens (100)",
        ),
        (["--model", "tiny-random", "--host", "192.0.2.1"], "cannot listen on 192.0.2.1:8080"),
    ],
)
def test_start_up_errors_are_one_line(args: list[str], message: str) -> None:
    app = typer.Typer()
    app.command()(serve)
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.output


def test_unwritable_cache_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPECSEARCH_CACHE", "/dev/null/cache")
    app = typer.Typer()
    app.command()(serve)
    result = CliRunner().invoke(app, ["--model", "smollm2-135m", "--port", "0"])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "cannot load model 'smollm2-135m'" in lines[0], result.output


async def test_bad_row_fails_alone_on_the_static_path(tiny: tuple[Any, Any]) -> None:
    """Static batching too: a row whose token choice breaks fails alone, and a `generate` that
    fails as a whole is run again row by row."""
    model, tokenizer = tiny
    app = create_app(model, tokenizer, model_id="tiny", batch_wait_s=0.2)
    engine = app.state.engine
    engine.continuous = False
    choose, generate = engine._choose, engine._generate_batch

    def fragile_choose(row: Any, scores: Any, seen: Any) -> int:
        if row.seed == 13:
            raise RuntimeError("this row's parameter breaks its sampling")
        return int(choose(row, scores, seen))

    def fragile_generate(rows: list[Any]) -> None:
        if len(rows) > 1 and any(r.seed == 14 for r in rows):
            raise RuntimeError("this row breaks the shared generate")
        if any(r.seed == 14 for r in rows):
            raise RuntimeError("and alone too")
        generate(rows)

    engine._choose, engine._generate_batch = fragile_choose, fragile_generate
    params = {"max_new_tokens": 3, "do_sample": True}
    with background_server(app) as base:
        async with httpx.AsyncClient(timeout=60) as http:
            responses = await asyncio.gather(
                *(
                    http.post(
                        f"{base}/generate",
                        json={"inputs": PROMPT, "parameters": {**params, "seed": s}},
                    )
                    for s in (13, 14, 1, 2)
                )
            )
    assert_tgi_error(responses[0], 424, "generation")
    assert_tgi_error(responses[1], 424, "generation")
    assert [r.status_code for r in responses[2:]] == [200, 200]
