"""An OpenAI-compatible completions endpoint (vLLM, SGLang, llama.cpp) as a search backend.

Speaks the legacy text-completions API, `POST /v1/completions`, with httpx (one async client
per event loop, shared by every request of the backend). The model name comes from
`GET /v1/models` when not given; its `owned_by` field also tells vLLM (`"vllm"`) from the
others, which decides how the judge gets its logprobs (see `anext_token_logprobs`).
"""

from __future__ import annotations

import asyncio
import math
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Literal

import httpx

from langgraph_specsearch.backends.base import BackendError
from langgraph_specsearch.backends.loop_clients import HTTPState, PerLoop
from langgraph_specsearch.prompts import PromptFormat, prompt_format_by_name
from langgraph_specsearch.retries import call_with_retries
from langgraph_specsearch.types import FinishReason, Generation, GenerationParams

LOGPROB_FLOOR = -30.0
"""Log-probability given to a candidate that is not among the server's top tokens."""

API_KEY_ENV = "SPECSEARCH_API_KEY"
"""Environment variable read for the bearer token when no `api_key` is given."""

JudgeLogprobs = Literal["auto", "prompt_logprobs", "top_logprobs"]

MULTI_CHOICE: dict[str, bool] = {"vllm": True, "sglang": True, "llamacpp": False, "me": False}
"""Whether a server answers `n` choices per request, by its `/v1/models` `owned_by`: vLLM and
SGLang do; llama.cpp's `llama-server` ("llamacpp") refuses n > 1 and llama-cpp-python ("me")
ignores it. Other servers are probed once."""


def base_url(url: str) -> str:
    """The server root: trailing slashes and a trailing `/v1` removed."""
    url = url.strip().rstrip("/")
    return url[: -len("/v1")] if url.endswith("/v1") else url


def _error_text(response: httpx.Response) -> str:
    """The server's error message (OpenAI `error.message`, vLLM `message`, FastAPI `detail`)."""
    try:
        body = response.json()
    except ValueError:
        return response.text
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
        for key in ("error", "message", "detail"):
            if body.get(key):
                return str(body[key])
    return response.text


def _server_message(exc: BaseException) -> str:
    """One line saying what went wrong: HTTP status and message, or the transport error."""
    if isinstance(exc, httpx.HTTPStatusError):
        text = " ".join(_error_text(exc.response).split())
        return f"HTTP {exc.response.status_code}: {text}"
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _cut_at_stop(text: str, stops: Sequence[str]) -> str:
    """Text before the first stop sequence (servers normally leave it out already)."""
    cut = len(text)
    for stop in stops:
        at = text.find(stop) if stop else -1
        if at != -1:
            cut = min(cut, at)
    return text[:cut]


def _logsumexp(values: Sequence[float]) -> float:
    top = max(values)
    return top + math.log(sum(math.exp(v - top) for v in values))


def finish_reason(choice: dict[str, Any], stops: Sequence[str]) -> FinishReason:
    """Map an OpenAI `finish_reason` onto stop_sequence | eos_token | length.

    OpenAI says `"stop"` for both a stop string and the end-of-sequence token. vLLM adds
    `stop_reason` and SGLang `matched_stop`: the matched string, a stop token id, or null (EOS).
    Servers that add neither (llama.cpp) cannot be told apart: `"stop"` there counts as a stop
    sequence when stop strings were sent (the search recognises a finished solution by its
    answer line anyway), and as EOS otherwise.
    """
    reason = choice.get("finish_reason")
    if reason == "length":
        return "length"
    for key in ("stop_reason", "matched_stop"):
        if key in choice:
            matched = choice[key]
            return "stop_sequence" if isinstance(matched, str) and matched else "eos_token"
    return "stop_sequence" if stops else "eos_token"


def _choice_logprobs(choice: dict[str, Any]) -> tuple[list[str], list[float | None], list[Any]]:
    """(tokens, token logprobs, top logprobs per token) of a completion choice.

    Reads the completions shape (`tokens`, `token_logprobs`, `top_logprobs` as dicts) and the
    chat shape that llama.cpp's own server uses (`content: [{token, logprob, top_logprobs}]`).
    """
    block = choice.get("logprobs")
    if not isinstance(block, dict):
        return [], [], []
    content = block.get("content")
    if isinstance(content, list):
        tokens = [str(c.get("token", "")) for c in content]
        lps = [c.get("logprob") for c in content]
        tops = [
            {str(t.get("token", "")): t.get("logprob") for t in c.get("top_logprobs") or []}
            for c in content
        ]
        return tokens, lps, tops
    tokens = [str(t) for t in block.get("tokens") or []]
    return tokens, list(block.get("token_logprobs") or []), list(block.get("top_logprobs") or [])


