"""Concurrent speculation: large-model requests started early and claimed or cancelled by index."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Hashable
from typing import Any

from langgraph_specsearch.types import Generation


def _consume(task: asyncio.Task[Any]) -> None:
    """Mark a request's failure as seen: a cancelled-after-failing request is no error."""
    if not task.cancelled():
        task.exception()


def _failed(task: asyncio.Task[Any]) -> bool:
    """Whether a request ended without a result (it raised or was cancelled)."""
    return task.done() and (task.cancelled() or task.exception() is not None)


class Prefetcher:
    """In-flight large-model requests of the running expansions, keyed by request.

    The draft node starts request i of a node (i = 0, 1, ...) while the small model drafts;
    once the drafts are judged, requests `0..k-1` are claimed for a shortfall of k and the rest
    cancelled. Which thought is kept depends on its index, never on which finished first. The
    requests live outside the graph state (which stays plain data): after a resume nothing is
    in flight and the regenerate node simply makes the requests itself.
    """

    def __init__(self) -> None:
        self._tasks: dict[Hashable, asyncio.Task[tuple[Generation, float]]] = {}
        self.started = 0
        self.cancelled = 0

    def start(self, key: Hashable, call: Coroutine[Any, Any, tuple[Generation, float]]) -> None:
        """Start one request (a coroutine returning the generation and its seconds).

        A request already in flight (or done) under `key` is kept: a retried draft node does
        not send it twice. One that failed or was cancelled is started afresh.
        """
        running = self._tasks.get(key)
        if running is not None and not _failed(running):
            call.close()
            return
        task = asyncio.ensure_future(call)
        task.add_done_callback(_consume)
        self._tasks[key] = task
        self.started += 1

    def claim(self, key: Hashable) -> asyncio.Task[tuple[Generation, float]] | None:
        """The request's task (removed from the registry), or None if it was never started.

        Claimed once: when the task failed, the node's retry finds nothing to claim and sends
        the request again instead of awaiting the same failed task.
        """
        return self._tasks.pop(key, None)

    def cancel(self, key: Hashable) -> bool:
        """Cancel one request if it is in flight; True when something was cancelled."""
        task = self._tasks.pop(key, None)
        if task is None:
            return False
        if not task.done():
            task.cancel()
            self.cancelled += 1
            return True
        return False

    def cancel_all(self, prefix: Hashable) -> int:
        """Cancel every request whose key starts with `prefix` (a finished or failed expansion)."""
        keys = [k for k in self._tasks if isinstance(k, tuple) and k[: len(prefix)] == prefix]  # type: ignore[arg-type]
        return sum(self.cancel(k) for k in keys)
