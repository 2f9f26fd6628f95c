"""The scheduling policies of SpecSearch, pinned with scripted backends (and a virtual clock)."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Sequence

import pytest
from scripted import ScriptedBackend, ScriptedPRM, by_text, last_label

from langgraph_specsearch.backends.batching import BatchedBackend, BatchedPRM
from langgraph_specsearch.graphs.beam import create_beam_search
from langgraph_specsearch.graphs.expanders import create_speculative_expander
from langgraph_specsearch.prompts import FewShotFormat, PromptFormat
from langgraph_specsearch.simulate import (
    BetaQuality,
    ControlledDrafts,
    SimServer,
    run_virtual,
)
from langgraph_specsearch.speculation import (
    SpeculationConfig,
    decide,
    predicted_costs,
    shortfall_probability,
)
from langgraph_specsearch.threshold import ThresholdStore
from langgraph_specsearch.types import Generation, GenerationParams


def sequential(drafts: int) -> SpeculationConfig:
    """No concurrency, controller or probes; `drafts` per node (scripts index drafts)."""
    return SpeculationConfig(concurrent="off", controller="off", probe_every=0, drafts=drafts)


def run(graph, question: str = "q") -> dict:
    return asyncio.run(graph.compile().ainvoke({"question": question}))


def warmup_then(scores_by_label: dict[str, list[float]]):
    """Small drafts whose scores depend on the node they extend (label of its last step)."""

    def script(prompt: str, call: int, i: int) -> str:
        label = last_label(prompt)
        return f"d{label}-{i} {scores_by_label[label][i]}"

    return script


def large_by_node(prompt: str, call: int, i: int) -> str:
    return f"L{last_label(prompt) or 'root'}c{call}i{i} 0.5"


def test_missing_asks_only_the_shortfall_per_node_and_nodes_run_alone() -> None:
    # Warm-up at the root gives two large children labelled Lrootc0i0 / Lrootc0i1 (score 0.5).
    small = ScriptedBackend(
        "small",
        warmup_then({"Lrootc0i0": [0.9, 0.8, 0.1, 0.7], "Lrootc0i1": [0.9, 0.1, 0.1, 0.2]}),
    )
    large = ScriptedBackend("large", large_by_node)
    expander = create_speculative_expander(
        small=small, large=large, prm=ScriptedPRM(by_text), speculation=sequential(4)
    )
    out = run(create_beam_search(expander, beam_width=2, n=4, max_steps=2, complete=False))
    second = out["threshold_trace"][1]
    # need = beam width = 2: node 0 kept 3 drafts (no large call), node 1 kept 1 (one made up).
    assert (second["accepted"], second["rejected"]) == (4, 4)
    assert second["large_scores"] == [0.5]
    assert second["decision"] == "speculate" and second["nodes"] == 2
    # one warm-up call (2 prompts? no: the root alone, n=4) and one make-up call for node 1 only
    assert len(large.calls) == 2
    prompts, n = large.calls[1]
    assert n == 1 and len(prompts) == 1 and last_label(prompts[0]) == "Lrootc0i1"
    # per-node pipelines: one draft call per node
    assert len(small.calls) == 2 and all(len(p) == 1 for p, _ in small.calls)


def test_all_regenerates_every_rejected_draft_in_one_lockstep_call() -> None:
    small = ScriptedBackend(
        "small",
        warmup_then({"Lrootc0i0": [0.9, 0.8, 0.1, 0.7], "Lrootc0i1": [0.9, 0.1, 0.1, 0.2]}),
    )
    large = ScriptedBackend("large", large_by_node)
    expander = create_speculative_expander(
        small=small, large=large, prm=ScriptedPRM(by_text), speculation=SpeculationConfig.paper()
    )
    out = run(create_beam_search(expander, beam_width=2, n=4, max_steps=2, complete=False))
    assert out["threshold_trace"][1]["large_scores"] == [0.5] * 4
    assert len(small.calls) == 2 - 1  # lock-step: one draft call for both nodes
    assert len(large.calls[1][0]) == 4  # one prompt per rejected draft


def test_blank_drafts_are_rejected_and_counted() -> None:
    def small(prompt: str, call: int, i: int) -> str:
        return "" if i == 0 else "fine 0.9"

    large = ScriptedBackend("large", large_by_node)
    expander = create_speculative_expander(
        small=ScriptedBackend("small", small),
        large=large,
        prm=ScriptedPRM(by_text),
        speculation=sequential(2),
    )
    out = run(create_beam_search(expander, beam_width=1, n=2, max_steps=2, complete=False))
    stats = out["stats"]
    assert (stats["drafts"], stats["accepted"], stats["rejected"]) == (2, 1, 1)
    assert out["threshold_trace"][1]["rejected"] == 1


def test_greedy_drafts_are_made_and_counted_once() -> None:
    small = ScriptedBackend("small", lambda p, c, i: f"same {0.9}")
    large = ScriptedBackend("large", large_by_node)
    greedy = GenerationParams(temperature=0.0)
    expander = create_speculative_expander(
        small=small,
        large=large,
        prm=ScriptedPRM(by_text),
        speculation=sequential(4),
        draft_params=greedy,
    )
    out = run(create_beam_search(expander, beam_width=1, n=4, max_steps=2, complete=False))
    assert small.calls[0][1] == 1 and large.calls[0][1] == 1
    assert out["stats"]["drafts"] == 1 and out["stats"]["large"]["generated_tokens"] == 2


def test_probe_asks_the_large_model_when_it_has_been_idle() -> None:
    small = ScriptedBackend("small", lambda p, c, i: f"s{c}{i} 0.9")
    large = ScriptedBackend("large", large_by_node)
    cfg = SpeculationConfig(concurrent="off", controller="off", probe_every=2, drafts=2)
    expander = create_speculative_expander(
        small=small, large=large, prm=ScriptedPRM(by_text), speculation=cfg
    )
    out = run(create_beam_search(expander, beam_width=1, n=2, max_steps=5, complete=False))
    decisions = [
        (p["decision"], p["probe"], len(p["large_scores"])) for p in out["threshold_trace"]
    ]
    # warm-up, then every second speculative expansion asks for one probe thought
    assert decisions == [
        ("warmup", False, 2),
        ("speculate", False, 0),
        ("speculate", True, 1),
        ("speculate", False, 0),
        ("speculate", True, 1),
    ]


def test_store_carries_beta_to_the_next_problem_without_warmup(tmp_path) -> None:
    path = str(tmp_path / "beta.json")
    store = ThresholdStore(path, key="pair")
    small = ScriptedBackend("small", lambda p, c, i: f"s{c}{i} {[0.9, 0.2][i]}")
    large = ScriptedBackend("large", large_by_node)

    def search() -> dict:
        expander = create_speculative_expander(
            small=small,
            large=large,
            prm=ScriptedPRM(by_text),
            speculation=sequential(2),
            store=store,
        )
        return run(create_beam_search(expander, beam_width=1, n=2, max_steps=2, complete=False))

    first = search()
    assert first["threshold_trace"][0]["decision"] == "warmup"
    with open(path, encoding="utf-8") as fh:
        saved = json.load(fh)["pair"]
    assert saved["beta"] == pytest.approx(first["threshold_trace"][-1]["beta_next"])
    second = search()
    point = second["threshold_trace"][0]
    assert point["decision"] == "speculate" and point["beta"] == pytest.approx(saved["beta"])
    # a fresh store object over the same file restores it too
    restored = ThresholdStore(path, key="pair").load() or {}
    assert restored["beta"] == pytest.approx(second["threshold_trace"][-1]["beta_next"])


class DelayedLarge:
    """A large model whose thought depends only on the request's seed; delays are scripted."""

    def __init__(self, delays: dict[int, float]) -> None:
        self.name = "large"
        self.prompt_format: PromptFormat = FewShotFormat(exemplars=())
        self.device_key = "remote-large"
        self.delays = delays
        self.started: list[int | None] = []
        self.finished: list[int | None] = []

    async def agenerate(
        self, prompts: Sequence[str], *, n: int, params: GenerationParams
    ) -> list[list[Generation]]:
        self.started.append(params.seed)
        rng = random.Random(params.seed)
        await asyncio.sleep(self.delays.get(len(self.started), 1.0))
        self.finished.append(params.seed)
        return [
            [
                Generation(
                    text=f"L{rng.randint(0, 999)} 0.5", tokens=3, finish_reason="stop_sequence"
                )
                for _ in range(n)
            ]
            for _ in prompts
        ]

    async def anext_token_logprobs(self, prompts, candidates):  # type: ignore[no-untyped-def]
        return [dict.fromkeys(candidates, -1.0) for _ in prompts]


