"""How each published PRM family lays out a solution and where its step scores are read.

A style turns (question, steps) into the exact text the PRM was trained on, plus a `Mark` per
step: the character span of the token whose model output holds that step's score. Token ids
(step tag, "+" / "-" labels) are never hard-coded: `lookup` finds them with the same probes
the model's authors use (e.g. Math-Shepherd's `encode("ки")[-1]` and `encode("+ -")[1:]`).

- `math-shepherd`: `question step1 ки\\nstep2 ки`; softmax over the "+"/"-" logits at
  tag i, P(+).
- `math-psa`: `question step1 \\n\\n\\n\\n\\nstep2 \\n\\n\\n\\n\\n`; the same with OpenR's tag
  and " +" / " -".
- `qwen-prm`: chat (system, user, assistant `step1<extra_0>step2<extra_0>`); two-label head
  at the i-th `<extra_0>`, P(label 1).
- `rlhflow`: chat, one user turn per step, assistant replies "+"; "+"/"-" logits just
  before reply i, P(+).
- `skywork`: `bos question\\nstep1\\nstep2\\n`; sigmoid of the value head at step i's "\\n".
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from langgraph_specsearch.prm.errors import PRMAlignmentError

Head = Literal["labels", "classifier", "value"]
ChatTemplate = Callable[[list[dict[str, str]]], str]
Encode = Callable[[str], list[int]]
"""Text -> token ids without special tokens (a local tokenizer or a server's `/tokenize`)."""

QWEN_PRM_SYSTEM = "Please reason step by step, and put your final answer within \\boxed{}."


@dataclass(frozen=True)
class Mark:
    """Where step `step` is scored: the token spanning text[start:end].

    `token` names the id it must have ("tag" or "good"); the model output is read at that
    token's index + `shift` (-1: the position that predicts the token).
    """

    step: int
    start: int
    end: int
    token: Literal["tag", "good"]
    shift: int = 0


@dataclass(frozen=True)
class Rendered:
    """A PRM input: its text, one mark per step, and whether the tokenizer adds BOS."""

    text: str
    marks: tuple[Mark, ...]
    add_special_tokens: bool


@dataclass(frozen=True)
class TokenIds:
    """Ids looked up from the tokenizer: the step tag and the good / bad labels."""

    tag: int | None = None
    good: int | None = None
    bad: int | None = None

    def of(self, kind: Literal["tag", "good"]) -> int | None:
        """The id a mark of this kind must have."""
        return self.tag if kind == "tag" else self.good


def chatml(messages: list[dict[str, str]]) -> str:
    """Qwen2.5's chat template output for a finished conversation (no generation prompt)."""
    return "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)


def llama3_chat(messages: list[dict[str, str]]) -> str:
    """Llama-3 turn format (no system turn), for endpoints without a local tokenizer."""
    turns = "".join(
        f"<|start_header_id|>{m['role']}<|end_header_id|>\n\n{m['content'].strip()}<|eot_id|>"
        for m in messages
    )
    return "<|begin_of_text|>" + turns


def _last(prm: str, what: str, ids: list[int]) -> int:
    if not ids:
        raise PRMAlignmentError(prm, None, f"the tokenizer gives no token for {what!r}")
    return ids[-1]


class PRMStyle:
    """Base: a family's input format and token probes (see the module table)."""

    name: str = ""
    head: Head = "labels"
    step_tag: str = ""
    supports_prefill: bool = True

    def clean(self, step: str) -> str:
        """A step as the format needs it: stripped, without the step tag inside it."""
        text = step.strip()
        return text.replace(self.step_tag, " ").strip() if self.step_tag.strip() else text

    def render(
        self,
        question: str,
        steps: Sequence[str],
        *,
        chat_template: ChatTemplate | None = None,
        bos: str = "",
        labelled: bool = False,
    ) -> Rendered:
        """The PRM's input text with one mark per step.

        `labelled` (TGI prefill): put the good label after every tag and mark the label tokens,
        whose prompt log-probability is then P(+ | text up to the tag).
        """
        raise NotImplementedError

    def lookup(self, encode: Encode, prm: str) -> TokenIds:
        """Token ids of the step tag and labels, found with the authors' own probes."""
        raise NotImplementedError

    def probes(self) -> list[str]:
        """The texts `lookup` encodes (so a remote tokenizer can be asked up front)."""
        seen: list[str] = []

        def record(text: str) -> list[int]:
            seen.append(text)
            return [0, 0] if text.strip() and " " in text.strip() else [0]

        self.lookup(record, self.name)
        return seen


class MathShepherdStyle(PRMStyle):
    """peiyi9979/math-shepherd-mistral-7b-prm: `question s1 ки\\ns2 ки`, P(+) at each tag."""

    name = "math-shepherd"
    step_tag = "ки"
    joiner = "\n"
    tag_probe = "ки"
    labels_probe = "+ -"
    add_special_tokens = True

    def render(
        self,
        question: str,
        steps: Sequence[str],
        *,
        chat_template: ChatTemplate | None = None,
        bos: str = "",
        labelled: bool = False,
    ) -> Rendered:
        """See `PRMStyle.render`."""
        text = f"{question.strip()} "
        marks = []
        for i, step in enumerate(steps):
            if i:
                text += self.joiner
            text += self.clean(step) + " "
            start = len(text)
            text += self.step_tag.strip()
            if labelled:
                text += " "
                start = len(text)
                text += self.labels_probe.split()[0]
                marks.append(Mark(i, start, len(text), "good"))
            else:
                marks.append(Mark(i, start, len(text), "tag"))
        return Rendered(text, tuple(marks), self.add_special_tokens)

    def lookup(self, encode: Encode, prm: str) -> TokenIds:
        """`encode(tag)[-1]`; the two tokens of `encode("+ -")` (BOS dropped)."""
        labels = encode(self.labels_probe)
        if len(labels) != 2:
            raise PRMAlignmentError(
                prm, None, f"{self.labels_probe!r} is {len(labels)} tokens here, expected 2"
            )
        tag = _last(prm, self.tag_probe, encode(self.tag_probe))
        return TokenIds(tag=tag, good=labels[0], bad=labels[1])


class MathPSAStyle(MathShepherdStyle):
    """openreasoner/Math-psa (OpenR): tag " \\n\\n\\n\\n\\n", labels " +" / " -"."""

    name = "math-psa"
    step_tag = "\n\n\n\n\n"
    tag_probe = " \n\n\n\n\n"
    labels_probe = " + -"
    add_special_tokens = False

    def clean(self, step: str) -> str:
        """Stripped; runs of 3+ newlines (which would read as the tag) become one blank line."""
        text = step.strip()
        while "\n\n\n" in text:
            text = text.replace("\n\n\n", "\n\n")
        return text

    def render(
        self,
        question: str,
        steps: Sequence[str],
        *,
        chat_template: ChatTemplate | None = None,
        bos: str = "",
        labelled: bool = False,
    ) -> Rendered:
        """`question s1 \\n\\n\\n\\n\\ns2 \\n\\n\\n\\n\\n` (OpenR's `replace_step_tag` layout)."""
        text = f"{question.strip()} "
        marks = []
        for i, step in enumerate(steps):
            text += self.clean(step)
            start = len(text)
            text += self.tag_probe
            if labelled:
                start = len(text)
                text += " +"
                marks.append(Mark(i, start, len(text), "good"))
            else:
                marks.append(Mark(i, start, len(text), "tag"))
        return Rendered(text, tuple(marks), self.add_special_tokens)


class QwenPRMStyle(PRMStyle):
    """Qwen/Qwen2.5-Math-PRM-7B/72B: `<extra_0>` after each step in the assistant turn."""

    name = "qwen-prm"
    head: Head = "classifier"
    step_tag = "<extra_0>"
    supports_prefill = False

    def __init__(self, system: str = QWEN_PRM_SYSTEM) -> None:
        """`system`: the system prompt (the model card's by default)."""
        self.system = system

    def render(
        self,
        question: str,
        steps: Sequence[str],
        *,
        chat_template: ChatTemplate | None = None,
        bos: str = "",
        labelled: bool = False,
    ) -> Rendered:
        """System + user question + assistant `s1<extra_0>s2<extra_0>` through the template."""
        answer = "".join(self.clean(s) + self.step_tag for s in steps)
        messages = [
            {"role": "system", "content": self.system},
            {"role": "user", "content": question.strip()},
            {"role": "assistant", "content": answer},
        ]
        text = (chat_template or chatml)(messages)
        at = text.rfind(answer)
        if at < 0:
            raise PRMAlignmentError(
                self.name, None, "the chat template does not keep the assistant turn verbatim"
            )
        marks = []
        cursor = at
        for i in range(len(steps)):
            start = text.find(self.step_tag, cursor)
            marks.append(Mark(i, start, start + len(self.step_tag), "tag"))
            cursor = start + len(self.step_tag)
        return Rendered(text, tuple(marks), False)

    def lookup(self, encode: Encode, prm: str) -> TokenIds:
        """`<extra_0>` must be one token."""
        ids = encode(self.step_tag)
        if len(ids) != 1:
            raise PRMAlignmentError(prm, None, f"{self.step_tag!r} is not one token here")
        return TokenIds(tag=ids[0])


class RLHFlowStyle(PRMStyle):
    """RLHFlow/Llama3.1-8B-PRM-*: one user turn per step, "+" replies; P(+) before each reply."""

    name = "rlhflow"

    def render(
        self,
        question: str,
        steps: Sequence[str],
        *,
        chat_template: ChatTemplate | None = None,
        bos: str = "",
        labelled: bool = False,
    ) -> Rendered:
        """First turn `question step1`, later turns one step each, every reply "+"."""
        contents = [
            f"{question.strip()} {self.clean(s)}" if i == 0 else self.clean(s)
            for i, s in enumerate(steps)
        ]
        messages = []
        for content in contents:
            messages += [
                {"role": "user", "content": content},
                {"role": "assistant", "content": "+"},
            ]
        text = (chat_template or llama3_chat)(messages)
        marks = []
        cursor = 0
        for i, content in enumerate(contents):
            at = text.find(content, cursor)
            reply = text.find("+", at + len(content)) if at >= 0 else -1
            if reply < 0:
                raise PRMAlignmentError(
                    self.name, i, "the chat template does not keep the turn verbatim"
                )
            marks.append(Mark(i, reply, reply + 1, "good", shift=-1))
            cursor = reply + 1
        return Rendered(text, tuple(marks), False)

    def lookup(self, encode: Encode, prm: str) -> TokenIds:
        """`encode("+")[-1]` and `encode("-")[-1]`."""
        return TokenIds(good=_last(prm, "+", encode("+")), bad=_last(prm, "-", encode("-")))


class SkyworkStyle(PRMStyle):
    """Skywork/Skywork-o1-Open-PRM-*: `bos question\\n` then each step + "\\n"; value head."""

    name = "skywork"
    head: Head = "value"
    step_tag = "\n"
    supports_prefill = False

    def clean(self, step: str) -> str:
        """One line: inner newlines become spaces."""
        return " ".join(step.replace("\n", " ").split())

    def render(
        self,
        question: str,
        steps: Sequence[str],
        *,
        chat_template: ChatTemplate | None = None,
        bos: str = "",
        labelled: bool = False,
    ) -> Rendered:
        """The text; local scoring encodes it piece by piece (`segments`), as Skywork does."""
        text = f"{bos}{question}\n"
        marks = []
        for i, step in enumerate(steps):
            text += self.clean(step)
            marks.append(Mark(i, len(text), len(text) + 1, "tag"))
            text += "\n"
        return Rendered(text, tuple(marks), False)

    def segments(self, question: str, steps: Sequence[str], bos: str = "") -> list[str]:
        """Pieces encoded separately: `bos question\\n`, then each step (a tag id follows)."""
        return [f"{bos}{question}\n", *(self.clean(s) for s in steps)]

    def lookup(self, encode: Encode, prm: str) -> TokenIds:
        """`encode("\\n")[-1]`."""
        return TokenIds(tag=_last(prm, "\\n", encode("\n")))


STYLES: dict[str, type[PRMStyle]] = {
    cls.name: cls
    for cls in (MathShepherdStyle, MathPSAStyle, QwenPRMStyle, RLHFlowStyle, SkyworkStyle)
}


def style_by_name(name: str) -> PRMStyle:
    """A style instance by its name (`math-shepherd`, `math-psa`, `qwen-prm`, ...)."""
    try:
        return STYLES[name]()
    except KeyError:
        raise ValueError(f"unknown PRM style {name!r} (known: {', '.join(STYLES)})") from None


def locate(
    rendered: Rendered,
    ids: Sequence[int],
    offsets: Sequence[tuple[int, int]],
    expected: TokenIds,
    prm: str,
) -> list[int]:
    """Token index of every mark, checked: the token must end where the mark ends, start at
    or after it (up to whitespace) and have the looked-up id. Anything else is an error
    naming the PRM and the step."""
    out = []
    text = rendered.text
    for mark in rendered.marks:
        index = next(
            (k for k, (s, e) in enumerate(offsets) if s < mark.end <= e and e > s),
            None,
        )
        want = expected.of(mark.token)
        what = "step tag" if mark.token == "tag" else "label token"
        shown = text[mark.start : mark.end]
        if index is None:
            raise PRMAlignmentError(prm, mark.step, f"the {what} {shown!r} is not in the input")
        start, end = offsets[index]
        got = text[start:end]
        if end != mark.end or text[start : mark.start].strip() or ids[index] != want:
            raise PRMAlignmentError(
                prm,
                mark.step,
                f"the {what} {shown!r} is not a token of its own here (token {got!r},"
                f" id {ids[index]}, expected id {want})",
            )
        out.append(index)
    return out
