"""Unit tests for the PRMs: arithmetic checker, LLM judge, combined scoring, aggregation."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from langgraph_specsearch.prm import (
    PRM,
    ArithmeticPRM,
    CombinedPRM,
    JudgePRM,
    aggregate,
    check_step,
)
from langgraph_specsearch.prm.arithmetic import evaluate
from langgraph_specsearch.prompts import ChatFormat, FewShotFormat, PromptFormat, chatml_template

FIXTURE = Path(__file__).parent / "fixtures" / "processbench_gsm8k_sample.json"


class LogprobBackend:
    """Returns `script(prompt)` as the candidates' logprobs and records every call."""

    def __init__(
        self, script: Callable[[str], dict[str, float]], prompt_format: PromptFormat
    ) -> None:
        self.name = "logprob-script"
        self.prompt_format = prompt_format
        self.script = script
        self.calls: list[tuple[list[str], list[str]]] = []

    async def agenerate(self, prompts: Sequence[str], *, n: int, params: object) -> list[list]:
        raise AssertionError("a judge must not generate")

    async def anext_token_logprobs(
        self, prompts: Sequence[str], candidates: Sequence[str]
    ) -> list[dict[str, float]]:
        self.calls.append((list(prompts), list(candidates)))
        return [self.script(p) for p in prompts]


def by_step(table: dict[str, tuple[float, float]]) -> Callable[[str], dict[str, float]]:
    """Logprobs (yes, no) chosen by which key occurs in the judged step."""

    def script(prompt: str) -> dict[str, float]:
        new_step = prompt.split("New step:")[1]
        for key, (yes, no) in table.items():
            if key in new_step:
                return {"Yes": yes, "No": no}
        return {"Yes": math.log(0.5), "No": math.log(0.5)}

    return script


# ---------------------------------------------------------------- arithmetic checker

TRUE_STEPS = [
    "Natalia sold 48/2 = <<48/2=24>>24 clips in May.",
    "She has 16 - 3 - 4 = 9 eggs left.",
    "Half of them is 48/2 = 24.",
    "The tip is 0.2 x 50 = $10.",
    "In a year she earns 12*52=624 dollars.",
    "So 2 × 16 = 32 legs.",
    "Each pays $1,200 / 4 = $300.",
    "The discount is 20% of 50 = 10 dollars.",
    "Check: 2*3 = 6 = 3+3.",
    "Each gets 10/3 = 3.33 pizzas.",
    "Two thirds is 2/3 = 0.67.",
    "She ate 3 apples - 2 = 1.",
    "So \\(4 \\times 5 = 20\\) cats were carried away.",
    "\\[ \\frac{3}{5} \\times 30 = 18 \\]",
    "Total: 7995 (total cookies) - 2595 (rainbow cookies) = 5400.",
    "He pays 3 plates × $6.00/plate = $18.00.",
    "That is 50 * 20% = 10 and 0.2*100 = 20%.",
    "She has (3 + 4 = 7) apples.",
]
FALSE_STEPS = [
    "Natalia sold 48/2 = <<48/2=25>>25 clips in May.",
    "She has 16 - 3 - 4 = 8 eggs left.",
    "The tip is 0.2 x 50 = $12.",
    "In a year she earns 12*52=634 dollars.",
    "So 2 × 16 = 30 legs.",
    "Each pays $1,200 / 4 = $350.",
    "Check: 2*3 = 6 = 3+4.",
    "Each gets 10/3 = 3.5 pizzas.",
    "The total is 495 students * $15/student = $7455.",
    "Total: 7995 (total cookies) - 2595 (rainbow cookies) = 4500.",
]
NO_ARITHMETIC = [
    "First, find how many eggs she sells.",
    "Let x be the number of apples, so 4x = 100.",
    "1 hour = 60 minutes.",
    "3 times 4 + 2 = 14 is how the problem reads it.",
    "2 boxes of 12 = 24 eggs.",
    "6 = 2 dozen.",
    "2^{3} = 8.",
    "She ate x - 2 = 1 more.",
    "The answer is \\(\\boxed{30}\\).",
    "\\(2250 \\div 360 = 6\\) full turns with 90 degrees remaining.",
    "The midpoint is \\(\\left(\\frac{5+7}{2},\\frac{3+4}{2}\\right) = (6, \\frac{7}{2})\\).",
]


