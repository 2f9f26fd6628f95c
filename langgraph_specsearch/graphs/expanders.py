"""Expanders: subgraphs that turn "these frontier nodes" into scored children.

Every search template calls an expander the same way (`ExpanderInput` in, `ExpanderOutput`
out), so the paper's three methods are one template with three expanders:

| factory                        | thoughts come from                          | paper name |
|--------------------------------|---------------------------------------------|------------|
| `create_ar_expander`           | the large model, plain decoding             | AR         |
| `create_sps_expander`          | the large model with token-level SD         | SpS        |
| `create_speculative_expander`  | small drafts, PRM, beta, large makes up     | SpecSearch |

Each expander is `prepare -> node pipeline(s) -> merge`. The node pipeline is itself a
subgraph, `draft -> evaluate -> reject -> regenerate -> evaluate -> finish`; `prepare` sends
every frontier node to its own pipeline (`pipeline="per_node"`, run concurrently) or all of
them to one (`"lockstep"`), and `merge` turns the candidates into children and folds the large
model's scores into beta once per expansion.
"""

from __future__ import annotations

from typing import Any

from langgraph.graph import END, START, StateGraph
from langgraph.types import RetryPolicy, Send

from langgraph_specsearch.backends.base import Backend
from langgraph_specsearch.graphs.arguments import check_backend, check_instance, check_prm
from langgraph_specsearch.nodes.common import as_node
from langgraph_specsearch.nodes.draft import LARGE_ONLY, make_draft_node
from langgraph_specsearch.nodes.evaluate import make_evaluate_node, route_after_evaluate
from langgraph_specsearch.nodes.merge import make_merge_node, make_prepare_node
from langgraph_specsearch.nodes.prefetch import Prefetcher
from langgraph_specsearch.nodes.regenerate import finish, make_regenerate_node
from langgraph_specsearch.nodes.reject import make_reject_node, route_after_reject
from langgraph_specsearch.prm.base import PRM
from langgraph_specsearch.retries import DEFAULT_RETRY_POLICY, graph_retried
from langgraph_specsearch.speculation import SpeculationConfig, use_concurrency
from langgraph_specsearch.state import (
    ExpanderInput,
    ExpanderOutput,
    ExpanderState,
    PipelineInput,
    PipelineOutput,
    PipelineState,
    ancestry,
)
from langgraph_specsearch.threshold import ThresholdConfig, ThresholdStore
from langgraph_specsearch.types import GenerationParams


def _route_after_draft(state: dict[str, Any]) -> str:
    """Large-only expansions skip straight to the large model."""
    return "regenerate" if state.get("decision") in LARGE_ONLY else "evaluate"


def _fan_out(per_node: bool):  # type: ignore[no-untyped-def]
    """Send each frontier node to its own pipeline, or all of them to one."""

    def route(state: dict[str, Any]) -> list[Send]:
        groups = [[p] for p in state["expand"]] if per_node else [list(state["expand"])]
        n = state["n"]
        return [
            Send(
                "pipeline",
                {
                    "question": state["question"],
                    "nodes": ancestry(state["nodes"], group),
                    "expand": group,
                    "n": n,
                    "need": min(state.get("need") or n, n),
                    "threshold": state["threshold"],
                    "decision": state["decision"],
                    "final": bool(state.get("final")),
                },
            )
            for group in groups
        ]

    return route