def _concurrent_children(delays: dict[int, float]) -> tuple[list[str], DelayedLarge]:
    small = ScriptedBackend("small", lambda p, c, i: f"s{c}{i} {[0.1, 0.1, 0.9][i]}")
    small.device_key = "remote-small"  # type: ignore[attr-defined]
    large = DelayedLarge(delays)
    cfg = SpeculationConfig(
        controller="off", probe_every=0, drafts=3
    )  # concurrent: auto (two devices)
    expander = create_speculative_expander(
        small=small,
        large=large,
        prm=ScriptedPRM(by_text),
        speculation=cfg,
        draft_params=GenerationParams(seed=5),
    )
    graph = create_beam_search(expander, beam_width=2, n=3, max_steps=2, complete=False).compile()
    out = run_virtual(graph.ainvoke({"question": "q"}))
    texts = [s["text"] for s in out["path"]]
    return texts + [str(out["threshold_trace"][1]["large_scores"])], large


def test_concurrent_keeps_thoughts_by_request_index_not_finish_order() -> None:
    # step 2: one of 3 drafts passes per node, need = 2, so request 0 of each node is kept and
    # request 1 cancelled; the finish order of the requests is reversed between the two runs.
    forward, large_a = _concurrent_children({2: 1.0, 3: 2.0, 4: 3.0, 5: 4.0})
    backward, large_b = _concurrent_children({2: 4.0, 3: 3.0, 4: 2.0, 5: 1.0})
    assert forward == backward
    assert large_a.finished != large_b.finished  # the finish order did differ
    # requests beyond the shortfall were started, then cancelled before finishing
    assert len(large_a.started) > len(large_a.finished)


