"""Expanders: subgraphs that turn "these frontier nodes" into scored children.

Every search template calls an expander the same way (`ExpanderInput` in, `ExpanderOutput`
out), so the paper's three methods are one template with three expanders:

| factory                        | thoughts come from                          | paper name |
|--------------------------------|---------------------------------------------|------------|
| `create_ar_expander`           | the large model, plain decoding             | AR         |
| `create_sps_expander`          | the large model with token-level SD         | SpS        |
| `create_speculative_expander`  | small drafts, PRM, beta, large regenerates  | SpecSearch |
"""

from __future__ import annotations

from typing import Any

from langgraph.graph import END, START, StateGraph

from langgraph_specsearch.backends.base import Backend
from langgraph_specsearch.nodes.common import as_node
from langgraph_specsearch.nodes.draft import make_draft_node
from langgraph_specsearch.nodes.evaluate import make_evaluate_node, route_after_evaluate
from langgraph_specsearch.nodes.merge import make_merge_node
from langgraph_specsearch.nodes.regenerate import make_regenerate_node
from langgraph_specsearch.nodes.reject import make_reject_node, route_after_reject
from langgraph_specsearch.prm.base import PRM
from langgraph_specsearch.state import ExpanderInput, ExpanderOutput, ExpanderState
from langgraph_specsearch.threshold import ThresholdConfig
from langgraph_specsearch.types import GenerationParams


def _route_after_draft(state: dict[str, Any]) -> str:
    """Warm-up expansions skip straight to the large model."""
    return "evaluate" if state["candidates"] else "regenerate"


def create_speculative_expander(
    small: Backend,
    large: Backend,
    prm: PRM,
    /,
    *,
    threshold: ThresholdConfig | None = None,
    draft_params: GenerationParams | None = None,
    large_params: GenerationParams | None = None,
) -> StateGraph:
    """Create the SpecSearch expander: draft, evaluate, reject, [regenerate, evaluate], merge.

    1. **draft**: `small` writes `n` thoughts for every frontier node in one batched call.
    2. **evaluate**: `prm` scores them in one batched call.
    3. **reject**: a draft is kept iff its score >= beta(k), the threshold in the state.
    4. **regenerate**: `large` writes one thought per rejected draft (with token-level
       speculative decoding when `large` is configured for it); these are scored by the
       same evaluate node, and their scores update beta in **merge**:
       beta(k+1) = theta * beta(k) + (1 - theta) * Theta(V_k).

    Until a first estimate exists (`threshold.warmup_steps`), the large model makes the
    whole expansion. The ablations (fixed threshold, random rejection, accept all) are
    `threshold.mode` values.

    Args:
        small: Backend that drafts.
        large: Backend that regenerates rejected drafts.
        prm: Process reward model scoring each new step.
        threshold: Acceptance rule (default: the paper's adaptive EMA with theta = 0.9).
        draft_params: Sampling parameters of the small model.
        large_params: Sampling parameters of the large model (default: same as drafts).

    Returns:
        An uncompiled StateGraph with `ExpanderInput` / `ExpanderOutput` schemas; compile it
        and pass it to a search template such as `create_beam_search`.
    """
    threshold = threshold or ThresholdConfig()
    draft_params = draft_params or GenerationParams()
    large_params = large_params or draft_params
    builder = StateGraph(ExpanderState, input_schema=ExpanderInput, output_schema=ExpanderOutput)
    builder.add_node(
        "draft", as_node(make_draft_node(small, params=draft_params, threshold=threshold), "draft")
    )
    builder.add_node("evaluate", as_node(make_evaluate_node(prm), "evaluate"))
    builder.add_node(
        "reject", as_node(make_reject_node(threshold, seed=draft_params.seed), "reject")
    )
    builder.add_node(
        "regenerate", as_node(make_regenerate_node(large, params=large_params), "regenerate")
    )
    builder.add_node("merge", as_node(make_merge_node(threshold), "merge"))
    builder.add_edge(START, "draft")
    builder.add_conditional_edges("draft", _route_after_draft, ["evaluate", "regenerate"])
    builder.add_conditional_edges("evaluate", route_after_evaluate, ["reject", "merge"])
    builder.add_conditional_edges("reject", route_after_reject, ["regenerate", "merge"])
    builder.add_edge("regenerate", "evaluate")
    builder.add_edge("merge", END)
    return builder


async def _plan_large(state: dict[str, Any]) -> dict[str, Any]:
    """Ask the large model for `n` thoughts per frontier node."""
    return {"candidates": [], "regen": [p for p in state["expand"] for _ in range(state["n"])]}


def create_ar_expander(
    large: Backend,
    prm: PRM,
    /,
    *,
    params: GenerationParams | None = None,
) -> StateGraph:
    """Create the large-model-only expander: generate -> evaluate -> merge.

    With a plain `large` backend this is the paper's AR baseline; with a backend that does
    token-level speculative decoding it is SpS (see `create_sps_expander`). The threshold in
    the state is passed through unchanged apart from its expansion counter.

    Args:
        large: Backend that writes every thought.
        prm: Process reward model scoring each new step.
        params: Sampling parameters.

    Returns:
        An uncompiled StateGraph with the same schemas as the SpecSearch expander.
    """
    params = params or GenerationParams()
    no_update = ThresholdConfig(mode="accept_all")
    builder = StateGraph(ExpanderState, input_schema=ExpanderInput, output_schema=ExpanderOutput)
    builder.add_node("plan", as_node(_plan_large, "plan"))
    builder.add_node("generate", as_node(make_regenerate_node(large, params=params), "generate"))
    builder.add_node("evaluate", as_node(make_evaluate_node(prm), "evaluate"))
    builder.add_node("merge", as_node(make_merge_node(no_update), "merge"))
    builder.add_edge(START, "plan")
    builder.add_edge("plan", "generate")
    builder.add_edge("generate", "evaluate")
    builder.add_edge("evaluate", "merge")
    builder.add_edge("merge", END)
    return builder


def create_sps_expander(
    large: Backend,
    prm: PRM,
    /,
    *,
    params: GenerationParams | None = None,
) -> StateGraph:
    """Create the SpS expander: the large model with token-level speculative decoding.

    `large` must speculate itself: a `TransformersBackend` built with an `assistant`, or an
    endpoint whose server speculates (`specsearch serve --draft-model`, TGI `--speculate`,
    vLLM, llama.cpp `--model-draft`). The graph is the AR expander's.

    Args:
        large: Speculating backend.
        prm: Process reward model scoring each new step.
        params: Sampling parameters.

    Returns:
        An uncompiled StateGraph with the same schemas as the SpecSearch expander.
    """
    return create_ar_expander(large, prm, params=params)
