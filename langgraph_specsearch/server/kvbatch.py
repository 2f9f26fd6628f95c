"""The running batch of iteration-level ("continuous") batching: rows, KV cache, mask, positions.

Every row is left-padded to the batch's common cache length: `mask[i, j]` says whether cache
slot `j` of row `i` holds a real token, `positions[i]` is the position id of the row's next
token (the number of real tokens it has) and `last[i]` the token to feed next. All rows append
at the same cache slot, so the distance between a query and each real key is the one the row
would have alone (causal and sliding-window masks, which index cache slots, stay right).

- `select(keep)` drops finished rows (the cache's batch dimension, mask, positions) and the
  leading cache columns that are padding for every remaining row;
- `merge(other)` appends a freshly prefilled group: the shorter of the two caches (and masks)
  is left-padded with zeros, then both are concatenated along the batch dimension.

Only caches whose layers are all plain `DynamicLayer`s (`[batch, heads, slots, head_dim]`
keys and values) are handled; `supports_cache` tells.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer


def supports_cache(cache: Any, slots: int) -> bool:
    """Whether `cache` (after a forward of `slots` tokens) is one `select`/`merge` can edit."""
    if type(cache) is not DynamicCache:
        return False
    layers = getattr(cache, "layers", None)
    if not layers:
        return False
    for layer in layers:
        if type(layer) is not DynamicLayer or not layer.is_initialized:
            return False
        for states in (layer.keys, layer.values):
            if states is None or states.dim() != 4 or states.shape[-2] != slots:
                return False
    return True


@dataclass
class RunningBatch:
    """Rows decoding together (see the module docstring)."""

    rows: list[Any]
    cache: DynamicCache
    mask: torch.Tensor
    positions: torch.Tensor
    last: torch.Tensor

    def __len__(self) -> int:
        return len(self.rows)

    def select(self, keep: list[int]) -> None:
        """Keep only the rows at `keep` (in that order), then trim all-padding columns."""
        if len(keep) != len(self.rows):
            index = torch.tensor(keep, dtype=torch.long, device=self.mask.device)
            for layer in _layers(self.cache):
                layer.keys = layer.keys.index_select(0, index)
                layer.values = layer.values.index_select(0, index)
            self.mask = self.mask.index_select(0, index)
            self.positions = self.positions.index_select(0, index)
            self.last = self.last.index_select(0, index)
            self.rows = [self.rows[i] for i in keep]
        if not self.rows:
            return
        used = self.mask.any(dim=0).nonzero()
        first = int(used[0]) if len(used) else self.mask.shape[1]
        if first > 0:
            for layer in _layers(self.cache):
                layer.keys = layer.keys[:, :, first:, :]
                layer.values = layer.values[:, :, first:, :]
            self.mask = self.mask[:, first:]

    def merge(self, other: RunningBatch) -> None:
        """Append `other`'s rows (left-padding whichever cache is shorter)."""
        width = max(self.mask.shape[1], other.mask.shape[1])
        for mine, theirs in zip(_layers(self.cache), _layers(other.cache), strict=True):
            mine.keys = torch.cat([_pad(mine.keys, width), _pad(theirs.keys, width)], dim=0)
            mine.values = torch.cat([_pad(mine.values, width), _pad(theirs.values, width)], dim=0)
        self.mask = torch.cat([_pad_mask(self.mask, width), _pad_mask(other.mask, width)], dim=0)
        self.positions = torch.cat([self.positions, other.positions])
        self.last = torch.cat([self.last, other.last])
        self.rows = self.rows + other.rows


def _layers(cache: DynamicCache) -> list[Any]:
    """The cache's layers (all `DynamicLayer`s: `supports_cache` checked the model)."""
    return list(cache.layers)


def _pad(states: torch.Tensor, width: int) -> torch.Tensor:
    """Left-pad `[batch, heads, slots, dim]` states with zeros to `width` slots."""
    missing = width - states.shape[-2]
    return F.pad(states, (0, 0, missing, 0)) if missing > 0 else states


def _pad_mask(mask: torch.Tensor, width: int) -> torch.Tensor:
    missing = width - mask.shape[1]
    return F.pad(mask, (missing, 0)) if missing > 0 else mask
