"""A Text Generation Inference endpoint (or `specsearch serve`) as a search backend.

Calls go through huggingface_hub's `AsyncInferenceClient(base_url=url).text_generation`, the
maintained TGI client. Every draft of every prompt is one request; they are all sent at once,
bounded by a semaphore of `max_concurrency`, so the server's batching sees them together.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Mapping, Sequence
from typing import Any

import httpx
from huggingface_hub import AsyncInferenceClient
from huggingface_hub.errors import TextGenerationError

from langgraph_specsearch.backends.base import BackendError
from langgraph_specsearch.backends.hub_offline import allow_endpoint
from langgraph_specsearch.backends.loop_clients import HTTPState, PerLoop
from langgraph_specsearch.background_loop import run_sync
from langgraph_specsearch.prompts import PromptFormat, prompt_format_by_name
from langgraph_specsearch.retries import call_with_retries, http_status
from langgraph_specsearch.types import FinishReason, Generation, GenerationParams

LOGPROB_FLOOR = -30.0
"""Log-probability given to a candidate that is not among the server's top tokens."""

_FINISH: dict[str, FinishReason] = {
    "length": "length",
    "eos_token": "eos_token",
    "stop_sequence": "stop_sequence",
}


def _server_message(exc: BaseException) -> str:
    """The server's own error text (TGI's `error` field), on one line."""
    text = ""
    if isinstance(exc, TextGenerationError):
        text = str(exc)
    else:
        response = getattr(exc, "response", None)
        if response is not None:
            try:
                body = response.json()
                text = str(body.get("error", "")) if isinstance(body, dict) else ""
            except Exception:  # noqa: BLE001 - not JSON
                text = ""
            if not text:
                try:
                    text = response.text
                except Exception:  # noqa: BLE001 - streamed body
                    text = ""
        if not text:
            text = f"{type(exc).__name__}: {exc}"
    status = http_status(exc)
    line = " ".join(text.split())
    return f"HTTP {status}: {line}" if status else line


def _cut_at_stop(text: str, stops: Sequence[str]) -> str:
    """Text before the first stop sequence (TGI's `generated_text` includes it)."""
    cut = len(text)
    for stop in stops:
        if stop:
            at = text.find(stop)
            if at != -1:
                cut = min(cut, at)
    return text[:cut]


def _get(obj: Any, key: str) -> Any:
    """Field of a huggingface_hub output object, or of a dict (nested lists stay unparsed)."""
    return obj.get(key) if isinstance(obj, dict) else getattr(obj, key, None)


def info_speculates(info: Mapping[str, Any], *, sampling: bool) -> bool:
    """Whether a TGI `/info` says requests are decoded with token-level speculation.

    TGI 3 reports `speculate`, the number of speculative tokens per step (n-gram or Medusa
    heads), 0 when off; it verifies by drawing each token from the model's own distribution,
    so greedy and sampled requests both speculate. `specsearch serve --draft-model` reports
    the same field and `speculation` with `greedy` / `sampling` flags (its versions before
    speculative sampling put the string "draft-model" in `speculate`: greedy requests only).
    """
    spec = info.get("speculate")
    if isinstance(spec, str):
        return bool(spec) and not sampling
    if not isinstance(spec, int) or isinstance(spec, bool) or spec <= 0:
        return False
    detail = info.get("speculation")
    if isinstance(detail, Mapping):
        return bool(detail.get("sampling" if sampling else "greedy", True))
    return True


def _logsumexp(values: Sequence[float]) -> float:
    top = max(values)
    return top + math.log(sum(math.exp(v - top) for v in values))


class _LoopState(HTTPState):
    """One event loop's shared clients (generate; other routes) and concurrency bound."""

    def __init__(self, client: AsyncInferenceClient, http: httpx.AsyncClient, limit: int) -> None:
        super().__init__(http, limit)
        self.inference = client

    async def aclose(self) -> None:
        """Close both clients."""
        await self.inference.close()
        await self.client.aclose()


