"""Draft node: the small model writes N candidate thoughts per frontier node, in one call."""

from __future__ import annotations

from typing import Any

from langgraph_specsearch.backends.base import Backend
from langgraph_specsearch.nodes.common import AsyncNode, Clock, candidate, usage_entry
from langgraph_specsearch.state import steps_to
from langgraph_specsearch.threshold import ThresholdConfig, in_warmup
from langgraph_specsearch.types import GenerationParams


def step_seed(params: GenerationParams, state: dict[str, Any], salt: int) -> GenerationParams:
    """Derive a distinct seed per expansion so steps don't repeat the same samples."""
    if params.seed is None:
        return params
    expansions = state["threshold"]["expansions"]
    return params.model_copy(update={"seed": params.seed + 7919 * expansions + salt})


def make_draft_node(
    small: Backend, *, params: GenerationParams, threshold: ThresholdConfig
) -> AsyncNode:
    """Build the draft node.

    During warm-up (no threshold estimate yet) it drafts nothing and asks the large model for
    all N thoughts instead, so the first estimate comes from real large-model scores.
    """

    async def draft(state: dict[str, Any]) -> dict[str, Any]:
        nodes, parents, n = state["nodes"], state["expand"], state["n"]
        if in_warmup(state["threshold"], threshold):
            return {"candidates": [], "regen": [p for p in parents for _ in range(n)]}
        prompts = [
            small.prompt_format.render(state["question"], steps_to(nodes, p)) for p in parents
        ]
        call_params = step_seed(params, state, salt=1)
        call_params = call_params.model_copy(update={"stop": small.prompt_format.stop_sequences()})
        with Clock() as clock:
            outputs = await small.agenerate(prompts, n=n, params=call_params)
        candidates = [
            candidate(nodes[p], g, "small")
            for p, gens in zip(parents, outputs, strict=True)
            for g in gens
        ]
        flat = [g for gens in outputs for g in gens]
        return {
            "candidates": candidates,
            "regen": [],
            "usage": {"small": usage_entry(flat, clock.seconds), "counts": {"drafts": len(flat)}},
        }

    return draft
