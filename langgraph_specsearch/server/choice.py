"""How a row's next token is chosen: penalties, temperature, argmax or a seeded sample.

Reported log-probabilities are `log_softmax(logits / temperature)` (raw logits when greedy),
before top-k/top-p filtering, so they are finite.
"""

from __future__ import annotations

import math

import torch

from langgraph_specsearch.server.rows import Row
from langgraph_specsearch.server.speculative import FLOOR_LOGPROB, sampling_probs


def choose_token(row: Row, scores: torch.Tensor, seen: torch.Tensor | None) -> int:
    """The row's next token (argmax or a sample); sets `pending_lp` / `pending_top`.

    `seen`: the ids the row's repetition / frequency penalties apply to (None: no penalty).
    """
    logits = scores.float()
    if seen is not None:
        logits = logits.clone()
        if row.repetition_penalty != 1.0:
            picked = logits[seen]
            logits[seen] = torch.where(
                picked < 0, picked * row.repetition_penalty, picked / row.repetition_penalty
            )
        if row.frequency_penalty != 0.0 and row.tokens:
            counts = torch.bincount(
                torch.tensor(row.tokens, dtype=torch.long, device=logits.device),
                minlength=logits.shape[-1],
            ).to(logits.dtype)
            logits = logits - row.frequency_penalty * counts
    if row.do_sample:
        logits = logits / max(row.temperature, 1e-4)
    lp = torch.log_softmax(logits, dim=-1)
    if not bool(torch.isfinite(lp).any()):  # extreme penalties overflowed: drop them
        lp = torch.log_softmax(scores.float(), dim=-1)
    lp = torch.nan_to_num(lp, nan=-math.inf, neginf=FLOOR_LOGPROB)
    token = sample_token(lp, row) if row.do_sample else int(torch.argmax(lp))
    row.pending_lp = float(lp[token])
    row.pending_top = top_logprobs(lp, row.top_n)
    return token


def top_logprobs(logprobs: torch.Tensor, n: int) -> list[tuple[int, float]]:
    """The `n` most likely (token id, log-probability) pairs."""
    if n <= 0:
        return []
    values, indices = torch.topk(logprobs, n)
    return [(int(i), float(v)) for i, v in zip(indices.tolist(), values.tolist(), strict=True)]


def sample_token(lp: torch.Tensor, row: Row) -> int:
    """Sample from `lp` after top-k / top-p filtering, with the row's own generator."""
    return int(torch.multinomial(sampling_probs(lp, row), 1, generator=row.generator))
