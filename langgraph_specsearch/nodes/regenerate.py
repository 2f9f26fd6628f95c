"""Regenerate node: the large model writes what the reject node asked of it."""

from __future__ import annotations

import asyncio
from typing import Any

from langgraph_specsearch.backends.base import Backend
from langgraph_specsearch.events import emit, thought_event
from langgraph_specsearch.nodes.common import (
    AsyncNode,
    Clock,
    candidate,
    now,
    step_params,
    usage_entry,
)
from langgraph_specsearch.nodes.draft import large_request, request_key, step_seed
from langgraph_specsearch.nodes.prefetch import Prefetcher
from langgraph_specsearch.state import steps_to
from langgraph_specsearch.types import Generation, GenerationParams


def make_regenerate_node(
    large: Backend, *, params: GenerationParams, prefetch: Prefetcher | None = None
) -> AsyncNode:
    """Build the regenerate node.

    A large-only expansion (AR, warm-up, the controller's fallback) asks for `n` thoughts per
    node in one batched call. Make-up requests after drafting are, with `prefetch`
    (concurrent speculation), the in-flight requests `0..k-1` of each node (made here if they
    were never started, e.g. after a resume); otherwise one batched call with one prompt per
    requested thought. Token-level speculative decoding happens inside `large` when it is
    configured with a draft model (a local assistant model, or a server that speculates).
    """

    async def regenerate(state: dict[str, Any]) -> dict[str, Any]:
        start = now()
        nodes, regen = state["nodes"], state["regen"]
        report = dict(state.get("report") or {})
        makeup = any(c["source"] == "small" for c in state["candidates"])
        offset: dict[str, int] = {}
        for c in state["candidates"]:
            offset[c["parent_id"]] = offset.get(c["parent_id"], 0) + 1
        unique = list(dict.fromkeys(regen))
        counts = {p: regen.count(p) for p in unique}
        fresh: list[dict[str, Any]] = []
        if makeup and prefetch is not None:
            tasks: list[tuple[str, int, asyncio.Future[tuple[Generation, float]]]] = []
            for p in unique:
                for i in range(counts[p]):
                    task = prefetch.claim(request_key(state, p, i))
                    if task is None:
                        task = asyncio.ensure_future(large_request(large, params, state, p, i))
                    tasks.append((p, i, task))
            try:
                results = await asyncio.gather(*(t for _, _, t in tasks))
            finally:
                for _, _, t in tasks:
                    t.cancel()  # no-op once done; stops siblings of a failed request
            used = [g for g, _ in results]
            seconds = max((s for _, s in results), default=0.0)
            for (p, i, _), g in zip(tasks, used, strict=True):
                fresh.append({**candidate(nodes[p], g, "large", offset.get(p, 0) + i)})
            calls = len(tasks)
        else:
            # Equal counts (AR, warm-up): n samples per parent in one call. Unequal counts: one
            # prompt per requested thought, so no sample is made only to be thrown away.
            equal = len(set(counts.values())) == 1
            parents, n = (unique, counts[unique[0]]) if equal else (regen, 1)
            prompts = [
                large.prompt_format.render(state["question"], steps_to(nodes, p)) for p in parents
            ]
            call_params = step_seed(params, state, salt=2)
            call_params = step_params(call_params, large.prompt_format, state)
            with Clock() as clock:
                outputs = await large.agenerate(prompts, n=n, params=call_params)
            used = [g for gens in outputs for g in gens]
            seconds = clock.seconds
            seen: dict[str, int] = {}
            for p, gens in zip(parents, outputs, strict=True):
                for g in gens:
                    index = offset.get(p, 0) + seen.get(p, 0)
                    seen[p] = seen.get(p, 0) + 1
                    fresh.append(candidate(nodes[p], g, "large", index))
            calls = 1
        for c in fresh:
            c["verdict"] = "large"
            emit(thought_event("regenerated", c, state["threshold"]["expansions"]))
        entry = usage_entry(used, seconds)
        entry["calls"] = calls
        report["large_makeup_s" if makeup else "large_s"] = seconds
        report["large_n"] = len(used)
        report["active_s"] = report.get("active_s", 0.0) + now() - start
        return {
            "candidates": [*state["candidates"], *fresh],
            "regen": [],
            "usage": {"large": entry},
            "report": report,
        }

    return regenerate


async def finish(state: dict[str, Any]) -> dict[str, Any]:
    """Hand the node pipeline's scored candidates and its report to the expander."""
    return {"done": list(state["candidates"]), "reports": [dict(state.get("report") or {})]}
