"""A small tool-calling agent that hands math word problems to SpecSearch.

`create_math_agent(model)` builds the agent with LangChain's `create_agent` when `langchain`
is installed, else LangGraph's prebuilt `create_react_agent`; the model decides whether to call
the `create_specsearch_tool` tool. Any tool-calling chat model works (`ChatOpenAI` at a vLLM
or llama.cpp server started with tool calling, ...). The embedded models cannot call tools, so
without a `model` the agent runs on `MathRouterChatModel`: a rule-based stand-in, not a
language model, that calls the tool for a message with numbers in it and answers from the
tool's result.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.runnables import Runnable
from langchain_core.tools import BaseTool
from langgraph.graph.state import CompiledStateGraph

SYSTEM_PROMPT = (
    "You answer questions. For a math word problem, call the speculative_math_search tool "
    "with the full problem and report its final answer."
)


class MathRouterChatModel(BaseChatModel):
    """A rule-based chat model that calls a tool the way an LLM agent would (a stand-in).

    For the latest human message: if it contains a number, it emits one tool call to the first
    bound tool with `{"question": message}`; otherwise it says it only solves math problems.
    Once the tool's result is in the conversation, it answers with the result's `answer`.
    It exists so that the agent example and tests run offline, where no tool-calling model is
    available; it is not a language model.
    """

    tool_names: list[str] = []

    @property
    def _llm_type(self) -> str:
        return "math-router"

    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool],
        *,
        tool_choice: str | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """This model with `tools` bound (only their names are used)."""
        names = [t.name if isinstance(t, BaseTool) else _tool_name(t) for t in tools]
        return self.model_copy(update={"tool_names": names})

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return ChatResult(generations=[ChatGeneration(message=self._reply(messages))])

    def _reply(self, messages: list[BaseMessage]) -> AIMessage:
        """The next message: a tool call, an answer from the tool's result, or a refusal."""
        last_human = max(
            (i for i, m in enumerate(messages) if isinstance(m, HumanMessage)), default=-1
        )
        results = [m for m in messages[last_human + 1 :] if isinstance(m, ToolMessage)]
        if results:
            return AIMessage(content=_answer_text(results[-1]))
        question = str(messages[last_human].content) if last_human >= 0 else ""
        if self.tool_names and re.search(r"\d", question):
            call = {
                "name": self.tool_names[0],
                "args": {"question": question},
                "id": f"call_{uuid.uuid4().hex[:12]}",
                "type": "tool_call",
            }
            return AIMessage(content="", tool_calls=[call])
        return AIMessage(content="I can only help with math word problems.")


def _tool_name(tool: Any) -> str:
    """Name of a tool given as a dict or a function."""
    if isinstance(tool, dict):
        return str(tool.get("name") or tool.get("function", {}).get("name", "tool"))
    return str(getattr(tool, "__name__", "tool"))


def _answer_text(message: ToolMessage) -> str:
    """The agent's final words from the search tool's result."""
    content = message.content
    try:
        data = json.loads(content) if isinstance(content, str) else content
    except json.JSONDecodeError:
        return f"The search tool said: {content}"
    if isinstance(data, dict) and "answer" in data:
        steps = len(data.get("steps") or [])
        return f"The answer is {data['answer']} (found by a tree search of {steps} steps)."
    return f"The search tool said: {content}"


def create_math_agent(
    model: BaseChatModel | None = None,
    /,
    *,
    tool: BaseTool | None = None,
    prompt: str = SYSTEM_PROMPT,
    name: str = "math_agent",
) -> CompiledStateGraph:
    """Create an agent that may call the SpecSearch tool.

    The agent loop is LangChain's `create_agent` when `langchain` is installed, else
    LangGraph's prebuilt `create_react_agent`: the model sees the tool, decides to call it,
    the tool node runs the search, and the model answers from its result. The tool forwards
    the search's live events to the agent's custom stream (`stream_mode="custom"`).

    Args:
        model: A tool-calling chat model; default `MathRouterChatModel()`, a rule-based
            stand-in for offline use.
        tool: The search tool; default `create_specsearch_tool()` (embedded models, loaded on
            the first call).
        prompt: System prompt.
        name: Graph name.

    Returns:
        The compiled agent; input `{"messages": [...]}`.
    """
    from langgraph_specsearch.tool import create_specsearch_tool

    model = model if model is not None else MathRouterChatModel()
    tools = [tool if tool is not None else create_specsearch_tool()]
    try:
        from langchain.agents import create_agent  # type: ignore[import-not-found]
    except ImportError:
        import warnings

        from langgraph.prebuilt import create_react_agent

        with warnings.catch_warnings():  # deprecated in favour of langchain's create_agent
            warnings.simplefilter("ignore")
            agent: CompiledStateGraph = create_react_agent(model, tools, prompt=prompt, name=name)
        return agent
    return create_agent(model, tools, system_prompt=prompt, name=name)  # type: ignore[no-any-return]
