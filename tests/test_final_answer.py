"""Every search ends with an answer: final steps at the depth limit and the completion step."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from scripted import ScriptedBackend, ScriptedPRM, by_text, last_label, run_full

from langgraph_specsearch.api import SearchConfig, result_from_state
from langgraph_specsearch.graphs.beam import create_beam_search
from langgraph_specsearch.graphs.best_of_n import create_best_of_n
from langgraph_specsearch.graphs.expanders import create_ar_expander, create_speculative_expander
from langgraph_specsearch.graphs.mcts import create_mcts
from langgraph_specsearch.speculation import SpeculationConfig
from langgraph_specsearch.types import Generation, GenerationParams

PARAMS = GenerationParams(max_new_tokens=10, temperature=0.7, seed=0)


class FinishingBackend(ScriptedBackend):
    """Scripted backend that records each call's params and tells the script whether the call
    finishes the solution (its stops leave out the step delimiter)."""

    def __init__(self, name: str, script: Callable[[str, bool, int], str]) -> None:
        super().__init__(name, lambda prompt, call, i: "")
        self.finishing_script = script
        self.params: list[GenerationParams] = []

    async def agenerate(
        self, prompts: Sequence[str], *, n: int, params: GenerationParams
    ) -> list[list[Generation]]:
        self.params.append(params)
        final = self.prompt_format.delimiter not in params.stop
        self.calls.append((list(prompts), n))
        return [
            [
                Generation(
                    text=(text := self.finishing_script(p, final, i)),
                    tokens=len(text.split()),
                    finish_reason="stop_sequence" if final else "length",
                )
                for i in range(n)
            ]
            for p in prompts
        ]


def answers_when_finishing(label: str) -> Callable[[str, bool, int], str]:
    """Steps `<label><i> 0.5`; a finishing call writes the rest and states the answer 42."""

    def script(prompt: str, final: bool, i: int) -> str:
        if final:
            return f"{label}{i} so 6 * 7 = 42.\n\nThe answer is 42. 0.7"
        return f"{label}{i} 0.5"

    return script


def never_answers(prompt: str, final: bool, i: int) -> str:
    return f"s{last_label(prompt)}{i} 0.5"


def test_the_last_beam_step_runs_to_the_end_with_the_larger_budget() -> None:
    large = FinishingBackend("large", answers_when_finishing("L"))
    graph = create_beam_search(
        create_ar_expander(large=large, prm=ScriptedPRM(by_text), params=PARAMS),
        beam_width=1,
        n=2,
        max_steps=3,
    )
    out, _ = run_full(graph)
    # steps 1 and 2 stop at the delimiter with the step budget; step 3 finishes the solution
    assert [p.stop for p in large.params] == [["\n\n", "\nQuestion:"]] * 2 + [["\nQuestion:"]]
    assert [p.max_new_tokens for p in large.params] == [10, 10, 40]
    assert out["answer"] == "42"
    assert out["stats"]["answer_from"] == "final_step"
    assert len(out["path"]) == 3


def test_final_budget_can_be_set_and_specsearch_drafts_and_regenerates_to_the_end() -> None:
    small = FinishingBackend("small", answers_when_finishing("S"))
    large = FinishingBackend("large", answers_when_finishing("L"))
    params = PARAMS.model_copy(update={"final_max_new_tokens": 25})
    expander = create_speculative_expander(
        small=small,
        large=large,
        prm=ScriptedPRM(by_text),
        speculation=SpeculationConfig.paper(),
        draft_params=params,
    )
    # beta after the warm-up is 0.5: the finishing drafts (0.7) pass, so the last step is small
    out, _ = run_full(create_beam_search(expander, beam_width=1, n=2, max_steps=2))
    assert [p.max_new_tokens for p in large.params] == [10]  # warm-up: step 1
    assert [p.max_new_tokens for p in small.params] == [25]  # drafts of the last step
    assert small.params[0].stop == ["\nQuestion:"]
    assert out["answer"] == "42" and out["path"][-1]["source"] == "small"
    assert out["stats"]["answer_from"] == "final_step"


def test_answer_found_before_the_limit_is_from_the_search() -> None:
    def script(prompt: str, final: bool, i: int) -> str:
        return "The answer is 7. 0.9" if last_label(prompt) == "a0" else f"a{i} 0.5"

    large = FinishingBackend("large", script)
    graph = create_beam_search(
        create_ar_expander(large=large, prm=ScriptedPRM(by_text)), beam_width=1, n=1, max_steps=5
    )
    out, _ = run_full(graph)
    assert out["answer"] == "7" and out["stats"]["answer_from"] == "search"
    assert len(large.calls) == 2  # no completion step, no further round


def test_completion_step_finishes_the_best_open_path() -> None:
    calls: list[bool] = []

    def script(prompt: str, final: bool, i: int) -> str:
        calls.append(final)
        # the depth-limit step runs out of tokens; only the completion step answers
        if final and last_label(prompt) == "b0":
            return "c so the answer is 12 apples. 0.8"
        return f"b{i} 0.{6 - i}"

    large = FinishingBackend("large", script)
    graph = create_beam_search(
        create_ar_expander(large=large, prm=ScriptedPRM(by_text)), beam_width=1, n=2, max_steps=1
    )
    out, state = run_full(graph)
    assert calls == [True, True, True]  # the step at the limit (n=2), then one completion
    assert large.calls[-1][1] == 1  # one child of the best leaf
    assert out["answer"] == "12"
    assert out["stats"]["answer_from"] == "completion"
    assert [s["text"].split()[0] for s in out["path"]] == ["b0", "c"]
    assert state["completion"] == "pending" and state["frontier"] == ["0.0"]


def test_no_answer_anywhere_says_why_and_completes_only_once() -> None:
    large = FinishingBackend("large", never_answers)
    graph = create_beam_search(
        create_ar_expander(large=large, prm=ScriptedPRM(by_text)), beam_width=1, n=2, max_steps=2
    )
    out, state = run_full(graph)
    assert out["answer"] is None
    assert out["stats"]["answer_from"] == "none"
    assert "completion step" in out["stats"]["no_answer_reason"]
    assert len(large.calls) == 3  # two rounds and exactly one completion step
    result = result_from_state(state, SearchConfig())
    assert result.stats.answer_from == "none" and result.stats.no_answer_reason


def test_without_completion_the_reason_names_the_last_step() -> None:
    large = FinishingBackend("large", never_answers)
    graph = create_beam_search(
        create_ar_expander(large=large, prm=ScriptedPRM(by_text)),
        beam_width=1,
        n=2,
        max_steps=1,
        complete=False,
    )
    out, _ = run_full(graph)
    assert out["answer"] is None and len(large.calls) == 1
    reason = out["stats"]["no_answer_reason"]
    assert reason.startswith("no step of the chosen path") and "step 1 (large)" in reason


def test_mcts_out_of_iterations_completes_the_most_visited_path() -> None:
    def script(prompt: str, final: bool, i: int) -> str:
        if final:
            return "z The answer is 5. 0.9"
        return f"m{last_label(prompt)}{i} 0.{5 + i}"

    large = FinishingBackend("large", script)
    graph = create_mcts(
        create_ar_expander(large=large, prm=ScriptedPRM(by_text)),
        iterations=2,
        max_depth=6,
        children_per_expansion=2,
    )
    out, state = run_full(graph)
    # two iterations reach depth 2 of 6; the completion step finishes the chosen path
    assert [p.stop for p in large.params][-1] == ["\nQuestion:"]
    assert large.calls[-1][1] == 1 and len(large.calls) == 3
    assert out["answer"] == "5" and out["stats"]["answer_from"] == "completion"
    assert len(out["path"]) == 3 and out["path"][-1]["text"].startswith("z")
    completion = out["path"][-1]["id"]
    assert state["nodes"][completion]["visits"] == 1  # evaluated and backpropagated


def test_mcts_final_expansion_at_max_depth() -> None:
    large = FinishingBackend("large", answers_when_finishing("m"))
    graph = create_mcts(
        create_ar_expander(large=large, prm=ScriptedPRM(by_text)),
        iterations=10,
        max_depth=1,
        children_per_expansion=2,
    )
    out, _ = run_full(graph)
    assert large.params[0].stop == ["\nQuestion:"]
    assert out["answer"] == "42" and out["stats"]["answer_from"] == "final_step"


def test_best_of_n_completes_when_no_path_votes() -> None:
    def script(prompt: str, final: bool, i: int) -> str:
        # the depth-limit round (call 1) states nothing; the completion step (call 2) does
        if len(large.calls) > 1:
            return "q The answer is 9. 0.8"
        return f"p{i} 0.{4 + i}"

    large = FinishingBackend("large", script)
    graph = create_best_of_n(
        create_ar_expander(large=large, prm=ScriptedPRM(by_text)), n=3, max_steps=1
    )
    out, state = run_full(graph)
    assert len(large.calls) == 2 and large.calls[-1][1] == 1
    assert all(p.stop == ["\nQuestion:"] for p in large.params)
    assert out["answer"] == "9" and set(state["votes"]) == {"9"}
    assert out["stats"]["answer_from"] == "completion"
    # the best path (p2, score 0.6) was the one completed
    assert [s["text"].split()[0] for s in out["path"]] == ["p2", "q"]
