"""A deterministic PRM that checks the arithmetic a step states.

`ArithmeticPRM` extracts the equations written in a step (GSM8K calculator annotations
such as `<<48/2=24>>`, plain chains such as `16 - 3 - 4 = 9` or `2*3 = 6 = 3+3`, LaTeX
such as `\\(4 \\times 5 = 20\\)` or `\\frac{3}{5} \\times 30 = 18`) and verifies each one
exactly. Expressions are parsed with `ast` and only numbers, `+ - * /`, unary signs and
parentheses are accepted; nothing is ever evaluated as code. Values are computed with
`fractions.Fraction`, so `0.1 + 0.2 = 0.3` holds.

Extraction is deliberately conservative, because a false alarm on a correct step costs more
than a missed error: a side whose number is glued to a letter (`4x`, `5th`), preceded by a
word that acts as an operator (`3 times 4 = 12`, `2 boxes of 12 = 24`), followed by a
scaling word (`6 = 2 dozen`) or cut by an operator at the edge of the arithmetic run is
dropped rather than checked.
"""

from __future__ import annotations

import ast
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction

from langgraph_specsearch.prm.base import LastStepPRM

_NUM = r"(?:\d+(?:\.\d+)?|\.\d+)"
_RUN = re.compile(rf"(?:{_NUM}|[-+*/()=%]|[ \t])+")
_CALC = re.compile(r"<<([^<>]*)>>")
_FRAC = re.compile(r"\\[dt]?frac\s*\{([^{}]*)\}\s*\{([^{}]*)\}")
_PERCENT_OF = re.compile(rf"({_NUM})\s*%\s*of\s+")
_TIMES_X = re.compile(r"(?<=[\d)])[ \t]{0,2}[xX][ \t]{0,2}(?=[\d($])")
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
_TEXT_CMD = re.compile(r"\\(?:text|mathrm|textbf|mbox)\s*\{([^{}]*)\}")
_COMMENT = re.compile(r"\(\s*[A-Za-z][A-Za-z' \-]*\)")
_UNIT_WORDS = r"((?:[A-Za-z]{2,}[ \t]+)?[A-Za-z]{2,}(?:/[A-Za-z]+)?)"
_UNIT = re.compile(rf"({_NUM})[ \t]+{_UNIT_WORDS}(?=[ \t]*[-+*/])")  # `495 students * 15`
_UNIT_EQ = re.compile(rf"([-+*/][ \t]*{_NUM})[ \t]+{_UNIT_WORDS}(?=[ \t]*=)")  # `+ 600 quarts =`
_RATE = re.compile(rf"({_NUM})[ \t]*/[ \t]*[A-Za-z]{{2,}}\b")
_WORD_BEFORE = re.compile(r"([A-Za-z]+)\s*$")
_WORD_AFTER = re.compile(r"^\s*([A-Za-z]+)")

# Words that act as operators next to a number: a side touching one is not checkable.
# fmt: off
_OPERATOR_WORDS = frozenset([
    "times", "of", "by", "plus", "minus", "divided", "multiplied", "than", "per", "over", "into",
    "half", "twice", "double", "triple", "thrice", "quarter", "third", "squared", "cubed",
    "dozen", "dozens", "hundred", "hundreds", "thousand", "thousands", "million", "millions",
    "billion", "billions", "k", "percent", "percentage", "power", "root", "sqrt", "with",
    "remainder", "mod", "modulo", "r",
])
# fmt: on
# Characters that, touching a run without a space, make its edge ambiguous.
_GLUE = set("^_'²³√∛") | set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")

_MAX_EXPR_CHARS = 200


@dataclass(frozen=True)
class Equation:
    """One checked equality `lhs = rhs` with both sides' exact values."""

    lhs: str
    rhs: str
    lhs_value: float
    rhs_value: float
    holds: bool