def continuation_logprob(
    entries: list[Any], text: str, token_ids: Sequence[int] | None = None
) -> float | None:
    """Log-probability of `text` as the tail of a prompt, from vLLM's `prompt_logprobs`.

    Walks back from the last prompt position adding up tokens until their text is exactly
    `text`. Each entry maps token ids to `{logprob, decoded_token}`: the prompt's own token is
    the one in `token_ids` (vLLM's `prompt_token_ids`) or, without them, the only entry.
    None when the tokens do not line up with `text` (merged across the boundary) or an
    entry's prompt token cannot be told.
    """
    joined = ""
    total = 0.0
    offset = len(token_ids) - len(entries) if token_ids is not None else 0
    for position in range(len(entries) - 1, -1, -1):
        entry = entries[position]
        if not isinstance(entry, dict) or not entry:
            return None
        if token_ids is not None and 0 <= position + offset < len(token_ids):
            info = entry.get(str(token_ids[position + offset]))
        else:
            info = next(iter(entry.values())) if len(entry) == 1 else None
        token = info.get("decoded_token") if isinstance(info, dict) else None
        logprob = info.get("logprob") if isinstance(info, dict) else None
        if token is None or logprob is None:
            return None
        joined = token + joined
        total += float(logprob)
        if joined == text:
            return total
        if len(joined) >= len(text) or not text.endswith(joined):
            return None
    return None


