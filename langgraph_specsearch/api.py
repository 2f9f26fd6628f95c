"""The common case in a few calls: build backends, the search graph, and run it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Annotated, Any, ClassVar, Literal

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import StateGraph
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from langgraph_specsearch.backends.base import Backend, require_speculation
from langgraph_specsearch.graphs.beam import create_beam_search
from langgraph_specsearch.graphs.expanders import (
    create_ar_expander,
    create_speculative_expander,
    create_sps_expander,
)
from langgraph_specsearch.options import Option, OptionsModel, nest
from langgraph_specsearch.prm.base import PRM, Aggregation
from langgraph_specsearch.retries import search_retry_policy
from langgraph_specsearch.speculation import SpeculationConfig
from langgraph_specsearch.threshold import ThresholdConfig, ThresholdStore
from langgraph_specsearch.types import (
    GenerationParams,
    SearchResult,
    SearchStats,
    Thought,
    ThresholdPoint,
)

Method = Literal["specsearch", "ar", "sps"]
SearchKind = Literal["beam", "mcts", "best-of-n"]
PRMKind = Literal["combined", "judge", "arithmetic"]
"""The built-in PRMs; `SearchConfig.prm` also takes a model PRM style or a known model id."""


SPECSEARCH = {"method": ("specsearch",)}
CARRIED = {"method": ("specsearch",), "threshold.mode": ("adaptive",)}
ENDPOINT = {"uses_endpoints": (True,)}
LOCAL_MODELS = {"local_models": (True,)}
MODEL_PRM = {"model_prm": (True,)}
MODELS, PRMS, SEARCH, ENDPOINTS, LOCAL = "Models", "PRM", "Search", "Endpoints", "Local engine"
THRESHOLD, SCHEDULING = "Threshold (SpecSearch)", "Scheduling (SpecSearch)"


class SearchConfig(OptionsModel):
    """Every option of a search, defined once: the API, the CLI's flags (`--beam-width`) and
    the checkpoint records all come from these fields and their nested configs.

    Options may be given flat (`SearchConfig.model_validate({"theta": 0.8})`) or nested
    (`SearchConfig(threshold=ThresholdConfig(theta=0.8))`); they are read nested
    (`config.threshold.theta`). An option given where the rest of the config ignores it
    (`iterations` with beam search, `theta` with `method="ar"`, `timeout` without an
    endpoint) is refused.
    """

    conditions: ClassVar[dict[str, str]] = {
        "uses_endpoints": "an endpoint ({small_url}, {large_url} or {prm_url})",
        "local_models": "local models (no {small_url} or {large_url})",
        "model_prm": "a model PRM ({prm} math-shepherd, qwen-prm, ... or a PRM model id)",
        "prm_calls_a_model": "a PRM that calls a model (not {prm} arithmetic)",
    }

    method: Annotated[Method, Option(panel=SEARCH)] = "specsearch"
    """specsearch; ar: the large model alone; sps: the large model with token-level
    speculative decoding."""
    search: Annotated[SearchKind, Option(panel=SEARCH)] = "beam"
    """The search template."""
    small: Annotated[str, Option(panel=MODELS)] = "smollm2-135m"
    """Small model (drafts; also the judge of the combined and judge PRMs): embedded name,
    directory or hub id."""
    large: Annotated[str, Option(panel=MODELS)] = "gemma3-270m"
    """Large model: embedded name, directory or hub id."""
    small_url: Annotated[str | None, Option(panel=ENDPOINTS)] = None
    """TGI or OpenAI-compatible endpoint of the small model (used when it drafts, or judges
    for the combined / judge PRM without a PRM endpoint)."""
    large_url: Annotated[str | None, Option(panel=ENDPOINTS)] = None
    """TGI or OpenAI-compatible endpoint of the large model."""
    prm_url: Annotated[str | None, Option(panel=ENDPOINTS, when={"prm_calls_a_model": (True,)})] = (
        None
    )
    """TGI or OpenAI-compatible endpoint of the PRM (a judge model or a served PRM)."""
    protocol: Annotated[
        Literal["auto", "tgi", "openai"], Option(panel=ENDPOINTS, when=ENDPOINT)
    ] = "auto"
    """API of the endpoints (auto: ask the server)."""
    prompt_format: Annotated[
        Literal["fewshot", "chatml"], Option(panel=ENDPOINTS, when=ENDPOINT)
    ] = "fewshot"
    """Prompt format sent to endpoints: few-shot text, or ChatML for chat-tuned servers."""
    api_key: Annotated[
        str | None, Field(repr=False, exclude=True), Option(panel=ENDPOINTS, when=ENDPOINT)
    ] = None
    """Bearer token of the endpoints, PRM endpoint included (default: $SPECSEARCH_API_KEY,
    else $HF_TOKEN; an empty key sends none, so no token from the environment reaches a
    third-party server); never written to dumps, records or checkpoints."""
    timeout: Annotated[float, Field(gt=0), Option(panel=ENDPOINTS, when=ENDPOINT)] = 20.0
    """Seconds one endpoint call may take."""
    retries: Annotated[int, Field(ge=0), Option(panel=ENDPOINTS, when=ENDPOINT)] = 1
    """Retries of an endpoint call that failed for a transient reason (timeout, connection,
    5xx, 429)."""
    prm: Annotated[str, Option(panel=PRMS)] = "combined"
    """combined | judge | arithmetic | math-shepherd | math-psa | qwen-prm | rlhflow | skywork
    | a known PRM model id."""
    prm_model: Annotated[str | None, Option(panel=PRMS, when=MODEL_PRM)] = None
    """PRM checkpoint: hub id, local directory or served name (default: the style's own)."""
    prm_engine: Annotated[
        Literal["local", "tgi", "vllm", "openai"] | None, Option(panel=PRMS, when=MODEL_PRM)
    ] = None
    """Where a model PRM runs (default: tgi with a PRM endpoint, else local)."""
    prm_device: Annotated[str | None, Option(panel=PRMS, when=MODEL_PRM)] = None
    """Device of a local model PRM: cpu, cuda, cuda:N, mps (default: as the models)."""
    prm_dtype: Annotated[
        Literal["auto", "bfloat16", "float16", "float32"], Option(panel=PRMS, when=MODEL_PRM)
    ] = "auto"
    """dtype of a local model PRM."""
    prm_batch_size: Annotated[int, Field(ge=1), Option(panel=PRMS, when=MODEL_PRM)] = 8
    """Paths per forward pass of a local model PRM."""
    prm_tgi_method: Annotated[Literal["prefill", "top_n"], Option(panel=PRMS, when=MODEL_PRM)] = (
        "prefill"
    )
    """How a model PRM served by TGI is read."""
    n_drafts: Annotated[int, Field(ge=1), Option(panel=SEARCH)] = 4
    """N: thoughts per expanded node (beam search, MCTS children), or whole paths
    (best-of-n)."""
    beam_width: Annotated[int, Field(ge=1), Option(panel=SEARCH, when={"search": ("beam",)})] = 2
    """Paths kept per beam-search step."""
    max_steps: Annotated[int, Field(ge=1), Option(panel=SEARCH)] = 6
    """Maximum reasoning steps (MCTS: the depth limit)."""
    iterations: Annotated[int, Field(ge=1), Option(panel=SEARCH, when={"search": ("mcts",)})] = 8
    """MCTS iterations."""
    aggregate: Annotated[Aggregation, Option(panel=SEARCH)] = "last"
    """How per-step PRM scores make a path score."""
    complete: Annotated[bool, Option(panel=SEARCH)] = True
    """When the chosen path states no answer after the search, add one final-answer step."""
    threshold: Annotated[ThresholdConfig, Option(panel=THRESHOLD, when=SPECSEARCH)] = Field(
        default_factory=ThresholdConfig
    )
    """The acceptance rule."""
    speculation: Annotated[SpeculationConfig, Option(panel=SCHEDULING, when=SPECSEARCH)] = Field(
        default_factory=SpeculationConfig
    )
    """Scheduling policies of the SpecSearch expander (`SpeculationConfig.paper()`: the
    paper's)."""
    large_sd: Annotated[bool, Option(panel=SCHEDULING, when=SPECSEARCH)] = False
    """Token-level speculative decoding when the large model regenerates."""
    carry_threshold: Annotated[bool, Option(panel=THRESHOLD, when=CARRIED)] = True
    """Carry beta and the controller's measurements over between searches."""
    threshold_store: Annotated[
        str | None, Option(panel=THRESHOLD, when={**CARRIED, "carry_threshold": (True,)})
    ] = None
    """JSON file carrying beta between processes (default: in memory for the API;
    thresholds.json in the cache for the CLI)."""
    generation: Annotated[GenerationParams, Option(panel="Generation")] = Field(
        default_factory=GenerationParams
    )
    """Sampling parameters of every step."""
    engine: Annotated[
        Literal["auto", "transformers", "llamacpp"], Option(panel=LOCAL, when=LOCAL_MODELS)
    ] = "auto"
    """Local engine (auto: llama.cpp when installed and the models are GGUFs)."""
    device: Annotated[str | None, Option(panel=LOCAL, when=LOCAL_MODELS)] = None
    """cpu | cuda | cuda:N | mps (default: a GPU when there is one, else the CPU)."""
    device_map: Annotated[str | None, Option(panel=LOCAL, when=LOCAL_MODELS)] = None
    """transformers device_map, e.g. auto to shard over GPUs (instead of a device)."""
    dtype: Annotated[
        Literal["float32", "bfloat16", "float16"] | None, Option(panel=LOCAL, when=LOCAL_MODELS)
    ] = None
    """transformers dtype (default: float32). With engine auto, bfloat16 / float16 pick
    transformers; engine llamacpp refuses them."""

    @property
    def uses_endpoints(self) -> bool:
        """Whether any model or the PRM is an endpoint."""
        return bool(self.small_url or self.large_url or self.prm_url)

    @property
    def local_models(self) -> bool:
        """Whether the small and large models run in this process."""
        return not (self.small_url or self.large_url)

    @property
    def model_prm(self) -> bool:
        """Whether the PRM is a trained PRM model (not a built-in one)."""
        from langgraph_specsearch.prm.registry import is_model_prm

        return bool(is_model_prm(self.prm))

    @property
    def prm_calls_a_model(self) -> bool:
        """Whether the PRM calls a model (every PRM but the arithmetic check)."""
        return self.prm != "arithmetic"

    @model_validator(mode="before")
    @classmethod
    def _nest_flat_options(cls, data: Any) -> Any:
        return nest(cls, data) if isinstance(data, dict) else data

    @field_validator("small", "large")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("model name must not be empty")
        return value

    @field_validator("prm")
    @classmethod
    def _known_prm(cls, value: str) -> str:
        from langgraph_specsearch.prm.registry import BUILTIN_PRMS, resolve

        if value not in BUILTIN_PRMS:
            resolve(value)  # raises a one-line ValueError for an unknown name
        return value

    def store_key(self) -> str:
        """What a carried-over beta belongs to: the models, the PRM and the estimator."""
        small = self.small_url or self.small
        large = self.large_url or self.large
        prm = self.prm_url or self.prm
        th = self.threshold
        return f"{small}|{large}|{prm}|{th.estimator}|{th.theta}|{self.prompt_format}"


class Components(BaseModel):
    """Live objects a search runs on (never stored in graph state)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    small: Any
    large: Any
    prm: Any


def needs_small_backend(config: SearchConfig) -> bool:
    """Whether the small model runs as a backend of its own: it drafts (SpecSearch) or it is
    the LLM judge (`combined` / `judge` PRM without `prm_url`). SpS's drafter is not one: it
    is the large backend's assistant (`needs_speculation`)."""
    judge_on_small = config.prm in ("combined", "judge") and not config.prm_url
    return config.method == "specsearch" or judge_on_small


def needs_speculation(config: SearchConfig) -> bool:
    """Whether the large model decodes with token-level speculative decoding (SpS,
    `large_sd`)."""
    return config.method == "sps" or (config.method == "specsearch" and config.large_sd)


def load_components(config: SearchConfig) -> Components:
    """Build the small and large backends and the PRM a config asks for; a backend nothing
    uses (`needs_small_backend`) is neither built nor, for an endpoint, asked for its API."""
    needs_small = needs_small_backend(config)
    needs_sd = needs_speculation(config)
    small: Backend | None = None
    if config.small_url or config.large_url:
        from langgraph_specsearch.backends.endpoint import endpoint_backend

        if needs_small and not config.small_url:
            why = (
                "the small model drafts (--method specsearch)"
                if config.method == "specsearch"
                else f"the small model is the judge of --prm {config.prm} (or give --prm-url)"
            )
            raise ValueError(f"--small-url is needed with --large-url: {why}")
        if not config.large_url:
            raise ValueError("--large-url is needed with --small-url")
        fmt, protocol = config.prompt_format, config.protocol
        plumbing = _endpoint_options(config)
        small = (
            endpoint_backend(config.small_url, protocol=protocol, prompt_format=fmt, **plumbing)
            if config.small_url and needs_small
            else None
        )
        large: Backend = endpoint_backend(
            config.large_url, protocol=protocol, prompt_format=fmt, **plumbing
        )
    else:
        from langgraph_specsearch.engines import load_local_backends

        small, large = load_local_backends(config, needs_small=needs_small, needs_sd=needs_sd)
    if needs_sd:  # one-line error naming the endpoint, not silent plain decoding
        require_speculation(large, sampling=config.generation.temperature > 0)
    return Components(small=small, large=large, prm=build_prm(config, small))


def _endpoint_key(config: SearchConfig) -> str:
    """The bearer token for the endpoints (`""`: none; see `endpoint.resolve_api_key`)."""
    from langgraph_specsearch.backends.endpoint import resolve_api_key

    return resolve_api_key(config.api_key)


def _endpoint_options(config: SearchConfig) -> dict[str, Any]:
    """`endpoint_backend`'s key, timeout and retries from a config."""
    return {"api_key": config.api_key, "timeout": config.timeout, "retries": config.retries}


def build_prm(config: SearchConfig, judge_backend: Backend | None) -> PRM:
    """The configured PRM; the LLM judge runs on the small model (cheap) or on `prm_url`."""
    from langgraph_specsearch.prm.arithmetic import ArithmeticPRM
    from langgraph_specsearch.prm.registry import is_model_prm

    if is_model_prm(config.prm):
        from langgraph_specsearch.prm.registry import build_model_prm

        return build_model_prm(  # type: ignore[no-any-return]
            config.prm,
            model=config.prm_model,
            url=config.prm_url,
            engine=config.prm_engine,
            device=config.prm_device,
            dtype=config.prm_dtype,
            batch_size=config.prm_batch_size,
            tgi_method=config.prm_tgi_method,
            api_key=_endpoint_key(config) if config.prm_url else None,
        )
    if config.prm == "arithmetic":
        return ArithmeticPRM()
    if config.prm_url:
        from langgraph_specsearch.backends.endpoint import endpoint_backend

        judge_backend = endpoint_backend(
            config.prm_url,
            protocol=config.protocol,
            prompt_format=config.prompt_format,
            **_endpoint_options(config),
        )
    if judge_backend is None:
        raise ValueError("the judge PRM needs a small model or --prm-url")
    from langgraph_specsearch.prm.judge import JudgePRM

    judge = JudgePRM(judge_backend)
    if config.prm == "judge":
        return judge
    from langgraph_specsearch.prm.combined import CombinedPRM

    return CombinedPRM(judge, ArithmeticPRM())


_MEMORY_STORES: dict[str, ThresholdStore] = {}


def threshold_store(config: SearchConfig) -> ThresholdStore | None:
    """Where beta carries over between searches: `threshold_store` (a JSON file), else one
    in-memory store per process and model pair; None when `carry_threshold` is off."""
    if not config.carry_threshold:
        return None
    if config.threshold_store:
        return ThresholdStore(config.threshold_store, key=config.store_key())
    return _MEMORY_STORES.setdefault(config.store_key(), ThresholdStore(key=config.store_key()))


def create_expander(config: SearchConfig, /, *, components: Components) -> StateGraph:
    """The expander for `config.method` over `components`."""
    params = config.generation
    retry_policy = search_retry_policy(config.retries)  # the model-calling nodes' retries
    if config.method == "specsearch":
        small, large, prm = components.small, components.large, components.prm
        if config.speculation.pipeline == "per_node":
            # per-node pipelines call the models node by node: an in-process model gets the
            # coinciding calls merged into one batch (a serving engine batches them itself)
            from langgraph_specsearch.backends.batching import BatchedBackend, BatchedPRM
            from langgraph_specsearch.speculation import is_local

            small = BatchedBackend(small) if is_local(small) else small
            large = BatchedBackend(large) if is_local(large) else large
            prm = BatchedPRM(prm)
        return create_speculative_expander(
            small=small,
            large=large,
            prm=prm,
            threshold=config.threshold,
            speculation=config.speculation,
            store=threshold_store(config),
            draft_params=params,
            retry_policy=retry_policy,
        )
    factory = create_sps_expander if config.method == "sps" else create_ar_expander
    return factory(
        large=components.large, prm=components.prm, params=params, retry_policy=retry_policy
    )


def create_search_graph(config: SearchConfig, /, *, components: Components) -> StateGraph:
    """Create the uncompiled search graph for a config (template + expander)."""
    expander = create_expander(config, components=components)
    if config.search == "mcts":
        from langgraph_specsearch.graphs.mcts import create_mcts

        return create_mcts(
            expander,
            iterations=config.iterations,
            max_depth=config.max_steps,
            children_per_expansion=config.n_drafts,
            aggregate=config.aggregate,
            complete=config.complete,
        )
    if config.search == "best-of-n":
        from langgraph_specsearch.graphs.best_of_n import create_best_of_n

        return create_best_of_n(
            expander,
            n=config.n_drafts,
            max_steps=config.max_steps,
            aggregate=config.aggregate,
            complete=config.complete,
        )
    return create_beam_search(
        expander,
        beam_width=config.beam_width,
        n=config.n_drafts,
        max_steps=config.max_steps,
        aggregate=config.aggregate,
        complete=config.complete,
    )


def result_from_state(
    values: dict[str, Any], config: SearchConfig, *, thread_id: str | None = None
) -> SearchResult:
    """Turn a finished graph's full state into a `SearchResult` (run on thread `thread_id`)."""
    return SearchResult(
        question=values["question"],
        answer=values.get("answer"),
        path=[Thought.model_validate(n) for n in values.get("path", [])],
        nodes=[Thought.model_validate(n) for n in values.get("nodes", {}).values()],
        stats=SearchStats.model_validate(values.get("stats", {})),
        threshold_trace=[
            ThresholdPoint.model_validate(p) for p in values.get("threshold_trace", [])
        ],
        method=config.method,
        search=config.search,
        thread_id=thread_id,
    )


@asynccontextmanager
async def _checkpointer(path: str | None) -> AsyncIterator[BaseCheckpointSaver]:
    """SQLite checkpoints when a path is given, else in memory."""
    if path is None:
        yield InMemorySaver()
        return
    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

    async with AsyncSqliteSaver.from_conn_string(path) as saver:
        yield saver


async def asolve(
    question: str | None,
    config: SearchConfig | None = None,
    *,
    components: Components | None = None,
    checkpoint: str | None = None,
    thread_id: str | None = None,
    on_update: Callable[[str, dict[str, Any]], None] | None = None,
    on_event: Callable[[dict[str, Any]], None] | None = None,
) -> SearchResult:
    """Run one search and return its result.

    Args:
        question: The problem; None resumes the checkpointed thread `thread_id` (both
            `checkpoint` and `thread_id` are then required).
        config: Search configuration (defaults: SpecSearch, beam search, embedded models).
        components: Pre-built backends and PRM (loaded from `config` if omitted).
        checkpoint: SQLite file for checkpoints; a failed run resumes from its last step.
        thread_id: Checkpoint thread. None with a question: a fresh unique id
            (`specsearch-<hex>`), so several searches can share one checkpoint file; the id
            used is `SearchResult.thread_id`. A thread that already holds a search is refused
            for a new question.
        on_update: Called with (node name, update) for every node that finishes.
        on_event: Called with every live search event (`events.SearchEvent`) as it happens.
    """
    check_solve_arguments(question, config, components, checkpoint, thread_id)
    config = config or SearchConfig()
    if question is not None and not question.strip():
        raise ValueError("question must not be empty")
    if thread_id is None:  # a new question (resuming without one is refused above)
        thread_id = new_thread_id()
    run_config: Any = {"configurable": {"thread_id": thread_id}, "recursion_limit": 1000}
    async with _checkpointer(checkpoint) as saver:
        existing = await saver.aget_tuple(run_config)
        if question is None and existing is None:
            raise ValueError(f"no checkpointed search for thread {thread_id!r}")
        if question is not None and existing is not None:
            raise ValueError(
                f"thread {thread_id!r} already holds a search: resume it or use a new thread id"
            )
        if checkpoint is not None:  # the options travel with the checkpoint (run_record.py)
            from langgraph_specsearch import run_record

            if question is None:
                await asyncio.to_thread(run_record.check_resume, str(checkpoint), thread_id, config)
            else:
                await asyncio.to_thread(run_record.record, str(checkpoint), thread_id, config)
        if components is None:
            components = await asyncio.to_thread(load_components, config)
        builder = create_search_graph(config, components=components)
        graph = builder.compile(checkpointer=saver)
        payload = None if question is None else {"question": question}
        # durability="async": each step's checkpoint is written (SQLite, milliseconds) while the
        # next step starts; "sync" would wait for it, but LangGraph 1.2 fails under "sync" with
        # subgraphs compiled checkpointer=False, as the expanders are (README, Durable runs)
        async for namespace, mode, update in graph.astream(
            payload,
            run_config,
            stream_mode=["updates", "custom"],
            subgraphs=True,
            durability="async",
        ):
            if mode == "custom":
                if on_event is not None and isinstance(update, dict):
                    on_event(update)
            elif on_update is not None and isinstance(update, dict):
                for node, value in update.items():
                    on_update(
                        "/".join([*(ns.split(":")[0] for ns in namespace), node]), value or {}
                    )
        state = await graph.aget_state(run_config)
    if state.next:
        raise RuntimeError(f"search stopped before the end (next: {state.next})")
    if not state.values.get("question"):
        raise ValueError(f"thread {thread_id!r} holds no search to resume")
    return result_from_state(state.values, config, thread_id=thread_id)


def new_thread_id() -> str:
    """A fresh checkpoint thread id, unique across processes: `specsearch-<32 hex digits>`."""
    import uuid

    return f"specsearch-{uuid.uuid4().hex}"


def check_solve_arguments(
    question: Any, config: Any, components: Any, checkpoint: Any, thread_id: Any
) -> None:
    """TypeError naming the argument of `solve` / `asolve` that has the wrong type; ValueError
    for a checkpoint file whose directory does not exist."""
    import os

    if question is None:
        if checkpoint is None or thread_id is None:
            raise TypeError(
                "question must be a str (None resumes a checkpointed search: pass checkpoint="
                " and thread_id=)"
            )
    elif not isinstance(question, str):
        raise TypeError(f"question must be a str, got {type(question).__name__}")
    if config is not None and not isinstance(config, SearchConfig):
        raise TypeError(f"config must be a SearchConfig or None, got {type(config).__name__}")
    if components is not None and not isinstance(components, Components):
        raise TypeError(f"components must be a Components or None, got {type(components).__name__}")
    if checkpoint is not None and not isinstance(checkpoint, (str, os.PathLike)):
        raise TypeError(f"checkpoint must be a path or None, got {type(checkpoint).__name__}")
    if thread_id is not None and (not isinstance(thread_id, str) or not thread_id):
        raise TypeError(f"thread_id must be a non-empty str or None, got {thread_id!r}")
    if checkpoint is not None:
        folder = os.path.dirname(os.path.abspath(os.fspath(checkpoint)))
        if not os.path.isdir(folder):
            raise ValueError(f"checkpoint {os.fspath(checkpoint)!r}: no directory {folder!r}")


def solve(question: str | None, config: SearchConfig | None = None, **kwargs: Any) -> SearchResult:
    """Synchronous `asolve` (works inside a running event loop too; there, prefer `asolve`)."""
    from langgraph_specsearch.background_loop import run_sync

    check_solve_arguments(
        question,
        config,
        kwargs.get("components"),
        kwargs.get("checkpoint"),
        kwargs.get("thread_id"),
    )
    return run_sync(asolve(question, config, **kwargs))
