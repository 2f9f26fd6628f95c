"""LlamaCppBackend on the embedded GGUFs (needs the [llamacpp] extra: llama-cpp-python)."""

from __future__ import annotations

import asyncio
import math
from typing import Any

import numpy as np
import pytest

pytest.importorskip(
    "llama_cpp", reason="llama-cpp-python is not installed (pip install '.[llamacpp]')"
)

from langgraph_specsearch.backends.base import Backend  # noqa: E402
from langgraph_specsearch.backends.llamacpp import LlamaCppBackend  # noqa: E402
from langgraph_specsearch.prm.judge import JudgePRM  # noqa: E402
from langgraph_specsearch.prompts import ChatFormat, FewShotFormat  # noqa: E402
from langgraph_specsearch.types import Generation, GenerationParams  # noqa: E402

pytestmark = pytest.mark.integration

QUESTION = (
    "James decides to run 3 sprints 3 times a week.  He runs 60 meters each sprint.  "
    "How many total meters does he run a week?"
)
OTHER = "A box holds 12 eggs. How many eggs are in 4 boxes?"


@pytest.fixture(scope="module")
def smol() -> LlamaCppBackend:
    return LlamaCppBackend.load("smollm2-135m")


@pytest.fixture(scope="module")
def smol_plain(smol: LlamaCppBackend) -> LlamaCppBackend:
    """The same llama.cpp context without prefix reuse (each call starts from an empty cache)."""
    return LlamaCppBackend(
        smol.engine, name="plain", prompt_format=smol.prompt_format, prefix_reuse=False
    )


@pytest.fixture(scope="module")
def gemma() -> LlamaCppBackend:
    return LlamaCppBackend.load("gemma3-270m")


def run(backend: LlamaCppBackend, prompts: list[str], n: int, **kw: Any) -> list[list[Generation]]:
    params = GenerationParams(**{"max_new_tokens": 32, "seed": 0, **kw})
    return asyncio.run(backend.agenerate(prompts, n=n, params=params))


def texts(out: list[list[Generation]]) -> list[list[str]]:
    return [[g.text for g in row] for row in out]


def test_protocol_and_prompt_formats(smol: LlamaCppBackend, gemma: LlamaCppBackend) -> None:
    assert isinstance(smol, Backend) and isinstance(gemma, Backend)
    assert isinstance(smol.prompt_format, ChatFormat)  # the GGUF's own chat template
    assert isinstance(gemma.prompt_format, FewShotFormat)  # base model: few-shot text
    prompt = smol.prompt_format.render(QUESTION, [])
    assert prompt.startswith("<|im_start|>system\n") and prompt.endswith("<|im_start|>assistant\n")


def test_n_drafts_stop_tokens_and_finish_reasons(smol: LlamaCppBackend) -> None:
    fmt = smol.prompt_format
    prompts = [fmt.render(QUESTION, []), fmt.render(OTHER, ["A box holds 12 eggs."])]
    out = run(smol, prompts, 3, temperature=1.0, max_new_tokens=24)
    assert [len(row) for row in out] == [3, 3]
    reasons = set()
    for row in out:
        for g in row:
            assert "\n\n" not in g.text and g.text == g.text.strip()
            assert 1 <= g.tokens <= 24
            reasons.add(g.finish_reason)
            if g.finish_reason == "length":
                assert g.tokens == 24
        assert len({g.text for g in row}) >= 2, "samples of one prompt should differ"
    assert reasons <= {"stop_sequence", "eos_token", "length"}
    short = run(smol, prompts[:1], 2, temperature=1.0, max_new_tokens=3)[0]
    assert all(g.tokens == 3 and g.finish_reason == "length" for g in short)


def test_stop_sequence_counts_the_token_that_completes_it(smol: LlamaCppBackend) -> None:
    prompt = smol.prompt_format.render(QUESTION, [])
    free = run(smol, [prompt], 1, temperature=0.0, max_new_tokens=32, stop=[])[0][0]
    words = free.text.split()
    assert len(words) >= 3, free.text
    stop = " " + words[2]  # a stop string the greedy text reaches after a few tokens
    cut = run(smol, [prompt], 1, temperature=0.0, max_new_tokens=32, stop=[stop])[0][0]
    assert cut.finish_reason == "stop_sequence"
    assert free.text.startswith(cut.text) and stop not in cut.text
    assert cut.tokens < free.tokens


def test_seeds_are_reproducible_and_distinct(smol: LlamaCppBackend) -> None:
    prompts = [smol.prompt_format.render(QUESTION, [])]

    def sample(seed: int) -> list[list[str]]:
        # from the same cache state: a prompt found in the kept prefixes is prefilled in other
        # batch splits, which moves llama.cpp's logits slightly (see the reuse test below)
        smol.engine.clear()
        return texts(run(smol, prompts, 3, temperature=1.0, seed=seed, max_new_tokens=16))

    first, again, other = sample(7), sample(7), sample(8)
    assert first == again
    assert first != other
    greedy = texts(run(smol, prompts, 3, temperature=0.0, max_new_tokens=8))
    assert len(set(greedy[0])) == 1  # greedy: decoded once, repeated