@pytest.mark.parametrize("step", TRUE_STEPS)
def test_true_equations_hold(step: str) -> None:
    check = check_step(step)
    assert check.checkable, step
    assert check.all_hold, [(e.lhs, e.rhs) for e in check.equations]


@pytest.mark.parametrize("step", FALSE_STEPS)
def test_false_equations_are_flagged(step: str) -> None:
    assert check_step(step).n_false >= 1, step


@pytest.mark.parametrize("step", NO_ARITHMETIC)
def test_steps_without_checkable_arithmetic(step: str) -> None:
    assert not check_step(step).checkable, check_step(step).equations


def test_chain_counts_every_link() -> None:
    check = check_step("2*3 = 6 = 3+4")
    assert [(e.lhs, e.rhs, e.holds) for e in check.equations] == [
        ("2*3", "6", True),
        ("6", "3+4", False),
    ]
    assert check.correct_fraction == 0.5


def test_calculator_annotation_and_text_counted_once() -> None:
    assert len(check_step("48/2 = <<48/2=24>>24 clips").equations) == 1


def test_evaluate_rejects_anything_but_arithmetic() -> None:
    assert evaluate("(1 + 2) * 3 / 4") == 2.25
    assert evaluate("0.1 + 0.2") == evaluate("0.3")
    for bad in ["__import__('os')", "2 ** 10", "7 // 2", "1 / 0", "abs(-1)", "", "1" * 300]:
        with pytest.raises(ValueError):
            evaluate(bad)


def test_rounding_tolerance_is_one_unit_of_the_last_decimal() -> None:
    assert check_step("10/3 = 3.33").all_hold
    assert check_step("10/3 = 3.3").all_hold
    assert not check_step("10/3 = 3.31").all_hold
    assert not check_step("7/2 = 4").all_hold  # integers are exact


async def test_arithmetic_prm_scores() -> None:
    prm = ArithmeticPRM(neutral=0.4)
    scores = await prm.ascore_last(
        "q",
        [
            ["Start.", "16 - 3 - 4 = 9"],
            ["No numbers here."],
            ["2*3 = 6 = 3+4"],  # one of two holds
            ["2*3 = 7"],
            [],
        ],
    )
    assert scores == [1.0, 0.4, 0.25, 0.0, 0.4]
    assert isinstance(prm, PRM)


async def test_arithmetic_prm_ascore_every_step() -> None:
    prm = ArithmeticPRM()
    assert await prm.ascore("q", [["1+1 = 2", "words", "2+2 = 5"]]) == [[1.0, 0.5, 0.0]]


# ---------------------------------------------------------------- judge


async def test_judge_softmax_over_yes_no_and_one_call() -> None:
    backend = LogprobBackend(
        by_step({"good": (math.log(0.6), math.log(0.2)), "bad": (-3.0, -1.0)}),
        FewShotFormat(exemplars=()),
    )
    judge = JudgePRM(backend)
    scores = await judge.ascore_last("How many?", [["a", "good step"], ["bad step"], ["neither"]])
    assert scores[0] == pytest.approx(0.75)
    assert scores[1] == pytest.approx(1 / (1 + math.exp(2.0)))
    assert scores[2] == pytest.approx(0.5)
    assert len(backend.calls) == 1
    prompts, candidates = backend.calls[0]
    assert candidates == ["Yes", "No"] and len(prompts) == 3
    assert all(p.endswith("Is the new step correct? Answer Yes or No.\nAnswer:") for p in prompts)
    assert judge.name == "judge:logprob-script"
    assert isinstance(judge, PRM)


async def test_judge_missing_or_infinite_logprobs() -> None:
    backend = LogprobBackend(lambda p: {"Yes": -math.inf, "No": -2.0}, FewShotFormat())
    assert await JudgePRM(backend).ascore_last("q", [["x"]]) == [0.0]
    backend = LogprobBackend(lambda p: {}, FewShotFormat())
    assert await JudgePRM(backend).ascore_last("q", [["x"]]) == [0.5]


