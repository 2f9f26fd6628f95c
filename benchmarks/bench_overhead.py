"""Framework overhead: the real graphs over instant models, per thought and per checkpointed step.

    python benchmarks/bench_overhead.py [--problems 30]

The models answer at once (`simulate.SimModel` on servers with zero cost), so all measured time
is LangGraph, the nodes and the checkpointer. Prints milliseconds per expanded thought (no
checkpointer), and per expansion with the in-memory and the SQLite checkpointer. Times are
CPU seconds of this process (all its threads), so a busy machine does not inflate them.
Targets (issue 8): <= 1 ms per thought; SQLite checkpointing <= 10 ms per step.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
from typing import Any

from langgraph.checkpoint.memory import InMemorySaver

from langgraph_specsearch.graphs.beam import create_beam_search
from langgraph_specsearch.graphs.expanders import create_ar_expander, create_speculative_expander
from langgraph_specsearch.simulate import (
    BetaQuality,
    ControlledDrafts,
    SimModel,
    SimPRM,
    SimServer,
)
from langgraph_specsearch.threshold import ThresholdStore
from langgraph_specsearch.types import GenerationParams


def graph(method: str, seed: int, store: ThresholdStore) -> Any:
    """Beam search (B=2, N=4) over instant simulated models."""
    large_q = BetaQuality(6, 2)
    large = SimModel("large", SimServer(0.0), large_q, seed=seed)
    prm = SimPRM(SimServer(0.0), noise=0.03, seed=seed + 1)
    params = GenerationParams(seed=seed)
    if method == "ar":
        expander = create_ar_expander(large=large, prm=prm, params=params)
    else:
        small = SimModel("small", SimServer(0.0), ControlledDrafts(large_q, 0.6), seed=seed + 2)
        expander = create_speculative_expander(
            small=small, large=large, prm=prm, store=store, draft_params=params
        )
    return create_beam_search(expander, beam_width=2, n=4, max_steps=6)


async def measure(method: str, saver: str, problems: int) -> dict[str, float]:
    """Seconds per thought and per expansion over `problems` searches."""
    store = ThresholdStore()
    thoughts = expansions = 0
    total = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(problems + 1):  # the first search warms up and is not counted
            builder = graph(method, i, store)
            config: Any = {"configurable": {"thread_id": f"t{i}"}, "recursion_limit": 1000}
            question = {"question": f"problem {i} length 4 end"}
            if saver == "sqlite":
                from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

                async with AsyncSqliteSaver.from_conn_string(os.path.join(tmp, "c.db")) as cp:
                    compiled = builder.compile(checkpointer=cp)
                    start = time.process_time()
                    out = await compiled.ainvoke(question, config)
                    seconds = time.process_time() - start
            else:
                compiled = builder.compile(
                    checkpointer=InMemorySaver() if saver == "memory" else None
                )
                start = time.process_time()
                out = await compiled.ainvoke(question, config)
                seconds = time.process_time() - start
            if i == 0:
                continue
            total += seconds
            expansions += len(out["threshold_trace"])
            stats = out["stats"]
            thoughts += stats["drafts"]
            thoughts += sum(len(p["large_scores"]) for p in out["threshold_trace"])
    return {
        "ms_per_thought": 1000 * total / thoughts,
        "ms_per_expansion": 1000 * total / expansions,
    }


def main() -> None:
    """Run and print."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--problems", type=int, default=30)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result: dict[str, Any] = {}
    for method in ("specsearch", "ar"):
        for saver in ("none", "memory", "sqlite"):
            result[f"{method}/{saver}"] = asyncio.run(measure(method, saver, args.problems))
    base = result["specsearch/none"]["ms_per_expansion"]
    result["sqlite_ms_per_step"] = result["specsearch/sqlite"]["ms_per_expansion"] - base
    if args.json:
        print(json.dumps(result))
        return
    for key, row in result.items():
        if isinstance(row, dict):
            print(
                f"{key:<20} {row['ms_per_thought']:6.2f} ms/thought"
                f" {row['ms_per_expansion']:7.2f} ms/expansion"
            )
    print(f"SQLite checkpointing adds {result['sqlite_ms_per_step']:.1f} ms per step (SpecSearch)")


if __name__ == "__main__":
    main()
