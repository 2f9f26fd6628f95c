"""The JSON of TGI's responses built from finished (or streaming) rows."""

from __future__ import annotations

import json
from typing import Any

from langgraph_specsearch.server.rows import Row
from langgraph_specsearch.server.schema import token_json


def speculation_json(row: Row) -> dict[str, int]:
    """The extra details of a speculatively decoded row (nothing for the others)."""
    if row.accepted_draft_tokens is None:
        return {}
    return {
        "accepted_draft_tokens": row.accepted_draft_tokens,
        "target_calls": row.target_calls,
    }


def tokens_json(special_ids: set[int], row: Row) -> list[dict[str, Any]]:
    """TGI's `tokens` of a row."""
    return [
        token_json(special_ids, t, s, lp)
        for t, s, lp in zip(row.tokens, row.texts, row.logprobs, strict=True)
    ]


def top_json(special_ids: set[int], tokenizer: Any, row: Row) -> list[list[dict[str, Any]]]:
    """TGI's `top_tokens` of a row (empty without `top_n_tokens`)."""
    if not row.top_n:
        return []
    return [
        [token_json(special_ids, t, tokenizer.decode([t]), lp) for t, lp in step]
        for step in row.top
    ]


def sse(payload: dict[str, Any]) -> bytes:
    """One server-sent event carrying `payload` as JSON."""
    return f"data:{json.dumps(payload)}\n\n".encode()
