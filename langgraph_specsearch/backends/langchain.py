"""Any LangChain LLM or chat model as a search backend (small or large model).

`LangChainBackend(model)` wraps a `BaseLLM` (text completion: `HuggingFaceEndpoint` at TGI,
`OpenAI` at a `/v1/completions` server, `LlamaCpp`, ...) or a `BaseChatModel` (`ChatOpenAI`
at vLLM / llama.cpp / SGLang, `ChatHuggingFace`, `ChatOllama`, ...). What a LangChain model
cannot give the search, and what happens instead:

- **Next-token log-probabilities** (the judge PRM): not part of LangChain's interface, so
  `anext_token_logprobs` raises `BackendError`; use the `arithmetic` PRM, a PRM endpoint
  (`--prm-url`) or a model PRM with such a backend as the judge's model.
- **Sampling parameters**: set per call on the model's own fields when it has them
  (`temperature`, `top_p`, `max_tokens` / `max_new_tokens` / `max_output_tokens` /
  `num_predict`, `seed`); a model without such a field samples with its own setting.
- **Seeds**: sample `i` of a call gets `seed + i` when the model has a `seed` field; otherwise
  repeated searches draw different samples.
- **`n` samples per request**: one request per sample, `max_concurrency` in flight.
- **End of sequence vs stop string**: LangChain reports `stop` for both, so a stopped sample
  counts as a stop string (a finished solution is still recognised by its answer line);
  `length` when the model says the token budget ran out.
- **Token counts**: from the response's usage (`usage_metadata`, `token_usage`), else the
  number of whitespace-separated words.

A chat model gets the rendered prompt as one user message and its reply is taken as the next
step, so pick a `prompt_format` the model follows (`fewshot`, the default, or `chatml`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

from langchain_core.language_models import BaseChatModel, BaseLanguageModel, BaseLLM
from langchain_core.messages import AIMessage, HumanMessage

from langgraph_specsearch.backends.base import BackendError, TransientBackendError
from langgraph_specsearch.prompts import PromptFormat, prompt_format_by_name
from langgraph_specsearch.retries import is_transient
from langgraph_specsearch.types import FinishReason, Generation, GenerationParams

MAX_TOKEN_FIELDS = ("max_tokens", "max_new_tokens", "max_output_tokens", "num_predict")
"""Field names LangChain integrations use for the token budget (the first one present is set)."""

_LENGTH = ("length", "max_tokens", "MAX_TOKENS", "max_output_tokens")


class LangChainBackend:
    """`Backend` over a LangChain LLM or chat model (see the module docstring for its limits)."""

    def __init__(
        self,
        model: BaseLanguageModel,
        *,
        name: str | None = None,
        prompt_format: str | PromptFormat = "fewshot",
        max_concurrency: int = 8,
        device_key: str | None = None,
    ) -> None:
        """Wrap `model`.

        Args:
            model: A LangChain `BaseLLM` or `BaseChatModel`.
            name: Name in stats (default: the model's `_llm_type`).
            prompt_format: `fewshot`, `chatml` or a `PromptFormat`.
            max_concurrency: Requests in flight at once (per event loop).
            device_key: Where the model runs, for the scheduler (default: the model's
                `base_url` / `endpoint_url` when it has one, else this process).
        """
        if not isinstance(model, BaseLLM | BaseChatModel):
            raise TypeError(
                f"LangChainBackend needs a LangChain LLM or chat model, got {type(model).__name__}"
            )
        self.model = model
        self.name = name or str(getattr(model, "_llm_type", type(model).__name__))
        self.prompt_format: PromptFormat = (
            prompt_format_by_name(prompt_format)
            if isinstance(prompt_format, str)
            else prompt_format
        )
        self.max_concurrency = max_concurrency
        where = getattr(model, "base_url", None) or getattr(model, "endpoint_url", None)
        self.device_key = device_key or (str(where) if where else None)
        self._semaphores: dict[int, asyncio.Semaphore] = {}

    def _semaphore(self) -> asyncio.Semaphore:
        key = id(asyncio.get_running_loop())
        if key not in self._semaphores:
            self._semaphores[key] = asyncio.Semaphore(self.max_concurrency)
        return self._semaphores[key]

    def configured(self, params: GenerationParams, seed: int | None) -> BaseLanguageModel:
        """The model with the step's sampling parameters on the fields it has."""
        fields = type(self.model).model_fields
        update: dict[str, Any] = {}
        if "temperature" in fields:
            update["temperature"] = params.temperature
        if "top_p" in fields and params.temperature > 0:
            update["top_p"] = params.top_p
        budget = next((f for f in MAX_TOKEN_FIELDS if f in fields), None)
        if budget is not None:
            update[budget] = params.max_new_tokens
        if "seed" in fields and seed is not None:
            update["seed"] = seed
        return self.model.model_copy(update=update) if update else self.model

    async def _one(self, prompt: str, params: GenerationParams, seed: int | None) -> Generation:
        """One sample for one prompt."""
        model = self.configured(params, seed)
        stop = [s for s in params.stop if s] or None
        started = time.perf_counter()
        try:
            async with self._semaphore():
                if isinstance(model, BaseChatModel):
                    message = await model.ainvoke([HumanMessage(prompt)], stop=stop)
                    text, tokens, reason = _from_message(message)
                else:
                    result = await model.agenerate([prompt], stop=stop)  # type: ignore[attr-defined]
                    text, tokens, reason = _from_llm_result(result)
        except Exception as exc:
            first = str(exc).splitlines()[0] if str(exc) else ""
            error = TransientBackendError if is_transient(exc) else BackendError
            raise error(f"{self.name}: {type(exc).__name__}: {first}") from exc
        text = _cut_at_stop(text, stop or [])
        return Generation(
            text=text.strip(),
            tokens=tokens if tokens is not None else len(text.split()),
            finish_reason=reason,
            latency_s=time.perf_counter() - started,
        )

    async def agenerate(
        self, prompts: Sequence[str], *, n: int, params: GenerationParams
    ) -> list[list[Generation]]:
        """`n` samples per prompt, one request each (greedy: one request, repeated)."""
        copies = 1 if params.temperature == 0 else n

        def seed(j: int, i: int) -> int | None:
            return None if params.seed is None else params.seed + j * copies + i

        flat = await asyncio.gather(
            *(
                self._one(prompt, params, seed(j, i))
                for j, prompt in enumerate(prompts)
                for i in range(copies)
            )
        )
        out = []
        for j in range(len(prompts)):
            group = list(flat[j * copies : (j + 1) * copies])
            out.append(group if copies == n else [group[0].model_copy() for _ in range(n)])
        return out

    async def anext_token_logprobs(
        self, prompts: Sequence[str], candidates: Sequence[str]
    ) -> list[dict[str, float]]:
        """Not available through LangChain's model interface."""
        raise BackendError(
            f"{self.name}: a LangChain model gives no next-token log-probabilities; use the"
            " arithmetic PRM, --prm-url or a model PRM"
        )


def _finish(metadata: dict[str, Any]) -> FinishReason:
    """`length` when the model says the budget ran out, else a stop."""
    reason = metadata.get("finish_reason") or metadata.get("stop_reason") or ""
    return "length" if str(reason) in _LENGTH else "stop_sequence"


def _from_message(message: Any) -> tuple[str, int | None, FinishReason]:
    """Text, output tokens and finish reason of a chat model's reply."""
    if not isinstance(message, AIMessage):
        return str(getattr(message, "content", message)), None, "stop_sequence"
    tokens = message.usage_metadata["output_tokens"] if message.usage_metadata else None
    content = message.content
    if not isinstance(content, str):  # content blocks: keep the text ones
        content = "".join(
            b if isinstance(b, str) else str(b.get("text", "")) for b in content if b is not None
        )
    return content, tokens, _finish(dict(message.response_metadata or {}))


def _from_llm_result(result: Any) -> tuple[str, int | None, FinishReason]:
    """Text, output tokens and finish reason of a text-completion model's result."""
    generation = result.generations[0][0]
    info = dict(generation.generation_info or {})
    usage: dict[str, Any] = (result.llm_output or {}).get("token_usage") or {}
    tokens = usage.get("completion_tokens")
    return generation.text, tokens, _finish(info)


def _cut_at_stop(text: str, stops: Sequence[str]) -> str:
    """Text up to the first stop string (models that ignore `stop` still end the step)."""
    cut = min((i for i in (text.find(s) for s in stops) if i >= 0), default=-1)
    return text if cut < 0 else text[:cut]
