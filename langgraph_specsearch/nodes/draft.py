"""Draft node: the small model writes candidate thoughts for its frontier node(s), in one call.

When the expansion is not speculative (warm-up before beta exists, or the controller's
large-only decision), it drafts nothing and asks the large model for all `n` thoughts. With
concurrent speculation it also starts the large model's make-up requests before drafting.
"""

from __future__ import annotations

import zlib
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
from langgraph_specsearch.nodes.prefetch import Prefetcher
from langgraph_specsearch.speculation import SpeculationConfig
from langgraph_specsearch.state import steps_to
from langgraph_specsearch.types import Generation, GenerationParams

LARGE_ONLY = ("warmup", "large")


def step_seed(params: GenerationParams, state: dict[str, Any], salt: int) -> GenerationParams:
    """Derive a distinct seed per expansion so steps don't repeat the same samples."""
    if params.seed is None:
        return params
    expansions = state["threshold"]["expansions"]
    return params.model_copy(update={"seed": params.seed + 7919 * expansions + salt})


def distinct(params: GenerationParams, count: int) -> int:
    """How many samples are worth making: greedy decoding gives one thought however many asked."""
    return min(count, 1) if params.temperature == 0 else count


def drafts_per_node(speculation: SpeculationConfig, n: int, params: GenerationParams) -> int:
    """Drafts the small model writes per node."""
    return distinct(params, speculation.drafts_for(n))


def makeup_limit(speculation: SpeculationConfig, drafts: int, need: int) -> int:
    """The most large-model requests a node can need after its drafts are judged."""
    return drafts if speculation.regenerate == "all" else need


def request_key(state: dict[str, Any], parent: str, index: int) -> tuple[str, int, str, int]:
    """Identity of one large-model make-up request."""
    return (state["question"], state["threshold"]["expansions"], parent, index)


def request_params(
    params: GenerationParams, state: dict[str, Any], parent: str, index: int
) -> GenerationParams:
    """Seed of make-up request `index` of `parent`: fixed by the request, not by timing."""
    if params.seed is None:
        return params
    salt = zlib.crc32(parent.encode()) % 100_003
    seed = params.seed + 7919 * state["threshold"]["expansions"] + 31 * salt + 7 * index + 3
    return params.model_copy(update={"seed": seed})


async def large_request(
    large: Backend, params: GenerationParams, state: dict[str, Any], parent: str, index: int
) -> tuple[Generation, float]:
    """One large-model thought for `parent` (make-up request `index`) and its seconds."""
    prompt = large.prompt_format.render(state["question"], steps_to(state["nodes"], parent))
    call = request_params(params, state, parent, index)
    call = step_params(call, large.prompt_format, state)
    with Clock() as clock:
        outputs = await large.agenerate([prompt], n=1, params=call)
    return outputs[0][0], clock.seconds


def make_draft_node(
    small: Backend,
    *,
    params: GenerationParams,
    speculation: SpeculationConfig | None = None,
    large: Backend | None = None,
    large_params: GenerationParams | None = None,
    prefetch: Prefetcher | None = None,
) -> AsyncNode:
    """Build the draft node (with `prefetch`, large requests start here: concurrent speculation)."""
    speculation = speculation or SpeculationConfig.paper()

    async def draft(state: dict[str, Any]) -> dict[str, Any]:
        start = now()
        nodes, parents, n = state["nodes"], state["expand"], state["n"]
        decision = state.get("decision", "speculate")
        report: dict[str, Any] = {"decision": decision, "nodes": len(parents)}
        if decision in LARGE_ONLY:
            report["active_s"] = now() - start
            return {
                "candidates": [],
                "regen": [p for p in parents for _ in range(distinct(large_params or params, n))],
                "report": report,
            }
        # a final expansion writes whole solutions: N drafts, not 2N (each one is long)
        m = distinct(params, n) if state.get("final") else drafts_per_node(speculation, n, params)
        if prefetch is not None and large is not None:
            lp = large_params or params
            limit = distinct(lp, makeup_limit(speculation, m, state.get("need", n)))
            for p in parents:
                for i in range(limit):
                    prefetch.start(request_key(state, p, i), large_request(large, lp, state, p, i))
        prompts = [
            small.prompt_format.render(state["question"], steps_to(nodes, p)) for p in parents
        ]
        # per-node pipelines draft in separate calls: a per-node salt keeps their samples apart
        call_params = step_seed(params, state, salt=1 + zlib.crc32(parents[0].encode()) % 100_003)
        call_params = step_params(call_params, small.prompt_format, state)
        with Clock() as clock:
            outputs = await small.agenerate(prompts, n=m, params=call_params)
        candidates = [
            candidate(nodes[p], g, "small", i)
            for p, gens in zip(parents, outputs, strict=True)
            for i, g in enumerate(gens)
        ]
        for c in candidates:
            emit(thought_event("drafted", c, state["threshold"]["expansions"]))
        flat = [g for gens in outputs for g in gens]
        report.update(small_s=clock.seconds, small_n=len(flat), active_s=now() - start)
        return {
            "candidates": candidates,
            "regen": [],
            "report": report,
            "usage": {"small": usage_entry(flat, clock.seconds), "counts": {"drafts": len(flat)}},
        }

    return draft
