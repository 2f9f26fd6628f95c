"""Tensors go where the model is: every tensor our code makes names its device.

On a CPU-only machine every tensor lands on the CPU whether or not the code names a device, so
a plain run proves nothing. `ImplicitDevices` records every tensor factory call
(`torch.tensor`, `zeros`, `ones`, `full`, `arange`, ...) made from this package without a
`device=`: such a tensor is on the CPU even when the model is on a GPU. The CPU tests run the
real code paths (prefix reuse, plain batches, judge logits, the serve engine) under it and
check, with a forward pre-hook, that every tensor handed to the model is on its device. The
GPU tests run the same paths on CUDA and skip without one.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.overrides import TorchFunctionMode

import langgraph_specsearch
from langgraph_specsearch.backends.transformers import TransformersBackend
from langgraph_specsearch.prompts import FewShotFormat
from langgraph_specsearch.server.tiny import build_tiny_gemma3, build_tiny_model
from langgraph_specsearch.types import GenerationParams

PACKAGE = str(Path(langgraph_specsearch.__file__).parent)
TORCH = str(Path(torch.__file__).parent)
FACTORIES = {
    torch.tensor,
    torch.as_tensor,
    torch.zeros,
    torch.ones,
    torch.full,
    torch.empty,
    torch.arange,
    torch.rand,
    torch.randn,
    torch.randint,
}
PROMPTS = [
    "Question: Natalia sold clips to 48 of her friends. Answer: 48 / 2 = 24.",
    "Question: Natalia sold clips to 48 of her friends. Answer: The answer is",
]
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


class ImplicitDevices(TorchFunctionMode):
    """Records (file:line) of tensor factories called from this package without `device=`."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        if func in FACTORIES and kwargs.get("device") is None:
            frame = sys._getframe(1)
            while frame is not None and frame.f_code.co_filename.startswith(TORCH):
                frame = frame.f_back  # type: ignore[assignment]
            if frame is not None and frame.f_code.co_filename.startswith(PACKAGE):
                self.calls.append(f"{frame.f_code.co_filename}:{frame.f_lineno}")
        return func(*args, **kwargs)


def on_model_device(model: Any) -> tuple[list[str], Any]:
    """A forward pre-hook listing tensors handed to `model` that are not on its device."""
    wrong: list[str] = []
    device = model.get_input_embeddings().weight.device

    def check(_module: Any, args: Any, kwargs: Any) -> None:
        for name, value in [*enumerate(args), *kwargs.items()]:
            if isinstance(value, torch.Tensor) and value.device != device:
                wrong.append(f"{name} on {value.device}")

    return wrong, model.register_forward_pre_hook(check, with_kwargs=True)


def exercise_backend(backend: TransformersBackend) -> None:
    """Sampled and greedy generation and judge logits, in this thread (modes are per thread)."""
    sampled = GenerationParams(max_new_tokens=4, temperature=0.8, seed=1)
    backend._generate_sync(PROMPTS, 2, sampled)
    backend._generate_sync(PROMPTS, 1, GenerationParams(max_new_tokens=3, temperature=0.0))
    backend._logprobs_sync(PROMPTS, ["48", "24"])


@pytest.fixture(scope="module")
def tiny() -> tuple[Any, Any]:
    return build_tiny_model()


def backends_on(device: str, tiny: tuple[Any, Any]) -> list[TransformersBackend]:
    model, tokenizer = tiny
    gemma = build_tiny_gemma3(tokenizer, sliding_window=512)
    out = []
    for m in (model, gemma):
        m = m.to(device)
        for reuse in (True, False):
            out.append(
                TransformersBackend(
                    m, tokenizer, name="tiny", prompt_format=FewShotFormat(), prefix_reuse=reuse
                )
            )
    return out


def test_backend_names_the_device_of_every_tensor(tiny: tuple[Any, Any]) -> None:
    backends = backends_on("cpu", tiny)
    assert [b.prefix is not None for b in backends] == [True, False, True, False]
    for backend in backends:
        wrong, hook = on_model_device(backend.model)
        try:
            with ImplicitDevices() as mode:
                exercise_backend(backend)
        finally:
            hook.remove()
        assert mode.calls == [], f"tensors made without device=: {sorted(set(mode.calls))}"
        assert wrong == []


