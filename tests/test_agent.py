"""An agent (LangGraph's prebuilt loop) that decides to call the SpecSearch tool."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from langchain_core.messages import AIMessage, ToolMessage
from scripted import ScriptedBackend, ScriptedPRM, by_text

from langgraph_specsearch.agent import MathRouterChatModel, create_math_agent
from langgraph_specsearch.api import Components, SearchConfig
from langgraph_specsearch.speculation import SpeculationConfig
from langgraph_specsearch.tool import create_specsearch_tool

QUESTION = "Tom has 3 apples and buys 4 more. How many apples does he have?"


def tool() -> Any:
    components = Components(
        small=ScriptedBackend("small", lambda p, c, i: f"small c{c} {[0.9, 0.2][i % 2]}"),
        large=ScriptedBackend(
            "large", lambda p, c, i: "The answer is 7. 0.6" if c >= 2 else f"large c{c} 0.5"
        ),
        prm=ScriptedPRM(by_text),
    )
    config = SearchConfig(
        n_drafts=2,
        beam_width=2,
        max_steps=5,
        carry_threshold=False,
        speculation=SpeculationConfig(drafts=2),
    )
    return create_specsearch_tool(config, components=components)


def test_agent_calls_the_tool_and_answers_from_it() -> None:
    agent = create_math_agent(MathRouterChatModel(), tool=tool())
    out = asyncio.run(agent.ainvoke({"messages": [("user", QUESTION)]}))
    messages = out["messages"]
    calls = [m for m in messages if isinstance(m, AIMessage) and m.tool_calls]
    assert len(calls) == 1 and calls[0].tool_calls[0]["name"] == "speculative_math_search"
    assert calls[0].tool_calls[0]["args"] == {"question": QUESTION}
    results = [m for m in messages if isinstance(m, ToolMessage)]
    assert len(results) == 1 and json.loads(str(results[0].content))["answer"] == "7"
    assert "The answer is 7" in str(messages[-1].content)


def test_agent_answers_without_the_tool_when_it_is_not_a_math_problem() -> None:
    agent = create_math_agent(MathRouterChatModel(), tool=tool())
    out = agent.invoke({"messages": [("user", "Who are you?")]})
    assert not any(isinstance(m, ToolMessage) for m in out["messages"])
    assert "math" in str(out["messages"][-1].content)


def test_search_events_reach_the_agents_custom_stream() -> None:
    agent = create_math_agent(MathRouterChatModel(), tool=tool())

    async def events() -> list[dict[str, Any]]:
        return [
            chunk
            async for chunk in agent.astream(
                {"messages": [("user", QUESTION)]}, stream_mode="custom"
            )
        ]

    kinds = [e["event"] for e in asyncio.run(events())]
    assert kinds[0] == "regenerated" and kinds[-1] == "answer_found"
    assert "drafted" in kinds and "threshold_updated" in kinds
