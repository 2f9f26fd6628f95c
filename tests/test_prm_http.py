"""`VLLMPoolingPRM` and `OpenAILogprobsPRM` against test servers that answer in vLLM's shapes.

vLLM itself does not run here (no GPU build); these servers compute their answers with the
same tiny models, in the response shapes vLLM documents (`/pooling` rows per step tag or per
token, `/v1/completions` with `echo` + `logprobs`), so the clients' parsing and alignment are
checked against real model numbers. TGI-style serving is covered against `specsearch serve`
in test_prm_models.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import torch
from fastapi import FastAPI
from prm_tiny import ITEMS_FOR_HTTP, mistral_prm, qwen_classifier_prm

from langgraph_specsearch.prm.errors import PRMAlignmentError
from langgraph_specsearch.prm.http import OpenAILogprobsPRM, VLLMPoolingPRM
from langgraph_specsearch.prm.local import TransformersPRM
from langgraph_specsearch.serve import background_server


def pooling_app(mode: str) -> FastAPI:
    """vLLM-shaped `/pooling`: "step" rows (softmax at `<extra_0>`) or "all" raw logits."""
    model, tok = qwen_classifier_prm()
    sep = tok.convert_tokens_to_ids("<extra_0>")
    app = FastAPI()

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"data": [{"id": "tiny-qwen-prm"}]}

    @app.post("/tokenize")
    async def tokenize(body: dict[str, Any]) -> dict[str, Any]:
        specials = body.get("add_special_tokens", True)
        return {"tokens": tok.encode(body["prompt"], add_special_tokens=specials)}

    @app.post("/pooling")
    async def pooling(body: dict[str, Any]) -> dict[str, Any]:
        ids = tok.encode(body["input"])
        with torch.inference_mode():
            logits = model(torch.tensor([ids])).logits[0].float()
        if mode == "step":
            rows = torch.softmax(logits[[i for i, t in enumerate(ids) if t == sep]], -1).tolist()
        else:
            rows = logits.tolist()
        return {"data": [{"index": 0, "object": "pooling", "data": rows}]}

    return app


def completions_app() -> FastAPI:
    """vLLM-shaped `/v1/completions` with `echo` and top `logprobs` (token texts as keys)."""
    model, tok = mistral_prm()
    app = FastAPI()

    def text(i: int) -> str:
        piece = tok.convert_ids_to_tokens(i)
        return str(piece).replace("▁", " ")

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"data": [{"id": "tiny-ms"}]}

    @app.post("/v1/completions")
    async def completions(body: dict[str, Any]) -> dict[str, Any]:
        ids = tok.encode(body["prompt"])
        with torch.inference_mode():
            lps = torch.log_softmax(model(torch.tensor([ids])).logits[0].float(), -1)
        k = int(body["logprobs"])
        nxt = int(lps[-1].argmax())
        every = [*ids, nxt]
        tops: list[dict[str, float] | None] = [None]
        for pos in range(1, len(every)):
            values, index = lps[pos - 1].topk(k)
            table: dict[str, float] = {}
            for v, i in zip(values.tolist(), index.tolist(), strict=True):
                table.setdefault(text(i), v)
            tops.append(table)
        return {
            "choices": [
                {
                    "text": body["prompt"] + text(nxt),
                    "logprobs": {
                        "tokens": [text(i) for i in every],
                        "token_logprobs": [None]
                        + [float(lps[p - 1, every[p]]) for p in range(1, len(every))],
                        "top_logprobs": tops,
                    },
                }
            ]
        }

    return app


@pytest.fixture(scope="module")
def urls() -> Iterator[dict[str, str]]:
    servers = {
        "step": background_server(pooling_app("step")),
        "all": background_server(pooling_app("all")),
        "openai": background_server(completions_app()),
    }
    out = {name: s.__enter__() for name, s in servers.items()}
    yield out
    for s in servers.values():
        s.__exit__(None, None, None)


@pytest.mark.parametrize("mode", ["step", "all"])
async def test_vllm_pooling_equals_local_scores(mode: str, urls: dict[str, str]) -> None:
    model, tok = qwen_classifier_prm()
    local = TransformersPRM("qwen-prm", model, tok)
    prm = VLLMPoolingPRM(urls[mode], "qwen-prm")
    for q, steps in ITEMS_FOR_HTTP:
        want = local.score_batch([(q, steps)])[0]
        assert (await prm.ascore(q, [steps]))[0] == pytest.approx(want, abs=1e-5)
    assert await prm.ascore_last(*ITEMS_FOR_HTTP[0][:1], [[]]) == [0.0]


async def test_openai_echo_logprobs_equals_two_label_softmax(urls: dict[str, str]) -> None:
    model, tok = mistral_prm()
    local = TransformersPRM("math-shepherd", model, tok)
    prm = OpenAILogprobsPRM(urls["openai"], "math-shepherd", top_logprobs=len(tok))
    for q, steps in ITEMS_FOR_HTTP:
        want = local.score_batch([(q, steps)])[0]
        assert (await prm.ascore(q, [steps]))[0] == pytest.approx(want, abs=1e-5)
    # with a top-2 table the labels are usually missing: a bound, or an error naming the step
    narrow = OpenAILogprobsPRM(urls["openai"], "math-shepherd", top_logprobs=2, name="ms2")
    q, steps = ITEMS_FOR_HTTP[0]
    try:
        got = (await narrow.ascore(q, [steps]))[0]
        assert len(got) == len(steps)
    except PRMAlignmentError as exc:
        assert str(exc).startswith("PRM ms2: step ")
