"""Live search events (custom stream mode) and the sync entry points inside a running loop."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from scripted import ScriptedBackend, ScriptedPRM, by_text

from langgraph_specsearch.api import Components, SearchConfig, asolve, solve
from langgraph_specsearch.background_loop import run_sync
from langgraph_specsearch.events import EVENT_NAMES, describe
from langgraph_specsearch.graphs.beam import create_beam_search
from langgraph_specsearch.graphs.best_of_n import create_best_of_n
from langgraph_specsearch.graphs.expanders import create_speculative_expander
from langgraph_specsearch.graphs.mcts import create_mcts
from langgraph_specsearch.speculation import Pipeline, SpeculationConfig


def small(prompt: str, call: int, i: int) -> str:
    return f"small c{call} {[0.9, 0.2][i % 2]}"


def large(prompt: str, call: int, i: int) -> str:
    return "The answer is 7. 0.6" if call >= 2 else f"large c{call} 0.5"


def expander(pipeline: Pipeline = "per_node") -> Any:
    return create_speculative_expander(
        small=ScriptedBackend("small", small),
        large=ScriptedBackend("large", large),
        prm=ScriptedPRM(by_text),
        # one draft passes per node
        speculation=SpeculationConfig(controller="off", drafts=2, pipeline=pipeline),
    )


def beam(pipeline: Pipeline = "per_node") -> Any:
    return create_beam_search(expander(pipeline), beam_width=2, n=2, max_steps=5).compile()


async def collect(graph: Any) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    events: list[dict[str, Any]] = []
    final: dict[str, Any] = {}
    async for _, mode, chunk in graph.astream(
        {"question": "q"}, stream_mode=["custom", "values"], subgraphs=True
    ):
        if mode == "custom":
            events.append(chunk)
        elif "answer" in chunk:
            final = chunk
    return events, final


def test_events_arrive_in_search_order_and_match_the_result() -> None:
    events, final = asyncio.run(collect(beam()))
    kinds = [e["event"] for e in events]
    assert set(kinds) == set(EVENT_NAMES)
    assert kinds[-1] == "answer_found" and kinds.count("answer_found") == 1
    assert events[-1]["answer"] == final["answer"] == "7"
    assert [n["id"] for n in events[-1]["path"]] == [n["id"] for n in final["path"]]
    # expansion by expansion: its thoughts, then the merge, then the template's choice
    merges = [i for i, k in enumerate(kinds) if k == "threshold_updated"]
    assert len(merges) == final["stats"]["expansions"]
    start = 0
    for expansion, end in enumerate(merges):
        inside = events[start:end]
        assert inside and all(e["expansion"] == expansion for e in inside)
        assert events[end]["expansion"] == expansion
        assert kinds[end + 1] in ("step_chosen", "answer_found")
        start = end + 2 if kinds[end + 1] == "step_chosen" else end + 1
        # per thought: written, then scored, then (drafts only) judged
        for e in inside:
            if e["event"] in ("drafted", "regenerated"):
                key = (e["parent_id"], e["source"], e["index"])
                later = [
                    x["event"]
                    for x in inside[inside.index(e) + 1 :]
                    if (x["parent_id"], x.get("source", "small"), x["index"]) == key
                ]
                assert later[0] == "scored"
                if e["source"] == "small":
                    assert later[1] in ("accepted", "rejected")
    # the first expansion is the large model's warm-up: no drafts, beta from its scores
    assert events[merges[0]]["decision"] == "warmup" and events[merges[0]]["beta"] is None
    assert events[merges[0]]["beta_next"] == pytest.approx(0.5)
    # every verdict is the threshold rule applied to the event's own numbers
    verdicts = [e for e in events if e["event"] in ("accepted", "rejected")]
    assert verdicts
    for e in verdicts:
        assert (e["event"] == "accepted") == (e["score"] >= e["threshold"])
    stats = final["stats"]
    assert kinds.count("drafted") == stats["drafts"]
    assert kinds.count("accepted") == stats["accepted"]
    assert kinds.count("rejected") == stats["rejected"]
    assert all(json.loads(json.dumps(e)) == e for e in events)
    assert all(describe(e) and "\n" not in describe(e) for e in events)


def test_mcts_and_best_of_n_send_their_choices_and_answer() -> None:
    for graph, search in [
        (create_mcts(expander(), iterations=3, children_per_expansion=2).compile(), "mcts"),
        (create_best_of_n(expander(), n=2, max_steps=4).compile(), "best-of-n"),
    ]:
        events, final = asyncio.run(collect(graph))
        chosen = [e for e in events if e["event"] == "step_chosen"]
        assert chosen and all(e["search"] == search for e in chosen)
        assert events[-1]["event"] == "answer_found" and events[-1]["answer"] == final["answer"]


def by_pipeline(events: list[dict[str, Any]]) -> dict[tuple[Any, Any], list[tuple[Any, ...]]]:
    """Events per (expansion, parent): their order there (pipelines of one expansion run
    concurrently, so only the order inside one is fixed)."""
    out: dict[tuple[Any, Any], list[tuple[Any, ...]]] = {}
    for e in events:
        key = (e.get("expansion"), e.get("parent_id"))
        out.setdefault(key, []).append((e["event"], e.get("source"), e.get("index")))
    return out


def test_sync_stream_sends_the_same_events() -> None:
    # lock-step: per-node pipelines race for the scripted models' call counters, so which node
    # gets which text would depend on timing; lock-step makes one call per phase
    async_events = asyncio.run(collect(beam("lockstep")))[0]
    sync = beam("lockstep").stream({"question": "q"}, stream_mode="custom", subgraphs=True)
    sync_events = [chunk for _, chunk in sync]
    assert by_pipeline(sync_events) == by_pipeline(async_events)
    assert sync_events[-1] == async_events[-1]


def scripted_search() -> tuple[Components, SearchConfig]:
    """The scripted models and a small beam-search config for the `solve` entry points."""
    components = Components(
        small=ScriptedBackend("small", small),
        large=ScriptedBackend("large", large),
        prm=ScriptedPRM(by_text),
    )
    config = SearchConfig(
        n_drafts=2,
        beam_width=2,
        max_steps=5,
        carry_threshold=False,
        speculation=SpeculationConfig(drafts=2),
    )
    return components, config


def test_sync_entry_points_work_inside_a_running_loop() -> None:
    components, config = scripted_search()

    async def inside() -> tuple[Any, Any]:
        out = beam().invoke({"question": "q"})  # sync invoke, with this loop running
        return out["answer"], solve("q", config, components=components).answer

    assert asyncio.run(inside()) == ("7", "7")


def test_asolve_reports_events_and_sync_calls_from_the_shared_loop_fail_in_one_line() -> None:
    components, config = scripted_search()
    seen: list[str] = []
    result = asyncio.run(
        asolve("q", config, components=components, on_event=lambda e: seen.append(e["event"]))
    )
    assert seen[-1] == "answer_found" and result.answer == "7"

    async def nested() -> None:
        run_sync(asyncio.sleep(0))

    with pytest.raises(RuntimeError, match="use the async API"):
        run_sync(nested())
