"""Process reward models: the protocol, aggregation, the built-in arithmetic / judge / combined
PRMs, and the trained PRMs of the field (styles, local transformers, TGI, vLLM, OpenAI; imported
on first use)."""

from typing import Any

from langgraph_specsearch.prm.arithmetic import ArithmeticPRM, StepCheck, check_step
from langgraph_specsearch.prm.base import PRM, Aggregation, LastStepPRM, aggregate
from langgraph_specsearch.prm.combined import CombinedPRM
from langgraph_specsearch.prm.errors import PRMAlignmentError, PRMLoadError
from langgraph_specsearch.prm.judge import JudgePRM

_LAZY = {
    "KNOWN_PRMS": "registry",
    "build_model_prm": "registry",
    "STYLES": "styles",
    "PRMStyle": "styles",
    "style_by_name": "styles",
    "TransformersPRM": "local",
    "load_transformers_prm": "local",
    "TGIPRM": "tgi",
    "MathShepherdTGIPRM": "tgi",
    "OpenAILogprobsPRM": "http",
    "VLLMPoolingPRM": "http",
}


def __getattr__(name: str) -> Any:
    """The model-PRM classes, imported when first asked for (httpx, huggingface_hub)."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"langgraph_specsearch.prm.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "KNOWN_PRMS",
    "PRM",
    "STYLES",
    "TGIPRM",
    "Aggregation",
    "ArithmeticPRM",
    "CombinedPRM",
    "JudgePRM",
    "LastStepPRM",
    "MathShepherdTGIPRM",
    "OpenAILogprobsPRM",
    "PRMAlignmentError",
    "PRMLoadError",
    "PRMStyle",
    "StepCheck",
    "TransformersPRM",
    "VLLMPoolingPRM",
    "aggregate",
    "build_model_prm",
    "check_step",
    "load_transformers_prm",
    "style_by_name",
]
