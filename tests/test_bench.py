"""`specsearch bench`: datasets, method mapping, interleaving, records, table, resume, plots.

The end-to-end tests run the real command over scripted backends (the model loader is
replaced), so they are fast and the numbers they check are known.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from scripted import ScriptedBackend, ScriptedPRM, by_text
from typer.testing import CliRunner

from langgraph_specsearch.api import Components, SearchConfig
from langgraph_specsearch.cli import app
from langgraph_specsearch.evaluation import runner as runner_module
from langgraph_specsearch.evaluation.command import read_records
from langgraph_specsearch.evaluation.datasets import load_problems, warmup_problem
from langgraph_specsearch.evaluation.methods import METHODS, method_config, parse_methods
from langgraph_specsearch.evaluation.runner import Runner, one_engine, rotation
from langgraph_specsearch.evaluation.summary import summarize, table_rows
from langgraph_specsearch.options import LENIENT
from langgraph_specsearch.types import Generation, GenerationParams

# --- datasets ---------------------------------------------------------------------------------


def test_shipped_datasets_and_their_golds() -> None:
    gsm8k = load_problems("gsm8k")
    assert len(gsm8k) == 1319 and len({p.id for p in gsm8k}) == 1319
    assert gsm8k[0].question.startswith("Janet") and gsm8k[0].gold == "18"
    math500 = load_problems("math500")
    assert len(math500) == 500
    first = math500[0]
    assert first.id == "test/precalculus/807.json"
    assert first.gold == "\\left( 3, \\frac{\\pi}{2} \\right)"


def test_limit_sample_and_warmup_problem() -> None:
    assert [p.id for p in load_problems("gsm8k", limit=3)] == ["gsm8k-0", "gsm8k-1", "gsm8k-2"]
    a = load_problems("gsm8k", sample=5, seed=1)
    assert a == load_problems("gsm8k", sample=5, seed=1)
    assert a != load_problems("gsm8k", sample=5, seed=2)
    assert [p.id for p in a] == sorted((p.id for p in a), key=lambda i: int(i.split("-")[1]))
    warm = warmup_problem("gsm8k", a)
    assert warm is not None and warm.id not in {p.id for p in a}


def test_jsonl_datasets_with_either_field_names(tmp_path: Path) -> None:
    path = tmp_path / "mine.jsonl"
    rows = [
        {"question": "1+1?", "answer": "so 2\n#### 2"},
        {"problem": "Half?", "answer": "\\frac12"},
        {"problem": "Box?", "solution": "It is $\\boxed{7}$."},
        {"question": "Number?", "answer": 12},
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    problems = load_problems(str(path))
    assert [p.gold for p in problems] == ["2", "\\frac12", "7", "12"]
    assert [p.id for p in problems] == ["mine-0", "mine-1", "mine-2", "mine-3"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"answer": "1"}\n', "needs a 'question' or 'problem'"),
        ('{"question": "q"}\n', "needs an 'answer'"),
        ("not json\n", "not JSON"),
        ("", "no records"),
    ],
)
def test_bad_jsonl_is_one_line_error(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    with pytest.raises(ValueError, match=message):
        load_problems(str(path))
    with pytest.raises(ValueError, match="only the test split"):
        load_problems("gsm8k", split="train")


# --- methods ----------------------------------------------------------------------------------


def test_every_method_maps_onto_search_config_options(tmp_path: Path) -> None:
    # a bench run's options apply across methods, so its base config is built leniently
    base = SearchConfig.model_validate(
        {"fixed_threshold": 0.6, "reject_rate": 0.3}, context={LENIENT: True}
    )
    get = {name: method_config(name, base, store_dir=tmp_path) for name in METHODS}
    th = {name: config.threshold for name, config in get.items()}
    assert get["ar"].method == "ar" and get["sps"].method == "sps"
    assert th["fixed-threshold"].mode == "fixed"
    assert th["fixed-threshold"].fixed_value == 0.6
    assert (th["random-rejection"].mode, th["random-rejection"].reject_rate) == ("random", 0.3)
    rate = method_config("random-rejection", base, reject_rate=0.7).threshold.reject_rate
    assert rate == 0.7
    assert th["accept-all"].mode == "accept_all"
    assert (th["large-only"].mode, th["large-only"].reject_rate) == ("random", 1.0)
    assert get["beta-per-problem"].carry_threshold is False
    assert get["beta-carried"].carry_threshold is True
    assert get["regenerate-all"].speculation.regenerate == "all"
    assert get["regenerate-missing"].speculation.regenerate == "missing"
    paper = get["specsearch-paper"]
    assert paper.speculation.pipeline == "lockstep" and paper.carry_threshold is False
    # a method that carries beta keeps its own store; one that does not has none
    assert get["specsearch"].threshold_store == str(tmp_path / "specsearch.json")
    assert get["regenerate-all"].threshold_store == str(tmp_path / "regenerate-all.json")
    assert get["beta-per-problem"].threshold_store is None
    with pytest.raises(ValueError, match="unknown method 'x'"):
        parse_methods("ar,x")
    with pytest.raises(ValueError, match="named twice"):
        parse_methods("ar,ar")


# --- runner, summary ---------------------------------------------------------------------------


class SlowBackend(ScriptedBackend):
    """A scripted backend whose calls take `delay` seconds; `final_text` is what it writes
    when asked to finish the solution (stops without the step delimiter)."""

    def __init__(self, name: str, text: str, final_text: str, delay: float) -> None:
        super().__init__(name, lambda p, c, i: text)
        self.final_text, self.delay = final_text, delay

    async def agenerate(
        self, prompts: Sequence[str], *, n: int, params: GenerationParams
    ) -> list[list[Generation]]:
        await asyncio.sleep(self.delay)
        out = await super().agenerate(prompts, n=n, params=params)
        if "\n\n" not in params.stop:
            for gens in out:
                for g in gens:
                    g.text = self.final_text
        return out


def scripted_components() -> Components:
    """Large answers 18 (GSM8K test #0's gold) at once, slowly; the small model drafts open
    steps (PRM 0.8) and, finishing, answers 3 (test #1's gold)."""
    return Components(
        small=SlowBackend("small", "draft 0.8", "So the answer is 3. 0.8", 0.001),
        large=SlowBackend("large", "So the answer is 18. 0.6", "So the answer is 18. 0.6", 0.03),
        prm=ScriptedPRM(by_text),
    )


@pytest.fixture
def scripted_models(monkeypatch: pytest.MonkeyPatch) -> list[SearchConfig]:
    loaded: list[SearchConfig] = []

    def load(config: SearchConfig) -> Components:
        loaded.append(config)
        return scripted_components()

    monkeypatch.setattr(runner_module, "load_components", load)
    return loaded


def test_runner_rotates_skips_and_shares_backends(scripted_models: list[SearchConfig]) -> None:
    problems = load_problems("gsm8k", limit=3)
    methods = ["ar", "specsearch", "regenerate-all"]
    base = SearchConfig(n_drafts=2, beam_width=1, max_steps=2, carry_threshold=False)
    runner = Runner(methods, lambda m, r: method_config(m, base))
    seen: list[tuple[str, str, int]] = []

    async def go() -> None:
        await runner.load()
        await runner.run(
            problems,
            skip=lambda pid, m, rep: (pid, m) == ("gsm8k-1", "ar"),
            on_run=lambda run: seen.append((run.problem.id, run.method, run.position)),
        )

    asyncio.run(go())
    assert len(scripted_models) == 1  # AR, SpecSearch and its ablation share one set
    assert rotation(methods, 1) == ["specsearch", "regenerate-all", "ar"]
    assert seen == [
        ("gsm8k-0", "ar", 0),
        ("gsm8k-0", "specsearch", 1),
        ("gsm8k-0", "regenerate-all", 2),
        ("gsm8k-1", "specsearch", 0),
        ("gsm8k-1", "regenerate-all", 1),
        ("gsm8k-2", "regenerate-all", 0),
        ("gsm8k-2", "ar", 1),
        ("gsm8k-2", "specsearch", 2),
    ]


def test_local_methods_share_one_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    from langgraph_specsearch.backends import llamacpp_context

    monkeypatch.setattr(llamacpp_context, "llama_cpp_available", lambda: True)
    base = SearchConfig()
    configs = {m: method_config(m, base) for m in ("ar", "specsearch")}
    assert one_engine(configs) == (configs, None)  # both would run on llama.cpp
    fixed, note = one_engine({**configs, "sps": method_config("sps", base)})
    assert {c.engine for c in fixed.values()} == {"transformers"}
    assert note is not None and "ar, specsearch would run on llama.cpp" in note
    remote = base.model_copy(update={"small_url": "http://a", "large_url": "http://b"})
    endpoints = {m: method_config(m, remote) for m in ("ar", "sps")}
    assert one_engine(endpoints) == (endpoints, None)


def record(pid: str, method: str, correct: bool, latency: float) -> dict[str, Any]:
    return {
        "problem_id": pid,
        "repeat": 0,
        "method": method,
        "correct": correct,
        "latency_s": latency,
        "answer": "1",
        "answer_from": "search",
        "time_s": {"small": 0.0, "large": latency, "prm": 0.0, "other": 0.0},
        "tokens": {"small": 0, "large": 1},
        "drafts": 4 if method == "specsearch" else 0,
        "accepted": 3 if method == "specsearch" else 0,
    }


def test_summary_speedups_are_ratios_of_latencies_and_only_paired_problems_count() -> None:
    records = [
        record("a", "ar", True, 4.0),
        record("a", "sps", True, 3.0),
        record("a", "specsearch", True, 2.0),
        record("b", "ar", False, 6.0),
        record("b", "sps", True, 5.0),
        record("b", "specsearch", False, 2.0),
        record("c", "ar", True, 100.0),  # unfinished problem: left out
    ]
    summary = summarize(records, ["ar", "sps", "specsearch"])
    rows = summary["methods"]
    assert summary["problems"] == 2
    assert rows["ar"]["latency_s"] == 5.0 and rows["specsearch"]["latency_s"] == 2.0
    assert rows["specsearch"]["speedup_vs_ar"] == pytest.approx(2.5)
    assert rows["specsearch"]["speedup_vs_sps"] == pytest.approx(2.0)
    assert rows["sps"]["accuracy"] == 1.0 and rows["specsearch"]["accuracy"] == 0.5
    assert rows["specsearch"]["acceptance"] == 0.75
    low, high = rows["specsearch"]["speedup_vs_ar_ci"]
    assert low <= 2.5 <= high and (low, high) == (2.0, 3.0)  # resamples: only a, only b, both
    _, cells = table_rows(summary)
    assert cells[2][:4] == ["specsearch", "50.0 [0.0, 100.0]", "2.000", "2.50x [2.00, 3.00]"]


# --- the command ------------------------------------------------------------------------------


def bench_args(out: Path, *extra: str) -> list[str]:
    return [
        "bench",
        "--dataset",
        "gsm8k",
        "--limit",
        "2",
        "--methods",
        "ar,sps,specsearch",
        "--max-steps",
        "2",
        "--n-drafts",
        "2",
        "--beam-width",
        "1",
        "--out",
        str(out),
        *extra,
    ]


def test_bench_writes_records_config_table_and_plots(
    scripted_models: list[SearchConfig], tmp_path: Path
) -> None:
    out = tmp_path / "run"
    result = CliRunner().invoke(app, bench_args(out))
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(records) == 6
    assert {(r["problem_id"], r["method"]) for r in records} == {
        (p, m) for p in ("gsm8k-0", "gsm8k-1") for m in ("ar", "sps", "specsearch")
    }
    first = next(r for r in records if r["problem_id"] == "gsm8k-0" and r["method"] == "ar")
    assert (first["answer"], first["gold"], first["correct"]) == ("18", "18", True)
    second = next(r for r in records if r["problem_id"] == "gsm8k-1" and r["method"] == "ar")
    assert second["gold"] == "3" and second["correct"] is False
    for r in records:
        split = r["time_s"]
        assert r["latency_s"] >= split["small"] + split["large"] + split["prm"]
        assert r["steps"] and r["threshold_trace"]
        if r["method"] != "specsearch":
            assert split["large"] > 0 and r["answer_from"] == "search"
    # SpecSearch starts from the beta the warm-up problem left in its store: the small model
    # drafts both steps (0.8 >= beta 0.6) and its finishing last step answers 3
    spec = [r for r in records if r["method"] == "specsearch"]
    for r in spec:
        assert [s["accepted"] for s in r["steps"]] == [2, 2] and r["answer"] == "3"
        assert r["answer_from"] == "final_step" and r["path_sources"] == ["small", "small"]

    summary = json.loads((out / "summary.json").read_text())
    rows = summary["methods"]
    for m in ("ar", "sps", "specsearch"):
        mine = [r["latency_s"] for r in records if r["method"] == m]
        assert rows[m]["total_latency_s"] == pytest.approx(sum(mine))
        assert rows[m]["accuracy"] == 0.5
    ratio = rows["ar"]["latency_s"] / rows["specsearch"]["latency_s"]
    assert rows["specsearch"]["speedup_vs_ar"] == pytest.approx(ratio)
    assert 0 <= summary["run"]["bench_overhead_share"] < 0.5
    config = json.loads((out / "config.json").read_text())
    assert config["package_version"] and config["identity"]["problems"] == ["gsm8k-0", "gsm8k-1"]
    assert "Speed-up vs AR" in (out / "summary.md").read_text()
    assert "Speed-up" in result.output and "specsearch" in result.output
    for name in (
        "beta_per_step.png",
        "quality_per_step.png",
        "acceptance_per_step.png",
        "latency_breakdown.png",
        "accuracy_vs_latency.png",
    ):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bench_resume_skips_finished_runs_and_refuses_mismatches(
    scripted_models: list[SearchConfig], tmp_path: Path
) -> None:
    out = tmp_path / "run"
    assert CliRunner().invoke(app, [*bench_args(out), "--no-plots"]).exit_code == 0
    lines = (out / "results.jsonl").read_text().splitlines()
    # an interrupted run: the last record lost, a torn line left behind
    (out / "results.jsonl").write_text("\n".join(lines[:-1]) + '\n{"torn')
    again = CliRunner().invoke(app, bench_args(out))
    assert again.exit_code == 2 and "already holds results" in again.output
    resumed = CliRunner().invoke(app, [*bench_args(out, "--resume"), "--no-plots"])
    assert resumed.exit_code == 0, resumed.output
    records = read_records(out / "results.jsonl")
    assert len(records) == 6
    assert len({(r["problem_id"], r["method"]) for r in records}) == 6
    other = CliRunner().invoke(app, [*bench_args(out, "--resume"), "--max-steps", "3"])
    assert other.exit_code == 2 and "had another 'configs'" in other.output


def test_bench_bad_input_is_one_line(tmp_path: Path) -> None:
    for args, message in (
        (["bench", "--methods", "ar,nope"], "unknown method"),
        (["bench", "--resume"], "--resume needs --out"),
        (["bench", "--dataset", str(tmp_path / "none.jsonl")], "no such file"),
        (["bench", "--repeats", "0"], "--repeats must be >= 1"),
    ):
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 2 and message in result.output
        assert "Traceback" not in result.output
