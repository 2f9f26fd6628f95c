"""An agent that decides to call SpecSearch as a tool.

    python examples/agent_tool.py

The agent loop is LangGraph's prebuilt tool-calling agent (LangChain's `create_agent` when
`langchain` is installed); the search runs for real on the embedded models, and its live
events arrive through the agent's own custom stream.

The model that decides is a stand-in: the embedded models cannot call tools, so
`MathRouterChatModel`, a rule-based chat model (not a language model), plays the agent's model
here: it calls the tool for a message with numbers in it and answers from the tool's result.
With a real tool-calling model, pass it instead, e.g.
`create_math_agent(ChatOpenAI(base_url="http://127.0.0.1:8000/v1", model=...), tool=tool)`.
"""

from __future__ import annotations

import asyncio

from langgraph_specsearch import SearchConfig, create_specsearch_tool
from langgraph_specsearch.agent import MathRouterChatModel, create_math_agent
from langgraph_specsearch.events import describe

QUESTION = "A shop sells pens at $2 each. How much do 5 pens cost?"


async def main() -> None:
    tool = create_specsearch_tool(SearchConfig(beam_width=1, n_drafts=2, max_steps=3))
    agent = create_math_agent(MathRouterChatModel(), tool=tool)  # stand-in model, see above
    async for mode, chunk in agent.astream(
        {"messages": [("user", QUESTION)]}, stream_mode=["updates", "custom"]
    ):
        if not isinstance(chunk, dict):
            continue
        if mode == "custom":  # the search, live
            print("  search:", describe(chunk))
            continue
        for node, update in chunk.items():
            for message in (update or {}).get("messages", []):
                if getattr(message, "tool_calls", None):
                    call = message.tool_calls[0]
                    print(f"{node}: calls {call['name']}({call['args']})")
                else:
                    print(f"{node} ({message.type}): {str(message.content)[:200]}")


if __name__ == "__main__":
    asyncio.run(main())
