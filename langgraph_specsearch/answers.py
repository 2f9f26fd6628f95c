"""Final-answer detection, extraction and grading."""

from __future__ import annotations

import re

_PATTERNS = [
    re.compile(r"answer is[:\s]*\$?\\boxed\{([^{}]+)\}", re.IGNORECASE),
    re.compile(r"\\boxed\{([^{}]+)\}"),
    re.compile(r"answer is[:\s]*\$?\s*(-?[\d,]*\.?\d+)", re.IGNORECASE),
    re.compile(r"####\s*\$?\s*(-?[\d,]*\.?\d+)"),
    re.compile(r"answer is[:\s]*([^\n.]+)", re.IGNORECASE),
]


def extract_answer(text: str) -> str | None:
    """The final answer a thought states, or None if it states none."""
    for pattern in _PATTERNS:
        match = pattern.search(text)
        if match:
            answer = match.group(1).strip().rstrip(".").replace(",", "")
            return answer or None
    return None


def is_terminal(text: str) -> bool:
    """Whether a thought ends the solution by stating a final answer."""
    return extract_answer(text) is not None


def gsm8k_gold(answer_field: str) -> str:
    """The gold answer after the last '####' of a GSM8K record."""
    return answer_field.rsplit("####", 1)[-1].strip().replace(",", "")


def is_correct(predicted: str | None, gold: str) -> bool:
    """Grade with math-verify (handles numbers, fractions, LaTeX)."""
    if predicted is None:
        return False
    from math_verify import parse, verify

    return bool(verify(parse(gold), parse(predicted)))
