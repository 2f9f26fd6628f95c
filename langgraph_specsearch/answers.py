"""Final-answer detection, extraction and grading.

One extraction rule for every model output (`extract_answer`):

1. the contents of the last `\\boxed{...}`, if there is one;
2. else the first statement "... answer is X" (or a line `#### X`), X read up to the end of its
   sentence (a period followed by a space or the end of the line) or, when X opens a math span
   (`$...$`, `\\(...\\)`, `\\[...\\]`), up to the span's end; within X,
   - an equation's result wins: in "12 + 12 = 24 meters" the number after the last "=";
     in "3.5 = 7/2" (no plain number after it) the plain number before the first "=";
   - a number followed by words ("18 dollars", "$1,000 per month", "5, so ...") is the number.

The extracted string is cleaned: surrounding math delimiters, a trailing period, a leading
currency sign and the thousands separators of a plain number are removed.

`is_correct(predicted, gold)` grades with math-verify after putting both inside `\\boxed{}`:
math-verify reads LaTeX only inside delimiters, so a bare `\\frac{1}{2}`, `(1, 2)` or
`2\\sqrt{3}` would otherwise be parsed as a fragment (or not at all).
"""

from __future__ import annotations

import re
import threading

_STATEMENT = re.compile(r"answer is\s*:?\s*([^\n]*)", re.IGNORECASE)
_HASHES = re.compile(r"####\s*([^\n]*)")
_SENTENCE_END = re.compile(r"\.(?:\s|$)")
_NUMBER = r"-?\d(?:[\d,]*\d)?(?:\.\d+)?|-?\.\d+"
_RESULT = re.compile(rf"=\s*(?:\\?\$)?\s*({_NUMBER})(?![\d/*+^-])")
_PLAIN_NUMBER = re.compile(rf"^(?:\\?\$)?\s*({_NUMBER})$")
# a number, then the end or words ("18 dollars", "5, so he has ..."), not "2k+2" or "3, 5, 7"
_NUMBER_FIRST = re.compile(rf"^(?:\\?\$)?\s*({_NUMBER})(?=(?:\s+|\s*[,;:]\s*)[A-Za-z]|$)")
_THOUSANDS = re.compile(r"^-?\d{1,3}(?:,\d{3})+(?:\.\d+)?$")
_SPANS = (("$", "$"), ("\\(", "\\)"), ("\\[", "\\]"))


def _clean(answer: str) -> str | None:
    """Strip math delimiters, spaces, a trailing period, a currency sign, thousands commas."""
    text = answer.strip().rstrip(".").strip()
    for left, right in _SPANS:
        if len(text) > len(left) + len(right) and text.startswith(left) and text.endswith(right):
            text = text[len(left) : -len(right)].strip()
    text = re.sub(r"^\\?\$\s*(?=[-\d.])", "", text)
    if _THOUSANDS.match(text):
        text = text.replace(",", "")
    return text or None


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


def _math_span(statement: str) -> str | None:
    """The math span the statement opens with (`$x$`, `\\(x\\)`, `\\[x\\]`), else None."""
    for left, right in _SPANS:
        if statement.startswith(left) and not re.match(r"\\?\$\s*[-\d.]", statement):
            end = statement.find(right, len(left))
            if end > 0:
                return statement[len(left) : end]
    return None


def _read_statement(statement: str) -> str | None:
    """The answer in the text after "answer is" (or "####"), by the module's rule."""
    statement = statement.strip()
    span = _math_span(statement)
    if span is not None:
        return _clean(span)
    sentence = _SENTENCE_END.split(statement, maxsplit=1)[0].strip()
    if "=" in sentence:
        results = _RESULT.findall(sentence)
        if results:
            return _clean(results[-1])
        before = _PLAIN_NUMBER.match(sentence.split("=", 1)[0].strip())
        if before:
            return _clean(before.group(1))
    number = _NUMBER_FIRST.match(sentence)
    if number:
        return _clean(number.group(1))
    return _clean(sentence)


def extract_answer(text: str) -> str | None:
    """The final answer a thought states, or None if it states none (see the module rule)."""
    boxed = _boxed(text)
    if boxed is not None:
        return _clean(boxed)
    for pattern in (_STATEMENT, _HASHES):
        for match in pattern.finditer(text):
            answer = _read_statement(match.group(1))
            if answer is not None:
                return answer
    return None


def is_terminal(text: str) -> bool:
    """Whether a thought ends the solution by stating a final answer."""
    return extract_answer(text) is not None


def gsm8k_gold(answer_field: str) -> str:
    """The gold answer after the last '####' of a GSM8K record."""
    return answer_field.rsplit("####", 1)[-1].strip().replace(",", "")


def math_gold(record: dict[str, str]) -> str:
    """The gold answer of a MATH record: its `answer` field, else its solution's last box."""
    if record.get("answer"):
        return record["answer"]
    boxed = _boxed(record.get("solution", ""))
    if boxed is None:
        raise ValueError("MATH record has neither an 'answer' nor a boxed solution")
    return boxed


def for_math_verify(answer: str) -> str:
    """The answer as math-verify reads it whole: inside `\\boxed{}` unless already delimited."""
    text = answer.strip()
    if "\\boxed" in text or (text.startswith("$") and text.endswith("$") and len(text) > 1):
        return text
    cleaned = _clean(text)
    return f"\\boxed{{{cleaned if cleaned is not None else text}}}"


def is_correct(predicted: str | None, gold: str) -> bool:
    """Grade with math-verify: numbers, fractions vs decimals, tuples, intervals, radicals, sets.

    Both sides are put inside `\\boxed{}` (see `for_math_verify`). Outside the main thread
    math-verify's signal-based timeouts are off (they only work there).
    """
    if predicted is None or not predicted.strip():
        return False
    from math_verify import parse, verify

    main = threading.current_thread() is threading.main_thread()
    timeout = 5 if main else None
    parsed_gold = parse(for_math_verify(gold), parsing_timeout=timeout)  # type: ignore[arg-type]
    parsed_pred = parse(for_math_verify(predicted), parsing_timeout=timeout)  # type: ignore[arg-type]
    if not parsed_gold or not parsed_pred:
        return False
    return bool(verify(parsed_gold, parsed_pred, timeout_seconds=timeout))
