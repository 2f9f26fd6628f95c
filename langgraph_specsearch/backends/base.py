"""The model-backend protocol: N continuations per prompt, stopping at the step delimiter."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from langgraph_specsearch.prompts import PromptFormat
from langgraph_specsearch.types import Generation, GenerationParams


class BackendError(RuntimeError):
    """A model call failed in a way retrying did not fix; the message names the endpoint."""


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
    """Synchronous convenience around `Backend.agenerate`."""
    return asyncio.run(backend.agenerate(prompts, n=n, params=params))
