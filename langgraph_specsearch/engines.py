"""Local engines: which one runs the small and large models, and loading them.

`transformers` runs any causal LM (embedded names, local directories, hub ids) on CPU or GPU;
`llamacpp` runs GGUF files in-process with llama.cpp (the `llamacpp` extra), several times
faster on a CPU; `auto` picks llama.cpp when the extra is installed and both models are
GGUFs (the embedded defaults), else transformers, and says which on stderr.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Literal

Engine = Literal["auto", "transformers", "llamacpp"]

DEFAULT_DTYPE = "float32"
"""transformers' dtype when none is given; giving it explicitly changes nothing."""

SPECULATION_NOTE = (
    "token-level speculation (--method sps, --large-sd) needs --engine transformers:"
    " llama-cpp-python offers no draft-model speculation"
)


def runs_as_gguf(name: str) -> bool:
    """Whether llama.cpp can run `name` as is: an embedded model or a .gguf file."""
    from langgraph_specsearch.models import EMBEDDED_MODELS

    path = Path(name).expanduser()
    return name in EMBEDDED_MODELS or (path.suffix == ".gguf" and path.is_file())


def gpu_present() -> bool:
    """Whether an NVIDIA GPU is visible (checked without importing torch)."""
    return Path("/proc/driver/nvidia/gpus").is_dir() and any(
        Path("/proc/driver/nvidia/gpus").iterdir()
    )


def llama_cpp_offloads() -> bool:
    """Whether the installed llama.cpp was built with GPU support."""
    from langgraph_specsearch.backends.llamacpp_context import import_llama_cpp

    return bool(import_llama_cpp().llama_supports_gpu_offload())


def choose_engine(
    engine: Engine,
    models: list[str],
    *,
    needs_sd: bool,
    dtype: str | None = None,
    device: str | None = None,
) -> tuple[Literal["transformers", "llamacpp"], str]:
    """The engine to use for `models` and why (for `auto`); raises ValueError when it can't.

    Args:
        engine: what was asked for.
        models: the local models to run.
        needs_sd: whether the search uses token-level speculative decoding.
        dtype: the requested dtype (a transformers option). `float32`, the default, is as
            good as None: it picks no engine; `bfloat16` / `float16` pick transformers under
            `auto` and are refused by `llamacpp` (GGUFs keep their own types).
        device: the requested device; `auto` keeps a GPU's work off a CPU-only llama.cpp.
    """
    from langgraph_specsearch.backends.llamacpp_context import MISSING_EXTRA, llama_cpp_available

    dtype = None if dtype == DEFAULT_DTYPE else dtype  # the default asks for nothing
    if engine == "transformers":
        return "transformers", "asked for"
    if engine == "llamacpp":
        if needs_sd:
            raise ValueError(SPECULATION_NOTE)
        if dtype is not None:
            raise ValueError(
                f"--dtype {dtype} applies to --engine transformers (GGUFs keep their types)"
            )
        if not llama_cpp_available():
            raise ValueError(MISSING_EXTRA)
        for name in models:
            if not runs_as_gguf(name):
                raise ValueError(
                    f"--engine llamacpp runs embedded models or .gguf files, not {name!r}"
                )
        return "llamacpp", "asked for"
    if needs_sd:
        return "transformers", "token-level speculation needs it"
    if dtype is not None:
        return "transformers", f"--dtype {dtype} is a transformers option"
    if not all(runs_as_gguf(name) for name in models):
        return "transformers", "a model is not a GGUF"
    if not llama_cpp_available():
        return "transformers", "llama-cpp-python not installed; the [llamacpp] extra is faster"
    wants_gpu = device not in (None, "auto", "cpu") or (device in (None, "auto") and gpu_present())
    if wants_gpu and not llama_cpp_offloads():
        return "transformers", "a GPU, and llama.cpp was built for the CPU only"
    return "llamacpp", "llama-cpp-python installed, GGUF models"


def load_local_backends(
    config: Any, *, needs_small: bool, needs_sd: bool
) -> tuple[Any | None, Any]:
    """(small or None, large) backends for a `SearchConfig` without endpoints.

    The small model is loaded as a backend only when `needs_small` (it drafts or judges).
    With `needs_sd` it is the large model's assistant (transformers assisted generation),
    loaded by `TransformersBackend.load(assistant=...)` as a copy of its own; SpS therefore
    loads no small backend unless the small model is also the judge.
    """
    from langgraph_specsearch.models import check_model_name

    models = ([config.small] if needs_small or needs_sd else []) + [config.large]
    for name in models:
        if not runs_as_gguf(name):
            check_model_name(name)  # one-line error for a name nothing can load
    engine, why = choose_engine(
        config.engine, models, needs_sd=needs_sd, dtype=config.dtype, device=config.device
    )
    if config.engine == "auto":
        print(f"engine: {engine} ({why}; --engine to choose)", file=sys.stderr)
    if engine == "llamacpp":
        from langgraph_specsearch.backends.llamacpp import LlamaCppBackend

        small: Any = (
            LlamaCppBackend.load(config.small, device=config.device) if needs_small else None
        )
        return small, LlamaCppBackend.load(config.large, device=config.device)

    from langgraph_specsearch.backends.transformers import TransformersBackend

    for name in models:
        check_model_name(name)
    placement = {"device": config.device, "device_map": config.device_map, "dtype": config.dtype}
    try:
        small = TransformersBackend.load(config.small, **placement) if needs_small else None
        large = TransformersBackend.load(
            config.large, assistant=config.small if needs_sd else None, **placement
        )
    except OSError as exc:  # a hub id that can't be fetched, a directory without weights
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"cannot load model: {first}") from exc
    return small, large
