"""Reject node: keep a draft iff its PRM score reaches beta(k); say what the large model makes."""

from __future__ import annotations

import random
from typing import Any

from langgraph_specsearch.events import emit, verdict_event
from langgraph_specsearch.nodes.common import AsyncNode, now
from langgraph_specsearch.nodes.draft import distinct, makeup_limit, request_key
from langgraph_specsearch.nodes.prefetch import Prefetcher
from langgraph_specsearch.speculation import SpeculationConfig
from langgraph_specsearch.threshold import ThresholdConfig, accept, current_threshold
from langgraph_specsearch.types import GenerationParams


def make_reject_node(
    threshold: ThresholdConfig,
    *,
    seed: int | None = None,
    speculation: SpeculationConfig | None = None,
    large_params: GenerationParams | None = None,
    prefetch: Prefetcher | None = None,
) -> AsyncNode:
    """Build the reject node.

    Drafts are judged in index order: a blank draft is rejected, a draft whose score reaches
    beta is accepted while fewer than `n` are kept for its node (later passing drafts are
    `surplus`: accepted but not needed). Then, per node, the large model is asked for:

    - `regenerate="all"`: one thought per rejected draft (the paper);
    - `regenerate="missing"`: the shortfall below `need` kept children, plus one probe
      thought when `probe_every` speculative expansions passed without a large thought.

    With concurrent speculation, the make-up requests beyond what is asked are cancelled.
    """
    speculation = speculation or SpeculationConfig.paper()
    greedy_guard = large_params or GenerationParams()

    async def reject(state: dict[str, Any]) -> dict[str, Any]:
        start = now()
        th = state["threshold"]
        rng = random.Random(None if seed is None else seed * 100_003 + th["expansions"])
        n, need = state["n"], state.get("need", state["n"])
        candidates = [dict(c) for c in state["candidates"]]
        beta = current_threshold(th, threshold)  # for the events only
        kept: dict[str, int] = {}
        rejected: dict[str, int] = {}
        drafted: dict[str, int] = {}
        for c in candidates:
            if c["source"] != "small" or c["verdict"] is not None:
                continue
            parent = c["parent_id"]
            drafted[parent] = drafted.get(parent, 0) + 1
            ok = not c.get("blank") and accept(c["score"], th, threshold, rng)
            if ok and kept.get(parent, 0) >= n:
                c["verdict"] = "surplus"
            elif ok:
                c["verdict"] = "accepted"
                kept[parent] = kept.get(parent, 0) + 1
            else:
                c["verdict"] = "rejected"
                rejected[parent] = rejected.get(parent, 0) + 1
            emit(verdict_event(c, th["expansions"], beta))
        probe = (
            speculation.regenerate == "missing"
            and speculation.probe_every > 0
            and th.get("since_large", 0) + 1 >= speculation.probe_every
        )
        regen: list[str] = []
        probes = 0
        for parent in state["expand"]:
            if speculation.regenerate == "all":
                count = rejected.get(parent, 0)
            else:
                count = max(need - kept.get(parent, 0), 0)
                if count == 0 and probe:
                    count, probes = 1, probes + 1
            count = distinct(greedy_guard, count)
            regen += [parent] * count
            if prefetch is not None:
                limit = makeup_limit(speculation, drafted.get(parent, 0), need)
                for i in range(count, limit):
                    prefetch.cancel(request_key(state, parent, i))
        accepted = sum(kept.values()) + sum(c["verdict"] == "surplus" for c in candidates)
        counts = {"accepted": accepted, "rejected": sum(rejected.values())}
        if probes:
            counts["probes"] = probes
        report = dict(state.get("report") or {})
        report.update(
            judged=sum(drafted.values()),
            accepted=accepted,
            probe=bool(probes),
            active_s=report.get("active_s", 0.0) + now() - start,
        )
        return {
            "candidates": candidates,
            "regen": regen,
            "usage": {"counts": counts},
            "report": report,
        }

    return reject


def route_after_reject(state: dict[str, Any]) -> str:
    """The large model makes what is asked of it; otherwise the node is done."""
    return "regenerate" if state["regen"] else "finish"
