"""TransformersBackend and the embedded models, on the real models (integration)."""

from __future__ import annotations

import pytest

from langgraph_specsearch.backends.base import Backend, generate
from langgraph_specsearch.backends.transformers import TransformersBackend
from langgraph_specsearch.models import (
    EMBEDDED_MODELS,
    load_pretrained,
    resolve_model_dir,
)
from langgraph_specsearch.prompts import ChatFormat, FewShotFormat
from langgraph_specsearch.types import GenerationParams

QUESTIONS = [
    "Tom has 3 apples and buys 5 more. How many apples does he have?",
    "A box holds 12 eggs. How many eggs are in 4 boxes?",
]


def test_unknown_model_name_raises() -> None:
    with pytest.raises(ValueError) as err:
        load_pretrained("no-such-model")
    assert str(err.value) == (
        "unknown model 'no-such-model' (embedded: smollm2-135m, gemma3-270m; "
        "or a local directory or hub id)"
    )
    with pytest.raises(ValueError, match="unknown model"):
        resolve_model_dir("gpt-9")
    assert set(EMBEDDED_MODELS) == {"smollm2-135m", "gemma3-270m"}


@pytest.fixture(scope="session")
def smol() -> TransformersBackend:
    return TransformersBackend.load("smollm2-135m")


@pytest.fixture(scope="session")
def gemma() -> TransformersBackend:
    return TransformersBackend.load("gemma3-270m")


@pytest.fixture(scope="session")
def gemma_assisted(gemma: TransformersBackend, smol: TransformersBackend) -> TransformersBackend:
    return TransformersBackend.load("gemma3-270m", assistant="smollm2-135m")


def _prompts(backend: TransformersBackend) -> list[str]:
    return [backend.prompt_format.render(q, []) for q in QUESTIONS]


@pytest.mark.integration
def test_cache_holds_a_reloadable_safetensors_copy(smol: TransformersBackend) -> None:
    for name in EMBEDDED_MODELS:
        d = resolve_model_dir(name)
        assert (d / "config.json").is_file()
        assert list(d.glob("*.safetensors"))
        assert (d / "tokenizer.json").is_file() or (d / "tokenizer_config.json").is_file()
    model, tokenizer = load_pretrained(str(resolve_model_dir("smollm2-135m")))
    assert model is smol.model  # memoised: the short name and its directory load once
    assert not hasattr(model.config, "quantization_config")


@pytest.mark.integration
def test_default_prompt_formats(smol: TransformersBackend, gemma: TransformersBackend) -> None:
    assert isinstance(smol, Backend) and isinstance(gemma, Backend)
    assert isinstance(smol.prompt_format, ChatFormat)
    assert isinstance(gemma.prompt_format, FewShotFormat)  # base model: no chat template
    prompt = smol.prompt_format.render("What is 2+2?", ["Two plus two."])
    assert "<|im_start|>assistant\n" in prompt and prompt.endswith("Two plus two.\n\n")


@pytest.mark.integration
@pytest.mark.parametrize("which", ["smol", "gemma"])
def test_n_continuations_per_prompt_stop_at_delimiter(which: str, request) -> None:
    backend: TransformersBackend = request.getfixturevalue(which)
    params = GenerationParams(max_new_tokens=24, temperature=0.8, seed=1, stop=["\n\n"])
    out = generate(backend, _prompts(backend), n=2, params=params)
    assert len(out) == 2 and all(len(gens) == 2 for gens in out)
    for gens in out:
        for g in gens:
            assert g.finish_reason in ("stop_sequence", "eos_token", "length")
            assert 1 <= g.tokens <= 24
            assert g.latency_s > 0
            assert g.text == g.text.strip()
            if g.finish_reason == "stop_sequence":
                assert "\n\n" not in g.text
            if g.finish_reason == "length":
                assert g.tokens == 24
    assert len({g.latency_s for gens in out for g in gens}) == 1  # one batched call
    assert any(g.finish_reason == "stop_sequence" for gens in out for g in gens)


