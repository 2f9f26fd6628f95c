"""Static batching: models whose KV cache the continuous path cannot edit (see `engine.py`).

One left-padded `model.generate` per group, with each row's own token choice (`RowChooser`)
and stops (`RowStopper`); such a batch runs until its last row stops.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import torch
from transformers import (
    GenerationConfig,
    LogitsProcessor,
    LogitsProcessorList,
    StoppingCriteria,
    StoppingCriteriaList,
)

from langgraph_specsearch.server.rows import Row

if TYPE_CHECKING:
    from langgraph_specsearch.server.engine import Engine


def generate_static(engine: Engine, rows: list[Row]) -> None:
    """One left-padded `model.generate` for the rows (worker thread)."""
    input_ids, mask = engine._left_padded(rows)
    config = GenerationConfig(
        max_new_tokens=max(r.max_new_tokens for r in rows),
        do_sample=False,
        pad_token_id=engine.pad_id,
        eos_token_id=sorted(engine.eos_ids) or None,
    )
    with torch.inference_mode():
        engine.model.generate(
            input_ids=input_ids,
            attention_mask=mask,
            generation_config=config,
            logits_processor=LogitsProcessorList([RowChooser(engine, rows)]),
            stopping_criteria=StoppingCriteriaList([RowStopper(engine, rows)]),
        )
    for row in rows:
        if row.finish_reason is None:
            row.finish_reason = "length"


class RowChooser(LogitsProcessor):
    """Picks each active row's next token itself and returns a one-hot score."""

    def __init__(self, engine: Engine, rows: list[Row]) -> None:
        self.engine = engine
        self.rows = rows

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        out = torch.full_like(scores, -math.inf)
        for i, row in enumerate(self.rows):
            if row.finish_reason is not None:
                out[i, self.engine.pad_id] = 0.0
                continue
            seen = None
            if row.repetition_penalty != 1.0 or row.frequency_penalty != 0.0:
                seen = input_ids[i][-(len(row.ids) + len(row.tokens)) :]
            try:
                out[i, self.engine._choose(row, scores[i], seen)] = 0.0
            except Exception as exc:  # noqa: BLE001 - this row's request fails, not the batch
                row.error = exc
                row.finish_reason = "error"
                out[i, self.engine.pad_id] = 0.0
        return out  # type: ignore[return-value]


class RowStopper(StoppingCriteria):
    """Records each row's new token and applies its stop sequences and length."""

    def __init__(self, engine: Engine, rows: list[Row]) -> None:
        self.engine = engine
        self.rows = rows

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **_: Any) -> Any:
        done = []
        for i, row in enumerate(self.rows):
            if row.finish_reason is None:
                self.engine._push(row, int(input_ids[i, -1]), row.pending_lp, row.pending_top)
            done.append(row.finish_reason is not None)
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)
