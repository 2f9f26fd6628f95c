"""The compiled search graph as one node of a parent LangGraph app.

    python examples/parent_graph.py

The parent state shares the `question` / `answer` / `path` keys with the search graph's input
and output schemas, so the compiled graph is added as a node directly.
"""

from __future__ import annotations

import asyncio
from typing import Any, TypedDict

from langgraph.graph import END, START, StateGraph

from langgraph_specsearch import SearchConfig, create_beam_search, create_speculative_expander
from langgraph_specsearch.api import load_components


class AppState(TypedDict, total=False):
    """The parent app's state."""

    request: str
    question: str
    answer: str | None
    path: list[dict[str, Any]]
    reply: str


def parse(state: AppState) -> dict[str, Any]:
    """Pretend front-end step: pull the question out of the user's request."""
    return {"question": state["request"].removeprefix("Please solve: ")}


def reply(state: AppState) -> dict[str, Any]:
    """Format the reply from the search output."""
    steps = " | ".join(f"[{s['source']}] {s['text']}" for s in state["path"])
    return {"reply": f"Answer: {state['answer']}  ({steps})"}


def main() -> None:
    c = load_components(SearchConfig())
    search = create_beam_search(
        create_speculative_expander(small=c.small, large=c.large, prm=c.prm),
        beam_width=1,
        n=2,
        max_steps=3,
    ).compile()
    app = StateGraph(AppState)
    app.add_node("parse", parse)
    app.add_node("search", search)
    app.add_node("reply", reply)
    app.add_edge(START, "parse")
    app.add_edge("parse", "search")
    app.add_edge("search", "reply")
    app.add_edge("reply", END)
    out = asyncio.run(
        app.compile().ainvoke(
            {"request": "Please solve: Tom has 3 apples and buys 4 more. How many?"}
        )
    )
    print(out["reply"])


if __name__ == "__main__":
    main()
