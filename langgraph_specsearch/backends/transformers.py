"""Local backend on Hugging Face transformers (CPU-friendly; one call at a time per model)."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import math
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

from langgraph_specsearch.backends.prefix import PrefixReuse, supports_prefix_reuse
from langgraph_specsearch.prompts import PromptFormat
from langgraph_specsearch.types import FinishReason, Generation, GenerationParams

logger = logging.getLogger(__name__)
_locks_guard = threading.Lock()
_model_locks: dict[int, threading.Lock] = {}


def _lock_for(model: Any) -> threading.Lock:
    """One lock per model object: torch on a few cores runs one call at a time per model."""
    with _locks_guard:
        return _model_locks.setdefault(id(model), threading.Lock())


@contextlib.contextmanager
def _holding(*models: Any) -> Iterator[None]:
    """Hold the locks of several models, always taken in the same order."""
    locks = sorted({id(m): _lock_for(m) for m in models}.items())
    with contextlib.ExitStack() as stack:
        for _, lock in locks:
            stack.enter_context(lock)
        yield


def input_device(model: Any) -> Any:
    """The device a model's inputs go to: its input embedding's (the first shard's)."""
    with contextlib.suppress(AttributeError, NotImplementedError):
        return model.get_input_embeddings().weight.device
    return model.device


def token_id_set(value: Any) -> set[int]:
    if value is None:
        return set()
    if isinstance(value, int):
        return {value}
    return {int(v) for v in value}


class TransformersBackend:
    """A `Backend` running a causal LM in-process with transformers.

    `agenerate` makes one batched `model.generate` call over all prompts x n. The prompt tokens
    are prefilled once per prompt, not n times, and the prefix all prompts share (few-shot
    header, question) is kept between calls and reused (`backends/prefix.py`; `prefix_reuse`
    off falls back to plain left-padded `generate`).
    Returned step texts are cut before the first stop string and `.strip()`-ed.
    With `assistant`, generation uses token-level speculative decoding (transformers assisted
    generation; universal assisted generation when the tokenizers differ), one sequence at a
    time, since assisted generation only supports batch size 1.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        name: str,
        prompt_format: PromptFormat,
        assistant: TransformersBackend | None = None,
        prefix_reuse: bool = True,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.name = name
        self.prompt_format = prompt_format
        self.assistant = assistant
        eos = token_id_set(getattr(model.generation_config, "eos_token_id", None))
        eos |= token_id_set(tokenizer.eos_token_id)
        self._eos_ids = eos
        pad = tokenizer.pad_token_id
        if pad is None:
            pad = getattr(model.generation_config, "pad_token_id", None)
            if pad is None:
                pad = min(eos) if eos else 0
            if tokenizer.pad_token is None:
                tokenizer.pad_token = tokenizer.convert_ids_to_tokens(int(pad))
        self._pad_id = int(pad)
        self.prefix: PrefixReuse | None = None
        if prefix_reuse and supports_prefix_reuse(model):
            self.prefix = PrefixReuse(model, self._pad_id, device=input_device(model))

    @property
    def device(self) -> Any:
        """Where inputs go: the device of the model's input embedding (first shard)."""
        return input_device(self.model)

    def speculates(self, *, sampling: bool) -> bool:
        """Token-level speculation (assisted generation) iff there is an assistant model."""
        return self.assistant is not None

    @classmethod
    def load(
        cls,
        name_or_path: str,
        *,
        assistant: str | None = None,
        device: str | None = None,
        device_map: str | dict[str, Any] | None = None,
        dtype: str | None = None,
    ) -> TransformersBackend:
        """Load a short embedded name (`smollm2-135m`, `gemma3-270m`), a local dir or a hub id.

        Args:
            name_or_path: the model.
            assistant: a second model for token-level speculative decoding.
            device: `cpu`, `cuda`, `cuda:1`, `mps`; None: a GPU when present, else the CPU.
            device_map: a transformers `device_map` (overrides `device`), e.g. `auto`.
            dtype: `float32` (default), `bfloat16` or `float16`.
        """
        from langgraph_specsearch.models import default_prompt_format, load_pretrained

        placement: dict[str, Any] = {"device": device, "device_map": device_map, "dtype": dtype}
        model, tokenizer = load_pretrained(name_or_path, **placement)
        helper = None
        if assistant is not None:
            # Universal assisted generation rewires the assistant in place (it wraps the input
            # embedding for vocabulary translation), so the assistant gets its own copy and
            # the shared (memoised) small model stays usable for drafting and judging.
            shared = cls.load(assistant, device=str(input_device(model)), dtype=dtype)
            helper = cls(
                copy.deepcopy(shared.model),
                shared.tokenizer,
                name=shared.name,
                prompt_format=shared.prompt_format,
            )
        return cls(
            model,
            tokenizer,
            name=str(name_or_path),
            prompt_format=default_prompt_format(str(name_or_path), tokenizer),
            assistant=helper,
        )

    # -- tokenisation -------------------------------------------------------------------------

    def _token_ids(self, prompts: Sequence[str]) -> list[list[int]]:
        """Token ids per prompt; BOS is added unless the prompt already starts with it."""
        bos = self.tokenizer.bos_token
        return [
            list(self.tokenizer(p, add_special_tokens=not (bos and p.startswith(bos)))["input_ids"])
            for p in prompts
        ]

    def _encode(self, prompts: Sequence[str]) -> dict[str, Any]:
        """Left-padded batch of `_token_ids`."""
        import torch

        ids = self._token_ids(prompts)
        width = max(len(row) for row in ids)
        padded = [[self._pad_id] * (width - len(row)) + row for row in ids]
        mask = [[0] * (width - len(row)) + [1] * len(row) for row in ids]
        return {
            "input_ids": torch.tensor(padded, dtype=torch.long, device=self.device),
            "attention_mask": torch.tensor(mask, dtype=torch.long, device=self.device),
        }

    # -- generation ---------------------------------------------------------------------------

    def _generation_config(self, params: GenerationParams) -> Any:
        from transformers import GenerationConfig

        sample = params.temperature > 0
        return GenerationConfig(
            max_new_tokens=params.max_new_tokens,
            do_sample=sample,
            temperature=params.temperature if sample else None,
            top_p=params.top_p if sample else None,
            top_k=0 if sample else None,
            stop_strings=list(params.stop) or None,
            pad_token_id=self._pad_id,
            eos_token_id=sorted(self._eos_ids) or None,
            bos_token_id=self.tokenizer.bos_token_id,
        )

    def _finish(self, ids: list[int], stop: Sequence[str], latency: float) -> Generation:
        """Cut one row of generated ids at EOS / padding / the first stop string."""
        end = len(ids)
        hit_eos = False
        for i, tok in enumerate(ids):
            if tok in self._eos_ids or tok == self._pad_id:
                end, hit_eos = i, tok in self._eos_ids
                break

        def decode(part: list[int]) -> str:
            return str(
                self.tokenizer.decode(
                    part, skip_special_tokens=True, clean_up_tokenization_spaces=False
                )
            )

        text = decode(ids[:end])
        cut = min((p for p in (text.find(s) for s in stop if s) if p >= 0), default=-1)
        reason: FinishReason
        if cut >= 0:
            reason = "stop_sequence"
            text = text[:cut]
            # tokens used: the shortest prefix whose text already holds a stop string
            tokens = next(
                (k for k in range(1, end + 1) if any(s and s in decode(ids[:k]) for s in stop)),
                end,
            )
        elif hit_eos:
            reason, tokens = "eos_token", end + 1
        else:
            reason, tokens = "length", end
        return Generation(text=text.strip(), tokens=tokens, finish_reason=reason, latency_s=latency)

    def _generate_sync(
        self, prompts: Sequence[str], n: int, params: GenerationParams
    ) -> list[list[Generation]]:
        import torch

        if not prompts or n < 1:
            return [[] for _ in prompts]
        copies = n if params.temperature > 0 else 1  # greedy rows would all be identical
        expanded = [p for p in prompts for _ in range(copies)]
        config = self._generation_config(params)
        models = [self.model] + ([self.assistant.model] if self.assistant else [])
        with _holding(*models), torch.inference_mode():
            start = time.perf_counter()
            if params.seed is not None:
                torch.manual_seed(params.seed)
            if self.assistant is None:
                rows = self._generate_rows(prompts, expanded, copies, params, config)
                accepted: list[int | None] = [None] * len(rows)
            else:
                rows, accepted = self._assisted(expanded, config)
            latency = time.perf_counter() - start
        gens = []
        for row, acc in zip(rows, accepted, strict=True):
            g = self._finish(row, params.stop, latency)
            g.accepted_draft_tokens = acc
            gens.append(g)
        return [
            [gens[i * copies + k % copies].model_copy() for k in range(n)]
            for i in range(len(prompts))
        ]

    def _prefix_failed(self, exc: Exception) -> None:
        """Turn KV-prefix reuse off for this backend (the plain pass worked), saying why once."""
        logger.warning("%s: KV-prefix reuse turned off (%r); plain forward passes", self.name, exc)
        self.prefix = None

    def _generate_rows(
        self,
        prompts: Sequence[str],
        expanded: Sequence[str],
        copies: int,
        params: GenerationParams,
        config: Any,
    ) -> list[list[int]]:
        """New token ids per row (prompts x copies): prefix reuse, or plain left padding.

        If the reuse path fails and the plain one then works, the model does not fit the reuse
        and it is turned off; if both fail, the plain path's error is raised and reuse stays.
        """
        import torch

        if self.prefix is None:
            return self._plain_rows(expanded, config)
        try:
            plan = self.prefix.prepare(self._token_ids(prompts), copies, params.max_new_tokens)
            out = self.model.generate(
                input_ids=plan.input_ids,
                attention_mask=plan.attention_mask,
                generation_config=config,
                tokenizer=self.tokenizer,
                **{plan.cache_kw: plan.cache},
            )
            return [row[plan.input_ids.shape[1] :].tolist() for row in out]
        except Exception as exc:  # noqa: BLE001 - decided by whether the plain path works
            if params.seed is not None:
                torch.manual_seed(params.seed)  # the plain pass samples as a first try would
            rows = self._plain_rows(expanded, config)
            self._prefix_failed(exc)
            return rows

    def _plain_rows(self, expanded: Sequence[str], config: Any) -> list[list[int]]:
        """New token ids per row from one left-padded `generate`."""
        batch = self._encode(expanded)
        out = self.model.generate(**batch, generation_config=config, tokenizer=self.tokenizer)
        return [row[batch["input_ids"].shape[1] :].tolist() for row in out]

    def _assisted(
        self, prompts: Sequence[str], config: Any
    ) -> tuple[list[list[int]], list[int | None]]:
        """Assisted generation, one sequence at a time; counts accepted draft tokens.

        Each target forward pass yields its accepted draft tokens plus one token of its own, so
        accepted = new tokens - target forward calls (counted with a forward hook).
        """
        assert self.assistant is not None
        helper = self.assistant
        # transformers keeps the adapted draft length on the assistant between calls
        # ("heuristic"); restarting it each call makes seeded samples repeatable
        helper.model.generation_config.num_assistant_tokens_schedule = "heuristic_transient"
        kwargs: dict[str, Any] = {"assistant_model": helper.model, "tokenizer": self.tokenizer}
        if helper.tokenizer.get_vocab() != self.tokenizer.get_vocab():
            kwargs["assistant_tokenizer"] = helper.tokenizer
        calls = [0]

        def count(*_: Any) -> None:
            calls[0] += 1

        if config.stop_strings:
            # The assistant inherits the generation config but not the tokenizer, and fails on
            # `stop_strings`; an explicit criterion on the target side stops at the same place.
            from transformers import StoppingCriteriaList, StopStringCriteria

            stops = list(config.stop_strings)
            config = copy.deepcopy(config)
            config.stop_strings = None
            kwargs["stopping_criteria"] = StoppingCriteriaList(
                [StopStringCriteria(self.tokenizer, stops)]
            )
        rows: list[list[int]] = []
        accepted: list[int | None] = []
        handle = self.model.register_forward_hook(count)
        try:
            for prompt in prompts:
                calls[0] = 0
                batch = self._encode([prompt])
                out = self.model.generate(**batch, generation_config=config, **kwargs)
                row = out[0, batch["input_ids"].shape[1] :].tolist()
                rows.append(row)
                accepted.append(max(0, len(row) - calls[0]))
        finally:
            handle.remove()
        return rows, accepted

    async def agenerate(
        self, prompts: Sequence[str], *, n: int, params: GenerationParams
    ) -> list[list[Generation]]:
        """`n` continuations per prompt from one batched `generate` (or assisted, per sequence)."""
        return await asyncio.to_thread(self._generate_sync, list(prompts), n, params)

    # -- scoring ------------------------------------------------------------------------------

    def _candidate_ids(self, candidate: str) -> list[int]:
        ids: list[int] = []
        for variant in (candidate, " " + candidate):
            enc = self.tokenizer.encode(variant, add_special_tokens=False)
            if enc and enc[0] not in ids:
                ids.append(int(enc[0]))
        return ids

    def _logprobs_sync(
        self, prompts: Sequence[str], candidates: Sequence[str]
    ) -> list[dict[str, float]]:
        import torch

        if not prompts:
            return []
        ids = {c: self._candidate_ids(c) for c in candidates}
        with _holding(self.model), torch.inference_mode():
            if self.prefix is None:
                logits = self._plain_next_token_logits(prompts)
            else:
                try:
                    logits = self.prefix.next_token_logits(self._token_ids(prompts))
                except Exception as exc:  # noqa: BLE001 - decided by whether the plain path works
                    logits = self._plain_next_token_logits(prompts)
                    self._prefix_failed(exc)
        logp = torch.log_softmax(logits.float(), dim=-1)
        result = []
        for row in logp:
            scores = {}
            for c, token_ids in ids.items():
                if token_ids:
                    scores[c] = float(torch.logsumexp(row[token_ids], dim=0))
                else:
                    scores[c] = -math.inf
            result.append(scores)
        return result

    def _plain_next_token_logits(self, prompts: Sequence[str]) -> Any:
        """Next-token logits per prompt from one left-padded forward pass (no cache)."""
        batch = self._encode(prompts)
        mask = batch["attention_mask"]
        return self.model(
            input_ids=batch["input_ids"],
            attention_mask=mask,
            position_ids=(mask.cumsum(-1) - 1).clamp(min=0),
            use_cache=False,
            logits_to_keep=1,
        ).logits[:, -1, :]

    async def anext_token_logprobs(
        self, prompts: Sequence[str], candidates: Sequence[str]
    ) -> list[dict[str, float]]:
        """Per prompt, log P(next token starts `c`) for each candidate, "c" and " c" combined."""
        return await asyncio.to_thread(self._logprobs_sync, list(prompts), list(candidates))
