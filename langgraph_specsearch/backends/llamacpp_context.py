"""One llama.cpp model and context (llama-cpp-python's C API): many sequences, one KV cache.

The high-level `llama_cpp.Llama` decodes one sequence at a time. A search step wants N
continuations of a few prompts, so this wrapper opens the context with a *unified* KV cache
shared by up to `n_seq_max` sequences and decodes all of them in one batch per token:

- a prompt is prefilled once into a *holder* sequence; its N samples are copies of it
  (`llama_memory_seq_cp` in a unified cache shares the cells, it copies nothing);
- holders are kept between calls (most recently used last, `keep` of them): a later prompt
  starts from the kept holder it shares the longest token prefix with, so a path's next step
  only prefills the tokens it adds, and the judge's prompts share their question header;
- the tokens all prompts of a call share are prefilled once before their tails.

Gemma-3's sliding-window layers get a full-size cache (`swa_full`), so any prefix of a kept
sequence can be reused. Not thread-safe: callers hold `lock` (the backend does; models on
the CPU share one lock).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

MISSING_EXTRA = (
    "the llama.cpp engine needs llama-cpp-python: pip install 'langgraph-specsearch[llamacpp]'"
)


_log_callback: Any = None
"""The C log callback installed by `import_llama_cpp` (kept alive here)."""


def import_llama_cpp() -> Any:
    """The `llama_cpp` module, or an ImportError whose message says how to install it.

    llama.cpp's own log goes to stderr for errors only (no load chatter).
    """
    global _log_callback
    try:
        import llama_cpp
    except ImportError as exc:
        raise ImportError(MISSING_EXTRA) from exc
    if _log_callback is None:

        def errors_only(level: int, text: bytes, user_data: Any) -> None:
            if level == 4:  # GGML_LOG_LEVEL_ERROR
                sys.stderr.write(text.decode("utf-8", errors="replace"))

        _log_callback = llama_cpp.llama_log_callback(errors_only)
        llama_cpp.llama_log_set(_log_callback, ctypes.c_void_p(0))
    return llama_cpp


def llama_cpp_available() -> bool:
    """Whether llama-cpp-python can be imported (the `llamacpp` extra is installed)."""
    try:
        import_llama_cpp()
    except ImportError:
        return False
    return True


def default_threads() -> int:
    """The cores this process may run on."""
    with contextlib.suppress(AttributeError):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """Number of leading tokens `a` and `b` share."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


@dataclass
class Sample:
    """One continuation being decoded in sequence `seq` (a copy of its prompt's holder)."""

    seq: int
    pos: int
    sampler: Any
    tokens: list[int] = field(default_factory=list)
    pieces: list[bytes] = field(default_factory=list)
    finish: str | None = None
    """None while running; then `eos_token`, `stop_sequence` or `length`."""

    def text(self) -> str:
        """The decoded text so far (an incomplete UTF-8 tail is dropped)."""
        return b"".join(self.pieces).decode("utf-8", errors="ignore")


_CPU_LOCK = threading.Lock()


class ContextFull(RuntimeError):
    """The KV cache has no room for a batch even after dropping every kept prefix."""


