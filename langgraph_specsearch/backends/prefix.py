"""KV-prefix reuse for batched generation: shared prompt tokens are prefilled once.

A search step asks for N continuations of each frontier prompt, and every prompt of a question
starts with the same few-shot header and question. `model.generate` would prefill each of the
prompts x N rows in full. `PrefixReuse.prepare` instead lays each row out as

    [shared prefix P][left padding][the row's own tail]

and builds the KV cache in three parts, then hands it to `generate`, which only has to feed each
row's last prompt token:

1. P, the token prefix common to all prompts of the call, is prefilled once (batch 1) and kept:
   the next call that starts with (part of) the same tokens reuses it (cropped to the common
   part) and only prefills the rest;
2. the tails (all but their last token) are prefilled once per prompt, on copies of P's cache;
3. the cache is repeated N times along the batch (`copies` samples of each prompt).

Padding between P and the tail is masked out and position ids skip it, so each row computes
what it would alone (up to float rounding). Sliding-window attention counts cache slots, not
positions, so a model with a window only shares P when the whole row fits in the window;
otherwise P is empty and the layout is plain left padding (steps 2-3 still apply).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

import torch

MIN_SHARED_TOKENS = 16
"""A shared prefix shorter than this is not worth a separate prefill."""
KEPT_PREFIXES = 4
"""Prefixes kept per model (drafting and judging on one model use different prompts)."""


@dataclass
class PrefillPlan:
    """What `generate` needs: full ids and mask (rows x copies) and the filled cache."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    cache: Any
    cache_kw: str


@dataclass(frozen=True)
class CachedForward:
    """A forward pass that appends to a KV cache and returns the last position's logits."""

    model: Any
    cache_kw: str
    """`cache` (transformers 5) or `past_key_values` (older)."""
    logits_to_keep: bool

    @classmethod
    def of(cls, model: Any) -> CachedForward:
        """Read from `model.forward`'s signature how to pass the cache."""
        params = inspect.signature(model.forward).parameters
        cache_kw = "cache" if "cache" in params else "past_key_values"
        return cls(model, cache_kw, "logits_to_keep" in params)

    def __call__(
        self, ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor, cache: Any
    ) -> torch.Tensor:
        """The last position's logits (`[batch, vocab]`, float32), appending to `cache`."""
        kwargs: dict[str, Any] = {self.cache_kw: cache, "use_cache": True}
        if self.logits_to_keep:
            kwargs["logits_to_keep"] = 1
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=positions, **kwargs)
        return out.logits[:, -1, :].float()


