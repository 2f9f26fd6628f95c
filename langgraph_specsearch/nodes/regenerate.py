"""Regenerate node: the large model writes one thought per rejected draft (or per request)."""

from __future__ import annotations

from typing import Any

from langgraph_specsearch.backends.base import Backend
from langgraph_specsearch.nodes.common import AsyncNode, Clock, candidate, usage_entry
from langgraph_specsearch.nodes.draft import step_seed
from langgraph_specsearch.state import steps_to
from langgraph_specsearch.types import GenerationParams


def make_regenerate_node(large: Backend, *, params: GenerationParams) -> AsyncNode:
    """Build the regenerate node.

    Token-level speculative decoding happens inside `large` when it is configured with a draft
    model (a local assistant model, or a server that speculates).
    """

    async def regenerate(state: dict[str, Any]) -> dict[str, Any]:
        nodes, regen = state["nodes"], state["regen"]
        unique = list(dict.fromkeys(regen))
        counts = {p: regen.count(p) for p in unique}
        # Equal counts (AR, warm-up): n samples per parent in one call. Unequal counts: one
        # prompt per requested thought, so no sample is made only to be thrown away.
        parents, n = (unique, counts[unique[0]]) if len(set(counts.values())) == 1 else (regen, 1)
        prompts = [
            large.prompt_format.render(state["question"], steps_to(nodes, p)) for p in parents
        ]
        call_params = step_seed(params, state, salt=2)
        call_params = call_params.model_copy(update={"stop": large.prompt_format.stop_sequences()})
        with Clock() as clock:
            outputs = await large.agenerate(prompts, n=n, params=call_params)
        used = [g for gens in outputs for g in gens]
        fresh = [
            {**candidate(nodes[p], g, "large"), "verdict": "large"}
            for p, gens in zip(parents, outputs, strict=True)
            for g in gens
        ]
        return {
            "candidates": [*state["candidates"], *fresh],
            "regen": [],
            "usage": {"large": usage_entry(used, clock.seconds)},
        }

    return regenerate