@pytest.mark.integration
async def test_seeded_sampling_is_reproducible(smol: TransformersBackend) -> None:
    params = GenerationParams(max_new_tokens=10, temperature=1.0, seed=7)
    a = await smol.agenerate(_prompts(smol)[:1], n=3, params=params)
    b = await smol.agenerate(_prompts(smol)[:1], n=3, params=params)
    assert [g.text for g in a[0]] == [g.text for g in b[0]]
    assert len({g.text for g in a[0]}) > 1  # n samples, not n copies


@pytest.mark.integration
async def test_greedy_is_deterministic(smol: TransformersBackend) -> None:
    params = GenerationParams(max_new_tokens=10, temperature=0.0)
    a = await smol.agenerate(_prompts(smol)[:1], n=2, params=params)
    assert a[0][0].text == a[0][1].text


@pytest.mark.integration
async def test_stop_sequence_other_than_blank_line(smol: TransformersBackend) -> None:
    params = GenerationParams(max_new_tokens=24, temperature=0.0, stop=[" "])
    out = await smol.agenerate(_prompts(smol)[:1], n=1, params=params)
    g = out[0][0]
    assert g.finish_reason == "stop_sequence" and " " not in g.text


@pytest.mark.integration
async def test_greedy_assisted_equals_plain_greedy(
    gemma: TransformersBackend, gemma_assisted: TransformersBackend
) -> None:
    params = GenerationParams(max_new_tokens=24, temperature=0.0, stop=["\n\n"])
    prompt = _prompts(gemma)[:1]
    plain = await gemma.agenerate(prompt, n=1, params=params)
    assisted = await gemma_assisted.agenerate(prompt, n=1, params=params)
    assert assisted[0][0].text == plain[0][0].text
    assert assisted[0][0].tokens == plain[0][0].tokens
    acc = assisted[0][0].accepted_draft_tokens
    assert acc is not None and 0 <= acc <= 24
    assert plain[0][0].accepted_draft_tokens is None


@pytest.mark.integration
@pytest.mark.parametrize("which", ["smol", "gemma"])
async def test_next_token_logprobs(which: str, request) -> None:
    backend: TransformersBackend = request.getfixturevalue(which)
    prompts = [
        "Question: Is 7 greater than 3? Answer (Yes or No):",
        "Question: Is 2 greater than 9? Answer (Yes or No):",
    ]
    out = await backend.anext_token_logprobs(prompts, ["Yes", "No"])
    assert len(out) == 2
    for scores in out:
        assert set(scores) == {"Yes", "No"}
        assert all(v <= 0.0 for v in scores.values())
        assert sum(2.718281828**v for v in scores.values()) <= 1.0 + 1e-5
    # left padding must not change a prompt's scores
    alone = await backend.anext_token_logprobs(prompts[1:], ["Yes", "No"])
    assert alone[0] == pytest.approx(out[1], abs=1e-3)


@pytest.mark.integration
async def test_assisting_leaves_the_shared_small_model_usable(
    smol: TransformersBackend, gemma_assisted: TransformersBackend
) -> None:
    """Universal assisted generation rewires its assistant; the shared small model must not be."""
    assert gemma_assisted.model is TransformersBackend.load("gemma3-270m").model
    assert gemma_assisted.assistant is not None and gemma_assisted.assistant.model is not smol.model
    params = GenerationParams(max_new_tokens=8, temperature=0.7, seed=0)
    await gemma_assisted.agenerate(_prompts(gemma_assisted)[:1], n=1, params=params)
    out = await smol.anext_token_logprobs(
        ["Is 2 > 1? Answer:", "Is 3 > 10 really? Answer:"], ["Yes"]
    )
    assert len(out) == 2 and all(row["Yes"] < 0 for row in out)
