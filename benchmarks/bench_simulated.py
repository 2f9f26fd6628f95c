"""SpecSearch vs AR vs SpS on the real graphs over simulated models, on a virtual clock.

    python benchmarks/bench_simulated.py [--batching latency|throughput|mixed] [--cost-ratio 10]
        [--acceptance 0.6 | --small-quality 5,3] [--problems 200] [--json]

The search graphs, nodes, threshold and controller are the real ones (`langgraph_specsearch`);
the models are `langgraph_specsearch.simulate` servers with continuous batching, so model time
is exact and 200 problems take seconds. Methods run interleaved per problem (rotating order):

- `ar`: the large model alone; `sps`: the large model with token-level speculative decoding
  (its per-token cost divided by `--sd-speedup`);
- `specsearch`: the default schedule (per-node pipelines, make up only what is missing,
  concurrent speculation, controller, beta carried across problems), bi-level (its large model
  speculates like SpS's);
- `paper`: `SpeculationConfig.paper()` (lock-step, every rejected draft regenerated, beta
  estimated per problem with a large-only warm-up), also bi-level.

Printed per method: virtual seconds per problem, speed-up vs AR and vs SpS, acceptance, large
calls per problem, the chosen path's mean hidden quality, and the analytic expectation
(`simulate.predicted_speedup`) for the same settings and measured acceptance.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
from typing import Any

from langgraph_specsearch.graphs.beam import create_beam_search
from langgraph_specsearch.graphs.expanders import create_ar_expander, create_speculative_expander
from langgraph_specsearch.simulate import (
    BetaQuality,
    ControlledDrafts,
    Costs,
    SimModel,
    SimPRM,
    SimServer,
    expected_large_only,
    expected_speculative,
    hidden_quality,
    run_virtual,
    sd_speedup,
    solution_length,
)
from langgraph_specsearch.speculation import SpeculationConfig
from langgraph_specsearch.threshold import ThresholdStore
from langgraph_specsearch.types import GenerationParams

METHODS = ("ar", "sps", "specsearch", "paper")
GAMMA = {"latency": 0.0, "throughput": 1.0}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line flags."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batching", choices=["latency", "throughput", "mixed"], default="latency")
    p.add_argument("--gamma", type=float, default=0.25, help="per-sequence cost share (mixed)")
    p.add_argument("--cost-ratio", type=float, default=10.0, help="large/small cost per token")
    p.add_argument("--acceptance", type=float, default=0.6, help="controlled draft acceptance")
    p.add_argument("--small-quality", default=None, help="Beta a,b of drafts (overrides)")
    p.add_argument("--large-quality", default="6,2", help="Beta a,b of large thoughts")
    p.add_argument("--prm-noise", type=float, default=0.03)
    p.add_argument("--small-token-ms", type=float, default=2.0)
    p.add_argument("--prm-ms", type=float, default=10.0, help="PRM cost of one step")
    p.add_argument("--overhead-ms", type=float, default=2.0, help="fixed cost per request")
    p.add_argument(
        "--sd-speedup",
        type=float,
        default=None,
        help="token-level SD speed-up of the large model (default: Leviathan et al.'s formula"
        " at the cost ratio with 70%% token acceptance: 1.98x at ratio 10, 1.0x at 1.5)",
    )
    p.add_argument(
        "--p-end",
        type=float,
        default=0.2,
        help="per-step chance that a problem's solution ends (its length: 1 + geometric)",
    )
    p.add_argument("--beam-width", type=int, default=2)
    p.add_argument("--n", type=int, default=4, help="children per node (N)")
    p.add_argument("--drafts", type=int, default=None, help="drafts per node (default 2N)")
    p.add_argument("--search", choices=["beam", "mcts", "best-of-n"], default="beam")
    p.add_argument("--pipeline", choices=["per_node", "lockstep"], default="per_node")
    p.add_argument("--regenerate", choices=["missing", "all"], default="missing")
    p.add_argument("--concurrent", choices=["auto", "on", "off"], default="auto")
    p.add_argument("--controller", choices=["on", "off"], default="on")
    p.add_argument("--probe-every", type=int, default=8)
    p.add_argument("--max-steps", type=int, default=8)
    p.add_argument("--problems", type=int, default=200)
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument(
        "--grid",
        action="store_true",
        help="sweep acceptance 0.1-0.9 x cost ratio 1.5-20 (AR vs SpecSearch) and print the grid",
    )
    p.add_argument("--grid-ratios", default="1.5,3,5,10,20")
    return p.parse_args(argv)


def _pair(text: str) -> BetaQuality:
    a, b = (float(x) for x in text.split(","))
    return BetaQuality(a, b)


def template(a: argparse.Namespace, expander: Any) -> Any:
    """The search template the flags ask for."""
    if a.search == "mcts":
        from langgraph_specsearch.graphs.mcts import create_mcts

        return create_mcts(
            expander, iterations=2 * a.max_steps, max_depth=a.max_steps, children_per_expansion=a.n
        )
    if a.search == "best-of-n":
        from langgraph_specsearch.graphs.best_of_n import create_best_of_n

        return create_best_of_n(expander, n=a.n, max_steps=a.max_steps)
    return create_beam_search(expander, beam_width=a.beam_width, n=a.n, max_steps=a.max_steps)


class Bench:
    """Builds each method's graph over fresh simulated servers and runs one problem."""

    def __init__(self, args: argparse.Namespace) -> None:
        if args.sd_speedup is None:
            args = argparse.Namespace(**{**vars(args), "sd_speedup": sd_speedup(args.cost_ratio)})
        self.args = args
        self.gamma = args.gamma if args.batching == "mixed" else GAMMA[args.batching]
        self.large_q = _pair(args.large_quality)
        self.small_q = (
            _pair(args.small_quality)
            if args.small_quality
            else ControlledDrafts(self.large_q, args.acceptance)
        )
        self.store = ThresholdStore()  # the default schedule carries beta across problems
        s = args.small_token_ms / 1000
        self.costs = Costs(
            small_token_s=s,
            large_token_s=s * args.cost_ratio,
            prm_s=args.prm_ms / 1000,
            overhead_s=args.overhead_ms / 1000,
            gamma=self.gamma,
            tokens=(20, 40),
        )

    def _server(self, per_token_s: float) -> SimServer:
        return SimServer(per_token_s, gamma=self.gamma, overhead_s=self.args.overhead_ms / 1000)

    async def run(self, method: str, problem: int) -> dict[str, Any]:
        """One problem, one method: virtual seconds, stats and the chosen path's quality."""
        a = self.args
        seed = a.seed * 1_000_003 + problem * 7
        s = a.small_token_ms / 1000
        large_token = s * a.cost_ratio / (1.0 if method == "ar" else a.sd_speedup)
        large = SimModel("large", self._server(large_token), self.large_q, seed=seed + 1)
        prm = SimPRM(self._server(a.prm_ms / 1000), noise=a.prm_noise, seed=seed + 2)
        params = GenerationParams(seed=seed)
        if method in ("ar", "sps"):
            expander = create_ar_expander(large=large, prm=prm, params=params)
        else:
            small = SimModel("small", self._server(s), self.small_q, seed=seed + 3)
            paper = method == "paper"
            speculation = (
                SpeculationConfig.paper()
                if paper
                else SpeculationConfig(
                    drafts=a.drafts,
                    pipeline=a.pipeline,
                    regenerate=a.regenerate,
                    concurrent=a.concurrent,
                    controller=a.controller,
                    probe_every=a.probe_every,
                )
            )
            expander = create_speculative_expander(
                small=small,
                large=large,
                prm=prm,
                speculation=speculation,
                store=None if paper else self.store,
                draft_params=params,
            )
        graph = template(a, expander).compile()
        import asyncio

        start = asyncio.get_running_loop().time()
        length = solution_length(random.Random(seed), a.p_end)
        out = await graph.ainvoke({"question": f"problem {problem} length {length} end"})
        seconds = asyncio.get_running_loop().time() - start
        path = out["path"]
        trace = out["threshold_trace"]
        return {
            "seconds": seconds,
            "stats": out["stats"],
            "quality": statistics.fmean(hidden_quality(t["text"]) for t in path) if path else 0.0,
            "trace": trace,
            "expansions": len(trace),
            "warmups": sum(p.get("decision") == "warmup" for p in trace),
            "probes": sum(bool(p.get("probe")) for p in trace),
            "fallbacks": sum(p.get("decision") == "large" for p in trace),
            "large_calls": large.completed,
        }

    def expected_seconds(self, method: str, run: dict[str, Any], acceptance: float) -> float:
        """Analytic model time of one run, given its search shape (expansions, frontier sizes,
        decisions) and the method's measured acceptance."""
        a = self.args
        sd = 1.0 if method == "ar" else a.sd_speedup
        total = 0.0
        for point in run["trace"]:
            nodes = max(int(point.get("nodes", 1)), 1)
            # children asked per node, and how many of them the template can use
            n = 1 if a.search == "best-of-n" and point.get("step", 1) > 1 else a.n
            need = min(a.beam_width, n) if a.search == "beam" else n
            if method in ("ar", "sps") or point.get("decision") in ("warmup", "large"):
                total += expected_large_only(self.costs, nodes=nodes, n=n, large_speedup=sd)
                continue
            paper = method == "paper"
            costs = Costs(**{**vars(self.costs), "large_token_s": self.costs.large_token_s / sd})
            total += expected_speculative(
                costs,
                acceptance=acceptance,
                nodes=nodes,
                drafts=n if paper else (a.drafts or 2 * n),
                need=need,
                schedule="paper" if paper else "concurrent",
                probe=bool(point.get("probe")),
            )
        return total


