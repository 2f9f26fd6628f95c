"""Final-answer detection, extraction and grading."""

from __future__ import annotations

import re

_PATTERNS = [
    re.compile(r"answer is[:\s]*\$?\s*(-?[\d,]*\.?\d+)", re.IGNORECASE),
    re.compile(r"####\s*\$?\s*(-?[\d,]*\.?\d+)"),
    re.compile(r"answer is[:\s]*([^\n.]+)", re.IGNORECASE),
]
_STATED = re.compile(r"answer is[:\s]*([^\n]*)", re.IGNORECASE)
_SENTENCE_END = re.compile(r"\.(?:\s|$)")
_RESULT = re.compile(r"=\s*\$?\s*(-?[\d,]*\.?\d+)(?![\d/*+^-])")
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")


def _clean(answer: str) -> str | None:
    """Strip spaces, a trailing period and thousands separators; None if nothing is left."""
    return _THOUSANDS.sub("", answer.strip().rstrip(".")) or None


def _boxed(text: str) -> str | None:
    """The contents of the last \\boxed{...}, nested braces included."""
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    depth, begin = 0, start + len("\\boxed{")
    for i in range(begin, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            if depth == 0:
                return text[begin:i]
            depth -= 1
    return None


def _equation_result(text: str) -> str | None:
    """In "The answer is 12 + 12 = 24 meters.", the result after the sentence's last "="."""
    stated = _STATED.search(text)
    if stated is None:
        return None
    sentence = _SENTENCE_END.split(stated.group(1), maxsplit=1)[0]
    results = _RESULT.findall(sentence)
    return _clean(results[-1]) if results else None


def extract_answer(text: str) -> str | None:
    """The final answer a thought states, or None if it states none."""
    boxed = _boxed(text)
    if boxed is not None:
        return _clean(boxed)
    result = _equation_result(text)
    if result is not None:
        return result
    for pattern in _PATTERNS:
        match = pattern.search(text)
        if match:
            return _clean(match.group(1))
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
