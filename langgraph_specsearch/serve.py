"""`specsearch serve`: a Text-Generation-Inference-compatible HTTP server over a local model.

The server lives in `langgraph_specsearch.server` (`schema`, `engine`, `app`); this module is
the command (`serve`), `run_server`, `background_server` (tests, benchmarks) and `load_model`,
and re-exports `create_app` and `build_tiny_model`. torch, transformers, FastAPI and uvicorn
are imported only when a server is built, so `specsearch --help` stays fast.

    python -m langgraph_specsearch.serve --model smollm2-135m --port 8081
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

if TYPE_CHECKING:
    from fastapi import FastAPI

    from langgraph_specsearch.server.app import create_app
    from langgraph_specsearch.server.tiny import build_tiny_model

__all__ = [
    "background_server",
    "build_tiny_model",
    "create_app",
    "load_model",
    "run_server",
    "serve",
]

_LAZY = {
    "create_app": "langgraph_specsearch.server.app",
    "build_tiny_model": "langgraph_specsearch.server.tiny",
}


def __getattr__(name: str) -> Any:
    """`create_app` and `build_tiny_model`, imported on first use (they import torch)."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def load_model(
    name: str, *, device: str | None = None, dtype: str | None = None
) -> tuple[Any, Any]:
    """`tiny-random` (tests), or a name `langgraph_specsearch.models.load_pretrained` knows.

    `device` / `dtype` as `load_pretrained` takes them (default: a GPU when present, float32).
    """
    if name == "tiny-random":
        from langgraph_specsearch.models import resolve_device, resolve_dtype
        from langgraph_specsearch.server.tiny import build_tiny_model

        model, tokenizer = build_tiny_model()
        return model.to(resolve_device(device), resolve_dtype(dtype)), tokenizer
    from langgraph_specsearch.models import load_pretrained

    return load_pretrained(name, device=device, dtype=dtype)


def run_server(
    model: Any,
    tokenizer: Any,
    *,
    model_id: str,
    host: str = "127.0.0.1",
    port: int = 8080,
    log_level: str = "info",
    **app_kwargs: Any,
) -> None:
    """Serve with uvicorn until SIGINT/SIGTERM (graceful shutdown stops the batching task)."""
    import uvicorn

    from langgraph_specsearch.server.app import create_app

    app = create_app(model, tokenizer, model_id=model_id, **app_kwargs)
    uvicorn.run(app, host=host, port=port, log_level=log_level)


def serve(
    model: Annotated[
        str, typer.Option("--model", help="Model name (smollm2-135m, gemma3-270m, tiny-random).")
    ],
    draft_model: Annotated[
        str | None,
        typer.Option(
            "--draft-model",
            help="Draft model for speculative decoding (greedy and sampled requests).",
        ),
    ] = None,
    draft_tokens: Annotated[
        int, typer.Option(min=1, help="Draft tokens per round at start (then adaptive).")
    ] = 4,
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8080,
    max_concurrent_requests: Annotated[
        int, typer.Option(help="Requests in flight before 429.")
    ] = 128,
    max_input_tokens: Annotated[
        int | None,
        typer.Option(help="Longest prompt in tokens (default: --max-total-tokens - 1)."),
    ] = None,
    max_total_tokens: Annotated[
        int | None,
        typer.Option(help="Prompt + new tokens limit (default: 4096, at most the model's)."),
    ] = None,
    max_batch_size: Annotated[int, typer.Option(help="Sequences per generate() call.")] = 8,
    api_key: Annotated[
        str | None,
        typer.Option(
            help="Require `Authorization: Bearer KEY` (all routes but /health and /info).",
            envvar="SPECSEARCH_API_KEY",
        ),
    ] = None,
    payload_limit: Annotated[
        int, typer.Option(help="Largest request body in bytes (413 above; TGI's default).")
    ] = 2_000_000,
    queue_timeout: Annotated[
        float, typer.Option(help="Seconds a request may wait to be scheduled (then 429).")
    ] = 60.0,
    prefill_logprobs_tokens: Annotated[
        int,
        typer.Option(help="Longest prompt for `decoder_input_details` (prompt log-probabilities)."),
    ] = 1024,
    threads: Annotated[int | None, typer.Option(help="torch CPU threads.")] = None,
    device: Annotated[
        str | None, typer.Option(help="cpu | cuda | cuda:N | mps [default: a GPU if present]")
    ] = None,
    dtype: Annotated[
        str | None, typer.Option(help="float32 | bfloat16 | float16 [default: float32]")
    ] = None,
) -> None:
    """Serve a local model over HTTP with Text Generation Inference's API."""
    from langgraph_specsearch.server.app import token_limits
    from langgraph_specsearch.server.guards import check_api_key

    try:  # the cheap checks first: no model is loaded for a bad option
        check_api_key(api_key)
        token_limits(max_input_tokens, max_total_tokens, None)
        if not 0 <= port <= 65535:
            raise ValueError(f"--port must be in 0..65535, got {port}")
        if payload_limit < 1 or not queue_timeout > 0 or prefill_logprobs_tokens < 0:
            raise ValueError("--payload-limit, --queue-timeout must be positive")
        _check_listen(host, port)
    except ValueError as exc:
        _fail(str(exc))
    if threads:
        import torch

        torch.set_num_threads(threads)
    started = time.perf_counter()
    loading = model
    try:
        m, tok = load_model(model, device=device, dtype=dtype)
        loading = draft_model or model
        draft = load_model(draft_model, device=device, dtype=dtype) if draft_model else None
    except ValueError as exc:  # unknown model, device or dtype: one line, exit 2
        typer.echo(f"error: {str(exc).splitlines()[0]}", err=True)
        raise typer.Exit(2) from None
    except Exception as exc:  # noqa: BLE001 - unwritable cache, corrupt download, ...
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        _fail(f"cannot load model {loading!r}: {reason}")
    typer.echo(f"loaded {model} in {time.perf_counter() - started:.1f}s", err=True)
    try:
        run_server(
            m,
            tok,
            model_id=model,
            host=host,
            port=port,
            draft=draft,
            draft_model_id=draft_model,
            draft_tokens=draft_tokens,
            max_concurrent_requests=max_concurrent_requests,
            max_input_tokens=max_input_tokens,
            max_total_tokens=max_total_tokens,
            max_batch_size=max_batch_size,
            api_key=api_key,
            payload_limit=payload_limit,
            queue_timeout_s=queue_timeout,
            prefill_logprobs_tokens=prefill_logprobs_tokens,
        )
    except ValueError as exc:
        _fail(str(exc))


def _fail(message: str) -> NoReturn:
    """One line on stderr, exit status 2."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


def _check_listen(host: str, port: int) -> None:
    """Raise ValueError (one line) unless `host:port` can be bound now."""
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        family, _, _, _, address = infos[0]
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(address)
    except OSError as exc:
        raise ValueError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


@contextlib.contextmanager
def background_server(app: FastAPI, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Run `app` with uvicorn in a daemon thread; yields its base URL, stops it on exit."""
    import socket

    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    config = uvicorn.Config(app, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("server did not start")
        time.sleep(0.01)
    try:
        yield f"http://{host}:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


if __name__ == "__main__":
    typer.run(serve)
