"""AR vs SpS vs SpecSearch on the same template, measured side by side in one run.

    python benchmarks/bench_methods.py --questions 3 [--search beam] [--small-url U --large-url U]

Prints wall time per problem for each method, the speed-up ratios, SpecSearch's acceptance
rate and accuracy (math-verify against GSM8K gold). Models are loaded once, before timing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from importlib.resources import files

from langgraph_specsearch.answers import gsm8k_gold, is_correct
from langgraph_specsearch.api import SearchConfig, asolve, load_components


def main() -> None:
    """Run every method on the first N GSM8K test questions and print a table."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--questions", type=int, default=3)
    parser.add_argument("--search", default="beam")
    parser.add_argument("--methods", default="ar,sps,specsearch")
    parser.add_argument("--n-drafts", type=int, default=4)
    parser.add_argument("--beam-width", type=int, default=2)
    parser.add_argument("--max-steps", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=40)
    parser.add_argument("--small-url")
    parser.add_argument("--large-url")
    args = parser.parse_args()
    rows = files("langgraph_specsearch").joinpath("data/gsm8k_test_head50.jsonl").read_text()
    problems = [json.loads(line) for line in rows.splitlines()[: args.questions]]
    methods = args.methods.split(",")
    base = dict(
        search=args.search,
        n_drafts=args.n_drafts,
        beam_width=args.beam_width,
        max_steps=args.max_steps,
        max_new_tokens=args.max_new_tokens,
        small_url=args.small_url,
        large_url=args.large_url,
        seed=0,
    )
    components = {}
    for method in methods:
        config = SearchConfig(method=method, **base)
        t0 = time.perf_counter()
        components[method] = load_components(config)
        print(f"loaded {method} components in {time.perf_counter() - t0:.1f} s")
    times: dict[str, list[float]] = {m: [] for m in methods}
    correct: dict[str, int] = dict.fromkeys(methods, 0)
    acceptance: list[float] = []
    split: dict[str, list[tuple[float, float, float]]] = {m: [] for m in methods}
    print(f"\n{'problem':>7} " + " ".join(f"{m:>12}" for m in methods))
    for i, problem in enumerate(problems):
        gold = gsm8k_gold(problem["answer"])
        cells = []
        for method in methods:
            config = SearchConfig(method=method, **base)
            t0 = time.perf_counter()
            result = asyncio.run(asolve(problem["question"], config, components=components[method]))
            elapsed = time.perf_counter() - t0
            times[method].append(elapsed)
            correct[method] += is_correct(result.answer, gold)
            st = result.stats
            split[method].append((st.small.time_s, st.large.time_s, st.prm.time_s))
            if method == "specsearch" and result.stats.acceptance_rate is not None:
                acceptance.append(result.stats.acceptance_rate)
            cells.append(f"{elapsed:>10.1f} s")
        print(f"{i:>7} " + " ".join(cells))
    means = {m: statistics.fmean(t) for m, t in times.items()}
    print(f"\n{'mean':>7} " + " ".join(f"{means[m]:>10.1f} s" for m in methods))
    print(f"{'correct':>7} " + " ".join(f"{correct[m]:>9}/{len(problems)}" for m in methods))
    for m in methods:
        small, large, prm = (statistics.fmean(x) for x in zip(*split[m], strict=True))
        print(f"{m:>10} time split: small {small:.1f} s, large {large:.1f} s, PRM {prm:.1f} s")
    if "specsearch" in means:
        for m in methods:
            if m != "specsearch":
                print(f"speed-up of specsearch over {m}: {means[m] / means['specsearch']:.2f}x")
    if acceptance:
        print(
            f"specsearch acceptance rate: {statistics.fmean(acceptance):.0%} (mean over problems)"
        )


if __name__ == "__main__":
    main()