def test_prefix_reuse_gives_the_same_output_as_no_reuse(
    smol: LlamaCppBackend, smol_plain: LlamaCppBackend
) -> None:
    """Greedy text is identical; next-token distributions agree up to llama.cpp's batch noise.

    llama.cpp's logits for a token depend on how the prompt was split into decode batches
    (quantised matmul kernels differ by batch size): prefilling the same prompt whole or as
    prefix + tail moves probabilities by up to ~0.015 here. So sampled text is not compared
    token for token, and distributions are compared with that tolerance.
    """
    fmt = smol.prompt_format
    steps = [fmt.render(QUESTION, []), fmt.render(OTHER, [])]
    greedy = {"temperature": 0.0, "max_new_tokens": 16}
    smol.engine.clear()
    before = (smol.engine.prompt_tokens, smol.engine.prefilled_tokens)
    reused = run(smol, steps, 2, **greedy)
    # the next step of both paths: the kept prompts are extended, not prefilled again
    nxt = [fmt.render(QUESTION, [reused[0][0].text]), fmt.render(OTHER, [reused[1][0].text])]
    reused_next = run(smol, nxt, 2, **greedy)
    kept_logits = smol.next_token_logits(nxt)
    prompt = smol.engine.prompt_tokens - before[0]
    prefilled = smol.engine.prefilled_tokens - before[1]
    assert prefilled < 0.75 * prompt, (prefilled, prompt)
    assert texts(run(smol_plain, steps, 2, **greedy)) == texts(reused)
    assert texts(run(smol_plain, nxt, 2, **greedy)) == texts(reused_next)
    for mine, full in zip(kept_logits, smol_plain.next_token_logits(nxt), strict=True):
        a, b = np.exp(log_softmax(mine)), np.exp(log_softmax(full))
        assert np.abs(a - b).max() < 0.04
        assert int(a.argmax()) == int(b.argmax())


def log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    return x - (x.max() + math.log(np.exp(x - x.max()).sum()))


def _reference_logprobs(backend: LlamaCppBackend, prompt: str, candidates: list[str]) -> Any:
    """Log-softmax of the full next-token logits from llama-cpp-python's own `Llama.eval`.

    The prompt is evaluated as the backend does on an empty cache (all but the last token,
    then the last token), so the logits are the same computation.
    """
    import llama_cpp

    llm = llama_cpp.Llama(
        backend.engine.path, n_ctx=2048, logits_all=True, verbose=False, n_threads=1
    )
    ids = backend.engine.prompt_ids(prompt)
    llm.eval(ids[:-1])
    llm.eval(ids[-1:])
    logp = log_softmax(np.asarray(llm.scores[len(ids) - 1]))
    llm.close()
    out = {}
    for c in candidates:
        picked = logp[backend.candidate_ids(c)]
        out[c] = float(picked.max() + math.log(np.exp(picked - picked.max()).sum()))
    return out


def test_judge_logprobs_agree_with_the_full_logits(
    smol: LlamaCppBackend, smol_plain: LlamaCppBackend
) -> None:
    judge = JudgePRM(smol)
    paths = [
        ["He runs 3 x 3 = 9 sprints a week.", "9 x 60 = 540 meters."],
        ["He runs 3 x 3 = 9 sprints a week.", "9 x 60 = 600 meters."],
        ["He runs 60 meters."],
    ]
    prompts = [judge.render(QUESTION, p) for p in paths]
    refs = [_reference_logprobs(smol, p, ["Yes", "No"]) for p in prompts]
    # one prompt on an empty cache: the same computation as the reference, to the last bit
    for prompt, ref in zip(prompts, refs, strict=True):
        alone = asyncio.run(smol_plain.anext_token_logprobs([prompt], ["Yes", "No"]))[0]
        assert alone["Yes"] < 0 and alone["No"] < 0
        assert all(abs(alone[c] - ref[c]) < 1e-6 for c in ref), (alone, ref)
    # batched, from shared and kept prefixes: equal up to llama.cpp's batch noise
    smol.engine.clear()
    got = asyncio.run(smol.anext_token_logprobs(prompts, ["Yes", "No"]))
    again = asyncio.run(smol.anext_token_logprobs(prompts, ["Yes", "No"]))
    for mine, kept, ref in zip(got, again, refs, strict=True):
        for c in ("Yes", "No"):
            assert abs(math.exp(mine[c]) - math.exp(ref[c])) < 0.04, (c, mine, ref)
            assert abs(math.exp(kept[c]) - math.exp(ref[c])) < 0.04, (c, kept, ref)
    scores = asyncio.run(judge.ascore_last(QUESTION, paths))
    assert all(0.0 < s < 1.0 for s in scores)


def test_gemma_steps_stop_at_the_delimiter_and_reuse_the_path(gemma: LlamaCppBackend) -> None:
    fmt = gemma.prompt_format
    stop = fmt.stop_sequences()
    gemma.engine.clear()
    first = run(gemma, [fmt.render(QUESTION, [])], 2, temperature=0.7, stop=stop)[0]
    assert all("\n\n" not in g.text and "Question:" not in g.text for g in first)
    before = (gemma.engine.prompt_tokens, gemma.engine.prefilled_tokens)
    second = run(gemma, [fmt.render(QUESTION, [first[0].text])], 2, temperature=0.7, stop=stop)
    added = gemma.engine.prefilled_tokens - before[1]
    assert len(second[0]) == 2
    assert added < 0.2 * (gemma.engine.prompt_tokens - before[0])  # only the new step's tokens
