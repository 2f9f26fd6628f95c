"""Errors raised by the model-based PRMs (both are `ValueError`s: the CLI prints one line)."""

from __future__ import annotations


class PRMAlignmentError(ValueError):
    """A step tag or label token could not be found where the PRM's format puts it."""

    def __init__(self, prm: str, step: int | None, detail: str) -> None:
        """`step` is 0-based (None: not tied to one step)."""
        where = f" step {step}:" if step is not None else ""
        super().__init__(f"PRM {prm}:{where} {detail}")
        self.prm = prm
        self.step = step


class PRMLoadError(ValueError):
    """The weights (or tokenizer) of a PRM could not be loaded."""
