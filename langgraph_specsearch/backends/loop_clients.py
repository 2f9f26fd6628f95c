"""One shared HTTP client (and concurrency bound) per backend and event loop.

An `httpx.AsyncClient` and an `asyncio.Semaphore` belong to the loop they were first used on,
and a backend may serve several loops (the sync `solve` runs on a background loop, a user's
app on its own). `PerLoop` makes the state on first use in each running loop, keeps it for
every later call there (connection pooling), and forgets it when the loop is gone.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

import httpx

T = TypeVar("T")


class PerLoop(Generic[T]):
    """State made by `make()` once per running event loop."""

    def __init__(self, make: Callable[[], T]) -> None:
        self._make = make
        self._states: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, T] = (
            weakref.WeakKeyDictionary()
        )

    def get(self) -> T:
        """The running loop's state (made on first use)."""
        loop = asyncio.get_running_loop()
        state = self._states.get(loop)
        if state is None:
            state = self._states[loop] = self._make()
        return state

    async def aclose(self, close: Callable[[T], Awaitable[object]]) -> None:
        """Close and forget the running loop's state, if it has one."""
        state = self._states.pop(asyncio.get_running_loop(), None)
        if state is not None:
            await close(state)


class HTTPState:
    """A loop's shared httpx client and its concurrency bound."""

    def __init__(self, client: httpx.AsyncClient, limit: int) -> None:
        self.client = client
        self.semaphore = asyncio.Semaphore(limit)

    async def aclose(self) -> None:
        """Close the client."""
        await self.client.aclose()