@dataclass(frozen=True)
class StepCheck:
    """The equations found in one step and whether each holds."""

    text: str
    equations: list[Equation] = field(default_factory=list)

    @property
    def checkable(self) -> bool:
        """Whether the step states at least one checkable equation."""
        return bool(self.equations)

    @property
    def n_true(self) -> int:
        """Number of equations that hold."""
        return sum(e.holds for e in self.equations)

    @property
    def n_false(self) -> int:
        """Number of equations that do not hold."""
        return len(self.equations) - self.n_true

    @property
    def all_hold(self) -> bool:
        """True when every equation holds (vacuously true when there are none)."""
        return self.n_false == 0

    @property
    def correct_fraction(self) -> float | None:
        """Fraction of equations that hold, or None when there are none."""
        return self.n_true / len(self.equations) if self.equations else None


class _Unsupported(ValueError):
    """An expression uses something other than numbers, + - * / and parentheses."""


def _eval_node(node: ast.AST) -> Fraction:
    """Evaluate a whitelisted arithmetic AST node exactly."""
    if isinstance(node, ast.Expression):
        return _eval_node(node.body)
    if isinstance(node, ast.Constant) and type(node.value) is int:
        return Fraction(node.value)
    if isinstance(node, ast.Constant) and type(node.value) is float:
        return Fraction(str(node.value))
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.UAdd, ast.USub)):
        value = _eval_node(node.operand)
        return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Sub, ast.Mult, ast.Div)):
        left, right = _eval_node(node.left), _eval_node(node.right)
        if isinstance(node.op, ast.Add):
            return left + right
        if isinstance(node.op, ast.Sub):
            return left - right
        if isinstance(node.op, ast.Mult):
            return left * right
        if right == 0:
            raise _Unsupported("division by zero")
        return left / right
    raise _Unsupported(type(node).__name__)


def evaluate(expr: str) -> Fraction:
    """Exact value of an arithmetic expression (numbers, + - * /, parentheses only).

    Raises:
        ValueError: the text is not such an expression.
    """
    text = expr.strip()
    if not text or len(text) > _MAX_EXPR_CHARS or not re.fullmatch(r"[\d.\s+\-*/()]+", text):
        raise _Unsupported(f"not arithmetic: {expr!r}")
    if "**" in text or "//" in text:
        raise _Unsupported("power and floor division are not arithmetic here")
    try:
        tree = ast.parse(text, mode="eval")
    except (SyntaxError, RecursionError) as exc:
        raise _Unsupported(str(exc)) from exc
    return _eval_node(tree)


def _decimals(side: str) -> int | None:
    """Number of decimals when the side is a bare number, else None."""
    match = re.fullmatch(r"\s*[-+]?\s*\d*(?:\.(\d+))?\s*", side)
    if not match or not re.search(r"\d", side):
        return None
    return len(match.group(1) or "")


def values_match(lhs: Fraction, rhs: Fraction, lhs_text: str, rhs_text: str) -> bool:
    """Equal within 1e-6 relative, or within one unit of the last decimal of a rounded side."""
    if lhs == rhs or math.isclose(float(lhs), float(rhs), rel_tol=1e-6, abs_tol=1e-9):
        return True
    for text in (lhs_text, rhs_text):
        decimals = _decimals(text)
        if decimals is not None and decimals >= 1 and abs(lhs - rhs) <= Fraction(1, 10**decimals):
            return True
    return False


