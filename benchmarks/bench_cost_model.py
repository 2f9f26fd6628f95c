"""When does SpecSearch pay off? The real graphs over simulated-latency models.

    python benchmarks/bench_cost_model.py [--ratios 1.7,3,5,10] [--questions 20]

The search graphs, the threshold and the node logic are the real ones; only the models are
simulated: a call sleeps `overhead + tokens * per_token` (batched decoding: a call's latency
is set by its longest sequence, not by how many sequences it holds, as on a GPU or a
latency-bound CPU), and the PRM sleeps a fixed time per call. Step scores are drawn from
Beta distributions (large model better on average than the small one). For each
large/small per-token cost ratio it prints AR and SpecSearch wall time per problem, side by
side, the ratio, and the acceptance rate. This is a projection, not a measurement of real
models; `bench_methods.py` measures the real embedded pair.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import time
from collections.abc import Sequence

from langgraph_specsearch.graphs.beam import create_beam_search
from langgraph_specsearch.graphs.expanders import create_ar_expander, create_speculative_expander
from langgraph_specsearch.prm.base import LastStepPRM
from langgraph_specsearch.prompts import FewShotFormat, PromptFormat
from langgraph_specsearch.types import Generation, GenerationParams


class SimulatedModel:
    """A backend that sleeps like a model and writes steps carrying a hidden quality."""

    def __init__(
        self,
        name: str,
        per_token_s: float,
        quality: tuple[float, float],
        seed: int,
        batching: str = "latency",
    ):
        self.name = name
        self.batching = batching
        self.prompt_format: PromptFormat = FewShotFormat(exemplars=())
        self.per_token_s = per_token_s
        self.quality = quality
        self.rng = random.Random(seed)

    async def agenerate(
        self, prompts: Sequence[str], *, n: int, params: GenerationParams
    ) -> list[list[Generation]]:
        """Sleep like a batched call; texts encode their quality."""
        lengths = [[self.rng.randint(15, 40) for _ in range(n)] for _ in prompts]
        flat = [x for row in lengths for x in row]
        # latency-bound: the longest sequence sets the time; throughput-bound: every token counts
        cost = max(flat, default=0) if self.batching == "latency" else sum(flat)
        await asyncio.sleep(0.02 + cost * self.per_token_s)
        out = []
        for row in lengths:
            gens = []
            for tokens in row:
                q = self.rng.betavariate(*self.quality)
                text = f"{self.name} step q={q:.4f}"
                if self.rng.random() < 0.2:
                    text += " The answer is 1."
                gens.append(Generation(text=text, tokens=tokens, finish_reason="stop_sequence"))
            out.append(gens)
        return out

    async def anext_token_logprobs(
        self, prompts: Sequence[str], candidates: Sequence[str]
    ) -> list[dict[str, float]]:
        """Unused by the simulated PRM."""
        return [dict.fromkeys(candidates, -1.0) for _ in prompts]


class SimulatedPRM(LastStepPRM):
    """Reads the hidden quality back (plus noise), after a fixed delay per call."""

    name = "simulated"

    def __init__(self, delay_s: float, seed: int) -> None:
        self.delay_s = delay_s
        self.rng = random.Random(seed)

    async def ascore_last(self, question: str, paths: Sequence[Sequence[str]]) -> list[float]:
        """Quality + Gaussian noise, clipped to [0, 1]."""
        await asyncio.sleep(self.delay_s)
        scores = []
        for path in paths:
            q = float(path[-1].split("q=")[1].split()[0])
            scores.append(min(max(q + self.rng.gauss(0, 0.05), 0.0), 1.0))
        return scores


async def one(
    method: str, ratio: float, seed: int, args: argparse.Namespace
) -> tuple[float, float | None]:
    """Wall time and acceptance rate of one simulated search."""
    sa, sb = (float(x) for x in args.small_quality.split(","))
    la, lb = (float(x) for x in args.large_quality.split(","))
    small = SimulatedModel("small", args.small_token_s, (sa, sb), seed, args.batching)
    large = SimulatedModel("large", args.small_token_s * ratio, (la, lb), seed + 1, args.batching)
    prm = SimulatedPRM(args.prm_s, seed + 2)
    if method == "ar":
        expander = create_ar_expander(large, prm)
    else:
        expander = create_speculative_expander(small, large, prm)
    graph = create_beam_search(
        expander, beam_width=args.beam_width, n=args.n_drafts, max_steps=args.max_steps
    ).compile()
    start = time.perf_counter()
    out = await graph.ainvoke({"question": f"problem {seed}"})
    return time.perf_counter() - start, out["stats"]["acceptance_rate"]


def main() -> None:
    """Print AR vs SpecSearch per cost ratio."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--ratios", default="1.7,3,5,10")
    parser.add_argument("--questions", type=int, default=20)
    parser.add_argument("--small-token-s", type=float, default=0.002)
    parser.add_argument("--prm-s", type=float, default=0.02)
    parser.add_argument("--n-drafts", type=int, default=4)
    parser.add_argument("--beam-width", type=int, default=2)
    parser.add_argument("--max-steps", type=int, default=6)
    parser.add_argument("--batching", choices=["latency", "throughput"], default="latency")
    parser.add_argument("--small-quality", default="5,3", help="Beta(a,b) of small steps")
    parser.add_argument("--large-quality", default="6,2", help="Beta(a,b) of large steps")
    args = parser.parse_args()
    print(
        f"batching: {args.batching}; step quality small Beta({args.small_quality}),"
        f" large Beta({args.large_quality})"
    )
    print(f"{'large/small':>11} {'AR s':>8} {'SpecSearch s':>13} {'speed-up':>9} {'accept':>7}")
    for ratio in (float(r) for r in args.ratios.split(",")):
        ar, spec, acc = [], [], []
        for q in range(args.questions):
            ar.append(asyncio.run(one("ar", ratio, 1000 + q, args))[0])
            wall, rate = asyncio.run(one("specsearch", ratio, 1000 + q, args))
            spec.append(wall)
            if rate is not None:
                acc.append(rate)
        a, s = statistics.fmean(ar), statistics.fmean(spec)
        print(f"{ratio:>11.1f} {a:>8.3f} {s:>13.3f} {a / s:>8.2f}x {statistics.fmean(acc):>6.0%}")


if __name__ == "__main__":
    main()
