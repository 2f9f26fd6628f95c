"""A batcher below the graph: calls that coincide are merged into one batched call.

With per-node pipelines every frontier node calls the models on its own. A serving engine
(vLLM, SGLang, TGI, llama.cpp's server) batches concurrent requests itself; an in-process
model does not, and would run them one after another. `BatchedBackend` and `BatchedPRM` wrap
such a model: a call waits a few turns of the event loop for others that are about to be made
(20 ms, then until no new call comes for a few turns of the loop), and all calls with the same
shape go to the model as one batch; each caller gets its own rows back.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable, Sequence
from typing import Any, Generic, TypeVar

from langgraph_specsearch.types import Generation, GenerationParams

Item = TypeVar("Item")
Result = TypeVar("Result")

#: Event-loop turns a call waits for others; a turn costs microseconds.
GATHER_TURNS = 64
#: Seconds a call waits for others first (in-process model calls take far longer).
WINDOW_S = 0.02


class Coalescer(Generic[Item, Result]):
    """Merges concurrent `run(key, items)` calls with the same key into one `fn(key, items)`."""

    def __init__(
        self,
        fn: Callable[[Any, list[Item]], Awaitable[list[Result]]],
        *,
        turns: int = GATHER_TURNS,
        window_s: float = WINDOW_S,
    ) -> None:
        self.fn = fn
        self.turns = turns
        self.window_s = window_s
        self._pending: dict[Hashable, list[tuple[list[Item], asyncio.Future[list[Result]]]]] = {}
        self.batches = 0
        self.merged_calls = 0

    async def run(self, key: Hashable, items: Sequence[Item]) -> list[Result]:
        """Results for `items`, computed in one batch with any call that coincides."""
        future: asyncio.Future[list[Result]] = asyncio.get_running_loop().create_future()
        group = self._pending.setdefault(key, [])
        group.append((list(items), future))
        if len(group) == 1:
            asyncio.ensure_future(self._flush(key))
        return await future

    async def _flush(self, key: Hashable) -> None:
        # a few milliseconds for callers still on their way (a pipeline's subgraph starting up),
        # then event-loop turns until no new call has come for a while
        await asyncio.sleep(self.window_s)
        seen, quiet = 0, 0
        for _ in range(self.turns):
            await asyncio.sleep(0)
            size = len(self._pending.get(key, []))
            quiet = quiet + 1 if size == seen else 0
            seen = size
            if quiet >= self.turns // 4:
                break
        group = self._pending.pop(key, [])
        live = [(items, fut) for items, fut in group if not fut.cancelled()]
        if not live:
            return
        self.batches += 1
        self.merged_calls += len(live)
        flat = [x for items, _ in live for x in items]
        try:
            results = await self.fn(key, flat)
        except BaseException as exc:  # every caller of the batch sees the failure
            for _, fut in live:
                if not fut.done():
                    fut.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        position = 0
        for items, fut in live:
            part = results[position : position + len(items)]
            position += len(items)
            if not fut.done():
                fut.set_result(part)


def _shape(params: GenerationParams, n: int) -> tuple[Any, ...]:
    """Calls merge when everything but the seed agrees (the batch uses the first seed)."""
    data = params.model_dump(exclude={"seed"})
    return (n, tuple(sorted((k, str(v)) for k, v in data.items())))


class BatchedBackend:
    """Wraps an in-process `Backend` so concurrent `agenerate` calls become one batch."""

    def __init__(self, inner: Any, *, window_s: float = WINDOW_S) -> None:
        self.inner = inner
        self.name = inner.name
        self.prompt_format = inner.prompt_format
        self.device_key = getattr(inner, "device_key", "local")
        self._first: dict[Hashable, GenerationParams] = {}
        self._generate: Coalescer[str, list[Generation]] = Coalescer(self._call, window_s=window_s)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def _call(self, key: Any, prompts: list[str]) -> list[list[Generation]]:
        return list(await self.inner.agenerate(prompts, n=key[0], params=self._first.pop(key)))

    async def agenerate(
        self, prompts: Sequence[str], *, n: int, params: GenerationParams
    ) -> list[list[Generation]]:
        """`n` continuations per prompt, batched with coinciding calls of the same shape."""
        key = _shape(params, n)
        self._first.setdefault(key, params)
        return await self._generate.run(key, prompts)

    async def anext_token_logprobs(
        self, prompts: Sequence[str], candidates: Sequence[str]
    ) -> list[dict[str, float]]:
        """Passed through (the judge PRM batches its own calls)."""
        return list(await self.inner.anext_token_logprobs(prompts, candidates))


class BatchedPRM:
    """Wraps a PRM so concurrent `ascore_last` calls for one question become one batch."""

    def __init__(self, inner: Any, *, window_s: float = WINDOW_S) -> None:
        self.inner = inner
        self.name = inner.name
        self._last: Coalescer[list[str], float] = Coalescer(self._call, window_s=window_s)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def _call(self, question: Any, paths: list[list[str]]) -> list[float]:
        return list(await self.inner.ascore_last(question, paths))

    async def ascore_last(self, question: str, paths: Sequence[Sequence[str]]) -> list[float]:
        """Last-step scores, batched with coinciding calls."""
        return await self._last.run(question, [list(p) for p in paths])

    async def ascore(self, question: str, paths: Sequence[Sequence[str]]) -> list[list[float]]:
        """Passed through."""
        return list(await self.inner.ascore(question, paths))
