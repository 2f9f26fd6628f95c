"""Pydantic models shared by every layer: generations, thoughts, usage and search results."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field

from langgraph_specsearch.options import Option, OptionsModel

Source = Literal["small", "large"]
FinishReason = Literal["stop_sequence", "eos_token", "length"]


class GenerationParams(OptionsModel):
    """Sampling parameters of every step."""

    max_new_tokens: Annotated[int, Field(ge=1)] = 48
    """Token budget of a step."""
    temperature: Annotated[float, Field(ge=0.0)] = 0.7
    """Sampling temperature (0: greedy)."""
    top_p: Annotated[float, Field(gt=0.0, le=1.0)] = 0.95
    """Nucleus sampling mass."""
    seed: Annotated[int | None, Field(ge=0, le=2**31 - 1)] = 0
    """Random seed; each expansion and sample derives its own from it (none: unseeded)."""
    stop: Annotated[list[str], Option(cli=False)] = Field(default_factory=lambda: ["\n\n"])
    """Step delimiters: a thought ends at the first of these."""
    final_max_new_tokens: Annotated[int | None, Field(ge=1)] = None
    """Token budget of a step that finishes the solution (at the depth limit, or the
    completion step), which runs to the end rather than to the step delimiter (default: 4 x
    the step budget)."""


class Generation(BaseModel):
    """One continuation returned by a backend."""

    text: str
    tokens: int
    finish_reason: FinishReason
    latency_s: float = 0.0
    logprobs: list[float] | None = None
    accepted_draft_tokens: int | None = None


class Thought(BaseModel):
    """One reasoning step in the search tree."""

    id: str
    parent_id: str | None
    step: int
    text: str
    source: Source | Literal["root"]
    score: float | None = None
    tokens: int = 0
    latency_s: float = 0.0
    finish_reason: str = ""
    terminal: bool = False
    rejected: bool = False
    visits: int = 0
    value: float = 0.0


class ModelUsage(BaseModel):
    """Calls, tokens and seconds spent in one model (or the PRM).

    `accepted_draft_tokens`: tokens of the model's own draft (token-level speculative
    decoding) that it accepted, where the backend reports them; `mean_call_s`: seconds per call.
    """

    calls: int = 0
    generated_tokens: int = 0
    time_s: float = 0.0
    accepted_draft_tokens: int = 0
    mean_call_s: float | None = None


class ThresholdPoint(BaseModel):
    """One expansion's threshold record: the estimate used (`beta`) and the next (`beta_next`).

    `large_mean` is the mean PRM score of the large model's thoughts at this step, so the
    paper's quality condition beta(k) >= mu_large(k) can be read off the trace; `decision` is
    how the expansion was made (`warmup`, `speculate`, `explore`, `large`), `nodes` how many
    frontier nodes it expanded and `probe` whether large probe thoughts were asked for.
    """

    step: int
    beta: float | None
    beta_next: float | None = None
    large_scores: list[float] = Field(default_factory=list)
    accepted: int = 0
    rejected: int = 0
    decision: str = ""
    nodes: int = 0
    probe: bool = False
    large_mean: float | None = None


class SearchStats(BaseModel):
    """Counters of one search.

    `wall_s` is the time the search was running (expansions, scoring), excluding any downtime
    between a failure and a resume. `speculative_expansions` were drafted by the small model,
    `warmup_expansions` made by the large model alone before beta existed, and
    `controller_fallbacks` sent to the large model alone by the controller (predicted to lose);
    `controller_explorations` speculated anyway to refresh its estimates; `probes` are large
    thoughts asked for to keep beta tracking the large model. `small_drafted_share` is the
    share of expansions the small model drafted.

    `answer_from` says where the answer came from: `search` (a step of the search stated it),
    `final_step` (the last expansion at the depth limit, which generated to the end of the
    solution), `completion` (a final-answer step added to the best open path after the
    search) or `none` (nothing stated an answer; `no_answer_reason` says why).
    """

    wall_s: float = 0.0
    small: ModelUsage = Field(default_factory=ModelUsage)
    large: ModelUsage = Field(default_factory=ModelUsage)
    prm: ModelUsage = Field(default_factory=ModelUsage)
    other_s: float = 0.0
    drafts: int = 0
    accepted: int = 0
    rejected: int = 0
    acceptance_rate: float | None = None
    expansions: int = 0
    speculative_expansions: int = 0
    warmup_expansions: int = 0
    controller_fallbacks: int = 0
    controller_explorations: int = 0
    probes: int = 0
    small_drafted_share: float | None = None
    answer_from: Literal["search", "final_step", "completion", "none", ""] = ""
    no_answer_reason: str | None = None


class SearchResult(BaseModel):
    """What a search returns: the answer, the chosen path and everything explored.

    `thread_id` is the checkpoint thread the search ran on (`asolve` fills it: the one passed,
    or the fresh one made for a new question); with a checkpoint file it is what
    `asolve(None, ..., thread_id=...)` resumes. None where the result was not made by `asolve`.
    """

    question: str
    answer: str | None
    path: list[Thought]
    nodes: list[Thought]
    stats: SearchStats
    threshold_trace: list[ThresholdPoint]
    method: str = ""
    search: str = ""
    thread_id: str | None = None
