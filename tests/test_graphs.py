"""The algorithm, pinned with scripted backends and a scripted PRM."""

from __future__ import annotations

import asyncio

import pytest
from scripted import ScriptedBackend, ScriptedPRM, by_text, run_full

from langgraph_specsearch.graphs.beam import create_beam_search
from langgraph_specsearch.graphs.expanders import (
    create_ar_expander,
    create_speculative_expander,
    create_sps_expander,
)
from langgraph_specsearch.speculation import SpeculationConfig
from langgraph_specsearch.threshold import ThresholdConfig

PAPER = SpeculationConfig.paper()


def small_script(scores_per_call: list[list[float]]):
    def script(prompt: str, call: int, i: int) -> str:
        row = scores_per_call[call]
        return f"small c{call} {row[i % len(row)]}"

    return script


def large_script(score: float, answer_at_call: int | None = None):
    def script(prompt: str, call: int, i: int) -> str:
        if answer_at_call is not None and call >= answer_at_call:
            return f"The answer is {i + 1}. {score}"
        return f"large c{call} {score}"

    return script


def run(graph, question: str = "What is 1+1?") -> dict:
    return asyncio.run(graph.compile().ainvoke({"question": question}))


def test_warmup_then_exact_drafts_kept_and_regenerated() -> None:
    small = ScriptedBackend("small", small_script([[0.9, 0.3, 0.6, 0.1]] * 5))
    large = ScriptedBackend("large", large_script(0.5))
    expander = create_speculative_expander(
        small=small, large=large, prm=ScriptedPRM(by_text), speculation=PAPER
    )
    out = run(create_beam_search(expander, beam_width=1, n=4, max_steps=2, complete=False))

    # Step 1 (warm-up): the large model writes all 4 thoughts, the small one drafts nothing.
    first, second = out["threshold_trace"]
    assert first["beta"] is None and first["large_scores"] == [0.5] * 4
    assert first["beta_next"] == pytest.approx(0.5)
    # Step 2: drafts 0.9 and 0.6 reach beta = 0.5; 0.3 and 0.1 are replaced by the large model.
    assert second["beta"] == pytest.approx(0.5)
    assert (second["accepted"], second["rejected"]) == (2, 2)
    assert second["large_scores"] == [0.5, 0.5]
    assert second["beta_next"] == pytest.approx(0.9 * 0.5 + 0.1 * 0.5)
    assert len(small.calls) == 1 and small.generated == 4
    assert large.generated == 4 + 2
    stats = out["stats"]
    assert (stats["drafts"], stats["accepted"], stats["rejected"]) == (4, 2, 2)
    assert stats["acceptance_rate"] == pytest.approx(0.5)
    assert stats["large"]["calls"] == 2 and stats["small"]["calls"] == 1
    # Beam width 1: the best path takes the 0.9 draft at step 2.
    assert [s["source"] for s in out["path"]] == ["large", "small"]
    assert out["path"][-1]["text"] == "small c0 0.9"


def test_rejected_drafts_stay_in_the_tree_but_not_in_the_beam() -> None:
    small = ScriptedBackend("small", small_script([[0.1, 0.2]] * 5))
    large = ScriptedBackend("large", large_script(0.4))
    _, final = run_full(
        create_beam_search(
            create_speculative_expander(
                small=small, large=large, prm=ScriptedPRM(by_text), speculation=PAPER
            ),
            beam_width=2,
            n=2,
            max_steps=2,
            complete=False,
        )
    )
    nodes = final["nodes"]
    rejected = [n for n in nodes.values() if n["rejected"]]
    assert len(rejected) == 4  # 2 beams x 2 drafts, all below beta = 0.4
    assert all(n["source"] == "small" for n in rejected)
    assert not set(final["frontier"]) & {n["id"] for n in rejected}
    assert all(nodes[i]["source"] == "large" for i in final["frontier"])


def test_threshold_ema_across_steps() -> None:
    small = ScriptedBackend("small", small_script([[0.0, 0.0]] * 5))
    scores = iter([0.2, 0.2, 0.8, 0.8, 0.6, 0.6])

    def large(prompt: str, call: int, i: int) -> str:
        return f"large {next(scores)}"

    out = run(
        create_beam_search(
            create_speculative_expander(
                small=small,
                large=ScriptedBackend("large", large),
                prm=ScriptedPRM(by_text),
                speculation=PAPER,
            ),
            beam_width=1,
            n=2,
            max_steps=3,
            complete=False,
        )
    )
    betas = [p["beta_next"] for p in out["threshold_trace"]]
    assert betas[0] == pytest.approx(0.2)
    assert betas[1] == pytest.approx(0.9 * 0.2 + 0.1 * 0.8)
    assert betas[2] == pytest.approx(0.9 * betas[1] + 0.1 * 0.6)