class OpenAIBackend:
    """`Backend` over an OpenAI-compatible `/v1/completions` endpoint.

    Works with vLLM, SGLang, llama.cpp's `llama-server` and llama-cpp-python's server.

    - Drafts: one request per prompt with `n`, `seed`, `stop`, `temperature`, `top_p` and
      `max_tokens`. Prompt `j` gets seed `seed + j*n` so identical prompts (two beams) still
      differ. Servers known not to answer `n` choices (llama-cpp-python ignores `n`,
      llama.cpp's `llama-server` refuses it; see `MULTI_CHOICE`) get one request per draft,
      seeds `seed + j*n + i`. An unknown server is probed once with `n` (no retries): if it
      answers fewer choices or refuses, the missing drafts are sent one per request with those
      seeds, and it gets single-choice requests from then on, so later calls give the same
      drafts as the first. Greedy requests (`temperature == 0`) are sent once and repeated.
    - Token counts: `usage.completion_tokens` of a one-choice response; for several choices,
      each choice's logprob tokens when the server returns them, else the usage split in
      proportion to the text lengths.
    - Judge logprobs: see `anext_token_logprobs`.
    - Failures: connection errors, timeouts, 5xx and 429 are retried `retries` times with
      exponential backoff, except inside a search graph, whose nodes retry them
      (`retries.py`: one layer); other 4xx fail at once. They raise `TransientBackendError`
      / `BackendError`, whose one-line message names the endpoint and the server's message.
    - Auth: `api_key`, else `$SPECSEARCH_API_KEY`, sent as `Authorization: Bearer ...`.
    """

    def __init__(
        self,
        url: str,
        *,
        model: str | None = None,
        name: str | None = None,
        prompt_format: str | PromptFormat = "fewshot",
        api_key: str | None = None,
        timeout: float = 120.0,
        max_concurrency: int = 16,
        retries: int = 4,
        backoff_s: float = 0.5,
        backoff_max_s: float = 8.0,
        logprob_floor: float = LOGPROB_FLOOR,
        top_logprobs: int = 5,
        judge_logprobs: JudgeLogprobs = "auto",
        max_stop_sequences: int = 4,
        extra_body: dict[str, Any] | None = None,
        speculative: bool | None = None,
    ) -> None:
        """Create a backend for the server at `url` (`http://host:port` or `.../v1`).

        Args:
            url: server root, with or without a trailing `/v1`.
            model: model name sent with every request; default: the first of `/v1/models`.
            name: backend name in stats and PRM names; default: the URL.
            prompt_format: `fewshot`, `chatml` or a `PromptFormat`.
            api_key: bearer token; default: `$SPECSEARCH_API_KEY` when set.
            timeout: seconds per HTTP request.
            max_concurrency: requests in flight at once (per event loop).
            retries: retries of a retryable failure (so `retries + 1` attempts).
            backoff_s: first backoff; doubles per retry up to `backoff_max_s`.
            backoff_max_s: longest backoff.
            logprob_floor: logprob of a judge candidate missing from the top tokens.
            top_logprobs: how many top tokens the judge asks for (OpenAI allows up to 5).
            judge_logprobs: `prompt_logprobs` (vLLM's exact prompt logprobs), `top_logprobs`
                (a generated token's top tokens, any server), or `auto`: the first on vLLM.
            max_stop_sequences: stop strings sent per request (OpenAI allows 4).
            extra_body: engine-specific fields added to every completions request
                (e.g. `{"top_k": 0, "repeat_penalty": 1.0}` for llama-cpp-python).
            speculative: whether the server decodes with token-level speculative decoding
                (see `speculates`); None: ask a vLLM server's `/metrics`, else False.
        """
        self.url = base_url(url)
        self.name = name or self.url
        self.prompt_format: PromptFormat = (
            prompt_format_by_name(prompt_format)
            if isinstance(prompt_format, str)
            else prompt_format
        )
        self.model = model
        self.api_key = api_key if api_key is not None else os.environ.get(API_KEY_ENV) or None
        self.timeout = timeout
        self.max_concurrency = max_concurrency
        self.retries = retries
        self.backoff_s = backoff_s
        self.backoff_max_s = backoff_max_s
        self.logprob_floor = logprob_floor
        self.top_logprobs = top_logprobs
        self.judge_logprobs: JudgeLogprobs = judge_logprobs
        self.max_stop_sequences = max_stop_sequences
        self.extra_body = dict(extra_body or {})
        self.speculative = speculative
        self.owned_by: str | None = None
        self.multi_choice: bool | None = None
        """Whether the server answers `n` choices per request (None: not seen yet)."""
        self._models: list[dict[str, Any]] | None = None
        self._per_loop = PerLoop(self._new_state)

    # -- plumbing --------------------------------------------------------------------------

    def _new_state(self) -> HTTPState:
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        client = httpx.AsyncClient(base_url=self.url, headers=headers, timeout=self.timeout)
        return HTTPState(client, self.max_concurrency)

    def _state(self) -> HTTPState:
        return self._per_loop.get()

    async def aclose(self) -> None:
        """Close the HTTP client of the running event loop."""
        await self._per_loop.aclose(HTTPState.aclose)

    async def _with_retries(
        self, what: str, call: Callable[[], Awaitable[Any]], retries: int | None = None
    ) -> Any:
        """`call()` under the shared retry rule (`retries.call_with_retries`)."""
        return await call_with_retries(
            call,
            where=self.url,
            what=what,
            retries=self.retries if retries is None else retries,
            backoff_s=self.backoff_s,
            backoff_max_s=self.backoff_max_s,
            describe=_server_message,
        )

    async def _request(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        retries: int | None = None,
    ) -> Any:
        """One JSON request with retries, under the concurrency bound."""

        async def call() -> Any:
            state = self._state()
            async with state.semaphore:
                response = await state.client.request(method, path, json=body)
            response.raise_for_status()
            return response.json()

        return await self._with_retries(f"{method} {path}", call, retries)

    async def models(self) -> list[dict[str, Any]]:
        """The server's `/v1/models` entries (read once); sets `model` and `owned_by`."""
        if self._models is None:
            listing = await self._request("GET", "/v1/models")
            data = listing.get("data") if isinstance(listing, dict) else None
            if not isinstance(data, list):
                raise BackendError(f"{self.url}: GET /v1/models did not return a model list")
            self._models = [m for m in data if isinstance(m, dict)]
            first = self._models[0] if self._models else {}
            if self.model is None:
                if not first.get("id"):
                    raise BackendError(f"{self.url}: GET /v1/models lists no model")
                self.model = str(first["id"])
            chosen = next((m for m in self._models if m.get("id") == self.model), first)
            self.owned_by = str(chosen.get("owned_by")) if chosen.get("owned_by") else None
            if self.multi_choice is None and self.owned_by in MULTI_CHOICE:
                self.multi_choice = MULTI_CHOICE[self.owned_by]
        return self._models

    async def acomplete(
        self, prompt: str, *, retries: int | None = None, **fields: Any
    ) -> dict[str, Any]:
        """One `POST /v1/completions` (model filled in); returns the response body."""
        await self.models()
        body = {"model": self.model, "prompt": prompt, **self.extra_body, **fields}
        result = await self._request("POST", "/v1/completions", body, retries)
        if not isinstance(result, dict) or not isinstance(result.get("choices"), list):
            raise BackendError(f"{self.url}: POST /v1/completions returned no choices")
        return result

    # -- Backend ---------------------------------------------------------------------------

    def _sampling(self, params: GenerationParams, stops: list[str]) -> dict[str, Any]:
        fields: dict[str, Any] = {
            "max_tokens": params.max_new_tokens,
            "temperature": params.temperature,
        }
        if params.top_p < 1.0:
            fields["top_p"] = params.top_p
        if stops:
            fields["stop"] = stops
        return fields

    def _generations(
        self, body: dict[str, Any], stops: list[str], latency: float
    ) -> list[Generation]:
        """The choices of one response as `Generation`s, in index order."""
        choices = sorted(body["choices"], key=lambda c: int(c.get("index", 0)))
        usage = body.get("usage") or {}
        total = usage.get("completion_tokens") if isinstance(usage, dict) else None
        texts = [_cut_at_stop(str(c.get("text") or ""), stops) for c in choices]
        out: list[Generation] = []
        for choice, text in zip(choices, texts, strict=True):
            tokens, lps, _ = _choice_logprobs(choice)
            if len(choices) == 1 and isinstance(total, int):
                count = total
            elif tokens:
                count = len(tokens)
            elif isinstance(total, int):  # several choices, no per-choice count: estimate
                weight = sum(len(t) + 1 for t in texts)
                count = round(total * (len(text) + 1) / weight)
            else:
                count = 0
            out.append(
                Generation(
                    text=text.strip(),
                    tokens=count,
                    finish_reason=finish_reason(choice, stops),
                    latency_s=latency,
                    logprobs=[float(v) for v in lps if v is not None] if lps else None,
                )
            )
        return out

    async def agenerate(
        self, prompts: Sequence[str], *, n: int, params: GenerationParams
    ) -> list[list[Generation]]:
        """`n` continuations per prompt, all requests in flight together."""
        await self.models()
        stops = [s for s in params.stop if s][: self.max_stop_sequences]
        greedy = params.temperature <= 0.0
        copies = 1 if greedy else n
        sampling = self._sampling(params, stops)

        async def single(prompt: str, seed: int | None) -> list[Generation]:
            fields = dict(sampling, n=1)
            if seed is not None:
                fields["seed"] = seed
            started = time.perf_counter()
            body = await self.acomplete(prompt, **fields)
            return self._generations(body, stops, time.perf_counter() - started)[:1]

        async def for_prompt(j: int, prompt: str) -> list[Generation]:
            first_seed = None if params.seed is None else params.seed + j * copies

            def seed(i: int) -> int | None:
                return None if first_seed is None else first_seed + i

            if copies == 1 or self.multi_choice is False:
                parts = await asyncio.gather(*(single(prompt, seed(i)) for i in range(copies)))
                got = [g for part in parts for g in part]
            else:
                fields = dict(sampling, n=copies)
                if first_seed is not None:
                    fields["seed"] = first_seed
                started = time.perf_counter()
                try:  # a probe while unknown: llama.cpp's llama-server rejects n > 1
                    retries = 0 if self.multi_choice is None else None
                    body = await self.acomplete(prompt, retries=retries, **fields)
                    got = self._generations(body, stops, time.perf_counter() - started)
                except BackendError:
                    if self.multi_choice is not None:
                        raise
                    got = []
                got = got[:copies]
                if len(got) < copies:  # the server ignores or refuses `n`: one request per draft
                    self.multi_choice = False
                    more = await asyncio.gather(
                        *(single(prompt, seed(i)) for i in range(len(got), copies))
                    )
                    got += [g for part in more for g in part]
                else:
                    self.multi_choice = True
            if len(got) < copies:
                raise BackendError(f"{self.url}: POST /v1/completions returned no choices")
            if greedy:
                got = [got[0].model_copy() for _ in range(n)]
            return got

        return list(await asyncio.gather(*(for_prompt(j, p) for j, p in enumerate(prompts))))

    def speculates(self, *, sampling: bool) -> bool:
        """Whether the server speculates at token level (greedy and sampled alike).

        As given by `speculative`; otherwise a vLLM server is asked once: its `/metrics`
        carry `vllm:spec_decode_*` counters only when it runs with `--speculative-config`.
        Other engines do not say (llama.cpp's `--model-draft` included): False.
        """
        if self.speculative is None:
            headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
            try:
                with httpx.Client(base_url=self.url, headers=headers, timeout=self.timeout) as http:
                    listing = http.get("/v1/models").json()
                    owners = {m.get("owned_by") for m in listing.get("data") or []}
                    metrics = http.get("/metrics").text if "vllm" in owners else ""
            except (httpx.HTTPError, ValueError, AttributeError):
                metrics = ""
            self.speculative = "vllm:spec_decode" in metrics
        return self.speculative

    async def _uses_prompt_logprobs(self) -> bool:
        if self.judge_logprobs == "auto":
            await self.models()
            return self.owned_by == "vllm"
        return self.judge_logprobs == "prompt_logprobs"

    async def _top_token_logprobs(self, prompt: str, candidates: Sequence[str]) -> dict[str, float]:
        """Candidates matched against the top tokens of one greedy generated token."""
        body = await self.acomplete(
            prompt, max_tokens=1, temperature=0.0, n=1, logprobs=self.top_logprobs
        )
        tokens, lps, tops = _choice_logprobs(body["choices"][0])
        seen: dict[str, float] = {}
        if tops and isinstance(tops[0], dict):
            seen.update({str(k): float(v) for k, v in tops[0].items() if v is not None})
        if tokens and lps and lps[0] is not None:
            seen.setdefault(tokens[0], float(lps[0]))
        result: dict[str, float] = {}
        for cand in candidates:
            key = cand.strip()
            matches = [lp for text, lp in seen.items() if key and text.strip() == key]
            result[cand] = _logsumexp(matches) if matches else self.logprob_floor
        return result

    async def _continuation_logprobs(
        self, prompt: str, candidates: Sequence[str]
    ) -> dict[str, float] | None:
        """Exact candidate logprobs from vLLM's `prompt_logprobs` (None if they don't line up)."""

        async def variant(text: str) -> float | None:
            body = await self.acomplete(
                prompt + text, max_tokens=1, temperature=0.0, n=1, prompt_logprobs=0
            )
            choice = body["choices"][0]
            entries = choice.get("prompt_logprobs")
            ids = choice.get("prompt_token_ids")
            if not isinstance(entries, list):
                return None
            return continuation_logprob(entries, text, ids if isinstance(ids, list) else None)

        result: dict[str, float] = {}
        for cand in candidates:
            key = cand.strip()
            forms = [key, " " + key] if key else [cand]
            values = [
                v for v in await asyncio.gather(*(variant(f) for f in forms)) if v is not None
            ]
            if not values:
                return None
            result[cand] = _logsumexp(values)
        return result

    async def anext_token_logprobs(
        self, prompts: Sequence[str], candidates: Sequence[str]
    ) -> list[dict[str, float]]:
        """Log-probability of each candidate as the continuation of each prompt.

        - With prompt logprobs (vLLM, `judge_logprobs="prompt_logprobs"` or auto-detected):
          the prompt is sent with each candidate "X" appended, as "X" and as " X", with
          `prompt_logprobs=0`; the candidate's value is the log-sum-exp of the two
          continuations' exact logprobs. Where the tokens do not line up with the candidate
          (the tokenizer merged it into the prompt's end) the top-token way below is used.
        - Otherwise (llama.cpp, SGLang, others): one greedy generated token with
          `logprobs=top_logprobs`; a candidate "X" matches top tokens whose text is "X" up to
          surrounding whitespace (several matches are combined with log-sum-exp); a candidate
          missing from the top tokens gets `logprob_floor` (-30.0 by default).
        """
        exact = await self._uses_prompt_logprobs()

        async def one(prompt: str) -> dict[str, float]:
            if exact:
                found = await self._continuation_logprobs(prompt, candidates)
                if found is not None:
                    return found
            return await self._top_token_logprobs(prompt, candidates)

        return list(await asyncio.gather(*(one(p) for p in prompts)))
