"""Process reward models: the protocol, aggregation, and the arithmetic / judge / combined PRMs."""

from langgraph_specsearch.prm.arithmetic import ArithmeticPRM, StepCheck, check_step
from langgraph_specsearch.prm.base import PRM, Aggregation, LastStepPRM, aggregate
from langgraph_specsearch.prm.combined import CombinedPRM
from langgraph_specsearch.prm.judge import JudgePRM

__all__ = [
    "PRM",
    "Aggregation",
    "ArithmeticPRM",
    "CombinedPRM",
    "JudgePRM",
    "LastStepPRM",
    "StepCheck",
    "aggregate",
    "check_step",
]
