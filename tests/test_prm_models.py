"""Model PRMs on tiny random models of the real architectures, against independent references.

Each reference below rebuilds the family's input the way its authors' code does (plain
string formatting, `encode`, ids compared with the tag id) and takes the softmax over the two
label logits at exactly the tag positions; the PRM under test renders, aligns by character
offsets, pads and batches on its own.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch
from fastapi import FastAPI, Request
from prm_tiny import (
    FIXTURE,
    llama_prm,
    mistral_prm,
    qwen_causal_prm,
    qwen_classifier_prm,
    save_value_head,
    value_head_prm,
)
from typer.testing import CliRunner

from langgraph_specsearch.cli import app
from langgraph_specsearch.prm.errors import PRMAlignmentError
from langgraph_specsearch.prm.local import TransformersPRM, load_transformers_prm
from langgraph_specsearch.prm.processbench import earliest_error, load_records, metric
from langgraph_specsearch.prm.registry import build_model_prm, resolve
from langgraph_specsearch.prm.styles import QWEN_PRM_SYSTEM
from langgraph_specsearch.prm.tgi import TGIPRM, MathShepherdTGIPRM
from langgraph_specsearch.serve import background_server, create_app

RECORDS = json.loads(FIXTURE.read_text(encoding="utf-8"))
ITEMS = [(r["problem"], r["steps"][:3]) for r in RECORDS[:3]] + [
    ("What is 2+3?", ["2 + 3 = 5.", "The answer is 5."])
]


def _softmax_pair(logits: torch.Tensor, good: int, bad: int) -> list[float]:
    return torch.softmax(logits[:, [good, bad]].float(), dim=-1)[:, 0].tolist()


def ref_math_shepherd(model: Any, tok: Any, q: str, steps: list[str]) -> list[float]:
    text = f"{q} " + "\n".join(f"{s.strip()} ки" for s in steps)
    ids = tok.encode(text)
    good, bad = tok.encode("+ -")[1:]
    tag = tok.encode("ки")[-1]
    logits = model(torch.tensor([ids])).logits[0]
    where = [i for i, t in enumerate(ids) if t == tag]
    return _softmax_pair(logits[where], good, bad)


def ref_math_psa(model: Any, tok: Any, q: str, steps: list[str]) -> list[float]:
    text = f"{q} " + "".join(f"{s.strip()} \n\n\n\n\n" for s in steps)
    ids = tok.encode(text)
    good, bad = tok.encode(" + -")
    tag = tok.encode(" \n\n\n\n\n")[-1]
    logits = model(torch.tensor([ids])).logits[0]
    return _softmax_pair(logits[[i for i, t in enumerate(ids) if t == tag]], good, bad)


def ref_qwen(model: Any, tok: Any, q: str, steps: list[str]) -> list[float]:
    messages = [
        {"role": "system", "content": QWEN_PRM_SYSTEM},
        {"role": "user", "content": q},
        {"role": "assistant", "content": "<extra_0>".join(s.strip() for s in steps) + "<extra_0>"},
    ]
    ids = tok.encode(tok.apply_chat_template(messages, tokenize=False), add_special_tokens=False)
    sep = tok.encode("<extra_0>")[0]
    logits = model(torch.tensor([ids])).logits[0]
    probs = torch.softmax(logits[[i for i, t in enumerate(ids) if t == sep]].float(), dim=-1)
    return probs[:, 1].tolist()


def ref_rlhflow(model: Any, tok: Any, q: str, steps: list[str]) -> list[float]:
    conv: list[dict[str, str]] = []
    for k, s in enumerate(steps):
        conv.append({"role": "user", "content": f"{q} {s}" if k == 0 else s})
        conv.append({"role": "assistant", "content": "+"})
    ids = tok.encode(tok.apply_chat_template(conv, tokenize=False), add_special_tokens=False)
    plus, minus = tok.encode("+")[-1], tok.encode("-")[-1]
    eot = tok.convert_tokens_to_ids("<|eot_id|>")
    replies = [i for i in range(len(ids) - 1) if ids[i] == plus and ids[i + 1] == eot]
    logits = model(torch.tensor([ids])).logits[0]
    return _softmax_pair(logits[[i - 1 for i in replies]], plus, minus)


def ref_skywork(model: Any, tok: Any, q: str, steps: list[str]) -> list[float]:
    ids = tok.encode(q + "\n")
    nl = tok.encode("\n")[-1]
    flags = []
    for s in steps:
        ids += tok.encode(" ".join(s.split())) + [nl]
        flags.append(len(ids) - 1)
    values = torch.sigmoid(model(input_ids=torch.tensor([ids])).float())[0]
    return [float(values[i]) for i in flags]


CASES = {
    "math-shepherd": (mistral_prm, ref_math_shepherd),
    "math-psa": (qwen_causal_prm, ref_math_psa),
    "qwen-prm": (qwen_classifier_prm, ref_qwen),
    "rlhflow": (llama_prm, ref_rlhflow),
    "skywork": (value_head_prm, ref_skywork),
}


@pytest.mark.parametrize("style", list(CASES))
def test_scores_equal_reference_batched_single_and_both_paddings(style: str) -> None:
    build, reference = CASES[style]
    model, tok = build()
    with torch.inference_mode():
        expected = [reference(model, tok, q, list(steps)) for q, steps in ITEMS]
    assert all(len(e) == len(s) for e, (_, s) in zip(expected, ITEMS, strict=True))
    for side in ("left", "right"):
        batched = TransformersPRM(style, model, tok, batch_size=4, padding_side=side)
        single = TransformersPRM(style, model, tok, batch_size=1, padding_side=side)
        for got in (batched.score_batch(ITEMS), single.score_batch(ITEMS)):
            for g, e in zip(got, expected, strict=True):
                assert g == pytest.approx(e, abs=2e-5), (style, side)
    # random weights still separate steps: the scores are not all one value
    flat = [s for e in expected for s in e]
    assert max(flat) - min(flat) > 1e-4


async def test_protocol_methods_and_last_step() -> None:
    model, tok = mistral_prm()
    prm = TransformersPRM("math-shepherd", model, tok)
    q, steps = ITEMS[0]
    paths = [steps[:1], list(steps), []]
    every = await prm.ascore(q, paths)
    assert [len(s) for s in every] == [1, len(steps), 0]
    assert every[1][0] == pytest.approx(every[0][0], abs=1e-5)  # causal: prefix unchanged
    assert await prm.ascore_last(q, paths) == pytest.approx([every[0][0], every[1][-1], 0.0])


def test_misaligned_tag_is_an_error_naming_prm_and_step() -> None:
    # Math-Shepherd's format on a byte-level tokenizer: " ки" in the text is not the token
    # that encode("ки") gives, so no tag lands where the format puts it
    model, tok = qwen_causal_prm()
    prm = TransformersPRM("math-shepherd", model, tok, name="ms-on-qwen")
    with pytest.raises(PRMAlignmentError, match=r"^PRM ms-on-qwen: step 0: the step tag 'ки'"):
        prm.score_batch([("Q", ["1 + 1 = 2.", "So 2."])])


def test_label_tokens_are_looked_up_not_hard_coded() -> None:
    model, tok = qwen_causal_prm()
    prm = TransformersPRM("math-psa", model, tok)
    assert prm.ids.good == tok.encode(" + -")[0] and prm.ids.bad == tok.encode(" + -")[1]
    assert prm.ids.tag == tok.encode(" \n\n\n\n\n")[-1]
    model2, tok2 = llama_prm()
    rl = TransformersPRM("rlhflow", model2, tok2)
    assert (rl.ids.good, rl.ids.bad) == (tok2.encode("+")[-1], tok2.encode("-")[-1])


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("prms")
    out = {}
    for style, (build, _) in CASES.items():
        model, tok = build()
        path = root / style
        if style == "skywork":
            save_value_head(model, tok, path)
        else:
            model.save_pretrained(path)
            tok.save_pretrained(path)
        out[style] = path
    return out


@pytest.mark.parametrize("style", list(CASES))
def test_load_from_directory_matches_in_memory(style: str, saved: dict[str, Path]) -> None:
    build, reference = CASES[style]
    model, tok = build()
    q, steps = ITEMS[-1]
    with torch.inference_mode():
        expected = reference(model, tok, q, list(steps))
    prm = load_transformers_prm(str(saved[style]), style, device="cpu", dtype="float32")
    assert prm.score_batch([(q, steps)])[0] == pytest.approx(expected, abs=2e-5)
    assert str(prm.model.device) == "cpu"


def test_registry_and_unloadable_weights_one_line(tmp_path: Path) -> None:
    assert resolve("peiyi9979/math-shepherd-mistral-7b-prm") == (
        "math-shepherd",
        "peiyi9979/math-shepherd-mistral-7b-prm",
    )
    assert resolve("qwen-prm") == ("qwen-prm", "Qwen/Qwen2.5-Math-PRM-7B")
    assert resolve("skywork", "/x")[1] == "/x"
    with pytest.raises(ValueError, match="unknown PRM"):
        resolve("nope")
    with pytest.raises(ValueError, match=r"^cannot load PRM .*empty") as info:
        build_model_prm("math-shepherd", model=str(tmp_path / "empty"))
    assert "\n" not in str(info.value)


def test_cli_prm_eval_each_style_end_to_end(saved: dict[str, Path]) -> None:
    runner = CliRunner()
    for style, path in saved.items():
        result = runner.invoke(
            app,
            ["prm-eval", "--prm", style, "--prm-model", str(path), "--limit", "4", "--json",
             "--prm-device", "cpu", "--dataset", str(FIXTURE)],
        )  # fmt: skip
        assert result.exit_code == 0, (style, result.output)
        report = json.loads(result.stdout.strip().splitlines()[-1])
        assert report["n"] == 4 and report["n_erroneous"] == 2 and report["n_correct"] == 2
        assert len(report["predictions"]) == 4 and 0.0 <= report["f1"] <= 100.0
    bad = runner.invoke(app, ["prm-eval", "--prm", "skywork", "--prm-model", "/nonexistent"])
    assert bad.exit_code == 2 and "cannot load PRM" in bad.output


def test_processbench_metric_and_threshold_rule() -> None:
    assert earliest_error([0.9, 0.4, 0.2], 0.5) == 1
    assert earliest_error([0.9, 0.6], 0.5) == -1
    # 2 erroneous (one exact hit), 2 correct (one predicted -1): 50 / 50 -> F1 50
    assert metric([1, 2, -1, -1], [1, 0, -1, 3]) == (50.0, 50.0, 50.0)
    assert metric([1], [1]) == (100.0, 0.0, 0.0)
    shipped = load_records("processbench-gsm8k")
    assert len(shipped) == 400 and sum(r.label == -1 for r in shipped) == 193
    assert len(load_records("processbench-math")) == 1000


# -- over HTTP: `specsearch serve` (TGI API) with the same tiny models ----------------------


@pytest.fixture(scope="module")
def served() -> Iterator[dict[str, tuple[str, Any, Any]]]:
    out = {}
    with_servers = []
    builds = (("math-shepherd", mistral_prm), ("math-psa", qwen_causal_prm), ("rlhflow", llama_prm))
    for style, build in builds:
        model, tok = build()
        # top_n at the vocabulary size: "+" and "-" are always among the top tokens
        app_ = create_app(model, tok, model_id=style, max_top_n_tokens=len(tok))
        server = background_server(app_)
        out[style] = (server.__enter__(), model, tok)
        with_servers.append(server)
    yield out
    for server in with_servers:
        server.__exit__(None, None, None)


@pytest.mark.parametrize("style", ["math-shepherd", "math-psa", "rlhflow"])
async def test_tgi_top_n_equals_two_label_softmax(
    style: str, served: dict[str, tuple[str, Any, Any]]
) -> None:
    url, model, tok = served[style]
    prm = TGIPRM(url, style, method="top_n", retries=0)
    local = TransformersPRM(style, model, tok)
    q, steps = ITEMS[-1]
    exact = local.score_batch([(q, steps)])[0]
    got = (await prm.ascore(q, [steps]))[0]
    assert got == pytest.approx(exact, abs=1e-5)
    last = await prm.ascore_last(q, [steps, steps[:1]])
    assert last == pytest.approx([got[-1], got[0]], abs=1e-6)


async def test_tgi_prefill_reads_label_logprob_in_context(
    served: dict[str, tuple[str, Any, Any]],
) -> None:
    url, model, tok = served["rlhflow"]
    prm = TGIPRM(url, "rlhflow", method="prefill", retries=0)
    q, steps = ITEMS[-1]
    got = (await prm.ascore(q, [steps]))[0]
    # reference: P(+) under the full softmax at the position before each "+" reply
    conv: list[dict[str, str]] = []
    for k, s in enumerate(steps):
        conv += [{"role": "user", "content": f"{q} {s}" if k == 0 else s},
                 {"role": "assistant", "content": "+"}]  # fmt: skip
    ids = tok.encode(tok.apply_chat_template(conv, tokenize=False), add_special_tokens=False)
    plus, eot = tok.encode("+")[-1], tok.convert_tokens_to_ids("<|eot_id|>")
    with torch.inference_mode():
        lp = torch.log_softmax(model(torch.tensor([ids])).logits[0].float(), dim=-1)
    want = [
        math.exp(lp[i - 1, plus])
        for i in range(len(ids) - 1)
        if ids[i] == plus and ids[i + 1] == eot
    ]
    assert got == pytest.approx(want, abs=1e-5)


async def test_tgi_math_shepherd_prefill_and_missing_prefill_detected(
    served: dict[str, tuple[str, Any, Any]],
) -> None:
    url, model, tok = served["math-shepherd"]
    prm = MathShepherdTGIPRM(url, retries=0)
    q, steps = ITEMS[-1]
    scores = (await prm.ascore(q, [steps]))[0]
    # reference: "+" after every tag, P("+") under the full softmax right after each tag
    text = f"{q} " + "\n".join(f"{s} ки +" for s in steps)
    ids = tok.encode(text)
    tag, plus = tok.encode("ки")[-1], tok.encode("+ -")[1]
    with torch.inference_mode():
        lp = torch.log_softmax(model(torch.tensor([ids])).logits[0].float(), dim=-1)
    want = [math.exp(lp[i, plus]) for i in range(len(ids) - 1) if ids[i] == tag]
    assert len(want) == 2 and scores == pytest.approx(want, abs=1e-5)
    # a server that drops prompt logprobs (TGI without --enable-prefill-logprobs)
    proxy = FastAPI()

    @proxy.api_route("/{path:path}", methods=["GET", "POST"])
    async def forward(path: str, request: Request) -> Any:
        async with httpx.AsyncClient() as http:
            r = await http.request(request.method, f"{url}/{path}", content=await request.body(),
                                   headers={"content-type": "application/json"})  # fmt: skip
        body = r.json()
        for item in body if isinstance(body, list) else [body]:
            if isinstance(item, dict) and "details" in item:
                item["details"]["prefill"] = []
        return body

    with background_server(proxy) as bare:
        with pytest.raises(Exception, match="enable-prefill-logprobs"):
            await MathShepherdTGIPRM(bare, retries=0).ascore(q, [steps])
        top = await MathShepherdTGIPRM(bare, retries=0, method="top_n").ascore(q, [steps])
        assert len(top[0]) == 2
    # Math-Shepherd's format against a server whose tokenizer has no token for it
    other = MathShepherdTGIPRM(served["rlhflow"][0], retries=0, name="ms-wrong-server")
    with pytest.raises(PRMAlignmentError, match=r"^PRM ms-wrong-server: step 0: the label token"):
        await other.ascore(q, [steps])


def test_search_config_selects_model_prms_by_name(saved: dict[str, Path]) -> None:
    from pydantic import ValidationError

    from langgraph_specsearch.api import SearchConfig, build_prm

    config = SearchConfig(prm="math-shepherd", prm_model=str(saved["math-shepherd"]))
    prm = build_prm(config, None)
    assert isinstance(prm, TransformersPRM) and prm.style.name == "math-shepherd"
    served = SearchConfig(prm="peiyi9979/math-shepherd-mistral-7b-prm", prm_url="http://x:1")
    assert isinstance(build_prm(served, None), TGIPRM)
    with pytest.raises(ValidationError, match="unknown PRM 'nope'"):
        SearchConfig(prm="nope")
    assert SearchConfig().prm == "combined"  # the embedded default stays the default
