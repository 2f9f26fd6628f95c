"""A virtual-clock simulator of the real search graphs: exact model time, hundreds of problems fast.

The graphs, nodes, threshold and controller are the real ones; only the models are simulated:

- `VirtualClockLoop`: an asyncio event loop whose clock jumps over sleeps (while no thread is
  running), so a simulated 10-second model call takes microseconds and every timing the search
  measures (`loop.time()`) is exact model time, free of the framework's own overhead.
- `SimServer`: an inference server with continuous batching. Every active sequence advances
  one token per decode iteration, and an iteration costs
  `per_token_s * (1 + gamma * (active_sequences - 1))`: `gamma = 0` is latency-bound decoding
  (a batch costs what its longest sequence costs, as GPUs and small CPUs decode small batches),
  `gamma = 1` throughput-bound (every sequence's tokens are paid in full), anything between a
  fixed plus per-sequence cost. A request also pays a fixed `overhead_s`. Cancelled requests
  leave the batch at once.
- `SimModel`: a `Backend` over a `SimServer` whose thoughts carry a hidden quality q in [0, 1];
  `SimPRM` reads q back with Gaussian noise. A problem has a solution length L (its question
  says `length L`, drawn by `solution_length`: 1 + geometric with per-step ending chance
  `p_end`); a thought at depth >= L states the answer with probability `p_finish`, a shallower
  one with `p_early`. So how long a search runs is a property of the problem, as in real
  reasoning, not of how many thoughts a method happens to sample.
- Quality models: `BetaQuality` (q ~ Beta(a, b)), and `ControlledDrafts`, where a draft is,
  with probability `acceptance`, a large-model-like thought clearly above the large model's mean
  quality (else one clearly below), so the real threshold accepts about that share.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import selectors
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from langgraph_specsearch.prm.base import LastStepPRM
from langgraph_specsearch.prompts import FewShotFormat, PromptFormat
from langgraph_specsearch.types import Generation, GenerationParams

# -- the virtual clock ---------------------------------------------------------------------------


class _VirtualSelector:
    """Wraps a real selector: when nothing is ready and no thread runs, time jumps instead."""

    def __init__(self, loop: VirtualClockLoop) -> None:
        self._real = selectors.DefaultSelector()
        self._loop = loop

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def select(self, timeout: float | None = None) -> list[Any]:
        events = self._real.select(0)
        if events or timeout == 0:
            return events
        if self._loop.threads_running > 0 or timeout is None:
            # a worker thread will wake the loop; wait for it in real time
            return self._real.select(None if timeout is None else min(timeout, 0.01))
        self._loop.advance(timeout)
        return []


class VirtualClockLoop(asyncio.SelectorEventLoop):
    """An event loop whose `time()` is virtual: idle waits advance it instantly."""

    def __init__(self) -> None:
        self._virtual_now = 0.0
        self.threads_running = 0
        super().__init__(selector=_VirtualSelector(self))  # type: ignore[arg-type]

    def time(self) -> float:
        """Virtual seconds since the loop was made."""
        return self._virtual_now

    def advance(self, seconds: float) -> None:
        """Jump the clock forward."""
        self._virtual_now += max(seconds, 0.0)

    def run_in_executor(  # type: ignore[override]
        self, executor: Any, func: Any, *args: Any
    ) -> asyncio.Future[Any]:
        """Count running threads: time must not jump while one works."""
        self.threads_running += 1
        future = super().run_in_executor(executor, func, *args)

        def done(_: Any) -> None:
            self.threads_running -= 1

        future.add_done_callback(done)
        return future


def run_virtual(coro: Any) -> Any:
    """Run a coroutine on a fresh virtual-clock loop."""
    loop = VirtualClockLoop()
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.close()


# -- the server -------------------------------------------------------------------------------


class SimServer:
    """Continuous batching with a per-iteration cost of `per_token_s * (1 + gamma * (S - 1))`."""

    def __init__(self, per_token_s: float, *, gamma: float = 0.0, overhead_s: float = 0.0):
        self.per_token_s = per_token_s
        self.gamma = gamma
        self.overhead_s = overhead_s
        self._jobs: list[dict[str, Any]] = []
        self._wake: asyncio.Event | None = None
        self._runner: asyncio.Task[None] | None = None

    async def run(self, tokens: Sequence[int]) -> None:
        """Decode sequences of these lengths as one request; return when all are done."""
        if self.per_token_s == 0 and self.overhead_s == 0:
            return  # an instant model (framework-overhead measurements)
        await asyncio.sleep(self.overhead_s)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        job: dict[str, Any] = {"rem": [float(t) for t in tokens if t > 0], "fut": future}
        if not job["rem"]:
            return
        self._jobs.append(job)
        if self._wake is None:
            self._wake = asyncio.Event()
        self._wake.set()
        if self._runner is None or self._runner.done():
            self._runner = asyncio.ensure_future(self._serve())
        try:
            await future
        finally:
            if job in self._jobs:  # cancelled: leave the batch
                self._jobs.remove(job)
                self._wake.set()

    async def _serve(self) -> None:
        assert self._wake is not None
        loop = asyncio.get_running_loop()
        while self._jobs:
            active = sum(1 for j in self._jobs for r in j["rem"] if r > 1e-9)
            step = self.per_token_s * (1 + self.gamma * (active - 1))
            shortest = min(r for j in self._jobs for r in j["rem"] if r > 1e-9)
            self._wake.clear()
            start = loop.time()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=shortest * step)
            elapsed = loop.time() - start
            progress = elapsed / step if step > 0 else math.inf
            for job in list(self._jobs):
                job["rem"] = [max(r - progress, 0.0) for r in job["rem"]]
                if all(r <= 1e-9 for r in job["rem"]):
                    self._jobs.remove(job)
                    if not job["fut"].done():
                        job["fut"].set_result(None)


# -- quality models -------------------------------------------------------------------------


@dataclass
class BetaQuality:
    """q ~ Beta(a, b)."""

    a: float
    b: float

    def draw(self, rng: random.Random) -> float:
        """One thought's hidden quality."""
        return rng.betavariate(self.a, self.b)

    @property
    def mean(self) -> float:
        """Expected quality."""
        return self.a / (self.a + self.b)


