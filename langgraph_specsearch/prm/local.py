"""Model-based PRMs run locally with transformers, on whatever device the user has.

`TransformersPRM` scores every step of a path in one forward pass and batches paths
(`batch_size`), padding on the tokenizer's side (left or right) with explicit position ids
so a padded row scores exactly like the same row alone. Inputs are moved to the model's
device; `load_transformers_prm` takes `device`, `device_map` and `dtype`.
"""

from __future__ import annotations

import asyncio
import glob
import inspect
import os
import threading
from collections.abc import Sequence
from typing import Any

from langgraph_specsearch.prm.errors import PRMAlignmentError, PRMLoadError
from langgraph_specsearch.prm.styles import PRMStyle, TokenIds, locate, style_by_name

DTYPES = ("auto", "bfloat16", "float16", "float32")


class ValueHeadModel:
    """A base transformer plus a scalar value head (`v_head.summary`), Skywork-PRM layout.

    Calling it returns the head's output per position, shape [batch, seq].
    """

    def __init__(self, base: Any, head: Any) -> None:
        """`base`: a transformers `AutoModel`; `head`: `torch.nn.Linear(hidden, 1)`."""
        self.base = base
        self.head = head
        self.config = base.config

    @property
    def device(self) -> Any:
        """The device of the base model's first parameter."""
        return self.base.device

    def eval(self) -> ValueHeadModel:
        """Evaluation mode (no dropout)."""
        self.base.eval()
        self.head.eval()
        return self

    def to(self, *args: Any, **kwargs: Any) -> ValueHeadModel:
        """Move both parts."""
        self.base.to(*args, **kwargs)
        self.head.to(*args, **kwargs)
        return self

    def __call__(self, **inputs: Any) -> Any:
        """Head output at every position."""
        hidden = self.base(**inputs).last_hidden_state
        weight = self.head.weight
        return self.head(hidden.to(weight.dtype)).squeeze(-1)