def _build(
    small: Backend | None,
    large: Backend,
    prm: PRM,
    *,
    threshold: ThresholdConfig,
    speculation: SpeculationConfig,
    draft_params: GenerationParams,
    large_params: GenerationParams,
    store: ThresholdStore | None,
    large_only: bool,
    retry_policy: RetryPolicy | None,
) -> StateGraph:
    """The expander graph shared by SpecSearch and the large-only baselines.

    The nodes that call a model (draft, evaluate, regenerate) retry transient failures by
    `retry_policy`; their backends then make one attempt per call (`retries.py`).
    """
    policy = retry_policy or DEFAULT_RETRY_POLICY
    concurrent = small is not None and not large_only and use_concurrency(speculation, small, large)
    prefetch = Prefetcher() if concurrent else None
    pipe = StateGraph(PipelineState, input_schema=PipelineInput, output_schema=PipelineOutput)
    if small is not None:
        pipe.add_node(
            "draft",
            as_node(
                graph_retried(
                    make_draft_node(
                        small,
                        params=draft_params,
                        speculation=speculation,
                        large=large,
                        large_params=large_params,
                        prefetch=prefetch,
                    ),
                    policy,
                ),
                "draft",
            ),
            retry_policy=policy,
        )
    else:  # large only: the draft node only plans the large call
        pipe.add_node("draft", as_node(make_draft_node(large, params=large_params), "draft"))
    pipe.add_node(
        "evaluate",
        as_node(graph_retried(make_evaluate_node(prm), policy), "evaluate"),
        retry_policy=policy,
    )
    pipe.add_node(
        "reject",
        as_node(
            make_reject_node(
                threshold,
                seed=draft_params.seed,
                speculation=speculation,
                large_params=large_params,
                prefetch=prefetch,
            ),
            "reject",
        ),
    )
    pipe.add_node(
        "regenerate",
        as_node(
            graph_retried(
                make_regenerate_node(large, params=large_params, prefetch=prefetch), policy
            ),
            "regenerate",
        ),
        retry_policy=policy,
    )
    pipe.add_node("finish", as_node(finish, "finish"))
    pipe.add_edge(START, "draft")
    pipe.add_conditional_edges("draft", _route_after_draft, ["evaluate", "regenerate"])
    pipe.add_conditional_edges("evaluate", route_after_evaluate, ["reject", "finish"])
    pipe.add_conditional_edges("reject", route_after_reject, ["regenerate", "finish"])
    pipe.add_edge("regenerate", "evaluate")
    pipe.add_edge("finish", END)

    builder = StateGraph(ExpanderState, input_schema=ExpanderInput, output_schema=ExpanderOutput)
    builder.add_node(
        "prepare",
        as_node(
            make_prepare_node(
                threshold,
                speculation=speculation,
                concurrent=concurrent,
                store=store,
                large_only=large_only,
            ),
            "prepare",
        ),
    )
    builder.add_node("pipeline", pipe.compile(checkpointer=False))
    builder.add_node(
        "merge",
        as_node(
            make_merge_node(threshold, store=store, prefetch=prefetch, update_beta=not large_only),
            "merge",
        ),
    )
    builder.add_edge(START, "prepare")
    per_node = speculation.pipeline == "per_node" and not large_only
    builder.add_conditional_edges("prepare", _fan_out(per_node), ["pipeline"])
    builder.add_edge("pipeline", "merge")
    builder.add_edge("merge", END)
    return builder


