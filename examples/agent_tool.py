"""SpecSearch as an agent's tool, executed by LangGraph's prebuilt ToolNode.

    python examples/agent_tool.py

Any tool-calling chat model can be given `tool` (`model.bind_tools([tool])`, or
`create_react_agent(model, [tool])`). Here the tool call an agent would emit is written by hand,
so the example runs offline, and LangGraph's ToolNode executes it for real.
"""

from __future__ import annotations

import asyncio

from langchain_core.messages import AIMessage
from langgraph.prebuilt import ToolNode

from langgraph_specsearch import SearchConfig, create_specsearch_tool


def main() -> None:
    tool = create_specsearch_tool(SearchConfig(beam_width=1, n_drafts=2, max_steps=3))
    call = {
        "name": tool.name,
        "args": {"question": "A shop sells pens at $2 each. How much do 5 pens cost?"},
        "id": "call-1",
        "type": "tool_call",
    }
    result = asyncio.run(ToolNode([tool]).ainvoke({"messages": [AIMessage("", tool_calls=[call])]}))
    print(result["messages"][-1].content)


if __name__ == "__main__":
    main()
