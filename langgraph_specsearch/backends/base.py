"""The model-backend protocol: N continuations per prompt, stopping at the step delimiter."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

from langgraph_specsearch.prompts import PromptFormat
from langgraph_specsearch.types import Generation, GenerationParams


class BackendError(RuntimeError):
    """A model call failed; the message names the endpoint. Not worth retrying (a 4xx, a
    malformed answer) unless it is a `TransientBackendError` (see `retries.is_transient`)."""


class TransientBackendError(BackendError):
    """A model call failed for a reason that may pass: timeout, connection, 5xx, 429."""


@runtime_checkable
class Backend(Protocol):
    """A text generator the search can draft or regenerate thoughts with.

    Implementations: `TransformersBackend` (local), `TGIBackend` (HTTP), `ScriptedBackend`
    (tests). `prompt_format` turns (question, steps so far) into this model's prompt.
    """

    name: str
    prompt_format: PromptFormat

    async def agenerate(
        self, prompts: Sequence[str], *, n: int, params: GenerationParams
    ) -> list[list[Generation]]:
        """Return `n` continuations for each prompt (outer list follows `prompts`)."""
        ...

    async def anext_token_logprobs(
        self, prompts: Sequence[str], candidates: Sequence[str]
    ) -> list[dict[str, float]]:
        """Return, per prompt, the log-probability of each candidate as the next token."""
        ...


def generate(
    backend: Backend, prompts: Sequence[str], *, n: int, params: GenerationParams
) -> list[list[Generation]]:
    """Synchronous convenience around `Backend.agenerate` (works inside a running loop too)."""
    from langgraph_specsearch.background_loop import run_sync

    return run_sync(backend.agenerate(prompts, n=n, params=params))


def supports_speculation(backend: Any, *, sampling: bool) -> bool:
    """Whether `backend` decodes with token-level speculative decoding (greedy or sampled).

    A backend says so with a `speculates(sampling=...)` method: `TransformersBackend` when it
    has an assistant model, `TGIBackend` from the endpoint's `/info`. Wrappers that keep the
    real backend in `inner` are looked through; any other backend: False.
    """
    while not hasattr(backend, "speculates") and hasattr(backend, "inner"):
        backend = backend.inner
    probe = getattr(backend, "speculates", None)
    return bool(probe(sampling=sampling)) if callable(probe) else False


def require_speculation(backend: Any, *, sampling: bool) -> None:
    """Raise a one-line `ValueError` naming the endpoint unless `supports_speculation`."""
    if supports_speculation(backend, sampling=sampling):
        return
    where = getattr(backend, "url", None) or getattr(backend, "name", type(backend).__name__)
    kind = "sampled" if sampling else "greedy"
    raise ValueError(
        f"{where} does not do token-level speculative decoding for {kind} requests"
        " (asked for by --method sps / --large-sd): serve the large model with a draft model"
        " (specsearch serve --draft-model, TGI --speculate) or drop --large-sd / use --method ar"
    )