def _normalize(text: str) -> str:
    """Rewrite LaTeX, unicode operators, currency and thousands separators to plain arithmetic."""
    text = _TEXT_CMD.sub(r" \1 ", text)
    for _ in range(3):
        text = _FRAC.sub(r"((\1)/(\2))", text)
    replacements = [
        (r"\times", "*"),
        (r"\cdot", "*"),
        (r"\div", "/"),
        (r"\left", ""),
        (r"\right", ""),
        (r"\%", "%"),
        (r"\$", " "),
        (r"\(", " ; "),
        (r"\)", " ; "),
        (r"\[", " ; "),
        (r"\]", " ; "),
        (r"\,", ""),
        (r"\!", ""),
        ("×", "*"),
        ("·", "*"),
        ("∗", "*"),
        ("÷", "/"),
        ("−", "-"),
        ("–", "-"),
        ("$", " "),
        ("€", " "),
        ("£", " "),
    ]
    for old, new in replacements:
        text = text.replace(old, new)
    text = re.sub(r"\\(?:boxed|approx|quad|qquad)\b", " ; ", text)
    text = re.sub(r"\\[A-Za-z]+\s*\{?", "_", text)  # \sqrt{, \cos( ...: glue, so the side drops
    text = text.replace("{", " ").replace("}", " ")
    text = _THOUSANDS.sub("", text)
    text = _PERCENT_OF.sub(r"\1/100*", text)
    text = _TIMES_X.sub("*", text)
    text = _COMMENT.sub(" ", text)
    text = _UNIT.sub(_drop_unit, text)
    text = _UNIT_EQ.sub(_drop_unit, text)
    return _RATE.sub(r"\1", text)


def _drop_unit(match: re.Match[str]) -> str:
    """Drop a unit written between a number and an operator, unless it is an operator word."""
    words = re.split(r"[ \t/]+", match.group(2).lower())
    return match.group(0) if _OPERATOR_WORDS.intersection(words) else match.group(1)


def _strip_parens(side: str) -> str:
    """Drop unbalanced leading '(' and trailing ')' left at the edge of a run."""
    side = side.strip()
    while side.startswith("(") and side.count("(") > side.count(")"):
        side = side[1:].strip()
    while side.endswith(")") and side.count(")") > side.count("("):
        side = side[:-1].strip()
    return side


def _edge_is_ambiguous(before: str, after: str) -> bool:
    """Whether text touching an arithmetic run makes that edge number unreliable."""
    if before[-1:] in _GLUE:
        return True
    word = _WORD_AFTER.match(after) if after else None
    if after[:1] in _GLUE or after.lstrip()[:1] == "^":
        return True
    if word and word.group(1).lower() in _OPERATOR_WORDS:
        return True
    word = _WORD_BEFORE.search(before)
    return bool(word and word.group(1).lower() in _OPERATOR_WORDS)


def _chain_equations(sides: list[str]) -> list[Equation]:
    """Check every adjacent pair of parseable sides in `a = b = c`; pairs with a bad side skip."""
    values: list[Fraction | None] = []
    for side in sides:
        try:
            values.append(evaluate(side))
        except ValueError:
            values.append(None)
    out: list[Equation] = []
    for i in range(len(sides) - 1):
        left, right = values[i], values[i + 1]
        if left is None or right is None:
            continue
        if not re.search(r"[-+*/]", sides[i].lstrip("-+ ") + sides[i + 1].lstrip("-+ ")):
            continue  # `6 = 6` restates a number, `1 (hour) = 60 (minutes)` converts units
        holds = values_match(left, right, sides[i], sides[i + 1])
        out.append(Equation(sides[i], sides[i + 1], float(left), float(right), holds))
    return out


def _percent_variants(sides: list[str]) -> list[list[str]]:
    """Sides with `%` read as /100, and with `%` dropped (both readings are common)."""
    if not any("%" in s for s in sides):
        return [sides]
    as_fraction = [re.sub(rf"({_NUM})\s*%", r"(\1/100)", s) for s in sides]
    dropped = [s.replace("%", "") for s in sides]
    return [as_fraction, dropped]


def _check_chain(sides: list[str]) -> list[Equation]:
    """Equations of one chain; with `%`, an equation holds if either reading makes it hold."""
    variants = [_chain_equations(v) for v in _percent_variants(sides)]
    if len(variants) == 1:
        return variants[0]
    first, second = variants
    if len(first) != len(second):
        return first if len(first) >= len(second) else second
    return [a if a.holds or not b.holds else b for a, b in zip(first, second, strict=True)]


