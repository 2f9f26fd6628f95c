"""Final-answer extraction and grading."""

from __future__ import annotations

import pytest

from langgraph_specsearch.answers import extract_answer, gsm8k_gold, is_correct, is_terminal


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The answer is 72.", "72"),
        ("The answer is $1,000.", "1000"),
        ("So the answer is: -3.5", "-3.5"),
        ("The answer is 12 + 12 = 24 meters.", "24"),
        ("The answer is 9 * 60 = $540.", "540"),
        ("The answer is 5. Check: 2 + 3 = 6.", "5"),  # an equation after the sentence: ignored
        ("The answer is 3.5 = 7/2.", "3.5"),  # "= 7/2" is not a result
        ("The final answer is \\boxed{\\frac{1}{2}}.", "\\frac{1}{2}"),
        ("#### 18", "18"),
        ("The answer is \\boxed{(1, 2)}.", "(1, 2)"),  # a tuple keeps its comma
        ("The answer is eighteen.", "eighteen"),
        ("16 - 3 - 4 = 9 eggs are left.", None),
    ],
)
def test_extract_answer(text: str, expected: str | None) -> None:
    assert extract_answer(text) == expected
    assert is_terminal(text) is (expected is not None)


def test_grading_with_math_verify() -> None:
    assert gsm8k_gold("9*60=<<9*60=540>>540 meters\n#### 1,540") == "1540"
    assert is_correct("540", "540")
    assert is_correct("540.0", "540")
    assert not is_correct("54", "540")
    assert not is_correct(None, "540")
