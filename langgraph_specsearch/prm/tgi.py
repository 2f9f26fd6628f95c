"""Label-token PRMs (Math-Shepherd, Math-psa, RLHFlow) served by TGI or `specsearch serve`.

TGI returns log-probabilities, not logits, so two methods (`method`) are offered:

- `"prefill"`: one request per path with `decoder_input_details=True`. The good label
  follows each step's tag (RLHFlow's "+" replies are already there), and its prompt
  log-probability is log P(+ | text up to the tag): the score is that P(+) under the full
  softmax, which is <= the two-label softmax (equal when the model puts all its mass on
  "+" and "-"). Later steps see "+" marks after the earlier tags (exactly RLHFlow's own
  format). TGI returns prompt log-probabilities only when its launcher has
  `--enable-prefill-logprobs`; a server without them is detected and named in the error.
- `"top_n"` (works on stock TGI): one request per step, the text up to that step's tag,
  one greedy token with `top_n_tokens` at the server's limit. With "+" and "-" both among
  the top tokens this is exactly the two-label softmax; with one of them missing, the
  missing one is given the smallest top-n log-probability (an upper bound on its true value,
  so the score is a bound); with both missing it is an error. `ascore_last` scores only the
  newest step, one request per path.

Alignment is checked with the server's own `/tokenize` (ids and character offsets): a tag
merged with its neighbours or a label that is not one token is a `PRMAlignmentError` naming
the PRM and the step, never a silent score.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
from collections.abc import Sequence
from typing import Any, Literal

from langgraph_specsearch.backends.base import BackendError
from langgraph_specsearch.backends.tgi import TGIBackend, _get
from langgraph_specsearch.prm.errors import PRMAlignmentError
from langgraph_specsearch.prm.styles import (
    ChatTemplate,
    PRMStyle,
    Rendered,
    TokenIds,
    locate,
    style_by_name,
)

Method = Literal["prefill", "top_n"]


class PrefillUnavailableError(BackendError):
    """The server does not return prompt (prefill) log-probabilities."""


def shift_rendered(rendered: Rendered, drop: int) -> Rendered:
    """The same input without its first `drop` characters (a BOS the server adds itself)."""
    marks = tuple(
        dataclasses.replace(m, start=m.start - drop, end=m.end - drop) for m in rendered.marks
    )
    return Rendered(rendered.text[drop:], marks, rendered.add_special_tokens)


class TGIPRM:
    """A label-token PRM behind a TGI-compatible endpoint (see the module docstring)."""

    def __init__(
        self,
        url: str,
        style: PRMStyle | str = "math-shepherd",
        *,
        method: Method = "prefill",
        chat_template: ChatTemplate | None = None,
        name: str | None = None,
        api_key: str | None = None,
        timeout: float = 60.0,
        max_concurrency: int = 16,
        retries: int = 4,
        backoff_s: float = 0.5,
    ) -> None:
        """Score with the PRM served at `url`.

        Args:
            url: TGI (or `specsearch serve`) base URL.
            style: `math-shepherd`, `math-psa` or `rlhflow` (label-token PRMs).
            method: "prefill" (needs `--enable-prefill-logprobs` on TGI) or "top_n".
            chat_template: renders chat styles (RLHFlow); default: the Llama-3 turn format.
            name: PRM name in errors; default `<style>@<url>`.
            api_key, timeout, max_concurrency, retries, backoff_s: as `TGIBackend`.
        """
        self.style = style_by_name(style) if isinstance(style, str) else style
        if self.style.head != "labels":
            raise ValueError(
                f"the {self.style.name} PRM has no label tokens to read over TGI;"
                " run it locally or behind vLLM's pooling endpoint"
            )
        if method not in ("prefill", "top_n"):
            raise ValueError("method must be 'prefill' or 'top_n'")
        self.backend = TGIBackend(
            url,
            api_key=api_key,
            timeout=timeout,
            max_concurrency=max_concurrency,
            retries=retries,
            backoff_s=backoff_s,
        )
        self.url = self.backend.url
        self.name = name or f"{self.style.name}@{self.url}"
        self.method: Method = method
        self.chat_template = chat_template
        self._ids: TokenIds | None = None
        self._bos: str | None = None

    # -- tokenizer on the server -----------------------------------------------------------

    async def tokenize(self, text: str) -> list[dict[str, Any]]:
        """The server's `/tokenize`: [{id, text, start, stop}] (special tokens have no span)."""

        async def call() -> list[dict[str, Any]]:
            response = await self.backend.http().post(f"{self.url}/tokenize", json={"inputs": text})
            response.raise_for_status()
            body: list[dict[str, Any]] = response.json()
            return body

        result: list[dict[str, Any]] = await self.backend._with_retries("POST /tokenize", call)
        return result

    async def token_ids(self) -> TokenIds:
        """Tag and label ids, looked up with the style's probes on the server's tokenizer."""
        if self._ids is None:
            probes = self.style.probes()
            toks = await asyncio.gather(*(self.tokenize(p) for p in probes))
            table = {
                p: [int(t["id"]) for t in ts if t["stop"] > t["start"]]
                for p, ts in zip(probes, toks, strict=True)
            }
            lead = await self.tokenize("1")
            self._bos = "".join(t["text"] for t in lead if t["stop"] <= t["start"])
            self._ids = self.style.lookup(lambda text: table[text], self.name)
        return self._ids

    async def _render(
        self, question: str, steps: Sequence[str], *, labelled: bool
    ) -> tuple[Rendered, list[int], list[tuple[int, int]], list[int]]:
        """Rendered input (without a BOS the server adds), token ids, offsets, marks' indices."""
        ids = await self.token_ids()
        rendered = self.style.render(
            question, steps, chat_template=self.chat_template, labelled=labelled
        )
        if self._bos and rendered.text.startswith(self._bos):
            rendered = shift_rendered(rendered, len(self._bos))
        toks = await self.tokenize(rendered.text)
        token_ids = [int(t["id"]) for t in toks]
        offsets = [(int(t["start"]), int(t["stop"])) for t in toks]
        index = locate(rendered, token_ids, offsets, ids, self.name)
        return rendered, token_ids, offsets, index

    # -- prefill ---------------------------------------------------------------------------

    async def _prefill(self, prompt: str) -> list[tuple[int, float | None]]:
        try:
            out = await self.backend.atext_generation(
                prompt, max_new_tokens=1, do_sample=False, decoder_input_details=True
            )
        except BackendError as exc:
            text = str(exc).lower()
            if "prefill" in text or "decoder_input_details" in text:
                raise self._no_prefill() from exc
            raise
        prefill = out.details.prefill if out.details is not None else None
        if not prefill:
            raise self._no_prefill()
        return [(int(_get(t, "id")), _get(t, "logprob")) for t in prefill]

    def _no_prefill(self) -> PrefillUnavailableError:
        return PrefillUnavailableError(
            f"PRM {self.name}: the server returns no prompt log-probabilities"
            " (launch TGI with --enable-prefill-logprobs, or use method top_n)"
        )

    async def _score_prefill(self, question: str, steps: Sequence[str]) -> list[float]:
        rendered, token_ids, _, index = await self._render(question, steps, labelled=True)
        prefill = await self._prefill(rendered.text)
        if [i for i, _ in prefill][-len(token_ids) :] != token_ids:
            raise PRMAlignmentError(
                self.name, None, "the server's prefill tokens differ from its /tokenize output"
            )
        lead = len(prefill) - len(token_ids)
        scores = []
        for mark, k in zip(rendered.marks, index, strict=True):
            lp = prefill[lead + k][1]
            if lp is None:
                raise PRMAlignmentError(self.name, mark.step, "the label token has no logprob")
            scores.append(math.exp(lp))
        return scores

    # -- top_n -----------------------------------------------------------------------------

    async def _score_top_n(
        self, question: str, steps: Sequence[str], only_last: bool
    ) -> list[float]:
        rendered, token_ids, offsets, index = await self._render(question, steps, labelled=False)
        ids = await self.token_ids()
        info = await self.backend.info()
        top_n = int(info.get("max_top_n_tokens") or 5)
        todo = list(zip(rendered.marks, index, strict=True))
        if only_last:
            todo = todo[-1:]

        async def one(mark: Any, k: int) -> float:
            cut = k + 1 + mark.shift  # tokens up to and including the read position
            prefix = rendered.text[: offsets[cut - 1][1]] if cut else ""
            check = await self.tokenize(prefix)
            if [int(t["id"]) for t in check] != token_ids[:cut]:
                raise PRMAlignmentError(
                    self.name, mark.step, "the text up to this step tokenizes differently alone"
                )
            out = await self.backend.atext_generation(
                prefix, max_new_tokens=1, do_sample=False, top_n_tokens=top_n
            )
            top: dict[int, float] = {}
            if out.details is not None:
                for tok in (out.details.top_tokens or [[]])[0]:
                    if _get(tok, "logprob") is not None:
                        top[int(_get(tok, "id"))] = float(_get(tok, "logprob"))
                for tok in out.details.tokens[:1]:
                    if _get(tok, "logprob") is not None:
                        top.setdefault(int(_get(tok, "id")), float(_get(tok, "logprob")))
            good, bad = top.get(int(ids.good or -1)), top.get(int(ids.bad or -1))
            if good is None and bad is None:
                raise PRMAlignmentError(
                    self.name,
                    mark.step,
                    f"neither label token is among the server's top {top_n} tokens",
                )
            floor = min(top.values())
            lg = good if good is not None else floor
            lb = bad if bad is not None else floor
            return 1.0 / (1.0 + math.exp(lb - lg))

        return list(await asyncio.gather(*(one(m, k) for m, k in todo)))

    # -- PRM protocol ----------------------------------------------------------------------

    async def ascore(self, question: str, paths: Sequence[Sequence[str]]) -> list[list[float]]:
        """Per-step scores of every path (prefill: one request per path; top_n: per step)."""
        jobs = [
            (self._score_prefill(question, p) if self.method == "prefill"
             else self._score_top_n(question, p, only_last=False))
            if p else _empty()
            for p in paths
        ]  # fmt: skip
        return list(await asyncio.gather(*jobs))

    async def ascore_last(self, question: str, paths: Sequence[Sequence[str]]) -> list[float]:
        """Newest step of every path (top_n: one request per path)."""
        if self.method == "prefill":
            return [s[-1] if s else 0.0 for s in await self.ascore(question, paths)]
        jobs = [self._score_top_n(question, p, only_last=True) if p else _empty() for p in paths]
        return [s[-1] if s else 0.0 for s in await asyncio.gather(*jobs)]


async def _empty() -> list[float]:
    return []


class MathShepherdTGIPRM(TGIPRM):
    """`TGIPRM` with the Math-Shepherd style (peiyi9979/math-shepherd-mistral-7b-prm)."""

    def __init__(self, url: str, *, method: Method = "prefill", **kwargs: Any) -> None:
        """See `TGIPRM`."""
        super().__init__(url, "math-shepherd", method=method, **kwargs)
