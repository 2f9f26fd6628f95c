"""Token limits as TGI's launcher derives them, and checks of the server's numeric options."""

from __future__ import annotations

from typing import Any


def token_limits(
    max_input_tokens: int | None, max_total_tokens: int | None, positions: Any
) -> tuple[int, int]:
    """(max_input_tokens, max_total_tokens) as TGI's launcher derives them (see `create_app`)."""
    if max_total_tokens is None:
        max_total_tokens = max(4096, (max_input_tokens or 0) + 1)
        if isinstance(positions, int) and positions > 1:
            max_total_tokens = min(max_total_tokens, positions)
    elif isinstance(positions, int) and max_total_tokens > positions:
        max_total_tokens = positions
    if max_input_tokens is None:
        max_input_tokens = max_total_tokens - 1
    if max_total_tokens < 2:
        raise ValueError(f"--max-total-tokens must be at least 2, got {max_total_tokens}")
    if max_input_tokens < 1:
        raise ValueError(f"--max-input-tokens must be at least 1, got {max_input_tokens}")
    if max_input_tokens >= max_total_tokens:
        raise ValueError(
            f"--max-input-tokens ({max_input_tokens}) must be < --max-total-tokens"
            f" ({max_total_tokens})"
        )
    return max_input_tokens, max_total_tokens


def check_positive(**options: float | None) -> None:
    """Raise a one-line ValueError naming the first option (as its flag) that is below 1."""
    for name, value in options.items():
        if value is not None and not value >= 1:
            raise ValueError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
