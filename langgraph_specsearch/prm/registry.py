"""Known PRM checkpoints, their styles, and one factory for every model-based PRM."""

from __future__ import annotations

from typing import Any, Literal

from langgraph_specsearch.prm.styles import STYLES

Engine = Literal["local", "tgi", "vllm", "openai"]

KNOWN_PRMS: dict[str, str] = {
    "peiyi9979/math-shepherd-mistral-7b-prm": "math-shepherd",
    "openreasoner/Math-psa": "math-psa",
    "Qwen/Qwen2.5-Math-PRM-7B": "qwen-prm",
    "Qwen/Qwen2.5-Math-PRM-72B": "qwen-prm",
    "Qwen/Qwen2.5-Math-7B-PRM800K": "qwen-prm",
    "RLHFlow/Llama3.1-8B-PRM-Mistral-Data": "rlhflow",
    "RLHFlow/Llama3.1-8B-PRM-Deepseek-Data": "rlhflow",
    "Skywork/Skywork-o1-Open-PRM-Qwen-2.5-1.5B": "skywork",
    "Skywork/Skywork-o1-Open-PRM-Qwen-2.5-7B": "skywork",
}
"""Hub id -> style. The first id of each style is its default checkpoint."""

BUILTIN_PRMS = ("combined", "judge", "arithmetic")
"""PRMs that need no PRM weights (the embedded default is `combined`)."""


def default_model(style: str) -> str:
    """The first known checkpoint of a style."""
    return next(k for k, v in KNOWN_PRMS.items() if v == style)


def is_model_prm(name: str) -> bool:
    """Whether `name` is a style or a known checkpoint (not a built-in PRM)."""
    return name in STYLES or name.lower() in {k.lower() for k in KNOWN_PRMS}


def resolve(name: str, model: str | None = None) -> tuple[str, str]:
    """(style, model id or path) for `--prm NAME [--prm-model M]`.

    `name` is a style (`math-shepherd`, `math-psa`, `qwen-prm`, `rlhflow`, `skywork`) or a
    known hub id; `model` overrides the checkpoint (hub id, local directory, or a served
    model name).
    """
    if name in STYLES:
        return name, model or default_model(name)
    for known, style in KNOWN_PRMS.items():
        if known.lower() == name.lower():
            return style, model or known
    names = ", ".join([*BUILTIN_PRMS, *STYLES])
    raise ValueError(f"unknown PRM {name!r}: use one of {names} or a known model id")


def build_model_prm(
    name: str,
    *,
    model: str | None = None,
    url: str | None = None,
    engine: Engine | None = None,
    device: str | None = None,
    device_map: str | None = None,
    dtype: str = "auto",
    batch_size: int = 8,
    tgi_method: Literal["prefill", "top_n"] = "prefill",
    api_key: str | None = None,
) -> Any:
    """A model-based PRM, local or served.

    Args:
        name: style or known model id (see `resolve`).
        model: checkpoint (local engine) or served model name (vLLM / OpenAI).
        url: endpoint; without it the PRM runs locally with transformers.
        engine: "tgi" (default with a URL), "vllm" (pooling API), "openai" (completions
            logprobs) or "local".
        device, device_map, dtype, batch_size: local loading (see `load_transformers_prm`).
        tgi_method: "prefill" or "top_n" (see `TGIPRM`).
        api_key: bearer token of a served PRM (`""`: none; None: the engine's default).

    Raises:
        ValueError: unknown name, or a style the engine cannot serve; `PRMLoadError` (a
            ValueError) when local weights cannot be loaded.
    """
    style, checkpoint = resolve(name, model)
    engine = engine or ("tgi" if url else "local")
    if engine != "local" and not url:
        raise ValueError(f"--prm-engine {engine} needs --prm-url")
    if engine == "local":
        from langgraph_specsearch.prm.local import load_transformers_prm

        return load_transformers_prm(
            checkpoint,
            style,
            device=device,
            device_map=device_map,
            dtype=dtype,
            batch_size=batch_size,
        )
    assert url is not None
    if engine == "tgi":
        from langgraph_specsearch.prm.tgi import TGIPRM

        return TGIPRM(url, style, method=tgi_method, api_key=api_key)
    from langgraph_specsearch.prm.http import OpenAILogprobsPRM, VLLMPoolingPRM

    if engine == "vllm":
        return VLLMPoolingPRM(url, style, model=model, api_key=api_key)
    if engine == "openai":
        return OpenAILogprobsPRM(url, style, model=model, api_key=api_key)
    raise ValueError(f"unknown PRM engine {engine!r} (local, tgi, vllm, openai)")