def common_prefix_length(a: list[int], b: list[int]) -> int:
    """Number of leading tokens `a` and `b` share."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def supports_prefix_reuse(model: Any) -> bool:
    """Whether `model` is a decoder-only attention LM whose KV cache the reuse can build.

    Only full and sliding-window attention layers qualify: recurrent, convolutional, linear or
    chunked attention state would take in the padding between the prefix and a row's tail.
    """
    from transformers import DynamicCache, cache_utils

    config = getattr(model, "config", None)
    if config is None or getattr(config, "is_encoder_decoder", False):
        return False
    params = inspect.signature(model.forward).parameters
    if "position_ids" not in params or not ("cache" in params or "past_key_values" in params):
        return False
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    if getattr(text, "attention_chunk_size", None):
        return False
    layer_types = getattr(text, "layer_types", None) or []
    if any(t not in ("full_attention", "sliding_attention") for t in layer_types):
        return False
    plain = tuple(
        getattr(cache_utils, name)
        for name in ("DynamicLayer", "DynamicSlidingWindowLayer")
        if hasattr(cache_utils, name)
    )
    try:
        layers = getattr(DynamicCache(config=config), "layers", None) or []
    except TypeError:  # older transformers: one plain layer type
        return True
    return all(type(layer) in plain for layer in layers)


class PrefixReuse:
    """Builds `generate`'s prompt cache for one model and keeps the last shared prefix."""

    def __init__(self, model: Any, pad_id: int, device: Any = None) -> None:
        self.model = model
        self.pad_id = pad_id
        self.device = torch.device(device) if device is not None else model.device
        """Where ids, masks and positions are created (the input embedding's device)."""
        self.forward = CachedForward.of(model)
        text_config = model.config
        if hasattr(text_config, "get_text_config"):
            text_config = text_config.get_text_config()
        window = getattr(text_config, "sliding_window", None)
        self.window: int | None = int(window) if window else None
        self._stored: list[tuple[list[int], list[tuple[torch.Tensor, torch.Tensor]]]] = []
        """Kept prefixes, most recently used last: token ids and per-layer keys and values."""
        self.prompt_tokens = 0
        """Prompt tokens of all rows of all calls (what plain `generate` would prefill)."""
        self.prefilled_tokens = 0
        """Prompt tokens actually run through the model here (the rest came from reuse)."""

    @property
    def kept(self) -> list[int]:
        """Lengths of the kept prefixes, most recently used last."""
        return [len(ids) for ids, _ in self._stored]

    def _new_cache(self) -> Any:
        from transformers import DynamicCache

        try:
            return DynamicCache(config=self.model.config)
        except TypeError:  # older transformers: no per-layer-type caches
            return DynamicCache()

    def _forward(
        self, ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor, cache: Any
    ) -> None:
        """Run `ids` through the model, appending their keys and values to `cache`."""
        self.forward(ids, mask, positions, cache)
        self.prefilled_tokens += int(mask[:, -ids.shape[1] :].sum())

    def _shared_length(self, rows: list[list[int]], max_new_tokens: int) -> int:
        """Length of P: the common prefix, leaving each row at least one token of its own."""
        shared = min(len(r) for r in rows) - 1
        for row in rows[1:]:
            shared = min(shared, common_prefix_length(rows[0], row))
        if shared < MIN_SHARED_TOKENS:
            return 0
        if self.window is not None:
            longest = shared + max(len(r) - shared for r in rows) + max_new_tokens
            if longest >= self.window:
                return 0
        return shared

    def _prefix_cache(self, prefix: list[int]) -> Any:
        """A batch-1 cache holding `prefix`, reusing the kept prefix that agrees the longest."""
        cache = self._new_cache()
        reused, best = 0, None
        for entry in self._stored:
            agree = common_prefix_length(entry[0], prefix)
            if agree > reused:
                reused, best = agree, entry
        if best is None or reused < MIN_SHARED_TOKENS:
            reused, best = 0, None
        else:
            for index, (keys, values) in enumerate(best[1]):
                cache.update(keys[:, :, :reused, :], values[:, :, :reused, :], index)
        if len(prefix) > reused:
            dev = self.device
            ids = torch.tensor([prefix[reused:]], dtype=torch.long, device=dev)
            mask = torch.ones((1, len(prefix)), dtype=torch.long, device=dev)
            positions = torch.arange(reused, len(prefix), dtype=torch.long, device=dev)[None, :]
            self._forward(ids, mask, positions, cache)
        self._keep(prefix, cache, covered_by=best if reused == len(prefix) else None)
        return cache

    def _keep(self, prefix: list[int], cache: Any, covered_by: Any) -> None:
        """Remember `prefix`'s keys and values (most recent last; none kept twice)."""
        if covered_by is not None:  # a kept prefix already holds it all: just mark it used
            self._stored.remove(covered_by)
            self._stored.append(covered_by)
            return
        layers = getattr(cache, "layers", None)
        if not layers or any(getattr(layer, "keys", None) is None for layer in layers):
            return
        self._stored = [  # drop the kept prefixes the new one extends
            e for e in self._stored if common_prefix_length(e[0], prefix) < len(e[0])
        ]
        self._stored.append((list(prefix), [(layer.keys, layer.values) for layer in layers]))
        del self._stored[:-KEPT_PREFIXES]

    def prepare(self, rows: list[list[int]], copies: int, max_new_tokens: int) -> PrefillPlan:
        """Fill the cache for `rows` (token ids of each prompt), each sampled `copies` times."""
        shared = self._shared_length(rows, max_new_tokens)
        self.prompt_tokens += sum(len(r) for r in rows) * copies
        tails = [r[shared:] for r in rows]
        width = max(len(t) for t in tails)
        dev = self.device
        ids = torch.full((len(rows), shared + width), self.pad_id, dtype=torch.long, device=dev)
        mask = torch.zeros((len(rows), shared + width), dtype=torch.long, device=dev)
        ids[:, :shared] = torch.tensor(rows[0][:shared], dtype=torch.long, device=dev)
        mask[:, :shared] = 1
        for i, tail in enumerate(tails):
            ids[i, shared + width - len(tail) :] = torch.tensor(tail, dtype=torch.long, device=dev)
            mask[i, shared + width - len(tail) :] = 1
        if shared:
            cache = self._prefix_cache(rows[0][:shared])
            cache.batch_repeat_interleave(len(rows))
        else:
            cache = self._new_cache()
        if width > 1:
            positions = (mask.cumsum(-1) - 1).clamp(min=0)
            end = shared + width - 1
            self._forward(ids[:, shared:end], mask[:, :end], positions[:, shared:end], cache)
        self.prefilled_tokens += len(rows) * copies  # each row's last token: fed by `generate`
        if copies > 1:
            cache.batch_repeat_interleave(copies)
            ids = ids.repeat_interleave(copies, dim=0)
            mask = mask.repeat_interleave(copies, dim=0)
        return PrefillPlan(
            input_ids=ids, attention_mask=mask, cache=cache, cache_kw=self.forward.cache_kw
        )

    def next_token_logits(self, rows: list[list[int]]) -> torch.Tensor:
        """Logits of the token after each row (`[rows, vocab]`), prefilling as `prepare` does."""
        plan = self.prepare(rows, 1, 1)
        positions = plan.attention_mask.sum(-1, keepdim=True) - 1
        return self.forward(plan.input_ids[:, -1:], plan.attention_mask, positions, plan.cache)
