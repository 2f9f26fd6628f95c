"""`HF_HUB_OFFLINE=1` means "no Hugging Face Hub", not "no endpoint the user named".

huggingface_hub's HTTP clients refuse every request in offline mode, the `InferenceClient`'s
calls to a local TGI server included. `allow_endpoint(url)` exempts that server's origin:
while offline mode is on, huggingface_hub's async client factory is replaced by one whose
request hook lets exempted origins through and applies the Hub's own hook (offline refusal
included) to everything else.
"""

from __future__ import annotations

import threading
from typing import Any
from urllib.parse import urlsplit

_ALLOWED: set[str] = set()
_lock = threading.Lock()
_installed = False


def _origin(url: str) -> str:
    """`scheme://host:port` of a URL (lower case)."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return f"{parts.scheme}://{(parts.hostname or '').lower()}:{port}"


def allow_endpoint(url: str) -> None:
    """Let huggingface_hub's async client reach `url`'s origin even in offline mode."""
    try:
        from huggingface_hub import constants

        if not constants.is_offline_mode():
            return
        from huggingface_hub.utils import _http
    except ImportError:  # pragma: no cover - older huggingface_hub: nothing to bypass
        return
    global _installed
    with _lock:
        _ALLOWED.add(_origin(url))
        if _installed or not hasattr(_http, "set_async_client_factory"):
            return
        hub_hook = _http.hf_request_event_hook
        response_hook = getattr(_http, "async_hf_response_event_hook", None)
        client_class = type(_http.default_async_client_factory())

        async def request_hook(request: Any) -> None:
            if _origin(str(request.url)) not in _ALLOWED:
                hub_hook(request)

        def factory() -> Any:
            hooks: dict[str, list[Any]] = {"request": [request_hook]}
            if response_hook is not None:
                hooks["response"] = [response_hook]
            return client_class(event_hooks=hooks, follow_redirects=True, timeout=None)

        _http.set_async_client_factory(factory)
        _installed = True
