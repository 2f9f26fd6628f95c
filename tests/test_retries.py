"""Model calls retried by LangGraph's RetryPolicy: transient failures only, in one layer.

Scripted models fail on chosen calls; every attempt is a recorded call, so the tests see
exactly how often each node tried. The HTTP test checks that a backend with its own retries
makes one attempt per node attempt inside a graph (the layers do not multiply).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from scripted import ScriptedBackend, ScriptedPRM, by_text

from langgraph_specsearch.backends.base import BackendError, TransientBackendError
from langgraph_specsearch.backends.openai import OpenAIBackend
from langgraph_specsearch.graphs.beam import create_beam_search
from langgraph_specsearch.graphs.expanders import create_ar_expander, create_speculative_expander
from langgraph_specsearch.graphs.mcts import create_mcts
from langgraph_specsearch.nodes.prefetch import Prefetcher
from langgraph_specsearch.retries import (
    DEFAULT_RETRY_POLICY,
    call_with_retries,
    graph_retries_calls,
    is_transient,
    retried_by_graph,
    search_retry_policy,
)
from langgraph_specsearch.serve import background_server
from langgraph_specsearch.simulate import run_virtual
from langgraph_specsearch.speculation import SpeculationConfig
from langgraph_specsearch.types import Generation, GenerationParams

FAST = search_retry_policy(1, initial_interval=0.01, jitter=False)
LOCKSTEP = SpeculationConfig(
    pipeline="lockstep", regenerate="all", controller="off", concurrent="off"
)


def _status_error(code: int) -> httpx.HTTPStatusError:
    request = httpx.Request("POST", "http://x/generate")
    return httpx.HTTPStatusError("boom", request=request, response=httpx.Response(code))


TRANSIENT = [
    ConnectionError("endpoint went away"),
    TimeoutError("read timed out"),
    asyncio.TimeoutError(),
    TransientBackendError("http://x: POST / failed: HTTP 503"),
    _status_error(503),
    _status_error(429),
    httpx.ConnectError("refused"),
    httpx.ReadTimeout("slow"),
]
PERMANENT = [
    ValueError("bad option"),
    TypeError("wrong type"),
    BackendError("http://x: POST / rejected: HTTP 422: max_new_tokens"),
    _status_error(400),
    _status_error(404),
    httpx.UnsupportedProtocol("no scheme"),
    RuntimeError("a local model's bug"),
    KeyError("missing"),
]


@pytest.mark.parametrize("exc", TRANSIENT, ids=lambda e: type(e).__name__)
def test_transient_failures_are_retried(exc: BaseException) -> None:
    assert is_transient(exc)


@pytest.mark.parametrize("exc", PERMANENT, ids=lambda e: type(e).__name__)
def test_other_failures_are_not(exc: BaseException) -> None:
    assert not is_transient(exc)


def test_status_is_read_from_the_cause() -> None:
    try:
        try:
            raise _status_error(502)
        except httpx.HTTPStatusError as inner:
            raise OSError("wrapped") from inner
    except OSError as outer:
        assert is_transient(outer)


def test_the_policy_counts_attempts_and_uses_the_rule() -> None:
    policy = search_retry_policy(3)
    assert policy.max_attempts == 4 and policy.retry_on is is_transient
    assert search_retry_policy(0).max_attempts == 1
    assert DEFAULT_RETRY_POLICY.max_attempts == 2
    with pytest.raises(ValueError, match="retries must be >= 0"):
        search_retry_policy(-1)


def failing(
    script: Callable[[str, int, int], str], fail: Mapping[int, BaseException]
) -> Callable[[str, int, int], str]:
    """A script that raises `fail[call]` on those calls (each attempt is one call)."""

    def run(prompt: str, call: int, i: int) -> str:
        if call in fail:
            raise fail[call]
        return script(prompt, call, i)

    return run


def depth(prompt: str) -> int:
    """Steps so far in a scripted prompt (the text depends on the prompt, not the call)."""
    return len(prompt.split("Answer: ", 1)[1].split("\n\n")) - 1


def large_script(prompt: str, call: int, i: int) -> str:
    d = depth(prompt)
    return f"large d{d} i{i} 0.6" if d < 2 else f"The answer is {d}. 0.6"


def small_script(prompt: str, call: int, i: int) -> str:
    return f"small d{depth(prompt)} i{i} {[0.9, 0.1][i % 2]}"


class FlakyPRM(ScriptedPRM):
    """A scripted PRM that raises on chosen calls."""

    def __init__(self, fail: Mapping[int, BaseException]) -> None:
        super().__init__(by_text)
        self.fail = fail

    async def ascore_last(self, question: str, paths: Sequence[Sequence[str]]) -> list[float]:
        call = len(self.calls)
        self.calls.append(len(paths))
        if call in self.fail:
            raise self.fail[call]
        return [self.scores(path[-1]) for path in paths]


def search(
    fail_small: Mapping[int, BaseException] | None = None,
    fail_large: Mapping[int, BaseException] | None = None,
    fail_prm: Mapping[int, BaseException] | None = None,
    policy: Any = FAST,
    made: dict[str, Any] | None = None,
) -> tuple[dict[str, Any], ScriptedBackend, ScriptedBackend, FlakyPRM]:
    """A SpecSearch beam search on scripted models (kept in `made` when given)."""
    small = ScriptedBackend("small", failing(small_script, fail_small or {}))
    large = ScriptedBackend("large", failing(large_script, fail_large or {}))
    prm = FlakyPRM(fail_prm or {})
    if made is not None:
        made.update(small=small.calls, large=large.calls, prm=prm.calls)
    expander = create_speculative_expander(
        small=small,
        large=large,
        prm=prm,
        speculation=LOCKSTEP,
        draft_params=GenerationParams(max_new_tokens=4, temperature=0.7, seed=1),
        retry_policy=policy,
    )
    graph = create_beam_search(expander, beam_width=1, n=2, max_steps=4, complete=False)
    out = asyncio.run(graph.compile().ainvoke({"question": "q?"}))
    return out, small, large, prm


HEALTHY, H_SMALL, H_LARGE, H_PRM = search()


@pytest.mark.parametrize("model", ["small", "large", "prm"])
@pytest.mark.parametrize("exc", TRANSIENT[:5], ids=lambda e: type(e).__name__)
def test_a_transient_failure_is_retried_once_and_the_search_is_unchanged(
    model: str, exc: BaseException
) -> None:
    # the second call of the model fails once: its node runs again, the search goes on
    out, small, large, prm = search(**{f"fail_{model}": {1: exc}})  # type: ignore[arg-type]
    assert out["answer"] == HEALTHY["answer"]
    assert [s["text"] for s in out["path"]] == [s["text"] for s in HEALTHY["path"]]
    assert out["threshold_trace"] == HEALTHY["threshold_trace"]
    made: dict[str, list[Any]] = {"small": small.calls, "large": large.calls, "prm": prm.calls}
    before: dict[str, list[Any]] = {
        "small": H_SMALL.calls,
        "large": H_LARGE.calls,
        "prm": H_PRM.calls,
    }
    calls, healthy = made[model], before[model]
    assert len(calls) == len(healthy) + 1  # the failed attempt and its retry
    assert calls[1] == calls[2] == healthy[1]  # the retry asked for the same thing


@pytest.mark.parametrize("model", ["small", "large", "prm"])
@pytest.mark.parametrize("exc", PERMANENT[:4], ids=lambda e: type(e).__name__)
def test_a_permanent_failure_fails_at_once(model: str, exc: BaseException) -> None:
    made: dict[str, Any] = {}
    with pytest.raises(type(exc)) as caught:
        search(**{f"fail_{model}": {1: exc}}, made=made)  # type: ignore[arg-type]
    assert caught.value is exc
    assert len(made[model]) == 2  # calls 0 and 1: the failed call was not made again


def test_retries_give_up_after_max_attempts() -> None:
    fail = {k: ConnectionError(f"down {k}") for k in range(1, 10)}
    with pytest.raises(ConnectionError, match="down 2"):  # attempts: calls 1 and 2
        search(fail_large=fail)
    with pytest.raises(ConnectionError, match="down 1"):  # no retries at all
        search(fail_large=fail, policy=search_retry_policy(0))
    twice = {1: ConnectionError(), 2: ConnectionError()}
    policy = search_retry_policy(2, initial_interval=0.01, jitter=False)
    out, _, large, _ = search(fail_large=twice, policy=policy)
    assert out["answer"] == HEALTHY["answer"] and len(large.calls) == len(H_LARGE.calls) + 2


def test_ar_expander_and_mcts_rollouts_are_retried() -> None:
    large = ScriptedBackend("large", failing(large_script, {0: ConnectionError()}))
    rollouts: list[list[str]] = []

    async def rollout(question: str, steps: list[str]) -> float:
        rollouts.append(steps)
        if len(rollouts) == 1:
            raise TimeoutError("rollout timed out")
        return 0.5

    expander = create_ar_expander(large=large, prm=ScriptedPRM(by_text), retry_policy=FAST)
    graph = create_mcts(
        expander,
        iterations=2,
        max_depth=2,
        value="rollout",
        rollout=rollout,
        complete=False,
        retry_policy=FAST,
    )
    out = asyncio.run(graph.compile().ainvoke({"question": "q?"}))
    assert out["path"]
    assert large.calls[0] == large.calls[1]  # the failed first expansion was made again
    # the evaluate node ran its two rollouts again: the first one had failed
    assert len(rollouts) >= 4 and rollouts[:2] == rollouts[2:4]


class FlakyRemoteLarge(ScriptedBackend):
    """A large model on its own device whose `fail`-th request fails (seeds recorded)."""

    device_key = "remote-large"

    def __init__(self, fail: int) -> None:
        super().__init__("large", lambda p, c, i: f"L{c} 0.5")
        self.fail = fail
        self.seeds: list[int | None] = []

    async def agenerate(
        self, prompts: Sequence[str], *, n: int, params: GenerationParams
    ) -> list[list[Generation]]:
        self.seeds.append(params.seed)
        number = len(self.seeds)
        await asyncio.sleep(1.0)
        if number == self.fail:
            raise TransientBackendError("http://large: POST / failed: HTTP 503")
        out = [
            [Generation(text=f"L{params.seed} 0.5", tokens=2, finish_reason="stop_sequence")] * n
            for _ in prompts
        ]
        return out


def _concurrent(fail: int) -> tuple[dict[str, Any], FlakyRemoteLarge]:
    small = ScriptedBackend("small", lambda p, c, i: f"s{c}{i} {[0.1, 0.1, 0.9][i]}")
    small.device_key = "remote-small"  # type: ignore[attr-defined]
    large = FlakyRemoteLarge(fail)
    expander = create_speculative_expander(
        small=small,
        large=large,
        prm=ScriptedPRM(by_text),
        speculation=SpeculationConfig(controller="off", probe_every=0, drafts=3),
        draft_params=GenerationParams(seed=5),
        retry_policy=FAST,
    )
    graph = create_beam_search(expander, beam_width=2, n=3, max_steps=2, complete=False)
    return run_virtual(graph.compile().ainvoke({"question": "q"})), large


def test_a_failed_prefetched_request_is_sent_again_on_the_retry() -> None:
    healthy, plain = _concurrent(fail=0)
    # request 2 is the first make-up request started while the drafts are written
    out, flaky = _concurrent(fail=2)
    assert [s["text"] for s in out["path"]] == [s["text"] for s in healthy["path"]]
    assert out["threshold_trace"] == healthy["threshold_trace"]
    failed_seed = flaky.seeds[1]
    assert flaky.seeds.count(failed_seed) == 2  # re-issued, not the failed task re-awaited
    assert len(flaky.seeds) > len(plain.seeds)


async def test_prefetcher_restarts_a_failed_request_but_keeps_a_running_one() -> None:
    prefetch = Prefetcher()

    async def fails() -> tuple[Generation, float]:
        raise ConnectionError("gone")

    async def works(text: str) -> tuple[Generation, float]:
        await asyncio.sleep(0.01)
        return Generation(text=text, tokens=1, finish_reason="stop_sequence"), 0.01

    prefetch.start("k", fails())
    await asyncio.sleep(0)  # let it fail
    await asyncio.sleep(0)
    prefetch.start("k", works("fresh"))  # a retried draft node starts it again
    prefetch.start("k", works("twice"))  # while it runs, a second start is dropped
    task = prefetch.claim("k")
    assert task is not None and (await task)[0].text == "fresh"
    assert prefetch.claim("k") is None  # claimed once: a retry sends the request itself


@pytest.fixture
def always_503() -> Any:
    calls: list[str] = []
    app = FastAPI()

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"data": [{"id": "m", "owned_by": "vllm"}]}

    @app.post("/v1/completions")
    async def completions(request: Request) -> JSONResponse:
        calls.append((await request.json())["prompt"])
        return JSONResponse({"error": {"message": "overloaded"}}, status_code=503)

    with background_server(app) as url:
        yield url, calls


async def test_backend_retries_alone_but_not_inside_a_graph_node(always_503: Any) -> None:
    url, calls = always_503
    backend = OpenAIBackend(url, retries=3, backoff_s=0.01)
    params = GenerationParams(max_new_tokens=2, temperature=0.0)
    with pytest.raises(TransientBackendError, match="failed after 4 attempts: HTTP 503"):
        await backend.agenerate(["alone"], n=1, params=params)
    assert calls.count("alone") == 4  # the backend's own retries, outside a graph
    with retried_by_graph():
        assert graph_retries_calls()
        with pytest.raises(TransientBackendError, match=r"failed: HTTP 503: overloaded"):
            await backend.agenerate(["in a node"], n=1, params=params)
    assert not graph_retries_calls()
    assert calls.count("in a node") == 1
    # in a search: 2 node attempts (FAST) x 1 backend attempt, not 2 x 4
    expander = create_ar_expander(large=backend, prm=ScriptedPRM(by_text), retry_policy=FAST)
    graph = create_beam_search(expander, beam_width=1, n=1, max_steps=1, complete=False)
    before = len(calls)
    with pytest.raises(
        TransientBackendError, match=r"HTTP 503: overloaded \(gave up after 2 attempts\)"
    ):
        await graph.compile().ainvoke({"question": "q?"})
    assert len(calls) - before == 2


async def test_call_with_retries_names_the_endpoint_and_says_rejected() -> None:
    async def bad() -> None:
        raise _status_error(422)

    with pytest.raises(BackendError, match=r"^http://x: POST / rejected: ") as caught:
        await call_with_retries(bad, where="http://x", what="POST /", retries=3, backoff_s=0.0)
    assert not isinstance(caught.value, TransientBackendError)
