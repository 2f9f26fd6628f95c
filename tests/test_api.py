"""The public API and CLI on scripted components: resume, tool, viz, bad input."""

from __future__ import annotations

import asyncio
import json

import pytest
from scripted import ScriptedBackend, ScriptedPRM, by_text
from typer.testing import CliRunner

from langgraph_specsearch.api import Components, SearchConfig, asolve, solve
from langgraph_specsearch.cli import app
from langgraph_specsearch.speculation import SpeculationConfig
from langgraph_specsearch.tool import create_specsearch_tool
from langgraph_specsearch.viz import search_tree_mermaid


def components(fail_large_on_call: int | None = None) -> Components:
    def large(prompt: str, call: int, i: int) -> str:
        if call == fail_large_on_call:
            raise ConnectionError("large endpoint went away")
        return "The answer is 7. 0.6" if call >= 3 else f"large c{call} 0.5"

    small = ScriptedBackend("small", lambda p, c, i: f"small c{c} {[0.9, 0.1][i % 2]}")
    return Components(small=small, large=ScriptedBackend("large", large), prm=ScriptedPRM(by_text))


# The paper's schedule (lock-step, every rejected draft regenerated, beta per problem): the
# scripted large model's answer comes at its fourth call.
CONFIG = SearchConfig(
    n_drafts=2,
    beam_width=1,
    max_steps=6,
    speculation=SpeculationConfig(pipeline="lockstep", regenerate="all", controller="off"),
    carry_threshold=False,
)


def test_solve_returns_a_full_result() -> None:
    result = asyncio.run(asolve("q?", CONFIG, components=components()))
    assert result.answer == "7"
    assert {s.source for s in result.path} == {"small", "large"}
    assert any(n.rejected for n in result.nodes)
    assert result.threshold_trace[0].beta is None and result.threshold_trace[
        1
    ].beta == pytest.approx(0.5)
    assert result.stats.drafts == result.stats.accepted + result.stats.rejected > 0


def test_failed_model_call_resumes_from_the_checkpoint(tmp_path) -> None:
    db = str(tmp_path / "ckpt.sqlite")
    broken = components(fail_large_on_call=2)
    no_retries = CONFIG.model_copy(update={"retries": 0})  # else the graph retries the call
    with pytest.raises(ConnectionError):
        asyncio.run(asolve("q?", no_retries, components=broken, checkpoint=db, thread_id="t1"))
    calls_before = len(broken.large.calls)
    healthy = components()
    healthy.large.calls.extend(broken.large.calls[:2])  # same call numbering as before the failure
    result = asyncio.run(asolve(None, CONFIG, components=healthy, checkpoint=db, thread_id="t1"))
    assert result.answer == "7"
    # The failure came in step 3's regenerate node. Steps 1-2 were checkpointed, so the resumed
    # run starts at step 3's expansion: a node pipeline is the unit of recovery (its draft is
    # made again, nothing of steps 1-2 is), then step 4.
    assert len(broken.small.calls) == 2 and calls_before == 3
    assert len(healthy.small.calls) == 2
    assert healthy.small.calls[0][0] == broken.small.calls[1][0]  # step 3's draft, again
    assert healthy.large.calls[2][0] == broken.large.calls[2][0]  # the failed call, retried
    assert result.path[0].text == "large c0 0.5"


def test_thread_ids_are_not_mixed_up(tmp_path) -> None:
    db = str(tmp_path / "ckpt.sqlite")
    asyncio.run(asolve("q?", CONFIG, components=components(), checkpoint=db, thread_id="a"))
    with pytest.raises(ValueError, match="already holds a search"):
        asyncio.run(asolve("q2?", CONFIG, components=components(), checkpoint=db, thread_id="a"))
    with pytest.raises(ValueError, match="no checkpointed search for thread 'b'"):
        asyncio.run(asolve(None, CONFIG, components=components(), checkpoint=db, thread_id="b"))


def test_new_questions_share_a_checkpoint_file_without_thread_ids(tmp_path) -> None:
    db = str(tmp_path / "ckpt.sqlite")
    first = solve("q?", CONFIG, components=components(), checkpoint=db)
    second = solve("q2?", CONFIG, components=components(), checkpoint=db)
    assert first.thread_id and second.thread_id and first.thread_id != second.thread_id
    assert second.question == "q2?" and second.answer == "7"
    # the reported id is the thread the search was checkpointed under: it resumes that search
    again = asyncio.run(
        asolve(None, CONFIG, components=components(), checkpoint=db, thread_id=first.thread_id)
    )
    assert again.question == "q?" and again.thread_id == first.thread_id
    named = asyncio.run(asolve("q3?", CONFIG, components=components(), thread_id="mine"))
    assert named.thread_id == "mine"


def test_resuming_needs_a_thread_id(tmp_path) -> None:
    db = str(tmp_path / "ckpt.sqlite")
    with pytest.raises(TypeError, match="thread_id="):
        asyncio.run(asolve(None, CONFIG, components=components(), checkpoint=db))


def test_tool_runs_a_search() -> None:
    tool = create_specsearch_tool(CONFIG, components=components())
    out = asyncio.run(tool.ainvoke({"question": "q?"}))
    assert out["answer"] == "7"
    assert out["steps"][-1]["text"].startswith("The answer is 7")


def test_mermaid_tree_marks_rejected_and_chosen() -> None:
    result = asyncio.run(asolve("q?", CONFIG, components=components()))
    text = search_tree_mermaid(result)
    assert text.startswith("flowchart TD")
    assert "-.->" in text and "class" in text and "chosen" in text
    assert text.count("-->") + text.count("-.->") == len(result.nodes) - 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["solve", ""], "question must not be empty"),
        (["solve", "q", "--n-drafts", "0"], "--n-drafts"),
        (["solve", "q", "--theta", "1.5"], "--theta"),
        (["solve", "q", "--method", "magic"], "--method"),
        (["solve", "q", "--large", "no-such-model"], "unknown model 'no-such-model'"),
        (["solve", "--resume"], "--resume needs --thread-id"),
    ],
)
def test_cli_bad_input_is_one_line_exit_2(args: list[str], message: str) -> None:
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], result.output


def test_config_json_roundtrip() -> None:
    assert SearchConfig.model_validate(json.loads(CONFIG.model_dump_json())) == CONFIG