def test_the_recorder_catches_a_tensor_made_without_a_device() -> None:
    from langgraph_specsearch.backends import prefix

    with ImplicitDevices() as mode:
        prefix.torch.zeros(2)  # called from this test file: not the package
        exec(compile("torch.ones(3)", prefix.__file__, "exec"), {"torch": torch})
    assert len(mode.calls) == 1 and mode.calls[0].startswith(prefix.__file__)


def _rows(tokenizer: Any, sample: bool) -> list[Any]:
    from langgraph_specsearch.server.engine import Row

    return [
        Row(
            ids=tokenizer(p)["input_ids"],
            max_new_tokens=4,
            do_sample=sample,
            temperature=0.8,
            top_p=0.9,
            top_k=0,
            repetition_penalty=1.2 if sample else 1.0,
            frequency_penalty=0.1 if sample else 0.0,
            seed=3,
            stop=[],
            top_n=2,
        )
        for p in PROMPTS
    ]


def exercise_engine(engine: Any, tokenizer: Any) -> list[list[int]]:
    """Continuous batching (admit + decode until done) and prompt logprobs, in this thread."""
    rows = _rows(tokenizer, sample=False) + _rows(tokenizer, sample=True)
    engine._step(rows)
    for _ in range(10):
        if engine._batch is None:
            break
        engine._step([])
    engine.prefill(rows[0].ids)
    assert all(r.error is None for r in rows), [r.error for r in rows]
    return [r.tokens for r in rows]


def make_engine(model: Any, tokenizer: Any) -> Any:
    from langgraph_specsearch.server.engine import Engine

    return Engine(model, tokenizer, draft=None, max_batch_size=8, batch_wait_s=0.0)


def test_serve_engine_names_the_device_of_every_tensor(tiny: tuple[Any, Any]) -> None:
    model, tokenizer = tiny
    engine = make_engine(model, tokenizer)
    assert engine.continuous
    wrong, hook = on_model_device(model)
    try:
        with ImplicitDevices() as mode:
            tokens = exercise_engine(engine, tokenizer)
    finally:
        hook.remove()
    assert all(len(t) == 4 for t in tokens)
    assert mode.calls == [], f"tensors made without device=: {sorted(set(mode.calls))}"
    assert wrong == []


@needs_cuda
def test_backend_on_cuda_matches_cpu_greedy(tiny: tuple[Any, Any]) -> None:
    cpu = backends_on("cpu", tiny)
    gpu = backends_on("cuda", tiny)
    params = GenerationParams(max_new_tokens=6, temperature=0.0)
    for c, g in zip(cpu, gpu, strict=True):
        assert g.device.type == "cuda"
        wrong, hook = on_model_device(g.model)
        try:
            exercise_backend(g)
            got = g._generate_sync(PROMPTS, 1, params)
        finally:
            hook.remove()
        assert wrong == []
        want = c._generate_sync(PROMPTS, 1, params)
        assert [x[0].text for x in got] == [x[0].text for x in want]


@needs_cuda
def test_serve_engine_on_cuda(tiny: tuple[Any, Any]) -> None:
    model, tokenizer = build_tiny_model()
    engine = make_engine(model.to("cuda"), tokenizer)
    assert engine.device.type == "cuda"
    wrong, hook = on_model_device(engine.model)
    try:
        tokens = exercise_engine(engine, tokenizer)
    finally:
        hook.remove()
    assert wrong == [] and all(len(t) == 4 for t in tokens)


@needs_cuda
@pytest.mark.integration
def test_embedded_models_go_on_the_gpu() -> None:
    backend = TransformersBackend.load("smollm2-135m")  # no device given: the GPU
    assert backend.device.type == "cuda"
    out = backend._generate_sync(
        [backend.prompt_format.render("What is 2 + 3?", [])],
        2,
        GenerationParams(max_new_tokens=8, seed=0),
    )
    assert all(g.tokens > 0 for g in out[0])
