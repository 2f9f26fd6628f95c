"""KV-prefix reuse (`backends/prefix.py`): same tokens as plain `generate`, less prefill."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from langgraph_specsearch.backends.prefix import (
    KEPT_PREFIXES,
    MIN_SHARED_TOKENS,
    PrefixReuse,
    supports_prefix_reuse,
)
from langgraph_specsearch.backends.transformers import TransformersBackend
from langgraph_specsearch.prompts import FewShotFormat
from langgraph_specsearch.server.tiny import build_tiny_gemma3, build_tiny_model
from langgraph_specsearch.types import GenerationParams

QUESTION = "Natalia sold clips to 48 of her friends in April and half as many in May. How many?"
STEPS = [[], ["In May she sold 48 / 2 = 24 clips."], ["48 + 24 = 72.", "So 72."]]


def backends(model: Any, tokenizer: Any) -> tuple[TransformersBackend, TransformersBackend]:
    """The same model with and without prefix reuse."""
    fmt = FewShotFormat()
    reuse = TransformersBackend(model, tokenizer, name="m", prompt_format=fmt)
    plain = TransformersBackend(model, tokenizer, name="m", prompt_format=fmt, prefix_reuse=False)
    assert reuse.prefix is not None and plain.prefix is None
    return reuse, plain


def texts(out: list[list[Any]]) -> list[list[str]]:
    return [[g.text for g in row] for row in out]


@pytest.mark.parametrize("kind", ["llama", "gemma-wide-window", "gemma-narrow-window"])
@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_same_continuations_as_plain_generate(kind: str, temperature: float) -> None:
    model, tokenizer = build_tiny_model()
    if kind != "llama":
        model = build_tiny_gemma3(
            tokenizer, sliding_window=4096 if kind == "gemma-wide-window" else 64
        )
    reuse, plain = backends(model, tokenizer)
    params = GenerationParams(max_new_tokens=12, temperature=temperature, seed=5, stop=[])
    prompts = [reuse.prompt_format.render(QUESTION, s) for s in STEPS]
    for call in ([prompts[0]], prompts[1:], prompts):  # later calls reuse the kept prefix
        got = reuse._generate_sync(call, 3, params)
        assert texts(got) == texts(plain._generate_sync(call, 3, params))
        assert [[g.tokens for g in row] for row in got] == [
            [g.tokens for g in row] for row in plain._generate_sync(call, 3, params)
        ]
    prefix = reuse.prefix
    assert prefix is not None
    copies = 3 if temperature else 1
    if kind == "gemma-narrow-window":  # rows exceed the window: no shared prefix, dedup only
        rows = [
            len(ids)
            for call in (prompts[:1], prompts[1:], prompts)
            for ids in reuse._token_ids(call)
        ]
        assert prefix.prefilled_tokens == sum(n - 1 for n in rows) + len(rows) * copies
    else:
        assert prefix.prefilled_tokens < prefix.prompt_tokens / 3


def test_prefix_is_prefilled_once_and_reused_across_calls() -> None:
    model, tokenizer = build_tiny_model()
    prefix = PrefixReuse(model, tokenizer.pad_token_id)
    header = tokenizer("Tom has 3 apples and buys 5 more. How many apples does he have?")[
        "input_ids"
    ]
    assert len(header) > MIN_SHARED_TOKENS
    rows = [header + tokenizer(" 48 / 2 = 24.")["input_ids"], header + [7, 8]]
    with torch.inference_mode():
        plan = prefix.prepare(rows, 4, max_new_tokens=8)
        first = prefix.prefilled_tokens
        # the header once, each tail but its last token once, the last tokens per copy
        tails = sum(len(r) - len(header) - 1 for r in rows)
        assert first == len(header) + tails + 2 * 4
        assert plan.input_ids.shape[0] == 8 and plan.cache.get_seq_length() == len(rows[0]) - 1
        assert torch.equal(plan.input_ids[0, -len(rows[0]) :], torch.tensor(rows[0]))
        assert plan.attention_mask[7].sum() == len(rows[1])
        prefix.prepare([header + [9, 10, 11]], 1, max_new_tokens=8)
    # the kept header is reused: only the new tail (2 tokens) and the last token ran
    assert prefix.prefilled_tokens - first == 3


def test_next_token_logits_match_a_full_forward() -> None:
    model, tokenizer = build_tiny_model()
    prefix = PrefixReuse(model, tokenizer.pad_token_id)
    header = tokenizer("Question: Natalia sold clips to 48 of her friends in April. Yes or")[
        "input_ids"
    ]
    rows = [header + [11], header + [12, 13, 14]]
    with torch.inference_mode():
        got = prefix.next_token_logits(rows)
        for i, row in enumerate(rows):
            full = model(input_ids=torch.tensor([row])).logits[0, -1]
            assert torch.allclose(got[i], full, atol=1e-4)


def test_a_model_the_reuse_does_not_fit_falls_back_to_plain_passes(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    model, tokenizer = build_tiny_model()
    reuse, plain = backends(model, tokenizer)

    def unsupported(*_: Any, **__: Any) -> Any:
        raise NotImplementedError("cache layer type not supported")

    assert reuse.prefix is not None
    monkeypatch.setattr(reuse.prefix, "prepare", unsupported)
    params = GenerationParams(max_new_tokens=8, temperature=1.0, seed=2, stop=[])
    prompts = [reuse.prompt_format.render(QUESTION, s) for s in STEPS]
    with caplog.at_level("WARNING"):
        got = reuse._generate_sync(prompts, 2, params)
    assert texts(got) == texts(plain._generate_sync(prompts, 2, params))
    assert reuse.prefix is None
    assert "KV-prefix reuse turned off" in caplog.text and "not supported" in caplog.text


def test_kept_prefixes_are_not_duplicated_and_bounded() -> None:
    model, tokenizer = build_tiny_model()
    prefix = PrefixReuse(model, tokenizer.pad_token_id)
    head = list(range(5, 40))  # 35 tokens
    with torch.inference_mode():
        prefix.prepare([head + [1, 2], head + [1, 2]], 3, max_new_tokens=4)  # shares 36
        prefix.prepare([head, head + [3, 4, 5]], 3, max_new_tokens=4)  # 34: covered
        prefix.prepare([head + [9]], 1, max_new_tokens=4)  # 35: covered
        assert prefix.kept == [36]
        before = prefix.prefilled_tokens
        prefix.prepare([head + [1, 2, 7, 7]], 1, max_new_tokens=4)  # extends the kept 36
        assert prefix.prefilled_tokens - before == 2 + 1  # 2 new shared tokens, the last token
        assert prefix.kept == [38]  # a single row shares all but its last token
        for k in range(5):  # other headers: at most KEPT_PREFIXES are kept
            prefix.prepare([[50 + k] * 20 + [1]], 1, max_new_tokens=4)
        assert prefix.kept == [20] * KEPT_PREFIXES


def test_only_full_and_sliding_attention_models_qualify() -> None:
    model, tokenizer = build_tiny_model()
    assert supports_prefix_reuse(model)
    assert supports_prefix_reuse(build_tiny_gemma3(tokenizer, sliding_window=8))
    chunked, _ = build_tiny_model()
    chunked.config.attention_chunk_size = 8
    hybrid = build_tiny_gemma3(tokenizer, sliding_window=8)
    hybrid.config.layer_types = ["linear_attention", "full_attention"] * 2
    for model in (chunked, hybrid):
        assert not supports_prefix_reuse(model)
        backend = TransformersBackend(model, tokenizer, name="m", prompt_format=FewShotFormat())
        assert backend.prefix is None


def test_an_error_of_both_paths_is_raised_and_reuse_stays_on() -> None:
    model, tokenizer = build_tiny_model()  # its tokenizer adds no BOS: "" has no tokens at all
    reuse, _ = backends(model, tokenizer)
    params = GenerationParams(max_new_tokens=4, temperature=0.0, stop=[])
    with pytest.raises(Exception):  # noqa: B017 - whatever the plain path raises
        reuse._generate_sync(["", ""], 1, params)
    assert reuse.prefix is not None
