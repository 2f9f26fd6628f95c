"""Run several methods on the same problems, interleaved, with models loaded and warm before timing.

Shared by `specsearch bench` and `benchmarks/bench_methods.py`:

- every method's backends are loaded once, before anything is timed (methods whose backends
  are the same share them: AR, SpecSearch and its ablations use the same small, large and PRM;
  SpS needs a speculating large model);
- every method then solves one warm-up problem that is never measured (it also lets a method
  that carries beta across problems start with one, as after any earlier run);
- per problem the methods run one after the other in rotating order (problem k starts with
  method k mod M), so slow drifts of the machine hit all methods alike;
- `concurrency` problems run at once (for endpoints, whose servers batch them); each of them
  still runs its methods one after the other.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass

from langgraph_specsearch.api import (
    Components,
    SearchConfig,
    asolve,
    load_components,
    needs_small_backend,
    needs_speculation,
)
from langgraph_specsearch.evaluation.datasets import Problem
from langgraph_specsearch.options import updated
from langgraph_specsearch.types import SearchResult

ConfigFor = Callable[[str, int], SearchConfig]
"""(method, repeat) -> the method's SearchConfig for that repeat."""

WARMUP_SEED = 10_000


@dataclass
class Run:
    """One measured search: a method on a problem (one repeat), its result and wall time."""

    problem: Problem
    method: str
    repeat: int
    position: int
    config: SearchConfig
    result: SearchResult
    latency_s: float


def rotation(methods: list[str], turn: int) -> list[str]:
    """The methods in the order problem number `turn` runs them."""
    k = turn % len(methods)
    return methods[k:] + methods[:k]


def components_key(config: SearchConfig) -> str:
    """What decides a method's backends: methods with equal keys share one set."""
    needs_small, needs_sd = needs_small_backend(config), needs_speculation(config)
    fields = (
        "small", "large", "small_url", "large_url", "prm_url", "protocol", "prompt_format",
        "prm", "prm_model", "prm_engine", "prm_device", "prm_dtype", "prm_batch_size",
        "prm_tgi_method", "engine", "device", "device_map", "dtype",
    )  # fmt: skip
    key = {f: getattr(config, f, None) for f in fields}
    key.update(
        needs_small=needs_small, needs_sd=needs_sd, temperature=config.generation.temperature > 0
    )
    return json.dumps(key, sort_keys=True, default=str)


class Runner:
    """Loads every method's backends once, warms them up, then runs problems interleaved."""

    def __init__(
        self,
        methods: list[str],
        config_for: ConfigFor,
        *,
        log: Callable[[str], None] = lambda message: None,
    ) -> None:
        if not methods:
            raise ValueError("no methods to run")
        self.methods = methods
        self.config_for = config_for
        self.log = log
        self.components: dict[str, Components] = {}
        self.load_s = 0.0
        self.warmup_s = 0.0

    async def load(self) -> None:
        """Load the backends each method needs (shared where they are the same)."""
        started = time.perf_counter()
        for method in self.methods:
            key = components_key(self.config_for(method, 0))
            if key in self.components:
                continue
            t0 = time.perf_counter()
            self.components[key] = await asyncio.to_thread(
                load_components, self.config_for(method, 0)
            )
            self.log(f"loaded {method} in {time.perf_counter() - t0:.1f} s")
        self.load_s = time.perf_counter() - started

    def components_for(self, config: SearchConfig) -> Components:
        """The loaded backends of a config."""
        return self.components[components_key(config)]

    async def warm_up(self, problem: Problem | None) -> None:
        """Every method solves `problem` once, unmeasured."""
        if problem is None:
            return
        started = time.perf_counter()
        for method in self.methods:
            t0 = time.perf_counter()
            config = updated(self.config_for(method, 0), seed=WARMUP_SEED)
            await asolve(problem.question, config, components=self.components_for(config))
            self.log(f"warm-up {method}: {time.perf_counter() - t0:.1f} s (not measured)")
        self.warmup_s = time.perf_counter() - started

    async def solve_one(self, problem: Problem, method: str, repeat: int, position: int) -> Run:
        """One timed search."""
        config = self.config_for(method, repeat)
        components = self.components_for(config)
        t0 = time.perf_counter()
        result = await asolve(problem.question, config, components=components)
        latency = time.perf_counter() - t0
        return Run(problem, method, repeat, position, config, result, latency)

    async def run(
        self,
        problems: list[Problem],
        *,
        repeats: int = 1,
        concurrency: int = 1,
        skip: Callable[[str, str, int], bool] = lambda pid, method, repeat: False,
        on_run: Callable[[Run], None] = lambda run: None,
    ) -> None:
        """Run every method on every problem `repeats` times; `on_run` gets each finished run.

        `skip(problem_id, method, repeat)` leaves out runs already done (a resumed run keeps
        the rotation of the full run).
        """
        if repeats < 1 or concurrency < 1:
            raise ValueError("repeats and concurrency must be >= 1")
        gate = asyncio.Semaphore(concurrency)

        async def one_problem(problem: Problem, repeat: int, turn: int) -> None:
            async with gate:
                for position, method in enumerate(rotation(self.methods, turn)):
                    if skip(problem.id, method, repeat):
                        continue
                    on_run(await self.solve_one(problem, method, repeat, position))

        items = [
            (problem, repeat, repeat * len(problems) + i)
            for repeat in range(repeats)
            for i, problem in enumerate(problems)
        ]
        if concurrency == 1:
            for item in items:
                await one_problem(*item)
            return
        tasks = [asyncio.ensure_future(one_problem(*item)) for item in items]
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()


def one_engine(configs: dict[str, SearchConfig]) -> tuple[dict[str, SearchConfig], str | None]:
    """Local models on one engine for every method, so their latencies compare.

    With `engine="auto"`, SpS (token-level speculation) runs on transformers while the other
    methods would run on llama.cpp when it is installed; then all run on transformers. Returns
    the configs and a note saying so (None when nothing changed).
    """
    from langgraph_specsearch.engines import choose_engine

    local = {
        m: c for m, c in configs.items() if c.engine == "auto" and not (c.small_url or c.large_url)
    }
    chosen = {}
    for m, c in local.items():
        needs_sd = c.method == "sps" or (c.method == "specsearch" and c.large_sd)
        chosen[m] = choose_engine("auto", [c.small, c.large], needs_sd=needs_sd, dtype=c.dtype)[0]
    if len(set(chosen.values())) < 2:
        return configs, None
    moved = sorted(m for m, e in chosen.items() if e != "transformers")
    fixed = {
        m: c.model_copy(update={"engine": "transformers"}) if m in local else c
        for m, c in configs.items()
    }
    note = (
        f"all methods run on transformers (token-level speculation needs it; {', '.join(moved)}"
        " would run on llama.cpp): pass --engine to choose"
    )
    return fixed, note
