"""Prompt formats: how (question, steps so far) becomes a model's prompt."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from importlib.resources import files
from typing import Protocol

DEFAULT_DELIMITER = "\n\n"
ANSWER_PREFIX = "The answer is"
SYSTEM_PROMPT = (
    "Solve the math word problem step by step. Write one short step per paragraph and finish "
    f"with '{ANSWER_PREFIX} N.'"
)


@dataclass(frozen=True)
class Exemplar:
    """A solved problem shown to the model as an example."""

    question: str
    steps: tuple[str, ...]
    answer: str

    def solution(self, delimiter: str) -> str:
        """The solution text with steps joined by the delimiter and the answer line last."""
        return delimiter.join([*self.steps, f"{ANSWER_PREFIX} {self.answer}."])


@lru_cache(maxsize=1)
def gsm8k_exemplars() -> tuple[Exemplar, ...]:
    """Exemplars taken from GSM8K train (MIT; see data/SOURCES.md)."""
    raw = json.loads(
        files("langgraph_specsearch").joinpath("data/gsm8k_exemplars.json").read_text()
    )
    return tuple(
        Exemplar(question=e["question"], steps=tuple(e["steps"]), answer=e["answer"])
        for e in raw["exemplars"]
    )


class PromptFormat(Protocol):
    """Renders the prompt that asks a model for the next step."""

    @property
    def delimiter(self) -> str:
        """The string that ends a step."""
        ...

    def render(self, question: str, steps: Sequence[str]) -> str:
        """Prompt for the step after `steps`."""
        ...

    def stop_sequences(self) -> list[str]:
        """Strings that end a step."""
        ...


def _continuation(steps: Sequence[str], delimiter: str) -> str:
    """The steps written so far, each followed by the delimiter."""
    return "".join(s + delimiter for s in steps)


@dataclass(frozen=True)
class FewShotFormat:
    """Plain-text few-shot prompt, for base models (e.g. Gemma-3-270M)."""

    exemplars: tuple[Exemplar, ...] = field(default_factory=lambda: gsm8k_exemplars()[:3])
    delimiter: str = DEFAULT_DELIMITER

    def render(self, question: str, steps: Sequence[str]) -> str:
        """Exemplars, then the question and the steps so far."""
        shots = "".join(
            f"Question: {e.question}\nAnswer: {e.solution(self.delimiter)}\n\n\n"
            for e in self.exemplars
        )
        return f"{shots}Question: {question}\nAnswer: {_continuation(steps, self.delimiter)}"

    def stop_sequences(self) -> list[str]:
        """The delimiter and the start of a new question."""
        return [self.delimiter, "\nQuestion:"]


@dataclass(frozen=True)
class ChatFormat:
    """Chat-template prompt for instruction-tuned models; exemplars become earlier turns."""

    apply_template: Callable[[list[dict[str, str]]], str]
    exemplars: tuple[Exemplar, ...] = field(default_factory=lambda: gsm8k_exemplars()[:2])
    system: str = SYSTEM_PROMPT
    delimiter: str = DEFAULT_DELIMITER

    def render(self, question: str, steps: Sequence[str]) -> str:
        """Template with a generation prompt, then the steps written so far."""
        messages = [{"role": "system", "content": self.system}]
        for e in self.exemplars:
            messages.append({"role": "user", "content": e.question})
            messages.append({"role": "assistant", "content": e.solution(self.delimiter)})
        messages.append({"role": "user", "content": question})
        return self.apply_template(messages) + _continuation(steps, self.delimiter)

    def stop_sequences(self) -> list[str]:
        """The delimiter only (end of turn is the model's EOS)."""
        return [self.delimiter]


def chatml_template(messages: list[dict[str, str]]) -> str:
    """ChatML rendering with a generation prompt, for endpoints without a local tokenizer."""
    body = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
    return body + "<|im_start|>assistant\n"


def prompt_format_by_name(name: str, delimiter: str = DEFAULT_DELIMITER) -> PromptFormat:
    """`fewshot` or `chatml`, for endpoints whose tokenizer is not available locally."""
    if name == "fewshot":
        return FewShotFormat(delimiter=delimiter)
    if name == "chatml":
        return ChatFormat(apply_template=chatml_template, delimiter=delimiter)
    raise ValueError(f"unknown prompt format {name!r} (expected 'fewshot' or 'chatml')")
