"""Final-answer extraction and grading (cases checked by hand)."""

from __future__ import annotations

import threading

import pytest

from langgraph_specsearch.answers import (
    extract_answer,
    for_math_verify,
    gsm8k_gold,
    is_correct,
    is_terminal,
    math_gold,
)


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
        ("#### 1,540", "1540"),
        ("The answer is \\boxed{(1, 2)}.", "(1, 2)"),  # a tuple keeps its comma
        ("The answer is eighteen.", "eighteen"),
        ("16 - 3 - 4 = 9 eggs are left.", None),
        # GSM8K-style: currency, thousands separators, units
        ("The answer is 18 dollars.", "18"),
        ("The answer is \\$1,250.", "1250"),
        ("The answer is $18.50.", "18.50"),
        ("The answer is 1,000,000 people.", "1000000"),
        ("The answer is 5, so he has 5 apples left.", "5"),
        ("The answer is 1.5 hours.", "1.5"),
        # MATH-style: math spans, tuples, intervals, radicals, choices, expressions
        ("The answer is $\\frac{3}{4}$ of the cake.", "\\frac{3}{4}"),
        ("The answer is \\(x = 5\\).", "x = 5"),
        ("The answer is $0.5$.", "0.5"),
        ("The answer is $1,000$.", "1000"),
        ("The answer is [2, 5).", "[2, 5)"),
        ("The answer is 3, 5, 7.", "3, 5, 7"),
        ("The answer is 2\\sqrt{3}.", "2\\sqrt{3}"),
        ("The answer is (C).", "(C)"),
        ("The answer is 2k+2.", "2k+2"),
        ("The answer is 6 - 5i.", "6 - 5i"),
        (
            "Final Answer: The final answer is $(3, \\frac{\\pi}{2})$. I hope it is correct.",
            "(3, \\frac{\\pi}{2})",
        ),
        ("The answer is", None),
    ],
)
def test_extract_answer(text: str, expected: str | None) -> None:
    assert extract_answer(text) == expected
    assert is_terminal(text) is (expected is not None)


@pytest.mark.parametrize(
    ("predicted", "gold"),
    [
        ("540", "540"),
        ("540.0", "540"),
        ("1,000", "1000"),
        ("0.5", "\\frac{1}{2}"),
        ("1/2", "\\frac12"),
        ("\\dfrac{17}{50}", "0.34"),
        ("(1, 2)", "(1,2)"),
        ("(6, 31, -1)", "(6,31,-1)"),
        ("[2, 5)", "[2,5)"),
        ("\\sqrt{12}", "2\\sqrt{3}"),
        ("3\\sqrt{13}", "3\\sqrt{13}"),
        ("6-5i", "6 - 5i"),
        ("7, 5, 3", "3, 5, 7"),
        ("C", "\\text{(C)}"),
        ("x = 5", "5"),
        ("Evelyn", "\\text{Evelyn}"),
        ("\\frac{270}{7}", "\\frac{270}7\\text{ degrees}"),
        ("1000", "1,\\!000"),
        ("\\left( 3, \\frac{\\pi}{2} \\right)", "\\left( 3, \\frac{\\pi}{2} \\right)"),
    ],
)
def test_equivalent_forms_are_correct(predicted: str, gold: str) -> None:
    assert is_correct(predicted, gold)


@pytest.mark.parametrize(
    ("predicted", "gold"),
    [
        ("54", "540"),
        (None, "540"),
        ("", "540"),
        ("(1, 3)", "(1,2)"),
        ("[2, 5]", "[2,5)"),  # closed vs half-open interval
        ("\\sqrt{13}", "3\\sqrt{13}"),
        ("6+5i", "6 - 5i"),
        ("B", "\\text{(C)}"),
        ("0.33", "\\frac{1}{3}"),
    ],
)
def test_different_answers_are_wrong(predicted: str | None, gold: str) -> None:
    assert not is_correct(predicted, gold)


def test_gsm8k_texts_grade_end_to_end() -> None:
    gold = gsm8k_gold("9*60=<<9*60=540>>540 meters\n#### 1,540")
    assert gold == "1540"
    for text in ("The answer is $1,540.", "The answer is 1540 meters.", "#### 1,540"):
        assert is_correct(extract_answer(text), gold)
    assert not is_correct(extract_answer("The answer is 154 meters."), gold)


def test_math_gold_and_delimiters() -> None:
    assert math_gold({"answer": "\\frac{14}{3}", "solution": "\\boxed{0}"}) == "\\frac{14}{3}"
    assert math_gold({"solution": "so $\\boxed{\\{1, 2\\}}$."}) == "\\{1, 2\\}"
    with pytest.raises(ValueError):
        math_gold({"solution": "no box"})
    assert for_math_verify("(1,2)") == "\\boxed{(1,2)}"
    assert for_math_verify("$x$") == "$x$"


def test_grading_outside_the_main_thread() -> None:
    # math-verify's signal timeouts only work in the main thread: off elsewhere
    out: list[bool] = []
    worker = threading.Thread(target=lambda: out.append(is_correct("\\frac12", "0.5")))
    worker.start()
    worker.join()
    assert out == [True]
