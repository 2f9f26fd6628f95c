"""AR vs SpS vs SpecSearch on real models, the same template, measured side by side in one run.

    python benchmarks/bench_methods.py --questions 10 [--repeats 1] [--json]
        [--search beam] [--engine auto|transformers|llamacpp] [--small-url U --large-url U]

- The loading, warm-up and interleaving are `specsearch bench`'s (`evaluation/runner.py`);
  this script keeps its own report. Models are loaded once, before timing; every method then
  solves one warm-up question that is not measured (it also lets SpecSearch's threshold store
  hold a beta, as it would after any earlier run: the default SpecSearch carries beta across
  problems).
- The measured problems are the first `--questions` GSM8K test problems shipped with the package;
  the methods run interleaved per problem in rotating order (machine noise hits all alike),
  `--repeats` times with different seeds.
- Beside each speed-up it prints the expectation from the per-call costs and the acceptance
  measured in this run (`speculation.predicted_costs`: speculation without the controller).

`--json` prints one object: `speedup_vs_ar`, `speedup_vs_sps` (SpecSearch's), `ceiling_vs_ar`,
`acceptance`, `latency_s` (each method's mean seconds per problem), `correct`, and SpecSearch's
`small_drafted_share` and `controller_fallbacks`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
from typing import Any

from pydantic import ValidationError

from langgraph_specsearch.answers import is_correct
from langgraph_specsearch.api import SearchConfig
from langgraph_specsearch.cli_options import config_error
from langgraph_specsearch.evaluation.datasets import load_problems
from langgraph_specsearch.evaluation.runner import Run, Runner, one_engine
from langgraph_specsearch.options import updated
from langgraph_specsearch.speculation import predicted_costs
from langgraph_specsearch.types import SearchResult


def parse_args() -> argparse.Namespace:
    """Command-line flags."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--questions", type=int, default=10)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--search", default="beam")
    p.add_argument("--methods", default="ar,sps,specsearch")
    p.add_argument("--n-drafts", type=int, default=4)
    p.add_argument("--beam-width", type=int, default=2)
    p.add_argument("--max-steps", type=int, default=4)
    p.add_argument("--max-new-tokens", type=int, default=40)
    p.add_argument("--engine", default=None, help="local engine (default: the package's)")
    p.add_argument("--small-url")
    p.add_argument("--large-url")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    return p.parse_args()


def log(message: str) -> None:
    """Progress on stderr (stdout stays for the result)."""
    print(message, file=sys.stderr, flush=True)


def expansion_costs(results: list[SearchResult]) -> dict[str, float]:
    """Mean seconds per call of each model and per expansion, over a method's results."""

    def per_call(key: str) -> float:
        calls = sum(getattr(r.stats, key).calls for r in results)
        seconds = sum(getattr(r.stats, key).time_s for r in results)
        return seconds / calls if calls else float("nan")

    expansions = sum(r.stats.expansions for r in results)
    return {
        "small_s": per_call("small"),
        "large_s": per_call("large"),
        "prm_s": per_call("prm"),
        "expansion_s": sum(r.stats.wall_s for r in results) / max(expansions, 1),
    }