async def test_judge_chat_format_and_context_truncation() -> None:
    backend = LogprobBackend(lambda p: {"Yes": 0.0, "No": -math.inf}, ChatFormat(chatml_template))
    judge = JudgePRM(backend, max_previous=2)
    steps = [f"step number {i}" for i in range(6)]
    assert await judge.ascore_last("Q?", [steps]) == [1.0]
    (prompt,), _ = backend.calls[0]
    assert prompt.startswith("<|im_start|>system\n")
    assert prompt.endswith("Answer Yes or No.<|im_end|>\n<|im_start|>assistant\n")
    assert "step number 3" in prompt and "step number 4" in prompt
    assert "step number 2" not in prompt
    assert prompt.split("New step:")[1].strip().startswith("step number 5")


async def test_judge_ascore_batches_all_prefixes() -> None:
    backend = LogprobBackend(lambda p: {"Yes": 0.0, "No": 0.0}, FewShotFormat())
    scores = await JudgePRM(backend).ascore("q", [["a", "b"], ["c"]])
    assert scores == [[0.5, 0.5], [0.5]]
    assert len(backend.calls) == 1 and len(backend.calls[0][0]) == 3


# ---------------------------------------------------------------- combined


async def test_combined_weighting_and_cap() -> None:
    backend = LogprobBackend(
        by_step({"3+4": (math.log(0.9), math.log(0.1)), "": (math.log(0.8), math.log(0.2))}),
        FewShotFormat(),
    )
    prm = CombinedPRM(JudgePRM(backend), ArithmeticPRM(), weight=0.25)
    scores = await prm.ascore_last(
        "q",
        [
            ["16 - 3 - 4 = 9"],  # holds: 0.75 * 0.8 + 0.25 * 1.0
            ["First, read the problem."],  # no arithmetic: judge alone
            ["2*3 = 6 = 3+4"],  # false: 0.75 * 0.9 + 0.25 * 0.25 = 0.7375, capped
            ["2*3 = 7"],  # false: 0.75 * 0.8 + 0 = 0.6, capped
        ],
    )
    assert scores == pytest.approx([0.85, 0.8, 0.2, 0.2])
    assert len(backend.calls) == 1 and len(backend.calls[0][0]) == 4


async def test_combined_cap_keeps_lower_scores() -> None:
    backend = LogprobBackend(lambda p: {"Yes": math.log(0.1), "No": math.log(0.9)}, FewShotFormat())
    prm = CombinedPRM(JudgePRM(backend), weight=0.5)
    assert await prm.ascore_last("q", [["2*3 = 7"]]) == pytest.approx([0.05])
    assert prm.name == "judge:logprob-script+arithmetic"


# ---------------------------------------------------------------- aggregation


def test_aggregate() -> None:
    scores = [0.9, 0.5, 0.8]
    assert aggregate(scores, "last") == 0.8
    assert aggregate(scores, "min") == 0.5
    assert aggregate(scores, "prod") == pytest.approx(0.36)
    assert aggregate(scores, "mean") == pytest.approx(2.2 / 3)
    assert aggregate([], "min") == 0.0
    with pytest.raises(ValueError):
        aggregate(scores, "max")  # type: ignore[arg-type]


# ---------------------------------------------------------------- ProcessBench sample


def _processbench() -> list[dict]:
    return json.loads(FIXTURE.read_text())


def test_processbench_sample_shape() -> None:
    records = _processbench()
    assert len(records) == 20
    assert sum(r["label"] == -1 for r in records) == 10


def test_processbench_no_false_alarm_before_the_first_error() -> None:
    """Steps the annotators judged correct never contain an equation the checker calls false."""
    for record in _processbench():
        label = record["label"]
        correct_steps = record["steps"] if label == -1 else record["steps"][:label]
        for step in correct_steps:
            check = check_step(step)
            assert check.all_hold, (record["id"], [e for e in check.equations if not e.holds])


def test_processbench_flags_some_labelled_errors() -> None:
    flagged = [
        r["id"]
        for r in _processbench()
        if r["label"] >= 0 and check_step(r["steps"][r["label"]]).n_false
    ]
    assert len(flagged) >= 3
