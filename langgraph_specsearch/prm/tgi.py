"""A Math-Shepherd-style process reward model served by TGI (or `specsearch serve`).

Math-Shepherd's convention: the input is `question + " " + steps`, each step ending with the
tag " ки"; the step score is the softmax over the "+" and "-" logits at each tag position,
i.e. P(+) / (P(+) + P(-)) over the full vocabulary's probabilities. TGI does not return full
logits, so two approximations are offered (`method`):

- `"prefill"` (default): one request per path with `decoder_input_details=True`. The prompt
  has every step followed by the tag with its word replaced by the good token ("step1 +\\n
  step2 +"), so the prompt log-probability of that "+" token is log P(+ | text up to the tag)
  under the full-vocabulary softmax. The score is that P(+), which is <= the two-token
  softmax (equal when the model puts all its mass on "+" and "-"); all steps of a path are
  scored in one request. Later steps are conditioned on "+" marks after the earlier steps (as
  in Math-Shepherd's training data) rather than on the tag.
- `"top_n"`: one request per step prefix ending with the tag, `max_new_tokens=1` and
  `top_n_tokens` at the server's limit. When "+" and "-" are both among the top tokens this
  IS the two-token softmax; a missing one is given the smallest top-n log-probability (an
  upper bound on its true value).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from typing import Literal

from langgraph_specsearch.backends.tgi import LOGPROB_FLOOR, TGIBackend
from langgraph_specsearch.prm.base import LastStepPRM


class MathShepherdTGIPRM(LastStepPRM):
    """Step scores in [0, 1] from a Math-Shepherd-like PRM behind a TGI endpoint."""

    def __init__(
        self,
        url: str,
        *,
        step_tag: str = " ки",
        good_token: str = "+",
        bad_token: str = "-",
        method: Literal["prefill", "top_n"] = "prefill",
        name: str | None = None,
        api_key: str | None = None,
        timeout: float = 60.0,
        max_concurrency: int = 16,
        retries: int = 4,
        backoff_s: float = 0.5,
    ) -> None:
        self.backend = TGIBackend(
            url,
            name=name,
            api_key=api_key,
            timeout=timeout,
            max_concurrency=max_concurrency,
            retries=retries,
            backoff_s=backoff_s,
        )
        self.name = name or f"math-shepherd@{url}"
        self.step_tag = step_tag
        self.good_token = good_token
        self.bad_token = bad_token
        self.method = method

    def _clean(self, step: str) -> str:
        return step.replace(self.step_tag.strip(), "").strip()

    def tagged_prompt(self, question: str, steps: Sequence[str]) -> str:
        """Math-Shepherd input ending with the tag of the last step (for `top_n`)."""
        body = "\n".join(self._clean(s) + self.step_tag for s in steps)
        return f"{question} {body}"

    def marked_prompt(self, question: str, steps: Sequence[str]) -> tuple[str, list[int]]:
        """Prompt with the good token in each tag's place, and the offset of each mark."""
        mark = self.step_tag.replace(self.step_tag.strip(), self.good_token)
        lead = len(mark) - len(mark.lstrip())
        text = f"{question} "
        offsets = []
        for i, step in enumerate(steps):
            if i:
                text += "\n"
            text += self._clean(step)
            offsets.append(len(text) + lead)
            text += mark
        return text, offsets

    async def ascore(self, question: str, paths: Sequence[Sequence[str]]) -> list[list[float]]:
        """Per-step scores of every path."""
        if self.method == "top_n":
            return await super().ascore(question, paths)
        prompts = [self.marked_prompt(question, path) for path in paths]
        prefills = await self.backend.aprompt_logprobs([p for p, _ in prompts])
        out = []
        for (prompt, offsets), prefill in zip(prompts, prefills, strict=True):
            spans = _align(prompt, [text for text, _ in prefill])
            scores = []
            for offset in offsets:
                lp = next(
                    (
                        prefill[k][1]
                        for k, (start, stop) in enumerate(spans)
                        if start <= offset < stop
                    ),
                    None,
                )
                scores.append(math.exp(lp if lp is not None else LOGPROB_FLOOR))
            out.append(scores)
        return out

    async def ascore_last(self, question: str, paths: Sequence[Sequence[str]]) -> list[float]:
        """Score of each path's last step."""
        if self.method == "prefill":
            return [scores[-1] if scores else 0.0 for scores in await self.ascore(question, paths)]
        prompts = [self.tagged_prompt(question, path) for path in paths]
        info = await self.backend.info()
        top_n = int(info.get("max_top_n_tokens") or 5)
        results = []
        for prompt in prompts:
            results.append(
                self.backend.atext_generation(
                    prompt, max_new_tokens=1, do_sample=False, top_n_tokens=top_n
                )
            )
        outs = await asyncio.gather(*results)
        scores = []
        for out in outs:
            top: dict[str, float] = {}
            for tok in (out.details.top_tokens or [[]])[0] if out.details else []:
                text = tok["text"] if isinstance(tok, dict) else tok.text
                lp = tok["logprob"] if isinstance(tok, dict) else tok.logprob
                if lp is not None:
                    top[text.strip()] = max(lp, top.get(text.strip(), -math.inf))
            floor = min(top.values()) if top else LOGPROB_FLOOR
            good = top.get(self.good_token, floor)
            bad = top.get(self.bad_token, floor)
            scores.append(1.0 / (1.0 + math.exp(bad - good)))
        return scores


def _align(prompt: str, texts: Sequence[str]) -> list[tuple[int, int]]:
    """Character span of each prompt token, from the token texts TGI returns.

    Texts that do not continue the prompt (BOS and other special tokens) get an empty span;
    a text whose leading whitespace was dropped by the tokenizer's decode is matched without it.
    """
    spans = []
    pos = 0
    for text in texts:
        if text and prompt.startswith(text, pos):
            spans.append((pos, pos + len(text)))
            pos += len(text)
            continue
        core = text.strip()
        found = prompt.find(core, pos) if core else -1
        if core and found != -1 and not prompt[pos:found].strip():
            spans.append((pos, found + len(core)))
            pos = found + len(core)
        else:
            spans.append((pos, pos))
    return spans
