"""Tiny random-weight PRMs of the real architectures, with tokenizers built here (no hub).

Each tokenizer is trained with the `tokenizers` library on the ProcessBench sample's text and
contains the real step and label tokens of its family: Math-Shepherd's "▁ки" / "▁+" / "▁-"
(sentencepiece-style, Mistral), Math-psa's " \\n\\n\\n\\n\\n" and " +" / " -" (Qwen2's
pre-tokenizer regex), Qwen2.5-Math-PRM's `<extra_0>` with ChatML, RLHFlow's Llama-3 chat
tokens, Skywork's "\\n".
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForCausalLM,
    Qwen2ForTokenClassification,
    Qwen2Model,
)

from langgraph_specsearch.prm.local import ValueHeadModel

FIXTURE = Path(__file__).parent / "fixtures" / "processbench_gsm8k_sample.json"
QWEN_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
CHATML_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
LLAMA3_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>"
    "\n\n{{ m['content'] | trim }}<|eot_id|>{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)


@cache
def corpus() -> list[str]:
    """Problems and steps of the ProcessBench sample, with every family's tags mixed in."""
    records = json.loads(FIXTURE.read_text(encoding="utf-8"))
    texts = []
    for r in records:
        texts.append(r["problem"])
        texts.append(" ки\n".join(r["steps"]) + " ки +")
        texts.append(" \n\n\n\n\n".join(r["steps"]) + " \n\n\n\n\n + -")
        texts.append("\n".join(r["steps"]) + "\n+ - + -")
    return texts * 2


def _train(core: Tokenizer, specials: list[str], size: int, alphabet: list[str]) -> None:
    trainer = trainers.BpeTrainer(
        vocab_size=size, special_tokens=specials, initial_alphabet=alphabet, show_progress=False
    )
    core.train_from_iterator(corpus(), trainer=trainer)


@cache
def mistral_tokenizer() -> PreTrainedTokenizerFast:
    """Sentencepiece-style BPE (Metaspace, BOS added), as Mistral-7B's tokenizer."""
    core = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=False))
    core.pre_tokenizer = pre_tokenizers.Sequence(  # newlines stay apart, as in sentencepiece
        [
            pre_tokenizers.Split("\n", behavior="isolated"),
            pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first"),
        ]
    )
    core.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first")
    _train(core, ["<unk>", "<s>", "</s>"], 900, [])
    bos = core.token_to_id("<s>")
    core.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos)]
    )
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core, bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )
    tok.pad_token = tok.unk_token
    return tok


def _byte_level(specials: list[str], size: int) -> Tokenizer:
    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN_SPLIT), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    core.decoder = decoders.ByteLevel()
    _train(core, specials, size, pre_tokenizers.ByteLevel.alphabet())
    return core


@cache
def qwen_tokenizer() -> PreTrainedTokenizerFast:
    """Qwen2-style byte-level BPE with `<extra_0>`, ChatML specials and template."""
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<extra_0>"]
    tok = PreTrainedTokenizerFast(
        tokenizer_object=_byte_level(specials, 1000),
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=specials[1:],
    )
    tok.chat_template = CHATML_TEMPLATE
    return tok


@cache
def llama3_tokenizer() -> PreTrainedTokenizerFast:
    """Llama-3-style byte-level BPE with its chat special tokens and template."""
    specials = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>",
                "<|end_header_id|>", "<|eot_id|>"]  # fmt: skip
    tok = PreTrainedTokenizerFast(
        tokenizer_object=_byte_level(specials, 1000),
        bos_token="<|begin_of_text|>",
        eos_token="<|eot_id|>",
        pad_token="<|end_of_text|>",
        additional_special_tokens=specials[2:],
    )
    tok.chat_template = LLAMA3_TEMPLATE
    return tok


def _small(**extra: Any) -> dict[str, Any]:
    return dict(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        **extra,
    )


def mistral_prm(seed: int = 0) -> tuple[Any, Any]:
    """MistralForCausalLM (Math-Shepherd's architecture), random weights."""
    tok = mistral_tokenizer()
    torch.manual_seed(seed)
    cfg = MistralConfig(vocab_size=len(tok), pad_token_id=tok.pad_token_id, **_small())
    return MistralForCausalLM(cfg).eval(), tok


def qwen_causal_prm(seed: int = 0) -> tuple[Any, Any]:
    """Qwen2ForCausalLM (Math-psa's architecture), random weights."""
    tok = qwen_tokenizer()
    torch.manual_seed(seed)
    cfg = Qwen2Config(vocab_size=len(tok), pad_token_id=tok.pad_token_id, **_small())
    return Qwen2ForCausalLM(cfg).eval(), tok


def qwen_classifier_prm(seed: int = 0) -> tuple[Any, Any]:
    """Qwen2ForTokenClassification with two labels (Qwen2.5-Math-PRM's head shape)."""
    tok = qwen_tokenizer()
    torch.manual_seed(seed)
    cfg = Qwen2Config(vocab_size=len(tok), pad_token_id=tok.pad_token_id, **_small())
    cfg.num_labels = 2
    return Qwen2ForTokenClassification(cfg).eval(), tok


def llama_prm(seed: int = 0) -> tuple[Any, Any]:
    """LlamaForCausalLM (RLHFlow's architecture), random weights."""
    tok = llama3_tokenizer()
    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=len(tok),
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        **_small(),
    )
    return LlamaForCausalLM(cfg).eval(), tok


def value_head_prm(seed: int = 0) -> tuple[ValueHeadModel, Any]:
    """Qwen2Model + Linear(hidden, 1) value head (Skywork-o1-Open-PRM's layout)."""
    tok = qwen_tokenizer()
    torch.manual_seed(seed)
    cfg = Qwen2Config(vocab_size=len(tok), pad_token_id=tok.pad_token_id, **_small())
    base = Qwen2Model(cfg).eval()
    head = torch.nn.Linear(cfg.hidden_size, 1)
    return ValueHeadModel(base, head).eval(), tok


def save_value_head(model: ValueHeadModel, tok: Any, path: Path) -> None:
    """Write it the way Skywork's checkpoints are laid out (one safetensors file)."""
    from safetensors.torch import save_file

    model.base.config.save_pretrained(path)
    tok.save_pretrained(path)
    state = {f"model.{k}": v.contiguous() for k, v in model.base.state_dict().items()}
    state["v_head.summary.weight"] = model.head.weight.detach().contiguous()
    state["v_head.summary.bias"] = model.head.bias.detach().contiguous()
    save_file(state, str(path / "model.safetensors"))


ITEMS_FOR_HTTP = [
    ("What is 2+3?", ["2 + 3 = 5.", "The answer is 5."]),
    ("Tom has 3 apples and buys 4 more. How many?", ["3 + 4 = 7 apples.", "So 7."]),
]
"""Short (question, steps) pairs for the HTTP tests."""