def _runs(text: str) -> list[list[str]]:
    """Arithmetic runs containing `=`, split into sides with ambiguous edge sides dropped."""
    chains: list[list[str]] = []
    for match in _RUN.finditer(text):
        run = match.group(0)
        if "=" not in run:
            continue
        start = match.start() + len(run) - len(run.lstrip())
        end = match.end() - len(run) + len(run.rstrip())
        sides = [s.strip() for s in run.split("=")]
        before, after = text[:start], text[end:]
        # `(3 + 4 = 7)` is a parenthetical, but `C(9, 2) = ...` or `= (6, 7)` cut a tuple.
        if sides[0].count(")") > sides[0].count("("):
            sides[0] = ""
        if sides[-1].count("(") > sides[-1].count(")"):
            sides[-1] = ""
        sides[0], sides[-1] = _strip_parens(sides[0]), _strip_parens(sides[-1])
        first, last = sides[0], sides[-1]
        if not first or first[0] in "+-*/" or _edge_is_ambiguous(before, ""):
            sides[0] = ""
        remainder = re.search(
            r"remain", after[:60], re.IGNORECASE
        )  # `2250 / 360 = 6 ... remaining`
        if not last or last[-1] in "+-*/" or _edge_is_ambiguous(" ", after) or remainder:
            sides[-1] = ""
        chains.append(sides)
    return chains


def _split_on_empty(sides: list[str]) -> list[list[str]]:
    """Split a chain wherever a side was dropped, keeping pieces with two or more sides."""
    pieces: list[list[str]] = [[]]
    for side in sides:
        if side:
            pieces[-1].append(side)
        else:
            pieces.append([])
    return [p for p in pieces if len(p) >= 2]


def extract_chains(step: str) -> list[list[str]]:
    """The equality chains a step states, as lists of side expressions (`%` kept)."""
    chains: list[list[str]] = []
    annotations = [m.group(1) for m in _CALC.finditer(step)]
    for body in annotations:
        sides = [s.strip() for s in _normalize(body).split("=")]
        chains.extend(_split_on_empty(sides))
    text = _normalize(_CALC.sub(" ", step))
    for sides in _runs(text):
        chains.extend(_split_on_empty(sides))
    return chains


def check_step(text: str) -> StepCheck:
    """Find the equations a step states and check each one; duplicates are counted once."""
    seen: set[tuple[str, str]] = set()
    equations: list[Equation] = []
    for chain in extract_chains(text):
        for eq in _check_chain(chain):
            key = (re.sub(r"\s+", "", eq.lhs), re.sub(r"\s+", "", eq.rhs))
            if key not in seen:
                seen.add(key)
                equations.append(eq)
    return StepCheck(text=text, equations=equations)


def step_score(check: StepCheck, neutral: float = 0.5) -> float:
    """Map a `StepCheck` to [0, 1]: none → neutral, all hold → 1.0, any false → 0.5 × fraction."""
    fraction = check.correct_fraction
    if fraction is None:
        return neutral
    return 1.0 if check.all_hold else 0.5 * fraction


class ArithmeticPRM(LastStepPRM):
    """Scores a step by verifying the equations it states; no model involved.

    Score of a step: `neutral` when it states no checkable equation; 1.0 when every
    equation holds; `0.5 * correct_fraction` (so below 0.5) when any equation is false.
    """

    def __init__(self, *, neutral: float = 0.5, name: str = "arithmetic") -> None:
        """Create the PRM; `neutral` is the score of steps without checkable arithmetic."""
        if not 0.0 <= neutral <= 1.0:
            raise ValueError("neutral must be in [0, 1]")
        self.neutral = neutral
        self.name = name

    def check(self, step: str) -> StepCheck:
        """Equations in one step and whether each holds."""
        return check_step(step)

    async def ascore_last(self, question: str, paths: Sequence[Sequence[str]]) -> list[float]:
        """Score the last step of every path (empty paths score `neutral`)."""
        return [step_score(check_step(p[-1]), self.neutral) if p else self.neutral for p in paths]