@dataclass
class ControlledDrafts:
    """A draft is a `large`-like thought above `mean + margin` with probability `acceptance`,
    else one below `mean - margin` (rejection sampling from the large model's distribution)."""

    large: BetaQuality
    acceptance: float
    margin: float = 0.08

    def draw(self, rng: random.Random) -> float:
        """One draft's hidden quality."""
        good = rng.random() < self.acceptance
        bar = self.large.mean + (self.margin if good else -self.margin)
        for _ in range(10_000):
            q = self.large.draw(rng)
            if (q >= bar) if good else (q <= bar):
                return q
        return min(max(bar, 0.0), 1.0)


Quality = BetaQuality | ControlledDrafts


# -- backends ---------------------------------------------------------------------------------


class SimModel:
    """A `Backend` over a `SimServer`; its thoughts encode their hidden quality."""

    def __init__(
        self,
        name: str,
        server: SimServer,
        quality: Quality,
        *,
        seed: int,
        tokens: tuple[int, int] = (20, 40),
        p_finish: float = 0.9,
        p_early: float = 0.02,
        device_key: str | None = None,
    ) -> None:
        self.name = name
        self.server = server
        self.quality = quality
        self.rng = random.Random(seed)
        self.tokens = tokens
        self.p_finish = p_finish
        self.p_early = p_early
        self.prompt_format: PromptFormat = FewShotFormat(exemplars=())
        self.device_key = device_key or f"sim:{name}"
        self.calls = 0
        self.completed = 0

    def _thought(self, params: GenerationParams, depth: int, length: int) -> Generation:
        # a seed makes the request's thought reproducible whatever else runs (per-request seeds)
        rng = random.Random(params.seed) if params.seed is not None else self.rng
        tokens = rng.randint(*self.tokens)
        q = self.quality.draw(rng)
        text = f"{self.name} step q={q:.4f}"
        if rng.random() < (self.p_finish if depth >= length else self.p_early):
            text += " The answer is 1."
        return Generation(text=text, tokens=tokens, finish_reason="stop_sequence")

    async def agenerate(
        self, prompts: Sequence[str], *, n: int, params: GenerationParams
    ) -> list[list[Generation]]:
        """`n` simulated thoughts per prompt, decoded as one request."""
        self.calls += 1
        out: list[list[Generation]] = []
        for p_index, prompt in enumerate(prompts):
            depth = prompt.count(" step q=") + 1
            length = problem_length(prompt)
            row = []
            for i in range(n):
                seed = None if params.seed is None else params.seed * 1009 + p_index * 101 + i
                call = params.model_copy(update={"seed": seed})
                row.append(self._thought(call, depth, length))
            out.append(row)
        lengths = [g.tokens for row in out for g in row]
        await self.server.run(lengths)
        self.completed += 1  # cancelled requests are not counted
        return out

    async def anext_token_logprobs(
        self, prompts: Sequence[str], candidates: Sequence[str]
    ) -> list[dict[str, float]]:
        """Not used by `SimPRM`."""
        return [dict.fromkeys(candidates, math.log(0.5)) for _ in prompts]


def solution_length(rng: random.Random, p_end: float, cap: int = 50) -> int:
    """1 + geometric: each further step ends the solution with probability `p_end`."""
    length = 1
    while rng.random() >= p_end and length < cap:
        length += 1
    return length


def problem_length(prompt: str) -> int:
    """The solution length a simulated question states (`... length L`), 1 if none."""
    marker = " length "
    if marker not in prompt:
        return 1
    return int(prompt.split(marker, 1)[1].split()[0])


