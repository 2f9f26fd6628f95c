"""Which protocol an endpoint speaks (TGI or OpenAI-compatible), and its backend."""

from __future__ import annotations

import os
import time
from typing import Literal

import httpx

from langgraph_specsearch.backends.base import Backend
from langgraph_specsearch.backends.openai import API_KEY_ENV, OpenAIBackend, base_url
from langgraph_specsearch.prompts import PromptFormat
from langgraph_specsearch.retries import DEFAULT_RETRIES

ProtocolName = Literal["auto", "tgi", "openai"]


def _json(response: httpx.Response) -> object:
    try:
        return response.json()
    except ValueError:
        return None


def detect_protocol(
    url: str,
    *,
    api_key: str | None = None,
    timeout: float = 10.0,
    attempts: int = 3,
    backoff_s: float = 0.5,
) -> Literal["tgi", "openai"]:
    """Ask the server which API it speaks.

    TGI (and `specsearch serve`) answers `GET /info` with a `model_id`; an OpenAI-compatible
    server (vLLM, SGLang, llama.cpp) answers `GET /v1/models` with a `data` list. A URL that
    ends in `/v1` is taken as OpenAI-compatible without asking. Connection errors are retried
    `attempts - 1` times (a server that is still starting).

    Raises:
        ValueError: one line naming the URL when nothing answers or neither route fits.
    """
    root = base_url(url)
    if url.strip().rstrip("/").endswith("/v1"):
        return "openai"
    key = api_key if api_key is not None else os.environ.get(API_KEY_ENV)  # "": none
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    last: Exception | None = None
    for attempt in range(attempts):
        try:
            with httpx.Client(base_url=root, headers=headers, timeout=timeout) as http:
                info = http.get("/info")
                body = _json(info) if info.status_code == 200 else None
                if isinstance(body, dict) and "model_id" in body:
                    return "tgi"
                models = http.get("/v1/models")
                body = _json(models) if models.status_code == 200 else None
                if isinstance(body, dict) and isinstance(body.get("data"), list):
                    return "openai"
                raise ValueError(
                    f"{root}: neither TGI (GET /info: HTTP {info.status_code}) nor"
                    f" OpenAI-compatible (GET /v1/models: HTTP {models.status_code});"
                    " check the URL or pass --protocol tgi|openai"
                )
        except httpx.TransportError as exc:
            last = exc
            if attempt + 1 < attempts:
                time.sleep(backoff_s * 2**attempt)
    text = " ".join(str(last).split()) if last else ""
    raise ValueError(
        f"{root}: no server answers ({type(last).__name__}: {text});"
        " start it, or pass --protocol tgi|openai to skip detection"
    )


DEFAULT_TIMEOUT_S = 20.0
"""Seconds one endpoint call may take (a frozen server is given up on after the retries)."""


HF_TOKEN_ENV = "HF_TOKEN"
"""The variable huggingface_hub reads its token from (used when `SPECSEARCH_API_KEY` is unset)."""


def resolve_api_key(api_key: str | None) -> str:
    """The bearer token to send: `api_key` when given (`""`: none, so no token from the
    environment reaches a third-party server), else `$SPECSEARCH_API_KEY`, else `$HF_TOKEN`
    (as huggingface_hub), else `""` (none)."""
    if api_key is not None:
        return api_key
    return os.environ.get(API_KEY_ENV) or os.environ.get(HF_TOKEN_ENV) or ""


def endpoint_backend(
    url: str,
    *,
    protocol: ProtocolName = "auto",
    prompt_format: str | PromptFormat = "fewshot",
    api_key: str | None = None,
    timeout: float = DEFAULT_TIMEOUT_S,
    retries: int = DEFAULT_RETRIES,
) -> Backend:
    """A backend for `url`: `TGIBackend` or `OpenAIBackend`, by `protocol` or detection.

    Args:
        url: server root (`http://host:port`); for OpenAI-compatible servers `.../v1` works too.
        protocol: `tgi`, `openai`, or `auto` (ask the server, see `detect_protocol`).
        prompt_format: `fewshot`, `chatml` or a `PromptFormat`.
        api_key: bearer token; None: `$SPECSEARCH_API_KEY`, else `$HF_TOKEN`, when set;
            `""`: send none (not even the environment's).
        timeout: seconds per call.
        retries: retries of a call that failed for a reason worth retrying
            (`retries.is_transient`) made outside a search graph; inside one, the nodes'
            `RetryPolicy` retries instead (one layer, see `retries.py`).
    """
    key = resolve_api_key(api_key)
    if protocol == "auto":
        kind = detect_protocol(url, api_key=key, timeout=min(timeout, 10.0), attempts=retries + 1)
    else:
        kind = protocol
    if kind == "openai":
        return OpenAIBackend(
            url, prompt_format=prompt_format, api_key=key, timeout=timeout, retries=retries
        )
    from langgraph_specsearch.backends.tgi import TGIBackend

    return TGIBackend(
        base_url(url), prompt_format=prompt_format, api_key=key, timeout=timeout, retries=retries
    )