class TransformersPRM:
    """A PRM of a given `PRMStyle` over a local transformers model.

    - `labels` head (Math-Shepherd, Math-psa, RLHFlow): a causal LM; the score is the softmax
      over the good / bad label logits at each mark, P(good). Only the marked positions'
      logits are computed (`logits_to_keep`) when the model supports it.
    - `classifier` head (Qwen2.5-Math-PRM): per-token two-label logits; P(label 1).
    - `value` head (Skywork): sigmoid of the value head.

    A mark that does not land on its token (tag merged with its neighbours, label missing) is a
    `PRMAlignmentError` naming the PRM and the step, never a silent score.
    """

    def __init__(
        self,
        style: PRMStyle | str,
        model: Any,
        tokenizer: Any,
        *,
        name: str | None = None,
        batch_size: int = 8,
        padding_side: str | None = None,
        max_length: int | None = None,
    ) -> None:
        """Wrap a loaded `model` and `tokenizer`.

        Args:
            style: a `PRMStyle` or its name (`math-shepherd`, `math-psa`, `qwen-prm`,
                `rlhflow`, `skywork`).
            model: causal LM, token-classification model or `ValueHeadModel` (per style).
            tokenizer: the model's fast tokenizer (offsets are needed for alignment).
            name: PRM name in errors and stats; defaults to the style's name.
            batch_size: paths per forward pass.
            padding_side: "left" or "right"; defaults to the tokenizer's.
            max_length: inputs longer than this many tokens are an error (default: the
                model's `max_position_embeddings`).
        """
        self.style = style_by_name(style) if isinstance(style, str) else style
        self.model = model
        self.tokenizer = tokenizer
        self.name = name or self.style.name
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        self.batch_size = batch_size
        self.padding_side = padding_side or getattr(tokenizer, "padding_side", "right") or "right"
        if self.padding_side not in ("left", "right"):
            raise ValueError("padding_side must be 'left' or 'right'")
        positions = getattr(getattr(model, "config", None), "max_position_embeddings", None)
        self.max_length = max_length or (positions if isinstance(positions, int) else None)
        self.ids: TokenIds = self.style.lookup(self._encode, self.name)
        pad = tokenizer.pad_token_id
        if pad is None:
            pad = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0
        self.pad_id = int(pad)
        self._lock = threading.Lock()
        self._keep = _accepts(model, "logits_to_keep")

    def _encode(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _chat(self, messages: list[dict[str, str]]) -> str:
        out = self.tokenizer.apply_chat_template(messages, tokenize=False)
        return str(out)

    def encode(self, question: str, steps: Sequence[str]) -> tuple[list[int], list[int]]:
        """Input ids of one path and the position read for each step."""
        segments = getattr(self.style, "segments", None)
        bos = self.tokenizer.bos_token or ""
        if segments is not None:  # Skywork: pieces encoded apart, a tag id after each step
            pieces = segments(question, steps, bos)
            ids = self._encode(pieces[0])
            positions = []
            for piece in pieces[1:]:
                ids += self._encode(piece) + [int(self.ids.tag or 0)]
                positions.append(len(ids) - 1)
            return ids, positions
        template = self._chat if getattr(self.tokenizer, "chat_template", None) else None
        rendered = self.style.render(question, steps, chat_template=template, bos=bos)
        enc = self.tokenizer(
            rendered.text,
            add_special_tokens=rendered.add_special_tokens,
            return_offsets_mapping=True,
        )
        ids = list(enc["input_ids"])
        offsets = [tuple(o) for o in enc["offset_mapping"]]
        index = locate(rendered, ids, offsets, self.ids, self.name)
        return ids, [k + m.shift for k, m in zip(index, rendered.marks, strict=True)]

    def _forward(self, rows: list[tuple[list[int], list[int]]]) -> list[list[float]]:
        """Scores of a batch of encoded rows (one padded forward pass)."""
        import torch

        width = max(len(ids) for ids, _ in rows)
        input_ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        shifts = []
        for r, (ids, _) in enumerate(rows):
            pad = width - len(ids)
            start = pad if self.padding_side == "left" else 0
            input_ids[r, start : start + len(ids)] = torch.tensor(ids)
            mask[r, start : start + len(ids)] = 1
            shifts.append(start)
        position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
        device = self.model.device
        inputs: dict[str, Any] = {
            "input_ids": input_ids.to(device),
            "attention_mask": mask.to(device),
            "position_ids": position_ids.to(device),
        }
        wanted = [[p + s for p in pos] for (_, pos), s in zip(rows, shifts, strict=True)]
        keep: list[int] | None = None
        if self.style.head == "labels" and self._keep:
            keep = sorted({p for ps in wanted for p in ps})
            inputs["logits_to_keep"] = torch.tensor(keep, device=device)
        with self._lock, torch.inference_mode():
            out = self.model(**inputs)
        if self.style.head == "value":
            values = torch.sigmoid(out.float())
            return [[float(values[r, p]) for p in ps] for r, ps in enumerate(wanted)]
        logits = out.logits if hasattr(out, "logits") else out[0]
        logits = logits.float()
        column = {p: i for i, p in enumerate(keep)} if keep is not None else None
        scores = []
        for r, ps in enumerate(wanted):
            cols = [column[p] for p in ps] if column is not None else ps
            at = logits[r, cols]
            if self.style.head == "labels":
                pair = at[:, [int(self.ids.good or 0), int(self.ids.bad or 0)]]
                scores.append(torch.softmax(pair, dim=-1)[:, 0].tolist())
            else:
                scores.append(torch.softmax(at, dim=-1)[:, 1].tolist())
        return scores

    def score_batch(self, items: Sequence[tuple[str, Sequence[str]]]) -> list[list[float]]:
        """Per-step scores of (question, steps) pairs, `batch_size` paths per forward pass."""
        encoded: list[tuple[list[int], list[int]]] = []
        for question, steps in items:
            ids, pos = self.encode(question, steps) if steps else ([], [])
            if self.max_length is not None and len(ids) > self.max_length:
                raise PRMAlignmentError(
                    self.name,
                    len(steps) - 1,
                    f"input of {len(ids)} tokens exceeds the model's {self.max_length}",
                )
            encoded.append((ids, pos))
        out: list[list[float]] = [[] for _ in items]
        order = sorted(
            (i for i, (ids, _) in enumerate(encoded) if ids), key=lambda i: -len(encoded[i][0])
        )
        for b in range(0, len(order), self.batch_size):
            chunk = order[b : b + self.batch_size]
            for i, scores in zip(chunk, self._forward([encoded[i] for i in chunk]), strict=True):
                out[i] = scores
        return out

    async def ascore_batch(self, items: Sequence[tuple[str, Sequence[str]]]) -> list[list[float]]:
        """`score_batch` in a worker thread."""
        return await asyncio.to_thread(self.score_batch, list(items))

    async def ascore(self, question: str, paths: Sequence[Sequence[str]]) -> list[list[float]]:
        """Per-step scores of every path (all steps of a path in one pass)."""
        return await self.ascore_batch([(question, list(p)) for p in paths])

    async def ascore_last(self, question: str, paths: Sequence[Sequence[str]]) -> list[float]:
        """Score of each path's last step (0.0 for an empty path)."""
        return [s[-1] if s else 0.0 for s in await self.ascore(question, paths)]


def _accepts(model: Any, name: str) -> bool:
    """Whether `model.forward` takes keyword `name`."""
    forward = getattr(model, "forward", None)
    if forward is None:
        return False
    try:
        return name in inspect.signature(forward).parameters
    except (TypeError, ValueError):
        return False


def _torch_dtype(dtype: str) -> Any:
    import torch

    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}")
    return "auto" if dtype == "auto" else getattr(torch, dtype)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _load_value_head_model(source: str, dtype: Any, **kwargs: Any) -> ValueHeadModel:
    """Base model + `v_head.summary` weights read from the checkpoint's safetensors files.

    Accepts both layouts: base keys as in a causal LM (`model.layers...`) or under
    `pretrained_model.` (TRL's value-head wrapper). Missing base or head weights are an error.
    """
    import torch
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoModel

    path = source
    if not os.path.isdir(path):
        from huggingface_hub import snapshot_download

        path = snapshot_download(source, allow_patterns=["*.json", "*.safetensors", "*.txt"])
    config = AutoConfig.from_pretrained(path, **kwargs)
    base = AutoModel.from_config(config)
    state: dict[str, Any] = {}
    for file in sorted(glob.glob(os.path.join(path, "*.safetensors"))):
        state.update(load_file(file))
    head_w = next((v for k, v in state.items() if k.endswith("v_head.summary.weight")), None)
    head_b = next((v for k, v in state.items() if k.endswith("v_head.summary.bias")), None)
    if head_w is None:
        raise PRMLoadError(f"{source}: no v_head.summary.weight in its safetensors files")
    base_state = {}
    for key, value in state.items():
        if "v_head." in key or key.endswith("lm_head.weight"):
            continue
        key = key.removeprefix("pretrained_model.")
        key = (
            key.removeprefix(f"{base.base_model_prefix}.")
            if hasattr(base, "base_model_prefix")
            else key
        )
        base_state[key] = value
    missing, _ = base.load_state_dict(base_state, strict=False)
    missing = [k for k in missing if "rotary" not in k]
    if missing:
        raise PRMLoadError(
            f"{source}: base weights missing from the checkpoint ({missing[0]}, ...)"
        )
    head = torch.nn.Linear(head_w.shape[-1], 1, bias=head_b is not None)
    with torch.no_grad():
        head.weight.copy_(head_w.reshape(1, -1))
        if head_b is not None:
            head.bias.copy_(head_b.reshape(-1))
    if dtype != "auto":
        base.to(dtype)
        head.to(dtype)
    return ValueHeadModel(base, head)


