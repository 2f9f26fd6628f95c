"""One shared HTTP client per backend and event loop (connection pooling, loop-safe)."""

from __future__ import annotations

import asyncio

import httpx

from langgraph_specsearch.backends.loop_clients import HTTPState, PerLoop
from langgraph_specsearch.backends.openai import OpenAIBackend
from langgraph_specsearch.backends.tgi import TGIBackend
from langgraph_specsearch.prm.http import VLLMPoolingPRM


def test_per_loop_state_is_made_once_per_loop_and_closed() -> None:
    made: list[HTTPState] = []

    def make() -> HTTPState:
        made.append(HTTPState(httpx.AsyncClient(), 2))
        return made[-1]

    per_loop = PerLoop(make)

    async def twice() -> HTTPState:
        first, second = per_loop.get(), per_loop.get()
        assert first is second
        return first

    one = asyncio.run(twice())
    two = asyncio.run(twice())
    assert one is not two and len(made) == 2  # a new loop gets its own client

    async def close() -> None:
        state = per_loop.get()
        await per_loop.aclose(HTTPState.aclose)
        assert state.client.is_closed and per_loop.get() is not state

    asyncio.run(close())


def test_backends_and_http_prms_reuse_one_client_per_loop() -> None:
    tgi = TGIBackend("http://127.0.0.1:9")
    openai = OpenAIBackend("http://127.0.0.1:9", model="m")
    prm = VLLMPoolingPRM("http://127.0.0.1:9")

    async def clients() -> list[httpx.AsyncClient]:
        got = [tgi.http(), openai._state().client, prm.client._per_loop.get().client]
        again = [tgi.http(), openai._state().client, prm.client._per_loop.get().client]
        assert all(a is b for a, b in zip(got, again, strict=True))
        await tgi.aclose()
        await openai.aclose()
        await prm.client.aclose()
        assert all(c.is_closed for c in got)
        return got

    asyncio.run(clients())