def summarise(args: argparse.Namespace, bench: Bench, runs: dict[str, list[dict]]) -> dict:
    """Per-method means, ratios and the analytic expectation."""
    out: dict[str, Any] = {"methods": {}}
    mean_s = {m: statistics.fmean(r["seconds"] for r in rs) for m, rs in runs.items()}
    for m, rs in runs.items():
        drafts = sum(r["stats"]["drafts"] for r in rs)
        accepted = sum(r["stats"]["accepted"] for r in rs)
        expansions = sum(r["expansions"] for r in rs)
        row: dict[str, Any] = {
            "seconds_per_problem": mean_s[m],
            "speedup_vs_ar": mean_s["ar"] / mean_s[m] if "ar" in mean_s else None,
            "speedup_vs_sps": mean_s["sps"] / mean_s[m] if "sps" in mean_s else None,
            "acceptance": accepted / drafts if drafts else None,
            "large_calls_per_problem": statistics.fmean(r["large_calls"] for r in rs),
            "quality": statistics.fmean(r["quality"] for r in rs),
            "expansions_per_problem": expansions / len(rs),
            "warmup_share": sum(r["warmups"] for r in rs) / expansions,
            "probe_share": sum(r["probes"] for r in rs) / expansions,
            "fallback_share": sum(r["fallbacks"] for r in rs) / expansions,
        }
        if "ar" in runs:
            acc = row["acceptance"] or 0.0
            expected = statistics.fmean(bench.expected_seconds(m, r, acc) for r in rs)
            ar_expected = statistics.fmean(bench.expected_seconds("ar", r, 0.0) for r in runs["ar"])
            row["ceiling_vs_ar"] = ar_expected / expected
        out["methods"][m] = row
    main = out["methods"].get("specsearch", {})
    out.update(
        speedup_vs_ar=main.get("speedup_vs_ar"),
        speedup_vs_sps=main.get("speedup_vs_sps"),
        acceptance=main.get("acceptance"),
        ceiling_vs_ar=main.get("ceiling_vs_ar"),
        large_calls_per_problem={
            m: r["large_calls_per_problem"] for m, r in out["methods"].items()
        },
        quality={m: r["quality"] for m, r in out["methods"].items()},
        settings=vars(args),
    )
    return out