def test_sequential_and_concurrent_make_the_same_large_requests_count() -> None:
    _, large = _concurrent_children({})
    # warm-up (1 call) + for each of 2 nodes: 2 requests started (need 2), 1 kept (1 draft passed)
    assert len(large.started) == 1 + 4
    assert len(large.finished) == 1 + 2


def test_controller_falls_back_when_speculation_loses_and_explores() -> None:
    class Timed(ScriptedBackend):
        def __init__(self, name, script, seconds: float) -> None:  # type: ignore[no-untyped-def]
            super().__init__(name, script)
            self.seconds = seconds

        async def agenerate(self, prompts, *, n, params):  # type: ignore[no-untyped-def]
            await asyncio.sleep(self.seconds)
            return await super().agenerate(prompts, n=n, params=params)

    # the small model is as slow as the large one and its drafts mostly fail: speculation loses
    small = Timed("small", lambda p, c, i: f"s{c}{i} {[0.9, 0.1, 0.1, 0.1][i]}", 1.0)
    large = Timed("large", large_by_node, 1.0)
    cfg = SpeculationConfig(concurrent="off", probe_every=0, explore_every=3, drafts=4)
    expander = create_speculative_expander(
        small=small, large=large, prm=ScriptedPRM(by_text), speculation=cfg
    )
    graph = create_beam_search(expander, beam_width=1, n=4, max_steps=8).compile()
    out = run_virtual(graph.ainvoke({"question": "q"}))
    decisions = [p["decision"] for p in out["threshold_trace"]]
    assert decisions[:2] == ["warmup", "speculate"]
    # predicted loss 1 + P(no draft of 4 passes) = 1.32x: exploration after 3 * 1.32 fallbacks
    assert decisions[2:6] == ["large", "large", "large", "explore"]
    stats = out["stats"]
    assert stats["controller_fallbacks"] == decisions.count("large") >= 2
    assert stats["controller_explorations"] == decisions.count("explore") >= 1
    assert stats["warmup_expansions"] == 1
    assert stats["speculative_expansions"] == decisions.count("speculate") + decisions.count(
        "explore"
    )
    # wall time is model time here (virtual clock): every call took 1 s
    assert stats["wall_s"] >= len(decisions)


def test_controller_prediction_and_shortfall() -> None:
    assert shortfall_probability(0.5, 2, 1) == pytest.approx(0.25)
    assert shortfall_probability(0.6, 4, 2) == pytest.approx(0.4**4 + 4 * 0.6 * 0.4**3)
    stats = {"small_s": 0.1, "prm_s": 0.05, "large_s": 1.0, "accept": 0.6}
    spec, large = predicted_costs(stats, drafts=4, need=2, nodes=2, concurrent=False) or (0, 0)
    p_any = 1 - (1 - shortfall_probability(0.6, 4, 2)) ** 2
    assert spec == pytest.approx(0.15 + p_any * 1.05) and large == pytest.approx(1.05)
    cfg = SpeculationConfig()
    args = dict(drafts=4, need=2, nodes=2, concurrent=False, expansion=3)
    assert decide(stats, cfg, **args) == "speculate"  # type: ignore[arg-type]
    slow = {**stats, "small_s": 2.0}
    assert decide(slow, cfg, **args) == "large"  # type: ignore[arg-type]
    assert decide(slow, SpeculationConfig(controller="off"), **args) == "speculate"  # type: ignore[arg-type]


