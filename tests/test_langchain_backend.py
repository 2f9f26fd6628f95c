"""LangChainBackend: a LangChain LLM or chat model as the search's small or large model."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.language_models.fake import FakeListLLM
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from scripted import ScriptedPRM, by_text

from langgraph_specsearch.backends.base import BackendError
from langgraph_specsearch.backends.langchain import LangChainBackend
from langgraph_specsearch.graphs.beam import create_beam_search
from langgraph_specsearch.graphs.expanders import create_speculative_expander
from langgraph_specsearch.types import GenerationParams

SEEN: list[dict[str, Any]] = []


class RecordingChat(BaseChatModel):
    """A chat model with the usual sampling fields; replies from what it was configured with."""

    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int = 256
    seed: int | None = None
    reply: str = "step"
    score: str = "0.5"

    @property
    def _llm_type(self) -> str:
        return "recording"

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        raise NotImplementedError

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        SEEN.append(
            {"prompt": str(messages[-1].content), "stop": stop, "seed": self.seed,
             "temperature": self.temperature, "max_tokens": self.max_tokens}
        )  # fmt: skip
        text = f"{self.reply} s{self.seed} {self.score}\n\nignored after the stop"
        message = AIMessage(
            text,
            usage_metadata={"input_tokens": 9, "output_tokens": 4, "total_tokens": 13},
            response_metadata={"finish_reason": "stop"},
        )
        return ChatResult(generations=[ChatGeneration(message=message)])


def test_chat_model_gets_the_step_parameters_and_seeds_per_sample() -> None:
    SEEN.clear()
    backend = LangChainBackend(RecordingChat())
    params = GenerationParams(max_new_tokens=17, temperature=0.6, seed=100, stop=["\n\n"])
    out = asyncio.run(backend.agenerate(["p0", "p1"], n=3, params=params))
    assert [[g.text for g in group] for group in out] == [
        [f"step s{100 + i} 0.5" for i in range(3)],
        [f"step s{103 + i} 0.5" for i in range(3)],
    ]
    assert all(g.tokens == 4 and g.finish_reason == "stop_sequence" for gs in out for g in gs)
    assert sorted(s["seed"] for s in SEEN) == list(range(100, 106))
    assert {(s["temperature"], s["max_tokens"], tuple(s["stop"])) for s in SEEN} == {
        (0.6, 17, ("\n\n",))
    }
    assert RecordingChat().seed is None  # the wrapped model itself is left as it was


def test_greedy_asks_once_and_repeats() -> None:
    SEEN.clear()
    backend = LangChainBackend(RecordingChat())
    out = asyncio.run(backend.agenerate(["p"], n=4, params=GenerationParams(temperature=0.0)))
    assert len(SEEN) == 1 and len(out[0]) == 4 and len({g.text for g in out[0]}) == 1


def test_text_completion_model_and_its_limits() -> None:
    llm = FakeListLLM(responses=["x = 2 + 3 = 5\n\nmore", "The answer is 5."])
    backend = LangChainBackend(llm)
    out = asyncio.run(backend.agenerate(["q"], n=2, params=GenerationParams(seed=None)))
    assert [g.text for g in out[0]] == ["x = 2 + 3 = 5", "The answer is 5."]
    assert out[0][0].tokens == len(["x", "=", "2", "+", "3", "=", "5"])  # no usage: words
    with pytest.raises(BackendError, match="no next-token log-probabilities"):
        asyncio.run(backend.anext_token_logprobs(["q"], ["Yes", "No"]))
    with pytest.raises(TypeError, match="LangChain LLM or chat model"):
        LangChainBackend(object())  # type: ignore[arg-type]


def test_a_search_runs_on_langchain_models() -> None:
    small = LangChainBackend(RecordingChat(reply="draft", score="0.9"), name="small")
    large = LangChainBackend(RecordingChat(reply="The answer is 4.", score="0.6"), name="large")
    graph = create_speculative_expander(small=small, large=large, prm=ScriptedPRM(by_text))
    out = asyncio.run(create_beam_search(graph, beam_width=1, n=2, max_steps=3).compile().ainvoke(
        {"question": "2+2?"}
    ))  # fmt: skip
    assert out["answer"] == "4"
    assert out["stats"]["large"]["calls"] >= 1