def test_fixed_threshold_ablation_skips_warmup_and_never_updates() -> None:
    small = ScriptedBackend("small", small_script([[0.8, 0.2]] * 5))
    large = ScriptedBackend("large", large_script(0.9))
    cfg = ThresholdConfig(mode="fixed", fixed_value=0.7)
    out = run(
        create_beam_search(
            create_speculative_expander(
                small=small, large=large, prm=ScriptedPRM(by_text), threshold=cfg, speculation=PAPER
            ),
            beam_width=1,
            n=2,
            max_steps=2,
            complete=False,
        )
    )
    assert [p["beta"] for p in out["threshold_trace"]] == [0.7, 0.7]
    assert out["stats"]["accepted"] == 2 and out["stats"]["rejected"] == 2


def test_beam_stops_on_final_answer_and_extracts_it() -> None:
    large = ScriptedBackend("large", large_script(0.7, answer_at_call=1))
    out = run(
        create_beam_search(
            create_ar_expander(large=large, prm=ScriptedPRM(by_text)),
            beam_width=2,
            n=2,
            max_steps=5,
        )
    )
    assert out["answer"] == "1"
    assert len(out["path"]) == 2
    assert len(large.calls) == 2


def test_beam_keeps_the_best_children() -> None:
    def large(prompt: str, call: int, i: int) -> str:
        return f"large c{call} {[0.1, 0.9, 0.5][i]}"

    backend = ScriptedBackend("large", large)
    _, final = run_full(
        create_beam_search(
            create_ar_expander(large=backend, prm=ScriptedPRM(by_text)),
            beam_width=2,
            n=3,
            max_steps=2,
        )
    )
    # After step 1, beams are the 0.9 and 0.5 children; step 2 expands both (2 prompts).
    assert backend.calls[1][1] == 3 and len(backend.calls[1][0]) == 2
    assert sorted(final["nodes"][i]["score"] for i in final["frontier"]) == [0.9, 0.9]


def test_ar_sps_and_specsearch_share_the_template() -> None:
    prm = ScriptedPRM(by_text)
    large = ScriptedBackend("large", large_script(0.5))
    small = ScriptedBackend("small", small_script([[0.9, 0.9]] * 5))
    shapes = []
    for expander in (
        create_ar_expander(large=large, prm=prm),
        create_sps_expander(large=large, prm=prm),
        create_speculative_expander(small=small, large=large, prm=prm),
    ):
        graph = create_beam_search(expander, beam_width=1, n=2, max_steps=2).compile()
        shapes.append(set(graph.get_graph().nodes))
        out = asyncio.run(graph.ainvoke({"question": "q"}))
        assert set(out) == {"answer", "path", "stats", "threshold_trace"}
    assert shapes[0] == shapes[1] == shapes[2]


def test_sync_invoke_works_too() -> None:
    large = ScriptedBackend("large", large_script(0.5, answer_at_call=0))
    graph = create_beam_search(
        create_ar_expander(large=large, prm=ScriptedPRM(by_text)), n=2
    ).compile()
    out = graph.invoke({"question": "q"})
    assert out["answer"] == "1"


def test_empty_question_is_rejected() -> None:
    large = ScriptedBackend("large", large_script(0.5))
    graph = create_beam_search(create_ar_expander(large=large, prm=ScriptedPRM(by_text))).compile()
    with pytest.raises(ValueError, match="question must not be empty"):
        graph.invoke({"question": "  "})


def test_regenerate_makes_exactly_one_thought_per_rejected_draft() -> None:
    def large(prompt: str, call: int, i: int) -> str:
        return f"large c{call} s{i} 0.5"

    def small(prompt: str, call: int, i: int) -> str:
        scores = [0.9, 0.1] if prompt.rstrip().endswith("s0 0.5") else [0.1, 0.1]
        return f"small c{call} {scores[i]}"

    large_backend = ScriptedBackend("large", large)
    expander = create_speculative_expander(
        small=ScriptedBackend("small", small),
        large=large_backend,
        prm=ScriptedPRM(by_text),
        speculation=PAPER,
    )
    out = run(create_beam_search(expander, beam_width=2, n=2, max_steps=2, complete=False))
    # Parent s0 lost one draft, parent s1 two: the large model writes 3 thoughts, not 4.
    assert out["threshold_trace"][1]["rejected"] == 3
    assert large_backend.generated == 2 + 3
    assert out["stats"]["large"]["calls"] == 2