def test_batcher_merges_coinciding_calls_and_splits_results() -> None:
    inner = ScriptedBackend("m", lambda p, c, i: f"{p[-1]}{i}")
    batched = BatchedBackend(inner)
    params = GenerationParams(seed=1)

    async def both():  # type: ignore[no-untyped-def]
        return await asyncio.gather(
            batched.agenerate(["a"], n=2, params=params),
            batched.agenerate(["b", "c"], n=2, params=params.model_copy(update={"seed": 2})),
            batched.agenerate(["d"], n=1, params=params),
        )

    a, bc, d = asyncio.run(both())
    assert [g.text for g in a[0]] == ["a0", "a1"]
    assert [[g.text for g in row] for row in bc] == [["b0", "b1"], ["c0", "c1"]]
    assert [g.text for g in d[0]] == ["d0"]
    # same n merged into one call; another n is its own call
    assert sorted(len(p) for p, _ in inner.calls) == [1, 3]

    prm = ScriptedPRM(by_text)
    batched_prm = BatchedPRM(prm)

    async def scores():  # type: ignore[no-untyped-def]
        return await asyncio.gather(
            batched_prm.ascore_last("q", [["x 0.1"]]), batched_prm.ascore_last("q", [["y 0.7"]])
        )

    assert asyncio.run(scores()) == [[0.1], [0.7]]
    assert prm.calls == [2]


def test_virtual_clock_jumps_over_sleeps_and_servers_batch() -> None:
    async def main() -> tuple[float, float, float]:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        await asyncio.sleep(100.0)
        t1 = loop.time()
        latency = SimServer(0.1, gamma=0.0)
        await asyncio.gather(latency.run([10]), latency.run([20, 5]))
        t2 = loop.time()
        throughput = SimServer(0.1, gamma=1.0)
        await asyncio.gather(throughput.run([10]), throughput.run([10]))
        return t1 - t0, t2 - t1, loop.time() - t2

    slept, latency_s, throughput_s = run_virtual(main())
    assert slept == pytest.approx(100.0)
    assert latency_s == pytest.approx(2.0)  # the longest sequence sets the time
    assert throughput_s == pytest.approx(2.0)  # 20 tokens in all, each paid


def test_controlled_drafts_pass_the_large_mean_at_the_set_rate() -> None:
    large = BetaQuality(6, 2)
    drafts = ControlledDrafts(large, 0.3)
    rng = random.Random(0)
    qs = [drafts.draw(rng) for _ in range(4000)]
    share = sum(q >= large.mean for q in qs) / len(qs)
    assert share == pytest.approx(0.3, abs=0.03)


def test_per_node_pipelines_still_batch_an_in_process_model() -> None:
    small = ScriptedBackend("small", lambda p, c, i: f"s{c}{i} 0.9")
    large = ScriptedBackend("large", large_by_node)
    prm = ScriptedPRM(by_text)
    window = 0.5  # generous: this test must not depend on how busy the machine is
    expander = create_speculative_expander(
        small=BatchedBackend(small, window_s=window),
        large=BatchedBackend(large, window_s=window),
        prm=BatchedPRM(prm, window_s=window),
        speculation=SpeculationConfig(controller="off", probe_every=0),
    )
    run(create_beam_search(expander, beam_width=2, n=4, max_steps=3))
    # after the root's warm-up, both nodes' drafts go to the model in one call per step
    assert [len(prompts) for prompts, _ in small.calls][:2] == [2, 2]
    assert prm.calls[1] == 2 * 8  # both nodes' 2N drafts scored in one PRM call


def test_missing_drafts_twice_the_children_by_default() -> None:
    small = ScriptedBackend("small", lambda p, c, i: f"s{c}{i} {0.9 if i % 2 else 0.1}")
    large = ScriptedBackend("large", large_by_node)
    cfg = SpeculationConfig(concurrent="off", controller="off", probe_every=0)
    assert cfg.drafts_for(3) == 6 and SpeculationConfig.paper().drafts_for(3) == 3
    expander = create_speculative_expander(
        small=small, large=large, prm=ScriptedPRM(by_text), speculation=cfg
    )
    out = run(create_beam_search(expander, beam_width=1, n=3, max_steps=3, complete=False))
    # 2n drafts for the node; the last (final) expansion writes whole solutions: n drafts
    assert [n for _, n in small.calls] == [6, 3]
    second = out["threshold_trace"][1]
    # 3 of 6 drafts pass; need = beam width 1: no large thought
    assert (second["accepted"], second["rejected"]) == (3, 3) and second["large_scores"] == []