class LlamaCppModel:
    """A GGUF loaded with llama.cpp, its context, and the token sequences its KV cache holds."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        n_ctx: int = 8192,
        n_threads: int | None = None,
        n_gpu_layers: int = 0,
        n_seq_max: int = 64,
        n_batch: int = 512,
        keep: int = 16,
        flash_attn: bool = False,
    ) -> None:
        """Load `path` and open a context of `n_ctx` cells shared by `n_seq_max` sequences."""
        ll = import_llama_cpp()
        self.ll = ll
        self.path = str(path)
        if not Path(self.path).is_file():
            raise ValueError(f"GGUF file not found: {self.path}")
        self.lock = _CPU_LOCK if n_gpu_layers == 0 else threading.Lock()
        """Held around every use of the context. CPU models share one lock: two models
        decoding at once would split the same cores between two thread teams (much slower)."""
        self.keep = keep
        self.n_batch = n_batch
        ll.llama_backend_init()
        mparams = ll.llama_model_default_params()
        mparams.n_gpu_layers = n_gpu_layers
        self.model = ll.llama_model_load_from_file(self.path.encode(), mparams)
        if not self.model:
            raise ValueError(f"llama.cpp could not load {self.path}")
        threads = n_threads or default_threads()
        self.n_threads = threads
        cparams = ll.llama_context_default_params()
        cparams.n_ctx = n_ctx
        cparams.n_batch = n_batch
        cparams.n_ubatch = n_batch
        cparams.n_seq_max = min(n_seq_max, ll.llama_max_parallel_sequences())
        cparams.n_threads = threads
        cparams.n_threads_batch = threads
        cparams.kv_unified = True
        cparams.swa_full = True
        cparams.no_perf = True
        cparams.flash_attn_type = 1 if flash_attn else ll.LLAMA_FLASH_ATTN_TYPE_DISABLED
        self.ctx = ll.llama_init_from_model(self.model, cparams)
        if not self.ctx:
            ll.llama_model_free(self.model)
            raise ValueError(f"llama.cpp could not create a context for {self.path}")
        self.n_ctx = int(ll.llama_n_ctx(self.ctx))
        self.n_seq_max = int(cparams.n_seq_max)
        self.mem = ll.llama_get_memory(self.ctx)
        self.vocab = ll.llama_model_get_vocab(self.model)
        self.n_vocab = int(ll.llama_vocab_n_tokens(self.vocab))
        self.n_gpu_layers = n_gpu_layers
        self._batch = ll.llama_batch_init(n_batch, 0, 1)
        self._pieces: dict[int, bytes] = {}
        self.bos_text = self._special_text(ll.llama_vocab_bos(self.vocab))
        self.add_bos = bool(ll.llama_vocab_get_add_bos(self.vocab))
        self.held: dict[int, list[int]] = {}
        """Holder sequences: id -> the tokens at positions 0..len-1 (least recent first)."""
        self.prompt_tokens = 0
        """Prompt tokens of all calls (what prefilling every sample in full would cost)."""
        self.prefilled_tokens = 0
        """Prompt tokens actually decoded (the rest came from kept or shared prefixes)."""

    def close(self) -> None:
        """Free the context and the model."""
        if getattr(self, "ctx", None):
            self.ll.llama_batch_free(self._batch)
            self.ll.llama_free(self.ctx)
            self.ll.llama_model_free(self.model)
            self.ctx = None

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()

    # -- vocabulary ---------------------------------------------------------------------------

    def _special_text(self, token: int) -> str:
        if token < 0:
            return ""
        buf = ctypes.create_string_buffer(64)
        n = self.ll.llama_token_to_piece(self.vocab, token, buf, 64, 0, True)
        return buf.raw[: max(n, 0)].decode("utf-8", errors="ignore")

    def meta(self, key: str) -> str | None:
        """A GGUF metadata value as a string, or None."""
        size = 1 << 16
        buf = ctypes.create_string_buffer(size)
        n = self.ll.llama_model_meta_val_str(self.model, key.encode(), buf, size)
        if n < 0:
            return None
        if n >= size:
            buf = ctypes.create_string_buffer(n + 1)
            self.ll.llama_model_meta_val_str(self.model, key.encode(), buf, n + 1)
        return buf.value.decode("utf-8", errors="replace")

    def tokenize(self, text: str, *, add_special: bool, parse_special: bool = True) -> list[int]:
        """Token ids of `text` (BOS only if `add_special` and the model adds one)."""
        data = text.encode("utf-8")
        size = len(data) + 8
        buf = (ctypes.c_int32 * size)()
        n = self.ll.llama_tokenize(
            self.vocab, data, len(data), buf, size, add_special, parse_special
        )
        if n < 0:
            size = -n
            buf = (ctypes.c_int32 * size)()
            n = self.ll.llama_tokenize(
                self.vocab, data, len(data), buf, size, add_special, parse_special
            )
        return list(buf[:n])

    def prompt_ids(self, prompt: str) -> list[int]:
        """A prompt's ids: BOS added (if the model uses one) unless the text starts with it."""
        starts = bool(self.bos_text) and prompt.startswith(self.bos_text)
        return self.tokenize(prompt, add_special=self.add_bos and not starts)

    def piece(self, token: int) -> bytes:
        """The bytes one token stands for (special tokens render as nothing)."""
        cached = self._pieces.get(token)
        if cached is None:
            buf = ctypes.create_string_buffer(128)
            n = self.ll.llama_token_to_piece(self.vocab, token, buf, 128, 0, False)
            if n < 0:
                buf = ctypes.create_string_buffer(-n)
                n = self.ll.llama_token_to_piece(self.vocab, token, buf, -n, 0, False)
            cached = self._pieces[token] = buf.raw[:n]
        return cached

    def is_eog(self, token: int) -> bool:
        """End of generation (EOS, end of turn)."""
        return bool(self.ll.llama_vocab_is_eog(self.vocab, token))

    # -- samplers -------------------------------------------------------------------------

    def sampler(self, temperature: float, top_p: float, seed: int | None) -> Any:
        """A sampler chain: greedy at temperature 0, else temperature -> top-p -> draw."""
        ll = self.ll
        chain = ll.llama_sampler_chain_init(ll.llama_sampler_chain_default_params())
        if temperature <= 0:
            ll.llama_sampler_chain_add(chain, ll.llama_sampler_init_greedy())
            return chain
        ll.llama_sampler_chain_add(chain, ll.llama_sampler_init_temp(temperature))
        if top_p < 1.0:
            ll.llama_sampler_chain_add(chain, ll.llama_sampler_init_top_p(top_p, 1))
        draw_seed = ll.LLAMA_DEFAULT_SEED if seed is None else seed % 0xFFFFFFFF
        ll.llama_sampler_chain_add(chain, ll.llama_sampler_init_dist(draw_seed))
        return chain

    def free_sampler(self, chain: Any) -> None:
        self.ll.llama_sampler_free(chain)

    # -- sequences ------------------------------------------------------------------------

    def clear(self) -> None:
        """Forget every sequence (empties the KV cache)."""
        self.ll.llama_memory_clear(self.mem, True)
        self.held.clear()

    def drop(self, seq: int) -> None:
        """Remove a sequence (cells it shares with others stay)."""
        self.ll.llama_memory_seq_rm(self.mem, seq, -1, -1)
        self.held.pop(seq, None)

    def _touch(self, seq: int) -> None:
        self.held[seq] = self.held.pop(seq)

    def _new_seq(self, busy: set[int]) -> int:
        """A free sequence id; drops the least recently used holder not in `busy` if needed."""
        taken = busy | set(self.held)
        for seq in range(self.n_seq_max):
            if seq not in taken:
                busy.add(seq)
                return seq
        for seq in list(self.held):
            if seq not in busy:
                self.drop(seq)
                busy.add(seq)
                return seq
        raise ContextFull(f"all {self.n_seq_max} llama.cpp sequences are in use")

    def _best_holder(self, ids: Sequence[int]) -> tuple[int | None, int]:
        """The kept holder sharing the longest prefix with `ids`, and that length."""
        best, length = None, 0
        for seq, held in self.held.items():
            n = common_prefix(held, ids)
            if n > length:
                best, length = seq, n
        return best, length

    def trim(self) -> None:
        """Keep the `keep` most recent holders, none of them a prefix of another."""
        seqs = list(self.held)
        for seq in seqs:
            mine = self.held[seq]
            if any(
                o != seq and len(self.held[o]) > len(mine) and self.held[o][: len(mine)] == mine
                for o in seqs
                if o in self.held
            ):
                self.drop(seq)
        for seq in list(self.held)[: max(0, len(self.held) - self.keep)]:
            self.drop(seq)

    def copy(self, src: int, dst: int, length: int) -> None:
        """Make `dst` hold the first `length` tokens of `src` (shared cells, no copy)."""
        self.ll.llama_memory_seq_rm(self.mem, dst, -1, -1)
        if length > 0:
            self.ll.llama_memory_seq_cp(self.mem, src, dst, 0, length)
            self.ll.llama_memory_seq_rm(self.mem, dst, length, -1)

    # -- decoding -------------------------------------------------------------------------

    def decode(self, items: Sequence[tuple[int, int, int, bool]], busy: set[int]) -> None:
        """Decode (token, position, sequence, wants logits) items in one `llama_decode`.

        When the cache has no room, kept holders outside `busy` are dropped and it retries once.
        """
        ll, batch = self.ll, self._batch
        for i, (token, pos, seq, logits) in enumerate(items):
            batch.token[i] = token
            batch.pos[i] = pos
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = seq
            batch.logits[i] = logits
        batch.n_tokens = len(items)
        code = ll.llama_decode(self.ctx, batch)
        if code == 1:
            for seq in [s for s in self.held if s not in busy]:
                self.drop(seq)
            code = ll.llama_decode(self.ctx, batch)
            if code == 1:
                raise ContextFull(
                    f"llama.cpp context full ({self.n_ctx} cells) for {len(items)} tokens;"
                    " use a larger n_ctx or fewer samples per call"
                )
        if code != 0:
            raise RuntimeError(f"llama_decode failed with code {code}")

    def logits(self, index: int) -> np.ndarray:
        """A copy of the logits of output `index` of the last decode (float32, [n_vocab])."""
        ptr = self.ll.llama_get_logits_ith(self.ctx, index)
        return np.ctypeslib.as_array(ptr, shape=(self.n_vocab,)).copy()

    def _chunks(self, items: list[tuple[int, int, int, bool]]) -> Iterator[list[Any]]:
        for start in range(0, len(items), self.n_batch):
            yield items[start : start + self.n_batch]

    def prefill(self, rows: Sequence[Sequence[int]], *, reuse: bool, busy: set[int]) -> list[int]:
        """Put each row (prompt ids) in a holder sequence; returns their ids, in row order.

        The last decode holds one output per row, at the row's index: the logits of its next
        token (what `sample` and `logits` read). With `reuse`, rows start from the longest
        kept prefix and the prefix all rows share is prefilled once; without it every row is
        prefilled in full in a fresh sequence. Rows must be non-empty.
        """
        lists = [list(r) for r in rows]
        self.prompt_tokens += sum(len(r) for r in lists)
        if reuse and len(lists) > 1:
            self._prefill_shared(lists, busy)
        seqs, body, last = [], [], []
        for row in lists:
            seq = self._new_seq(busy)
            start = 0
            if reuse:
                src, start = self._best_holder(row)
                start = min(start, len(row) - 1)
                if src is not None and start > 0:
                    self.copy(src, seq, start)
                    self._touch(src)
                else:
                    start = 0
            if start == 0:
                self.ll.llama_memory_seq_rm(self.mem, seq, -1, -1)
            body += [(row[p], p, seq, False) for p in range(start, len(row) - 1)]
            last.append((row[-1], len(row) - 1, seq, True))
            seqs.append(seq)
        for chunk in self._chunks(body):
            self.decode(chunk, busy)
        if len(last) > self.n_batch:
            raise ValueError(f"at most {self.n_batch} rows per prefill")
        self.decode(last, busy)
        self.prefilled_tokens += len(body) + len(last)
        for seq, row in zip(seqs, lists, strict=True):
            self.held[seq] = row
        return seqs

    def _prefill_shared(self, rows: list[list[int]], busy: set[int]) -> None:
        """Prefill the prefix all rows share into a holder, unless a kept one mostly has it."""
        shared = min(len(r) for r in rows) - 1
        for row in rows[1:]:
            shared = min(shared, common_prefix(rows[0], row))
        if shared - self._best_holder(rows[0][:shared])[1] < 16:
            return
        seq = self._new_seq(busy)  # may drop a holder: look for the source after it
        src, have = self._best_holder(rows[0][:shared])
        if src is not None and have > 0:
            self.copy(src, seq, have)
        else:
            have = 0
            self.ll.llama_memory_seq_rm(self.mem, seq, -1, -1)
        items = [(rows[0][p], p, seq, False) for p in range(have, shared)]
        for chunk in self._chunks(items):
            self.decode(chunk, busy)
        self.prefilled_tokens += len(items)
        self.held[seq] = rows[0][:shared]

    def generate(
        self,
        holders: Sequence[int],
        prompt_lengths: Sequence[int],
        samplers: Sequence[Any],
        owners: Sequence[int],
        *,
        stop: Sequence[str],
        max_new_tokens: int,
        busy: set[int],
        copy: bool = True,
    ) -> list[Sample]:
        """Decode one sample per sampler, all in one batch per token, right after `prefill`.

        Sample `k` continues row `owners[k]` (holder `holders[owners[k]]`); its first token is
        drawn from that row's output of the last decode. With `copy`, each sample runs in a
        copy of its holder (the holder keeps the bare prompt); else in the holder itself.
        """
        samples: list[Sample] = []
        try:
            for sampler, owner in zip(samplers, owners, strict=True):
                seq = self._new_seq(busy) if copy else holders[owner]
                if copy:
                    self.copy(holders[owner], seq, prompt_lengths[owner])
                sample = Sample(seq=seq, pos=prompt_lengths[owner], sampler=sampler)
                samples.append(sample)
                self._accept(sample, self.ll.llama_sampler_sample(sampler, self.ctx, owner), stop)
                sample.finish = sample.finish or self._length(sample, max_new_tokens)
            while True:
                running = [s for s in samples if s.finish is None]
                if not running:
                    return samples
                self.decode([(s.tokens[-1], s.pos - 1, s.seq, True) for s in running], busy)
                for index, s in enumerate(running):
                    self._accept(s, self.ll.llama_sampler_sample(s.sampler, self.ctx, index), stop)
                    s.finish = s.finish or self._length(s, max_new_tokens)
        finally:
            if copy:
                for s in samples:
                    self.ll.llama_memory_seq_rm(self.mem, s.seq, -1, -1)
                    busy.discard(s.seq)

    def _accept(self, sample: Sample, token: int, stop: Sequence[str]) -> None:
        """Record a drawn token: EOS ends the sample, a stop string in the text ends it."""
        sample.tokens.append(int(token))
        sample.pos += 1
        if self.is_eog(token):
            sample.finish = "eos_token"
            return
        sample.pieces.append(self.piece(token))
        text = sample.text()
        if any(s and s in text for s in stop):
            sample.finish = "stop_sequence"

    @staticmethod
    def _length(sample: Sample, max_new_tokens: int) -> str | None:
        return "length" if len(sample.tokens) >= max_new_tokens else None
