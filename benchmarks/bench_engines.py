"""The README's main job end to end on each local engine: llama.cpp vs transformers.

    python benchmarks/bench_engines.py [--rounds 2] [--question "..."] [-- extra solve options]

Runs `specsearch solve QUESTION --json --engine E` as a fresh process per run (what a user
times: start-up, model load, search, exit), same search options and seed for both engines.
Each run gets its own empty threshold store (beta is not carried over from another run, or
from the other engine). A warm-up run of each engine comes first and is not counted (it
fetches and converts the models once and fills the page cache). Then the engines alternate,
and the order flips every round, so both see the same machine load.
Target: llama.cpp >= 4x faster end to end.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

README_QUESTION = (
    "James decides to run 3 sprints 3 times a week.  He runs 60 meters each sprint.  "
    "How many total meters does he run a week?"
)
ENGINES = ("transformers", "llamacpp")


def run_once(engine: str, question: str, extra: list[str], workdir: Path) -> dict[str, Any]:
    """One `specsearch solve` process: wall seconds and the result's stats."""
    run_id = f"{engine}-{time.monotonic_ns()}"
    checkpoint = workdir / f"{run_id}.sqlite"
    cmd = [
        sys.executable,
        "-m",
        "langgraph_specsearch.cli",
        "solve",
        question,
        "--engine",
        engine,
        "--json",
        "--quiet",
        "--checkpoint",
        str(checkpoint),
        "--threshold-store",
        str(workdir / f"{run_id}.json"),  # each run starts fresh, as a first run would
        *extra,
    ]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{engine} failed ({proc.returncode}): {proc.stderr.strip()[-500:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    stats = result["stats"]
    return {
        "engine": engine,
        "wall_s": wall,
        "search_s": stats["wall_s"],
        "small_tokens": stats["small"]["generated_tokens"],
        "large_tokens": stats["large"]["generated_tokens"],
        "steps": len(result["path"]),
        "nodes": len(result["nodes"]),
        "answer": result["answer"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--question", default=README_QUESTION)
    parser.add_argument("extra", nargs="*", help="more `specsearch solve` options (after --)")
    args = parser.parse_args()
    load = os.getloadavg()[0]
    print(f"{os.cpu_count()} CPUs, load average {load:.1f} at start", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        for engine in ENGINES:  # warm-up, not counted
            first = run_once(engine, args.question, args.extra, workdir)
            print(f"warm-up {engine}: {first['wall_s']:.1f} s", flush=True)
        runs: list[dict[str, Any]] = []
        for r in range(args.rounds):
            order = ENGINES if r % 2 == 0 else ENGINES[::-1]
            for engine in order:
                run = run_once(engine, args.question, args.extra, workdir)
                runs.append(run)
                print(
                    f"round {r + 1} {engine:12s} end to end {run['wall_s']:6.1f} s, search"
                    f" {run['search_s']:6.1f} s, tokens small/large"
                    f" {run['small_tokens']}/{run['large_tokens']}, {run['nodes']} nodes,"
                    f" path {run['steps']} steps",
                    flush=True,
                )
    mean = {
        e: (
            statistics.mean(r["wall_s"] for r in runs if r["engine"] == e),
            statistics.mean(r["search_s"] for r in runs if r["engine"] == e),
        )
        for e in ENGINES
    }
    print(f"load average {os.getloadavg()[0]:.1f} at end")
    print("| engine | end to end (mean) | search only (mean) |")
    print("|---|---|---|")
    for e in ENGINES:
        print(f"| {e} | {mean[e][0]:.1f} s | {mean[e][1]:.1f} s |")
    t, ll = mean["transformers"], mean["llamacpp"]
    print(f"llama.cpp speed-up: {t[0] / ll[0]:.2f}x end to end, {t[1] / ll[1]:.2f}x search only")


if __name__ == "__main__":
    main()
