"""One event loop in a daemon thread, where synchronous entry points run async code.

Nodes, backends and PRMs are async. Their sync entry points (`graph.invoke`, `solve`, a
tool's sync call) never call `asyncio.run` inside a node: they hand the coroutine to this
process-wide loop and wait for it. So they work from inside a running event loop (Jupyter, an
async web handler), requests a node starts (concurrent speculation) outlive the node, and a
backend's per-loop HTTP client is reused across sync calls. In async code use the async API
(`ainvoke`, `astream`, `asolve`): it runs on the caller's loop.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None
_thread: threading.Thread | None = None


def background_loop() -> asyncio.AbstractEventLoop:
    """The shared loop (started on first use, runs until the process exits)."""
    global _loop, _thread
    with _lock:
        if _loop is None or _loop.is_closed():
            _loop = asyncio.new_event_loop()
            _thread = threading.Thread(
                target=_loop.run_forever, name="specsearch-loop", daemon=True
            )
            _thread.start()
        return _loop


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run `coro` to completion from synchronous code, whether or not a loop runs here.

    Raises:
        RuntimeError: when called from a coroutine already running on the shared loop
            (waiting there would deadlock): await the async API instead.
    """
    loop = background_loop()
    if threading.current_thread() is _thread:
        coro.close()
        raise RuntimeError(
            "a sync entry point was called from async code: use the async API (await ...)"
        )
    future = asyncio.run_coroutine_threadsafe(coro, loop)
    try:
        return future.result()
    except BaseException:
        future.cancel()
        raise
