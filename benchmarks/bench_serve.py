"""Throughput of `specsearch serve` and fan-out of TGIBackend.

    python benchmarks/bench_serve.py [--model smollm2-135m] [--tokens 48]

1. one client: serve tokens/s vs raw `model.generate` (target >= 0.9x);
2. 8 concurrent clients vs 1: aggregate tokens/s (target >= 2x; rows join and leave the
   running batch between decode steps);
3. a beam step's TGIBackend fan-out (4 prompts x 4 drafts) against a stub server that sleeps
   200 ms per request, vs the slowest single call (target <= 1.25x).
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

import httpx
import torch
from fastapi import FastAPI

from langgraph_specsearch.backends.tgi import TGIBackend
from langgraph_specsearch.serve import background_server, create_app, load_model
from langgraph_specsearch.types import GenerationParams

PROMPTS = [
    "Question: Natalia sold clips to 48 of her friends in April, and then she sold half as many"
    f" clips in May. How many clips did she sell altogether? (variant {i})\nAnswer:"
    for i in range(8)
]


def raw_tokens_per_s(model: Any, tokenizer: Any, tokens: int) -> float:
    ids = tokenizer(PROMPTS[0], return_tensors="pt")
    start = time.perf_counter()
    with torch.inference_mode():
        out = model.generate(**ids, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False)
    elapsed = time.perf_counter() - start
    return (out.shape[1] - ids["input_ids"].shape[1]) / elapsed


async def client_loop(url: str, prompt: str, tokens: int, rounds: int) -> int:
    done = 0
    async with httpx.AsyncClient(timeout=600) as http:
        for _ in range(rounds):
            body = {"inputs": prompt, "parameters": {"max_new_tokens": tokens, "details": True}}
            response = (await http.post(f"{url}/generate", json=body)).json()
            done += response["details"]["generated_tokens"]
    return done


async def serve_tokens_per_s(
    url: str, clients: int, tokens: int, rounds: int
) -> tuple[float, float]:
    """Aggregate generated tokens/s, and the mean tokens per request (EOS can stop it early)."""
    start = time.perf_counter()
    counts = await asyncio.gather(
        *(client_loop(url, PROMPTS[i], tokens, rounds) for i in range(clients))
    )
    return sum(counts) / (time.perf_counter() - start), sum(counts) / (clients * rounds)


async def sequential_tokens_per_s(url: str, tokens: int, rounds: int) -> tuple[float, float]:
    """One client sending the 8 clients' prompts one after another: the same workload."""
    start = time.perf_counter()
    done = 0
    for prompt in PROMPTS:
        done += await client_loop(url, prompt, tokens, rounds)
    return done / (time.perf_counter() - start), done / (len(PROMPTS) * rounds)


def stub_app(delay_s: float) -> FastAPI:
    app = FastAPI()

    @app.get("/info")
    async def info() -> dict[str, Any]:
        return {"model_id": "stub", "max_total_tokens": 100000, "max_stop_sequences": 4}

    @app.post("/")
    async def generate() -> dict[str, Any]:
        await asyncio.sleep(delay_s)
        return {
            "generated_text": "step",
            "details": {
                "finish_reason": "length",
                "generated_tokens": 1,
                "prefill": [],
                "tokens": [{"id": 1, "text": "step", "logprob": -0.1, "special": False}],
            },
        }

    return app


async def fan_out(url: str) -> tuple[float, float]:
    backend = TGIBackend(url, max_concurrency=16)
    params = GenerationParams(max_new_tokens=8, seed=1)
    await backend.agenerate(["warm"], n=1, params=params)
    start = time.perf_counter()
    out = await backend.agenerate([f"p{i}" for i in range(4)], n=4, params=params)
    total = time.perf_counter() - start
    slowest = max(g.latency_s for gs in out for g in gs)
    return total, slowest


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--tokens", type=int, default=48)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    model, tokenizer = load_model(args.model)
    raw_tokens_per_s(model, tokenizer, 4)  # warm up
    raw = raw_tokens_per_s(model, tokenizer, args.tokens)
    app = create_app(model, tokenizer, model_id=args.model, max_batch_size=8)
    with background_server(app) as url:
        asyncio.run(serve_tokens_per_s(url, 1, 4, 1))  # warm up
        one, one_len = asyncio.run(serve_tokens_per_s(url, 1, args.tokens, args.rounds))
        eight, eight_len = asyncio.run(serve_tokens_per_s(url, 8, args.tokens, args.rounds))
        seq, seq_len = asyncio.run(sequential_tokens_per_s(url, args.tokens, args.rounds))
    print(f"model {args.model}, {args.tokens} new tokens, torch threads {torch.get_num_threads()}")
    print(f"raw transformers generate      : {raw:7.1f} tok/s")
    print(
        f"serve, 1 client                : {one:7.1f} tok/s  ({one / raw:.2f}x raw, target >= 0.9)"
        f"  {one_len:.0f} tokens/request"
    )
    print(
        f"serve, 8 concurrent clients    : {eight:7.1f} tok/s  ({eight / one:.2f}x 1 client,"
        f" target >= 2)  {eight_len:.0f} tokens/request"
        f" ({'continuous' if app.state.engine.continuous else 'static'} batching)"
    )
    print(
        f"same 8 prompts, 1 client in turn: {seq:7.1f} tok/s  {seq_len:.0f} tokens/request"
        f"  -> 8 concurrent = {eight / seq:.2f}x (same workload)"
    )
    with background_server(stub_app(0.2)) as url:
        total, slowest = asyncio.run(fan_out(url))
    print(
        f"TGIBackend fan-out 4x4 @200 ms : {total:.3f} s vs slowest call {slowest:.3f} s"
        f"  ({total / slowest:.2f}x, target <= 1.25)"
    )


if __name__ == "__main__":
    main()
