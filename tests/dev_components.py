"""Scripted components for the `langgraph dev` test: `SPECSEARCH_COMPONENTS=dev_components:make`."""

from __future__ import annotations

from scripted import ScriptedBackend, ScriptedPRM, by_text

from langgraph_specsearch.api import Components, SearchConfig


def make(config: SearchConfig) -> Components:
    """Instant backends: the large model answers 7 from its third call on."""

    def small(prompt: str, call: int, i: int) -> str:
        return f"small c{call} {[0.9, 0.2][i % 2]}"

    def large(prompt: str, call: int, i: int) -> str:
        return "The answer is 7. 0.6" if call >= 2 else f"large c{call} 0.5"

    return Components(
        small=ScriptedBackend("small", small),
        large=ScriptedBackend("large", large),
        prm=ScriptedPRM(by_text),
    )