class TGIBackend:
    """`Backend` over a TGI-compatible HTTP endpoint (TGI itself or `specsearch serve`).

    - `n` drafts per prompt are `n` requests; with `params.seed` set, draft `i` uses
      `seed + i` so the drafts differ. Greedy requests (`temperature == 0`) are sent once per
      prompt and the result is repeated `n` times (greedy drafts are identical anyway).
    - TGI rejects `temperature <= 0` and `top_p >= 1`: temperature 0 becomes `do_sample=False`
      and top_p 1.0 is not sent.
    - `/info` is read once (lazily): stop lists are trimmed to `max_stop_sequences` and
      `max_new_tokens` clamped so that prompt + new tokens <= `max_total_tokens` (the prompt's
      length is bounded by its UTF-8 byte count; `/tokenize` is asked only when that bound is
      too close to the limit).
    - Failures: connection errors, timeouts, 5xx and 429 are retried `retries` times with
      exponential backoff, except inside a search graph, whose nodes retry them
      (`retries.py`: one layer); a 4xx (TGI validation) fails at once. They raise
      `TransientBackendError` / `BackendError` with the URL and the server's message.
    - `speculates(sampling=...)`: whether the endpoint decodes with token-level speculation
      (`/info`, see `info_speculates`); each `Generation.accepted_draft_tokens` is the count
      the server reports in `details.accepted_draft_tokens` (`specsearch serve`), else None.
    - Auth: `api_key` as `Authorization: Bearer ...`; None: huggingface_hub's own token
      (`$HF_TOKEN`, `hf auth login`) on generate calls; `""`: no token at all.
    """

    def __init__(
        self,
        url: str,
        *,
        name: str | None = None,
        prompt_format: str | PromptFormat = "fewshot",
        api_key: str | None = None,
        timeout: float = 60.0,
        max_concurrency: int = 16,
        retries: int = 4,
        backoff_s: float = 0.5,
        backoff_max_s: float = 8.0,
        logprob_floor: float = LOGPROB_FLOOR,
    ) -> None:
        self.url = url.rstrip("/")
        self.name = name or self.url
        self.prompt_format: PromptFormat = (
            prompt_format_by_name(prompt_format)
            if isinstance(prompt_format, str)
            else prompt_format
        )
        self.api_key = api_key
        self.timeout = timeout
        self.max_concurrency = max_concurrency
        self.retries = retries
        self.backoff_s = backoff_s
        self.backoff_max_s = backoff_max_s
        self.logprob_floor = logprob_floor
        self._info: dict[str, Any] | None = None
        self._per_loop = PerLoop(self._new_state)

    # -- plumbing --------------------------------------------------------------------------

    def _new_state(self) -> _LoopState:
        allow_endpoint(self.url)  # HF_HUB_OFFLINE=1 blocks the Hub, not this server
        return _LoopState(
            AsyncInferenceClient(
                base_url=self.url,
                api_key=self.api_key or None,
                timeout=self.timeout,
                # huggingface_hub sends its own token ($HF_TOKEN) for a missing or empty key;
                # an empty header overrides it: "" means no token reaches this server
                headers={"authorization": ""} if self.api_key == "" else None,
            ),
            httpx.AsyncClient(timeout=self.timeout, headers=self._headers()),
            self.max_concurrency,
        )

    def _state(self) -> _LoopState:
        """The running event loop's clients and semaphore (made on first use)."""
        return self._per_loop.get()

    def _semaphore(self) -> asyncio.Semaphore:
        return self._state().semaphore

    def http(self) -> httpx.AsyncClient:
        """The shared httpx client of the running event loop (for routes besides generate)."""
        return self._state().client

    async def aclose(self) -> None:
        """Close the clients of the running event loop."""
        await self._per_loop.aclose(_LoopState.aclose)

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    async def _with_retries(self, what: str, call: Any) -> Any:
        """`call()` under the shared retry rule (`retries.call_with_retries`)."""
        return await call_with_retries(
            call,
            where=self.url,
            what=what,
            retries=self.retries,
            backoff_s=self.backoff_s,
            backoff_max_s=self.backoff_max_s,
            describe=_server_message,
        )

    async def info(self) -> dict[str, Any]:
        """The server's `/info` (read once)."""
        if self._info is None:

            async def fetch() -> dict[str, Any]:
                response = await self.http().get(f"{self.url}/info")
                response.raise_for_status()
                body: dict[str, Any] = response.json()
                return body

            self._info = await self._with_retries("GET /info", fetch)
        return self._info

    def info_blocking(self) -> dict[str, Any]:
        """`info()` from synchronous code (works inside a running event loop too)."""
        if self._info is None:
            self._info = run_sync(self.info())
        return self._info

    def speculates(self, *, sampling: bool) -> bool:
        """Whether the endpoint speculates at token level for greedy or sampled requests."""
        return info_speculates(self.info_blocking(), sampling=sampling)

    async def count_tokens(self, prompt: str) -> int | None:
        """Prompt length from `/tokenize` (None when the server has no tokenizer route)."""
        try:
            response = await self.http().post(f"{self.url}/tokenize", json={"inputs": prompt})
            if response.status_code != 200:
                return None
            return len(response.json())
        except httpx.HTTPError:
            return None

    async def _max_new_tokens(self, prompt: str, wanted: int) -> int:
        info = await self.info()
        total = info.get("max_total_tokens")
        if not isinstance(total, int):
            return wanted
        bound = len(prompt.encode()) + 2  # byte-level tokenizers: tokens <= bytes (+ BOS/EOS)
        if bound + wanted <= total:
            return wanted
        length = await self.count_tokens(prompt)
        length = bound if length is None else length
        room = total - length
        if room <= 0:
            raise BackendError(
                f"{self.url}: prompt of {length} tokens leaves no room"
                f" under max_total_tokens={total}"
            )
        return min(wanted, room)

    async def atext_generation(self, prompt: str, **kwargs: Any) -> Any:
        """One `text_generation(details=True)` call with retries, under the semaphore."""

        async def call() -> Any:
            state = self._state()
            async with state.semaphore:
                return await state.inference.text_generation(prompt, details=True, **kwargs)

        return await self._with_retries("POST / (generate)", call)

    # -- Backend ---------------------------------------------------------------------------

    async def agenerate(
        self, prompts: Sequence[str], *, n: int, params: GenerationParams
    ) -> list[list[Generation]]:
        """`n` continuations per prompt, all requests in flight together."""
        info = await self.info()
        max_stops = info.get("max_stop_sequences")
        stops = [s for s in params.stop if s]
        if isinstance(max_stops, int):
            stops = stops[:max_stops]
        greedy = params.temperature <= 0.0
        sampling: dict[str, Any] = {"do_sample": not greedy}
        if not greedy:
            sampling["temperature"] = params.temperature
            if params.top_p < 1.0:
                sampling["top_p"] = params.top_p

        async def one(prompt: str, index: int) -> Generation:
            extra = dict(sampling)
            if not greedy and params.seed is not None:
                extra["seed"] = params.seed + index
            started = time.perf_counter()
            out = await self.atext_generation(
                prompt,
                max_new_tokens=await self._max_new_tokens(prompt, params.max_new_tokens),
                stop=stops or None,
                **extra,
            )
            latency = time.perf_counter() - started
            details = out.details
            reason = _FINISH.get(str(details.finish_reason) if details else "length", "length")
            text = _cut_at_stop(out.generated_text, stops)
            return Generation(
                text=text.strip(),
                tokens=details.generated_tokens if details else 0,
                finish_reason=reason,
                latency_s=latency,
                logprobs=[_get(t, "logprob") for t in details.tokens] if details else None,
                accepted_draft_tokens=_get(details, "accepted_draft_tokens") if details else None,
            )

        copies = 1 if greedy else n
        # a distinct seed per request: identical prompts (two beams, best-of-N paths) must differ
        jobs = [
            one(prompt, j * copies + i) for j, prompt in enumerate(prompts) for i in range(copies)
        ]
        flat = await asyncio.gather(*jobs)
        out: list[list[Generation]] = []
        for p in range(len(prompts)):
            group = list(flat[p * copies : (p + 1) * copies])
            if greedy:
                group = [group[0].model_copy() for _ in range(n)]
            out.append(group)
        return out

    async def anext_token_logprobs(
        self, prompts: Sequence[str], candidates: Sequence[str]
    ) -> list[dict[str, float]]:
        """Log-probability of each candidate as the next token, from TGI's top tokens.

        One greedy request per prompt with `max_new_tokens=1` and `top_n_tokens` at the
        server's limit. A candidate "X" matches top tokens whose text is "X" or " X" (any
        surrounding whitespace); several matches are combined with log-sum-exp. A candidate
        that is not among the top tokens gets `logprob_floor` (default -30.0): its true value
        is below the smallest top-n log-probability, which is all TGI can tell.
        """
        info = await self.info()
        top_n = int(info.get("max_top_n_tokens") or 5)

        async def one(prompt: str) -> dict[str, float]:
            out = await self.atext_generation(
                prompt, max_new_tokens=1, do_sample=False, top_n_tokens=top_n or None
            )
            seen: dict[int, tuple[str, float]] = {}
            if out.details is not None:
                for step in (out.details.top_tokens or [])[:1]:
                    for tok in step:
                        if _get(tok, "logprob") is not None:
                            seen[_get(tok, "id")] = (_get(tok, "text"), _get(tok, "logprob"))
                for tok in out.details.tokens[:1]:
                    if _get(tok, "logprob") is not None:
                        seen.setdefault(_get(tok, "id"), (_get(tok, "text"), _get(tok, "logprob")))
            result: dict[str, float] = {}
            for cand in candidates:
                key = cand.strip()
                matches = [lp for text, lp in seen.values() if key and text.strip() == key]
                result[cand] = _logsumexp(matches) if matches else self.logprob_floor
            return result

        return list(await asyncio.gather(*(one(p) for p in prompts)))

    async def aprompt_logprobs(
        self, prompts: Sequence[str]
    ) -> list[list[tuple[str, float | None]]]:
        """(token text, log-probability given the prefix) of every prompt token (TGI prefill)."""

        async def one(prompt: str) -> list[tuple[str, float | None]]:
            out = await self.atext_generation(
                prompt, max_new_tokens=1, do_sample=False, decoder_input_details=True
            )
            prefill = out.details.prefill if out.details is not None else []
            return [(_get(t, "text"), _get(t, "logprob")) for t in prefill]

        return list(await asyncio.gather(*(one(p) for p in prompts)))
