"""Which failures of a model call are worth retrying, and who retries them.

One rule, `is_transient`, decides for every model call: timeouts, connection errors, HTTP 5xx,
429 and 408 (and a backend's `TransientBackendError`) may pass if tried again; a 4xx, a
validation or configuration error (`ValueError`, `TypeError`) or any other exception will not.

One retry layer. Inside a search, the graph retries: every node that calls a model is added
with a LangGraph `RetryPolicy` (`search_retry_policy`, `retry_on=is_transient`), and while such
a node runs the backends make one attempt per call (`retried_by_graph`), so the two layers
never multiply. Outside a graph (a backend used on its own, the PRM evaluation, start-up
calls such as TGI's `/info`) the HTTP backends retry a call themselves with the same rule
(`call_with_retries`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, TypeVar

from langgraph.types import RetryPolicy

from langgraph_specsearch.backends.base import BackendError, TransientBackendError

T = TypeVar("T")

DEFAULT_RETRIES = 1
"""Retries of a failed call (connection errors, timeouts, 5xx, 429): with a 20 s timeout a
frozen endpoint fails in about 2 x 20 s, a dead one (connection refused) in about a second."""

INITIAL_INTERVAL_S = 0.5
"""Wait before the first retry; doubled per retry up to `MAX_INTERVAL_S`."""

MAX_INTERVAL_S = 8.0
"""Longest wait between two attempts (before LangGraph's jitter of up to 1 s)."""

RETRY_STATUS = frozenset({408, 429})
"""4xx statuses that mean "try again later" (request timeout, too many requests)."""

_TRANSPORT_NAMES = frozenset(
    {"TimeoutException", "NetworkError", "RemoteProtocolError", "ProxyError"}
)
"""httpx / httpx2 transport errors that a later attempt may not meet (not `UnsupportedProtocol`
or `LocalProtocolError`: those are a bad URL or request)."""

_CLIENT_NAMES = frozenset(
    {"APIConnectionError", "APITimeoutError", "InferenceTimeoutError", "OverloadedError"}
)
"""Connection, timeout and overload errors of the openai SDK (used by LangChain models) and
huggingface_hub, matched by name so neither needs to be installed."""


def http_status(exc: BaseException) -> int | None:
    """The HTTP status behind an exception (its own, or its cause's), None if there is none."""
    for err in (exc, exc.__cause__):
        if err is None:
            continue
        code = getattr(err, "status_code", None)
        if isinstance(code, int) and not isinstance(code, bool):
            return code
        response = getattr(err, "response", None)
        code = getattr(response, "status_code", None) if response is not None else None
        if isinstance(code, int) and not isinstance(code, bool):
            return code
    return None


def _named(exc: BaseException, names: frozenset[str], modules: tuple[str, ...]) -> bool:
    """Whether a class in the exception's MRO has one of `names` and lives in `modules`."""
    return any(
        cls.__name__ in names and cls.__module__.split(".")[0] in modules
        for cls in type(exc).__mro__
    )


def is_transient(exc: BaseException) -> bool:
    """Whether a model call that raised `exc` is worth trying again.

    True for timeouts, connection errors, HTTP 5xx, 429 and 408 (the status read from the
    exception or its cause: httpx, huggingface_hub, openai), and `TransientBackendError`;
    False for every other `BackendError` (the backend classified it: a 4xx, a malformed
    answer), for `ValueError` / `TypeError` (validation, configuration) and for anything
    else (a local model's error is a bug, not a hiccup).
    """
    if isinstance(exc, BackendError):
        return isinstance(exc, TransientBackendError)
    if isinstance(exc, (ValueError, TypeError)):
        return False
    status = http_status(exc)
    if status is not None:
        return status >= 500 or status in RETRY_STATUS
    if isinstance(exc, (TimeoutError, asyncio.TimeoutError, ConnectionError)):
        return True
    if _named(exc, _TRANSPORT_NAMES, ("httpx", "httpx2")):
        return True
    return _named(exc, _CLIENT_NAMES, ("openai", "huggingface_hub"))


def search_retry_policy(
    retries: int = DEFAULT_RETRIES,
    *,
    initial_interval: float = INITIAL_INTERVAL_S,
    backoff_factor: float = 2.0,
    max_interval: float = MAX_INTERVAL_S,
    jitter: bool = True,
) -> RetryPolicy:
    """The `RetryPolicy` of the nodes that call a model: `retries + 1` attempts, transient
    failures only (`is_transient`), exponential backoff (LangGraph's jitter adds up to 1 s)."""
    if retries < 0:
        raise ValueError(f"retries must be >= 0, got {retries}")
    return RetryPolicy(
        max_attempts=retries + 1,
        initial_interval=initial_interval,
        backoff_factor=backoff_factor,
        max_interval=max_interval,
        jitter=jitter,
        retry_on=is_transient,
    )


DEFAULT_RETRY_POLICY = search_retry_policy()
"""What the expanders use when given no `retry_policy`: one retry of a transient failure."""

_RETRIED_BY_GRAPH: ContextVar[bool] = ContextVar("specsearch_retried_by_graph", default=False)


@contextmanager
def retried_by_graph() -> Iterator[None]:
    """Within: the running graph node retries failed calls, so backends make one attempt."""
    token = _RETRIED_BY_GRAPH.set(True)
    try:
        yield
    finally:
        _RETRIED_BY_GRAPH.reset(token)


def graph_retries_calls() -> bool:
    """Whether a graph node's `RetryPolicy` retries the calls made here (`retried_by_graph`)."""
    return _RETRIED_BY_GRAPH.get()


AsyncNode = Callable[[dict[str, Any]], Coroutine[Any, Any, dict[str, Any]]]


def _node_attempt() -> int | None:
    """The running node's attempt (1, 2, ...), None where LangGraph's runtime cannot be read
    (async nodes on Python 3.10 have no runnable context)."""
    try:
        from langgraph.runtime import get_runtime

        info = get_runtime().execution_info
    except Exception:  # noqa: BLE001 - outside a node, or Python 3.10
        return None
    return info.node_attempt if info is not None else None


def graph_retried(afunc: AsyncNode, policy: RetryPolicy | None = None) -> AsyncNode:
    """A node function whose model calls the node's `RetryPolicy` (`policy`) retries: the
    backends make one attempt each; a transient `BackendError` that ends the last attempt
    says how many there were."""
    attempts = (policy or DEFAULT_RETRY_POLICY).max_attempts

    async def node(state: dict[str, Any]) -> dict[str, Any]:
        with retried_by_graph():
            try:
                return await afunc(state)
            except BackendError as exc:
                attempt = _node_attempt()
                if attempts < 2 or attempt is None or attempt < attempts or not is_transient(exc):
                    raise
                raise TransientBackendError(f"{exc} (gave up after {attempt} attempts)") from exc

    node.__name__ = getattr(afunc, "__name__", "node")
    return node


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


async def call_with_retries(
    call: Callable[[], Awaitable[T]],
    *,
    where: str,
    what: str,
    retries: int,
    backoff_s: float = INITIAL_INTERVAL_S,
    backoff_max_s: float = MAX_INTERVAL_S,
    describe: Callable[[BaseException], str] = _one_line,
) -> T:
    """Run one backend call; retry transient failures unless a graph node retries it.

    Args:
        call: Makes the request (called again per attempt).
        where: The endpoint, first in every error message.
        what: The request (`POST /v1/completions`).
        retries: Retries outside a graph; inside a node with a `RetryPolicy` there are none.
        backoff_s: First wait; doubled per retry up to `backoff_max_s`.
        backoff_max_s: Longest wait.
        describe: One line saying what went wrong (the server's message).

    Raises:
        TransientBackendError: a transient failure, on the last attempt.
        BackendError: any other failure, at once ("rejected").
    """
    from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_exponential

    attempts = 1 if graph_retries_calls() else retries + 1
    retrying = AsyncRetrying(
        stop=stop_after_attempt(attempts),
        wait=wait_exponential(multiplier=backoff_s, max=backoff_max_s),
        retry=retry_if_exception(is_transient),
        reraise=True,
    )
    try:
        async for attempt in retrying:
            with attempt:
                return await call()
    except BackendError:
        raise
    except Exception as exc:
        if is_transient(exc):
            tries = f" after {attempts} attempts" if attempts > 1 else ""
            raise TransientBackendError(f"{where}: {what} failed{tries}: {describe(exc)}") from exc
        raise BackendError(f"{where}: {what} rejected: {describe(exc)}") from exc
    raise AssertionError("unreachable")  # pragma: no cover
