"""SpecSearch (speculative search for tree-search LLM reasoning) as LangGraph graphs.

Templates (`create_beam_search`, `create_mcts`, `create_best_of_n`) accept any expander
(`create_ar_expander`, `create_sps_expander`, `create_speculative_expander`); `solve` and the
`specsearch` CLI cover the common case.
"""

from langgraph_specsearch.agent import create_math_agent
from langgraph_specsearch.api import Components, SearchConfig, asolve, load_components, solve
from langgraph_specsearch.backends.langchain import LangChainBackend
from langgraph_specsearch.expander_contract import (
    ChildNode,
    ExpanderInput,
    ExpanderOutput,
    make_child,
)
from langgraph_specsearch.graphs.beam import create_beam_search
from langgraph_specsearch.graphs.best_of_n import create_best_of_n
from langgraph_specsearch.graphs.expanders import (
    create_ar_expander,
    create_speculative_expander,
    create_sps_expander,
)
from langgraph_specsearch.graphs.mcts import create_mcts
from langgraph_specsearch.graphs.rollout import make_rollout
from langgraph_specsearch.speculation import SpeculationConfig
from langgraph_specsearch.threshold import ThresholdConfig, ThresholdStore
from langgraph_specsearch.tool import create_specsearch_tool
from langgraph_specsearch.types import GenerationParams, SearchResult, Thought

__all__ = [
    "ChildNode",
    "Components",
    "ExpanderInput",
    "ExpanderOutput",
    "LangChainBackend",
    "GenerationParams",
    "SearchConfig",
    "SearchResult",
    "SpeculationConfig",
    "ThresholdConfig",
    "ThresholdStore",
    "Thought",
    "asolve",
    "create_ar_expander",
    "create_beam_search",
    "create_best_of_n",
    "create_math_agent",
    "create_mcts",
    "create_specsearch_tool",
    "create_sps_expander",
    "create_speculative_expander",
    "load_components",
    "make_child",
    "make_rollout",
    "solve",
]
