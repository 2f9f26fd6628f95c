"""`load_components` builds only the backends a search uses, and `--api-key ''` sends no token."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import pytest
from scripted import ScriptedBackend

from langgraph_specsearch.api import SearchConfig, load_components
from langgraph_specsearch.backends import endpoint
from langgraph_specsearch.backends.base import BackendError
from langgraph_specsearch.backends.endpoint import detect_protocol, endpoint_backend
from langgraph_specsearch.prm.arithmetic import ArithmeticPRM
from langgraph_specsearch.types import GenerationParams


class Speculating(ScriptedBackend):
    """A scripted large model that says it does token-level speculative decoding."""

    def speculates(self, *, sampling: bool) -> bool:
        return True


@pytest.fixture
def built(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The URLs `endpoint_backend` is asked for (each a scripted backend, nothing probed)."""
    urls: list[str] = []

    def fake(url: str, **_: Any) -> ScriptedBackend:
        urls.append(url)
        return Speculating(url, lambda prompt, call, i: "x")

    monkeypatch.setattr(endpoint, "endpoint_backend", fake)
    return urls


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"method": "ar", "prm": "arithmetic"}, ["http://large"]),
        ({"method": "sps", "prm": "arithmetic"}, ["http://large"]),
        ({"method": "ar", "prm": "judge", "prm_url": "http://prm"}, ["http://large", "http://prm"]),
        ({"method": "ar", "prm": "combined"}, ["http://small", "http://large"]),
        ({"method": "specsearch", "prm": "arithmetic"}, ["http://small", "http://large"]),
    ],
)
def test_the_small_endpoint_is_built_only_when_used(
    built: list[str], options: dict[str, Any], expected: list[str]
) -> None:
    config = SearchConfig(small_url="http://small", large_url="http://large", **options)
    components = load_components(config)
    assert built == expected
    assert (components.small is None) == ("http://small" not in expected)


@pytest.mark.parametrize(
    ("options", "why"),
    [
        ({"method": "specsearch", "prm": "arithmetic"}, "drafts"),
        ({"method": "ar", "prm": "combined"}, "judge of --prm combined"),
    ],
)
def test_a_missing_small_endpoint_says_what_needs_it(
    built: list[str], options: dict[str, Any], why: str
) -> None:
    with pytest.raises(ValueError, match=f"--small-url is needed with --large-url: .*{why}"):
        load_components(SearchConfig(large_url="http://large", **options))
    assert built == []


def test_sps_loads_the_small_model_only_as_the_assistant(monkeypatch: pytest.MonkeyPatch) -> None:
    from langgraph_specsearch.backends.transformers import TransformersBackend

    loaded: list[tuple[str, str | None]] = []

    def fake_load(name: str, *, assistant: str | None = None, **_: Any) -> Speculating:
        loaded.append((name, assistant))
        return Speculating(name, lambda prompt, call, i: "x")

    monkeypatch.setattr(TransformersBackend, "load", staticmethod(fake_load))
    config = SearchConfig(method="sps", prm="arithmetic", engine="transformers")
    components = load_components(config)
    assert loaded == [(config.large, config.small)]  # no separate small backend
    assert components.small is None and isinstance(components.prm, ArithmeticPRM)
    loaded.clear()
    load_components(config.model_copy(update={"prm": "judge"}))  # the small model judges
    assert loaded == [(config.small, None), (config.large, config.small)]


def test_resolve_api_key_falls_back_only_for_none(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SPECSEARCH_API_KEY", raising=False)
    monkeypatch.setenv("HF_TOKEN", "hf-secret")
    assert endpoint.resolve_api_key(None) == "hf-secret"
    assert endpoint.resolve_api_key("") == ""
    assert endpoint.resolve_api_key("mine") == "mine"
    monkeypatch.setenv("SPECSEARCH_API_KEY", "spec-secret")
    assert endpoint.resolve_api_key(None) == "spec-secret"
    monkeypatch.delenv("SPECSEARCH_API_KEY")
    monkeypatch.delenv("HF_TOKEN")
    assert endpoint.resolve_api_key(None) == ""
    monkeypatch.setenv("SPECSEARCH_API_KEY", "spec-secret")
    assert not endpoint_backend("http://127.0.0.1:9/v1", api_key="").api_key  # type: ignore[attr-defined]
    assert endpoint_backend("http://127.0.0.1:9/v1").api_key == "spec-secret"  # type: ignore[attr-defined]


@pytest.fixture
def recording_server() -> Iterator[tuple[str, list[tuple[str, str | None]]]]:
    """A TGI look-alike that records each request's Authorization header (generate: 400)."""
    seen: list[tuple[str, str | None]] = []

    class Handler(BaseHTTPRequestHandler):
        def _reply(self, code: int, body: bytes) -> None:
            seen.append((self.path, self.headers.get("authorization")))
            self.send_response(code)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            self._reply(200, b'{"model_id": "tiny", "max_total_tokens": 2048}')

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("content-length") or 0))
            self._reply(400, b'{"error": "recorded", "error_type": "validation"}')

        def log_message(self, *_: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()


def test_empty_api_key_sends_no_token_anywhere(
    recording_server: tuple[str, list[tuple[str, str | None]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, seen = recording_server
    monkeypatch.setenv("SPECSEARCH_API_KEY", "spec-secret")
    monkeypatch.setenv("HF_TOKEN", "hf-secret")
    params = GenerationParams(max_new_tokens=2, temperature=0.0)
    assert detect_protocol(url, api_key="") == "tgi"
    backend = endpoint_backend(url, protocol="tgi", api_key="", retries=0)
    with pytest.raises(BackendError):  # huggingface_hub's generate call: its token overridden
        asyncio.run(backend.agenerate(["q"], n=1, params=params))
    assert len(seen) >= 3 and any(path == "/" for path, _ in seen), seen
    assert not any(auth for _, auth in seen), seen
    seen.clear()
    keyed = endpoint_backend(url, protocol="auto", retries=0)  # None: the environment's key
    with pytest.raises(BackendError):
        asyncio.run(keyed.agenerate(["q"], n=1, params=params))
    assert seen and all(auth == "Bearer spec-secret" for _, auth in seen), seen