def load_transformers_prm(
    model_id: str,
    style: PRMStyle | str,
    *,
    device: str | None = None,
    device_map: str | None = None,
    dtype: str = "auto",
    batch_size: int = 8,
    trust_remote_code: bool = False,
    name: str | None = None,
) -> TransformersPRM:
    """Load a PRM's weights and tokenizer with transformers and wrap them.

    Args:
        model_id: hub id or local directory.
        style: the PRM family (see `langgraph_specsearch.prm.styles`).
        device: "cpu", "cuda", "cuda:1", "mps", ... (default: CUDA when available, else CPU).
        device_map: e.g. "auto" to shard over several GPUs (needs accelerate); overrides
            `device`. Not available for value-head models.
        dtype: "auto" (the checkpoint's), "bfloat16", "float16" or "float32".
        batch_size: paths per forward pass.
        trust_remote_code: run the repository's modelling code (Qwen2.5-Math-PRM ships its
            own `Qwen2ForProcessRewardModel`; for the `qwen-prm` style it is enabled
            automatically when the config declares an `auto_map`).
        name: PRM name; defaults to `model_id`.

    Raises:
        PRMLoadError: one line saying why the weights could not be loaded (offline, gated,
            not found, out of memory).
    """
    import torch
    from transformers import (
        AutoConfig,
        AutoModel,
        AutoModelForCausalLM,
        AutoModelForTokenClassification,
        AutoTokenizer,
    )

    style = style_by_name(style) if isinstance(style, str) else style
    torch_dtype = _torch_dtype(dtype)
    if device is None and device_map is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        config = AutoConfig.from_pretrained(model_id, trust_remote_code=trust_remote_code)
        # Qwen2.5-Math-PRM's head lives in its repository's code: run it for that style only
        remote = trust_remote_code or (
            style.head == "classifier" and bool(getattr(config, "auto_map", None))
        )
        tokenizer = AutoTokenizer.from_pretrained(model_id, trust_remote_code=remote)
        kwargs: dict[str, Any] = {"dtype": torch_dtype, "trust_remote_code": remote}
        if device_map is not None:
            kwargs["device_map"] = device_map
        if style.head == "value":
            if device_map is not None:
                raise PRMLoadError("device_map is not supported for value-head PRMs; use device")
            model: Any = _load_value_head_model(model_id, torch_dtype, trust_remote_code=remote)
        elif style.head == "classifier":
            auto_map = getattr(config, "auto_map", None) or {}
            loader = AutoModel if "AutoModel" in auto_map else AutoModelForTokenClassification
            model = loader.from_pretrained(model_id, **kwargs)
        else:
            model = AutoModelForCausalLM.from_pretrained(model_id, **kwargs)
        if device_map is None:
            model.to(device)
        model.eval()
    except PRMLoadError:
        raise
    except torch.cuda.OutOfMemoryError as exc:
        raise PRMLoadError(
            f"cannot load PRM {model_id}: out of GPU memory ({_first_line(exc)})"
        ) from exc
    except (OSError, ValueError, RuntimeError, ImportError) as exc:
        raise PRMLoadError(
            f"cannot load PRM {model_id}: {_first_line(exc)}"
            " (no network, a gated repository without a token, or a wrong id/path?)"
        ) from exc
    if not getattr(tokenizer, "is_fast", False):
        raise PRMLoadError(f"PRM {model_id}: a fast tokenizer is needed (character offsets)")
    return TransformersPRM(style, model, tokenizer, name=name or model_id, batch_size=batch_size)