def create_speculative_expander(
    *,
    small: Backend,
    large: Backend,
    prm: PRM,
    threshold: ThresholdConfig | None = None,
    speculation: SpeculationConfig | None = None,
    store: ThresholdStore | None = None,
    draft_params: GenerationParams | None = None,
    large_params: GenerationParams | None = None,
    retry_policy: RetryPolicy | None = None,
) -> StateGraph:
    """Create the SpecSearch expander: per node, draft, evaluate, reject, [regenerate, evaluate].

    1. **draft**: `small` writes thoughts for the node (`speculation.drafts`, default `2n`).
    2. **evaluate**: `prm` scores them in one batched call.
    3. **reject**: a draft is kept iff its score >= beta(k), the threshold in the state.
    4. **regenerate**: `large` makes up what is missing: the shortfall below the `need`
       children the template can use (`regenerate="missing"`, default) or one thought per
       rejected draft (`"all"`, the paper), with token-level speculative decoding when
       `large` does it. These are scored too, and **merge** folds their scores into beta:
       beta(k+1) = theta * beta(k) + (1 - theta) * Theta(V_k).

    Scheduling (`speculation`, see `SpeculationConfig`): each frontier node runs its own
    pipeline (`per_node`) or all run in lock-step; with concurrent speculation the large
    model's requests start while the drafts are written and are cancelled per request when
    not needed; a controller sends an expansion to the large model alone when its measured
    costs and acceptance rate say speculation would lose. `SpeculationConfig.paper()` is the
    paper's schedule. With `store`, beta and the controller's measurements carry over between
    searches (no large-only warm-up once the store has an estimate); without one, the first
    `threshold.warmup_steps` expansions are made by the large model alone so beta starts from
    real large-model scores. The ablations (fixed threshold, random rejection, accept all) are
    `threshold.mode` values.

    Every argument is keyword-only, the models included
    (`create_speculative_expander(small=..., large=..., prm=...)`), so `small` and `large`
    cannot be swapped by position.

    Args:
        small: Backend that drafts.
        large: Backend that makes up what the drafts do not give.
        prm: Process reward model scoring each new step.
        threshold: Acceptance rule (default: the paper's adaptive EMA with theta = 0.9).
        speculation: Scheduling policies (default: the fast ones).
        store: Carries beta and cost measurements across searches.
        draft_params: Sampling parameters of the small model.
        large_params: Sampling parameters of the large model (default: same as drafts).
        retry_policy: LangGraph `RetryPolicy` of the nodes that call a model (draft,
            evaluate, regenerate); default `retries.DEFAULT_RETRY_POLICY`: one retry of a
            transient failure (timeout, connection error, 5xx, 429), none of anything else.
            While these nodes run, the HTTP backends do not retry on their own.

    Returns:
        An uncompiled StateGraph with `ExpanderInput` / `ExpanderOutput` schemas; compile it
        and pass it to a search template such as `create_beam_search`.
    """
    check_backend("small", small)
    check_backend("large", large)
    check_prm("prm", prm)
    check_instance("threshold", threshold, ThresholdConfig)
    check_instance("speculation", speculation, SpeculationConfig)
    check_instance("store", store, ThresholdStore)
    check_instance("draft_params", draft_params, GenerationParams)
    check_instance("large_params", large_params, GenerationParams)
    check_instance("retry_policy", retry_policy, RetryPolicy)
    draft_params = draft_params or GenerationParams()
    return _build(
        small,
        large,
        prm,
        threshold=threshold or ThresholdConfig(),
        speculation=speculation or SpeculationConfig(),
        draft_params=draft_params,
        large_params=large_params or draft_params,
        store=store,
        large_only=False,
        retry_policy=retry_policy,
    )


def create_ar_expander(
    *,
    large: Backend,
    prm: PRM,
    params: GenerationParams | None = None,
    retry_policy: RetryPolicy | None = None,
) -> StateGraph:
    """Create the large-model-only expander: every node's `n` thoughts from `large`.

    With a plain `large` backend this is the paper's AR baseline; with a backend that does
    token-level speculative decoding it is SpS (see `create_sps_expander`). All frontier
    nodes go to the large model in one batched call per step. The threshold in the state is
    passed through unchanged apart from its expansion counter. Every argument is
    keyword-only: `create_ar_expander(large=..., prm=...)`.

    Args:
        large: Backend that writes every thought.
        prm: Process reward model scoring each new step.
        params: Sampling parameters.
        retry_policy: `RetryPolicy` of the nodes that call a model (evaluate, regenerate);
            default: one retry of a transient failure (see `create_speculative_expander`).

    Returns:
        An uncompiled StateGraph with the same schemas as the SpecSearch expander.
    """
    check_backend("large", large)
    check_prm("prm", prm)
    check_instance("params", params, GenerationParams)
    check_instance("retry_policy", retry_policy, RetryPolicy)
    params = params or GenerationParams()
    return _build(
        None,
        large,
        prm,
        threshold=ThresholdConfig(mode="accept_all"),
        speculation=SpeculationConfig.paper(),
        draft_params=params,
        large_params=params,
        store=None,
        large_only=True,
        retry_policy=retry_policy,
    )


def create_sps_expander(
    *,
    large: Backend,
    prm: PRM,
    params: GenerationParams | None = None,
    retry_policy: RetryPolicy | None = None,
) -> StateGraph:
    """Create the SpS expander: the large model with token-level speculative decoding.

    `large` must speculate itself: a `TransformersBackend` built with an `assistant`, or an
    endpoint whose server speculates (`specsearch serve --draft-model`, vLLM, SGLang,
    llama.cpp `--model-draft`). The graph is the AR expander's. Every argument is
    keyword-only: `create_sps_expander(large=..., prm=...)`.

    Args:
        large: Speculating backend.
        prm: Process reward model scoring each new step.
        params: Sampling parameters.
        retry_policy: `RetryPolicy` of the nodes that call a model (as the AR expander's).

    Returns:
        An uncompiled StateGraph with the same schemas as the SpecSearch expander.
    """
    return create_ar_expander(large=large, prm=prm, params=params, retry_policy=retry_policy)
