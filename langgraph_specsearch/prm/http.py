"""Model-based PRMs behind vLLM's pooling endpoint or any OpenAI-compatible completions API.

- `VLLMPoolingPRM`: `POST /pooling` (vLLM with `--runner pooling`; Qwen2.5-Math-PRM is
  served this way). vLLM's step pooler returns one row per step tag ([P(label 0), P(label 1)]
  for Qwen2.5-Math-PRM, softmax over the returned label ids for a Math-Shepherd model
  configured with `step_tag_id` / `returned_token_ids`); a server that returns one row per
  token is read at the tag positions found with its `/tokenize`. Rows that are not
  probabilities (not summing to 1) are soft-maxed first.
- `OpenAILogprobsPRM`: `POST /v1/completions` with `echo`, `logprobs=k`, `max_tokens=1`
  (vLLM, SGLang, llama.cpp's server where they return prompt top-logprobs). All steps of a
  path in one request: the top-k distribution that follows each tag is read from the echoed
  prompt; labels are matched by token text (" +" / " -" after a Math-Shepherd or Math-psa
  tag, "+" / "-" for RLHFlow; the same text without spaces when no exact key exists). A label
  missing from the top k is given the smallest top-k log-probability (a bound); both
  missing is an error naming the step.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from typing import Any

import httpx

from langgraph_specsearch.backends.base import BackendError, TransientBackendError
from langgraph_specsearch.backends.loop_clients import HTTPState, PerLoop
from langgraph_specsearch.prm.errors import PRMAlignmentError
from langgraph_specsearch.prm.styles import ChatTemplate, PRMStyle, Rendered, style_by_name
from langgraph_specsearch.retries import RETRY_STATUS, is_transient


class _Client:
    """One httpx call with a bearer key, errors as `BackendError` naming the URL (timeouts,
    connection errors, 5xx and 429 as `TransientBackendError`: the search's nodes retry them)."""

    def __init__(self, url: str, api_key: str | None, timeout: float, concurrency: int) -> None:
        self.url = url.rstrip("/")
        self.api_key = api_key
        self.timeout = timeout
        self.concurrency = concurrency
        self._per_loop = PerLoop(self._new_state)

    def _new_state(self) -> HTTPState:
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        client = httpx.AsyncClient(base_url=self.url, headers=headers, timeout=self.timeout)
        return HTTPState(client, self.concurrency)

    async def aclose(self) -> None:
        """Close the HTTP client of the running event loop."""
        await self._per_loop.aclose(HTTPState.aclose)

    async def post(self, route: str, body: dict[str, Any]) -> Any:
        state = self._per_loop.get()
        try:
            async with state.semaphore:
                response = await state.client.post(route, json=body)
        except httpx.HTTPError as exc:
            error = TransientBackendError if is_transient(exc) else BackendError
            raise error(f"{self.url}{route}: {type(exc).__name__}: {exc}") from exc
        if response.status_code != 200:
            text = " ".join(response.text.split())[:300]
            code = response.status_code
            error = TransientBackendError if code >= 500 or code in RETRY_STATUS else BackendError
            raise error(f"{self.url}{route}: HTTP {code}: {text}")
        return response.json()

    async def model_id(self, given: str | None) -> str:
        if given:
            return given
        try:
            response = await self._per_loop.get().client.get("/v1/models")
            response.raise_for_status()
            return str(response.json()["data"][0]["id"])
        except (httpx.HTTPError, KeyError, IndexError) as exc:
            error = TransientBackendError if is_transient(exc) else BackendError
            raise error(f"{self.url}/v1/models: cannot read the model id ({exc})") from exc


def _probabilities(row: Sequence[float]) -> list[float]:
    """The row itself when it is a distribution, else its softmax."""
    values = [float(v) for v in row]
    if all(0.0 <= v <= 1.0 for v in values) and abs(sum(values) - 1.0) < 1e-3:
        return values
    top = max(values)
    exps = [math.exp(v - top) for v in values]
    return [e / sum(exps) for e in exps]


class VLLMPoolingPRM:
    """A PRM served by vLLM's pooling API (see the module docstring)."""

    def __init__(
        self,
        url: str,
        style: PRMStyle | str = "qwen-prm",
        *,
        model: str | None = None,
        chat_template: ChatTemplate | None = None,
        name: str | None = None,
        api_key: str | None = None,
        timeout: float = 120.0,
        max_concurrency: int = 16,
    ) -> None:
        """`style`: `qwen-prm` (two-label head) or a label style served with a step pooler."""
        self.style = style_by_name(style) if isinstance(style, str) else style
        if self.style.head == "value":
            raise ValueError(f"the {self.style.name} PRM is not served by vLLM's pooling API")
        self.client = _Client(url, api_key, timeout, max_concurrency)
        self.model = model
        self.chat_template = chat_template
        self.name = name or f"{self.style.name}@{self.client.url}"
        self._tag: int | None = None

    async def _tag_id(self, model: str) -> int:
        if self._tag is None:
            probe = self.style.probes()[0]
            body = {"model": model, "prompt": probe, "add_special_tokens": False}
            ids = (await self.client.post("/tokenize", body))["tokens"]
            self._tag = int(ids[-1]) if ids else -1
        return self._tag

    async def _one(self, question: str, steps: Sequence[str]) -> list[float]:
        if not steps:
            return []
        model = await self.client.model_id(self.model)
        self.model = model
        rendered: Rendered = self.style.render(question, steps, chat_template=self.chat_template)
        out = await self.client.post("/pooling", {"model": model, "input": rendered.text})
        try:
            rows = out["data"][0]["data"]
        except (KeyError, IndexError, TypeError) as exc:
            raise BackendError(f"{self.client.url}/pooling: unexpected response shape") from exc
        if rows and not isinstance(rows[0], list):
            rows = [rows]
        if len(rows) != len(steps):  # one row per token: read the tag positions
            tag = await self._tag_id(model)
            tokens = (
                await self.client.post("/tokenize", {"model": model, "prompt": rendered.text})
            )["tokens"]
            where = [k for k, t in enumerate(tokens) if int(t) == tag]
            if len(rows) != len(tokens) or len(where) != len(steps):
                step = min(len(where), len(steps) - 1)
                raise PRMAlignmentError(
                    self.name,
                    step,
                    f"{len(where)} step tags among {len(tokens)} tokens for {len(steps)} steps"
                    f" ({len(rows)} pooled rows)",
                )
            rows = [rows[k] for k in where]
        scores = []
        for row in rows:
            probs = _probabilities(row)
            if self.style.head == "classifier":
                scores.append(probs[1])
            else:  # [P(good), P(bad)] from a step pooler over the label ids
                scores.append(probs[0] / (probs[0] + probs[1]))
        return scores

    async def ascore(self, question: str, paths: Sequence[Sequence[str]]) -> list[list[float]]:
        """Per-step scores, one request per path."""
        return list(await asyncio.gather(*(self._one(question, p) for p in paths)))

    async def ascore_last(self, question: str, paths: Sequence[Sequence[str]]) -> list[float]:
        """Last step of every path."""
        return [s[-1] if s else 0.0 for s in await self.ascore(question, paths)]


class OpenAILogprobsPRM:
    """A label-token PRM over an OpenAI-compatible `/v1/completions` (see module docstring)."""

    def __init__(
        self,
        url: str,
        style: PRMStyle | str = "math-shepherd",
        *,
        model: str | None = None,
        top_logprobs: int = 20,
        chat_template: ChatTemplate | None = None,
        name: str | None = None,
        api_key: str | None = None,
        timeout: float = 120.0,
        max_concurrency: int = 16,
    ) -> None:
        """`url` is the server root (`/v1/completions` is appended)."""
        self.style = style_by_name(style) if isinstance(style, str) else style
        if self.style.head != "labels":
            raise ValueError(f"the {self.style.name} PRM has no label tokens to read")
        self.client = _Client(url, api_key, timeout, max_concurrency)
        self.model = model
        self.top_logprobs = top_logprobs
        self.chat_template = chat_template
        self.name = name or f"{self.style.name}@{self.client.url}"

    async def _one(self, question: str, steps: Sequence[str]) -> list[float]:
        if not steps:
            return []
        self.model = await self.client.model_id(self.model)
        rendered = self.style.render(question, steps, chat_template=self.chat_template)
        body = {
            "model": self.model,
            "prompt": rendered.text,
            "max_tokens": 1,
            "temperature": 0.0,
            "echo": True,
            "logprobs": self.top_logprobs,
        }
        out = await self.client.post("/v1/completions", body)
        try:
            lp = out["choices"][0]["logprobs"]
            tokens: list[str] = lp["tokens"]
            tops: list[dict[str, float] | None] = lp["top_logprobs"]
        except (KeyError, IndexError, TypeError) as exc:
            raise BackendError(f"{self.client.url}: no echoed logprobs in the response") from exc
        # character end of each echoed token; specials before the prompt are skipped
        ends, total = [], 0
        for tok in tokens:
            total += len(tok)
            ends.append(total)
        joined = "".join(tokens)
        base = joined.find(rendered.text)
        if base < 0:
            raise PRMAlignmentError(self.name, None, "the echoed tokens do not spell the prompt")
        good_text, bad_text = self._labels()
        scores = []
        for mark in rendered.marks:
            end = base + mark.end
            k = next((i for i, e in enumerate(ends) if e >= end), None)
            if k is None or ends[k] != end:
                raise PRMAlignmentError(
                    self.name, mark.step, "the marked token is not a token of its own here"
                )
            read = k + mark.shift + 1  # the distribution that follows the read position
            top = tops[read] if read < len(tops) else None
            scores.append(self._two_way(top or {}, good_text, bad_text, mark.step))
        return scores

    def _labels(self) -> tuple[str, str]:
        """Label token texts: " +" / " -" after a tag (Math-Shepherd, Math-psa), else "+"/"-"."""
        return (" +", " -") if self.style.name in ("math-shepherd", "math-psa") else ("+", "-")

    def _two_way(self, top: dict[str, float], good: str, bad: str, step: int) -> float:
        """Two-label softmax from a top-k table; exact token text first, then stripped text."""

        def find(label: str) -> float | None:
            if label in top:
                return top[label]
            return max((v for k, v in top.items() if k.strip() == label.strip()), default=None)

        lg, lb = find(good), find(bad)
        if lg is None and lb is None:
            raise PRMAlignmentError(
                self.name, step, f"neither {good!r} nor {bad!r} is among the top logprobs"
            )
        floor = min(top.values())
        lg = floor if lg is None else lg
        lb = floor if lb is None else lb
        return 1.0 / (1.0 + math.exp(lb - lg))

    async def ascore(self, question: str, paths: Sequence[Sequence[str]]) -> list[list[float]]:
        """Per-step scores, one request per path."""
        return list(await asyncio.gather(*(self._one(question, p) for p in paths)))

    async def ascore_last(self, question: str, paths: Sequence[Sequence[str]]) -> list[float]:
        """Last step of every path."""
        return [s[-1] if s else 0.0 for s in await self.ascore(question, paths)]