def main() -> None:
    """Run every method on the same problems, interleaved, and print a table (or JSON)."""
    args = parse_args()
    problems = load_problems("gsm8k", limit=args.questions + 1)
    measured, warmup = problems[: args.questions], problems[args.questions]
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    base: dict[str, Any] = dict(
        search=args.search,
        n_drafts=args.n_drafts,
        beam_width=args.beam_width,
        max_steps=args.max_steps,
        max_new_tokens=args.max_new_tokens,
        small_url=args.small_url,
        large_url=args.large_url,
    )
    if args.engine:
        base["engine"] = args.engine
    try:
        configs, note = one_engine({m: SearchConfig(method=m, **base) for m in methods})
    except ValidationError as exc:
        sys.exit(f"error: {config_error(exc)}")
    if note:
        log(note)
    runner = Runner(methods, lambda method, repeat: updated(configs[method], seed=repeat), log=log)
    results: dict[str, list[SearchResult]] = {m: [] for m in methods}
    walls: dict[str, list[float]] = {m: [] for m in methods}
    correct: dict[str, int] = dict.fromkeys(methods, 0)
    cells: dict[tuple[str, int], list[str]] = {}

    def on_run(run: Run) -> None:
        walls[run.method].append(run.latency_s)
        results[run.method].append(run.result)
        correct[run.method] += is_correct(run.result.answer, run.problem.gold)
        row = cells.setdefault((run.problem.id, run.repeat), [])
        row.append(f"{run.method} {run.latency_s:.1f} s")
        if len(row) == len(methods):
            log(f"problem {run.problem.id} (repeat {run.repeat}): " + ", ".join(row))

    async def go() -> None:
        await runner.load()
        await runner.warm_up(warmup)
        await runner.run(measured, repeats=args.repeats, on_run=on_run)

    asyncio.run(go())

    latency = {m: statistics.fmean(w) for m, w in walls.items()}
    spec = results.get("specsearch", [])
    drafts = sum(r.stats.drafts for r in spec)
    accepted = sum(r.stats.accepted for r in spec)
    acceptance = accepted / drafts if drafts else None
    expansions = sum(r.stats.expansions for r in spec)
    out: dict[str, Any] = {
        "latency_s": latency,
        "correct": correct,
        "problems": len(measured) * args.repeats,
        "acceptance": acceptance,
        "speedup_vs_ar": latency["ar"] / latency["specsearch"]
        if {"ar", "specsearch"} <= set(latency)
        else None,
        "speedup_vs_sps": latency["sps"] / latency["specsearch"]
        if {"sps", "specsearch"} <= set(latency)
        else None,
        "small_drafted_share": sum(r.stats.speculative_expansions for r in spec) / expansions
        if expansions
        else None,
        "controller_fallbacks": sum(r.stats.controller_fallbacks for r in spec),
        "time_split_s": {
            m: {
                k: statistics.fmean(getattr(r.stats, k).time_s for r in rs)
                for k in ("small", "large", "prm")
            }
            for m, rs in results.items()
        },
        "ceiling_vs_ar": None,
    }
    if spec and "ar" in results and acceptance is not None:
        ar_costs = expansion_costs(results["ar"])
        spec_costs = expansion_costs(spec)
        stats = {
            "small_s": spec_costs["small_s"],
            "prm_s": ar_costs["prm_s"],
            "large_s": ar_costs["large_s"],
            "accept": acceptance,
        }
        n = args.n_drafts
        predicted = predicted_costs(
            stats, drafts=n, need=min(args.beam_width, n), nodes=args.beam_width, concurrent=False
        )
        if predicted is not None:
            out["ceiling_vs_ar"] = predicted[1] / predicted[0]
        out["costs_s"] = {"ar": ar_costs, "specsearch": spec_costs}
    if args.json:
        print(json.dumps(out))
        return
    print(f"{'method':<11}{'s/problem':>10}{'correct':>9}  time split small/large/PRM")
    for m in methods:
        split = out["time_split_s"][m]
        print(
            f"{m:<11}{latency[m]:>10.1f}{correct[m]:>5}/{out['problems']:<3}"
            f"  {split['small']:.1f} / {split['large']:.1f} / {split['prm']:.1f} s"
        )
    if out["speedup_vs_ar"] is not None:
        ceiling = out["ceiling_vs_ar"]
        expected = f" (speculation alone would give {ceiling:.2f}x)" if ceiling else ""
        print(f"SpecSearch vs AR: {out['speedup_vs_ar']:.2f}x{expected}")
    if out["speedup_vs_sps"] is not None:
        print(f"SpecSearch vs SpS: {out['speedup_vs_sps']:.2f}x")
    if acceptance is not None:
        print(
            f"acceptance {acceptance:.0%}; expansions drafted by the small model"
            f" {out['small_drafted_share']:.0%}; controller fallbacks {out['controller_fallbacks']}"
        )


if __name__ == "__main__":
    main()