async def run_all(args: argparse.Namespace) -> dict:
    """Every problem, every method, interleaved in rotating order."""
    bench = Bench(args)
    args = bench.args
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    runs: dict[str, list[dict]] = {m: [] for m in methods}
    for problem in range(args.problems):
        k = problem % len(methods)
        for m in methods[k:] + methods[:k]:
            runs[m].append(await bench.run(m, problem))
    return summarise(args, bench, runs)


def grid(args: argparse.Namespace) -> dict[str, Any]:
    """SpecSearch / AR over acceptance x cost ratio (default schedule)."""
    ratios = [float(r) for r in args.grid_ratios.split(",")]
    rates = [round(0.1 * i, 1) for i in range(1, 10)]
    table: dict[str, dict[str, float]] = {}
    for ratio in ratios:
        row = {}
        for rate in rates:
            changes = {"cost_ratio": ratio, "acceptance": rate, "methods": "ar,specsearch"}
            cell = argparse.Namespace(**{**vars(args), **changes})
            result = run_virtual(run_all(cell))
            row[str(rate)] = result["speedup_vs_ar"]
        table[str(ratio)] = row
    worst = min(v for row in table.values() for v in row.values())
    return {"speedup_vs_ar": table, "worst": worst, "settings": vars(args)}


def main(argv: list[str] | None = None) -> None:
    """Run and print."""
    args = parse_args(argv)
    if args.grid:
        result = grid(args)
        if args.json:
            print(json.dumps(result))
            return
        rates = list(next(iter(result["speedup_vs_ar"].values())))
        print(f"SpecSearch / AR, batching {args.batching}, {args.problems} problems per cell")
        print("ratio / acc".rjust(11) + "".join(f"{r:>7}" for r in rates))
        for ratio, row in result["speedup_vs_ar"].items():
            print(f"{ratio:>11}" + "".join(f"{v:>6.2f}x" for v in row.values()))
        print(f"worst cell: {result['worst']:.2f}x")
        return
    result = run_virtual(run_all(args))
    if args.json:
        print(json.dumps(result))
        return
    print(
        f"batching {args.batching}, cost ratio {args.cost_ratio}, target acceptance"
        f" {args.acceptance if not args.small_quality else 'Beta ' + args.small_quality},"
        f" B={args.beam_width}, N={args.n}, {args.problems} problems"
    )
    head = f"{'method':<11}{'s/problem':>10}{'vs AR':>8}{'vs SpS':>8}{'accept':>8}"
    print(head + f"{'large calls':>12}{'quality':>9}{'expected':>10}")
    for m, r in result["methods"].items():
        acc = "—" if r["acceptance"] is None else f"{r['acceptance']:.0%}"
        exp = f"{r['ceiling_vs_ar']:.2f}x" if r.get("ceiling_vs_ar") else "—"
        vs_ar, vs_sps = (
            "—" if r[k] is None else f"{r[k]:.2f}x" for k in ("speedup_vs_ar", "speedup_vs_sps")
        )
        print(
            f"{m:<11}{r['seconds_per_problem']:>10.3f}{vs_ar:>8}{vs_sps:>8}{acc:>8}"
            f"{r['large_calls_per_problem']:>12.2f}{r['quality']:>9.3f}{exp:>10}"
        )


if __name__ == "__main__":
    main()