def hidden_quality(text: str) -> float:
    """The quality a simulated thought carries."""
    return float(text.split("q=")[1].split()[0])


class SimPRM(LastStepPRM):
    """Reads a step's hidden quality back with Gaussian noise; a call costs like a prefill."""

    name = "simulated"

    def __init__(self, server: SimServer, *, noise: float, seed: int, tokens: int = 1) -> None:
        self.server = server
        self.noise = noise
        self.rng = random.Random(seed)
        self.tokens = tokens
        self.calls = 0

    async def ascore_last(self, question: str, paths: Sequence[Sequence[str]]) -> list[float]:
        """Noisy hidden quality of each path's last step."""
        self.calls += 1
        await self.server.run([self.tokens] * len(paths))
        out = []
        for path in paths:
            q = hidden_quality(path[-1])
            out.append(min(max(q + self.rng.gauss(0.0, self.noise), 0.0), 1.0))
        return out


# -- analytic expectations --------------------------------------------------------------------


def expected_max(lo: int, hi: int, k: int) -> float:
    """E[max of k iid uniform integers in [lo, hi]]."""
    if k <= 0:
        return 0.0
    span = hi - lo + 1
    return sum(1 - ((t - lo) / span) ** k for t in range(lo, hi + 1)) + lo - 1


def call_time(per_token: float, gamma: float, overhead: float, k: int, lo: int, hi: int) -> float:
    """Expected seconds of one request of k sequences on an idle server (approximation)."""
    if k <= 0:
        return 0.0
    mean = (lo + hi) / 2
    return overhead + per_token * (expected_max(lo, hi, k) + gamma * (k - 1) * mean)


@dataclass
class Costs:
    """The simulated models' nominal costs, for analytic predictions."""

    small_token_s: float
    large_token_s: float
    prm_s: float
    overhead_s: float
    gamma: float
    tokens: tuple[int, int]

    def small(self, k: int) -> float:
        """A draft request of k sequences."""
        return call_time(self.small_token_s, self.gamma, self.overhead_s, k, *self.tokens)

    def large(self, k: int) -> float:
        """A large-model request of k sequences."""
        return call_time(self.large_token_s, self.gamma, self.overhead_s, k, *self.tokens)

    def prm(self, k: int) -> float:
        """A PRM request of k steps."""
        if k <= 0:
            return 0.0
        return self.overhead_s + self.prm_s * (1 + self.gamma * (k - 1))


def expected_large_only(costs: Costs, *, nodes: int, n: int, large_speedup: float = 1.0) -> float:
    """Expected seconds of a large-only expansion of `nodes` nodes (one batched call + PRM)."""
    return costs.large(nodes * n) / large_speedup + costs.prm(nodes * n)


def expected_speculative(
    costs: Costs,
    *,
    acceptance: float,
    nodes: int,
    drafts: int,
    need: int,
    schedule: str,
    probe: bool = False,
) -> float:
    """Expected seconds of one speculative expansion of `nodes` nodes, from first principles.

    `schedule` is `paper` (lock-step: all drafts, all scores, then one large call for every
    rejected draft), `per_node` (each node makes up its shortfall below `need` on its own,
    after its drafts are judged) or `concurrent` (the same, the make-up started with the
    drafts). `probe`: a large thought is asked for even without a shortfall. Fixed framework
    costs are ignored; the large model's cost is `costs.large`.
    """
    a = acceptance
    if schedule == "paper":
        k = nodes * drafts
        head = costs.small(k) + costs.prm(k)
        tail = sum(
            math.comb(k, j) * (1 - a) ** j * a ** (k - j) * (costs.large(j) + costs.prm(j))
            for j in range(1, k + 1)
        )
        return head + tail
    from langgraph_specsearch.speculation import shortfall_probability

    p_node = 1.0 if probe else shortfall_probability(a, drafts, need)
    p_any = 1 - (1 - p_node) ** nodes
    head = costs.small(drafts) + costs.prm(drafts)
    makeup = costs.large(need)
    if schedule == "concurrent":
        tail = max(head, makeup) + costs.prm(need)
    else:
        tail = head + makeup + costs.prm(need)
    return (1 - p_any) * head + p_any * tail


def sd_speedup(cost_ratio: float, token_acceptance: float = 0.7, max_draft: int = 8) -> float:
    """Token-level speculative decoding's expected speed-up (Leviathan et al. 2023, eq. 1) at
    the best draft length, for a draft model costing `1 / cost_ratio` of the target per token;
    never below 1 (an engine would not be run with a draft model that slows it down)."""
    c, a = 1.0 / cost_ratio, token_acceptance
    best = max((1 - a ** (g + 1)) / ((1 - a) * (g * c + 1)) for g in range(1, max_draft + 1))
    return max(best, 1.0)
