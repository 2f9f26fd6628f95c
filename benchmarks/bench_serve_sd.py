"""Speculative decoding in `specsearch serve`: tokens/s with `--draft-model` vs without.

    python benchmarks/bench_serve_sd.py [--large gemma3-270m] [--draft smollm2-135m]
        [--prompts 4] [--tokens 48] [--draft-tokens 4] [--threads N] [--local] [--json]

Both servers run the same large model object; requests go one at a time (speculation decodes
one row at a time) with the large model's few-shot prompts for the first GSM8K test
questions, greedy and sampled (temperature 0.7, top-p 0.95, seeds 0..), each prompt sent to
the plain and the speculative server in turn (order alternating) so that load on a shared
machine hits both alike. Reports generated tokens/s of each, their ratio, and the draft
tokens kept per target forward pass. `--local` also times `TransformersBackend` with and
without `assistant=` (transformers' assisted generation; universal speculative decoding when
sampling across tokenizers) on the same prompts.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import httpx

from langgraph_specsearch.models import default_prompt_format
from langgraph_specsearch.serve import background_server, create_app, load_model


def questions(count: int) -> list[str]:
    """The first GSM8K test questions shipped with the package."""
    from importlib.resources import files

    lines = files("langgraph_specsearch.data").joinpath("gsm8k_test_head50.jsonl").read_text()
    return [json.loads(line)["question"] for line in lines.splitlines()[:count]]


def one(url: str, prompt: str, tokens: int, sampled: bool, seed: int) -> tuple[float, dict]:
    """(wall seconds, details) of one `/generate` request."""
    params: dict[str, Any] = {"max_new_tokens": tokens, "details": True}
    if sampled:
        params.update(do_sample=True, temperature=0.7, top_p=0.95, seed=seed + 1)
    start = time.perf_counter()
    response = httpx.post(
        f"{url}/generate", json={"inputs": prompt, "parameters": params}, timeout=600
    )
    response.raise_for_status()
    return time.perf_counter() - start, response.json()["details"]


def local(args: argparse.Namespace, prompts: list[str]) -> dict[str, Any]:
    """TransformersBackend with and without an assistant: tokens/s and kept draft tokens."""
    import asyncio

    from langgraph_specsearch.backends.transformers import TransformersBackend
    from langgraph_specsearch.types import GenerationParams

    plain = TransformersBackend.load(args.large)
    assisted = TransformersBackend.load(args.large, assistant=args.draft)
    out: dict[str, Any] = {}
    for mode, temperature in (("greedy", 0.0), ("sampled", 0.7)):
        time_s = {"plain": 0.0, "assisted": 0.0}
        tokens = {"plain": 0, "assisted": 0}
        kept = 0
        for i, prompt in enumerate(prompts):
            params = GenerationParams(
                max_new_tokens=args.tokens, temperature=temperature, top_p=0.95, seed=i, stop=[]
            )
            for name, backend in (("plain", plain), ("assisted", assisted)):
                start = time.perf_counter()
                gen = asyncio.run(backend.agenerate([prompt], n=1, params=params))[0][0]
                time_s[name] += time.perf_counter() - start
                tokens[name] += gen.tokens
                kept += gen.accepted_draft_tokens or 0
        rates = {k: tokens[k] / time_s[k] for k in time_s}
        out[mode] = {
            "plain_tokens_per_s": round(rates["plain"], 2),
            "assisted_tokens_per_s": round(rates["assisted"], 2),
            "speedup": round(rates["assisted"] / rates["plain"], 3),
            "kept_draft_tokens": kept,
            "tokens": tokens["assisted"],
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--large", default="gemma3-270m")
    parser.add_argument("--draft", default="smollm2-135m")
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=48)
    parser.add_argument("--draft-tokens", type=int, default=4)
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    parser.add_argument("--local", action="store_true", help="also time TransformersBackend")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)

    model, tokenizer = load_model(args.large)
    draft = load_model(args.draft)
    fmt = default_prompt_format(args.large, tokenizer)
    prompts = [fmt.render(q, []) for q in questions(args.prompts)]
    plain = create_app(model, tokenizer, model_id=args.large)
    spec = create_app(
        model,
        tokenizer,
        model_id=args.large,
        draft=draft,
        draft_model_id=args.draft,
        draft_tokens=args.draft_tokens,
    )
    result: dict[str, Any] = {"large": args.large, "draft": args.draft, "prompts": len(prompts)}
    with background_server(plain) as a, background_server(spec) as b:
        one(a, prompts[0], 4, False, 0)  # warm-up: first-call costs out of the timing
        one(b, prompts[0], 4, False, 0)
        for mode in ("greedy", "sampled"):
            time_s = {"plain": 0.0, "speculative": 0.0}
            tokens = {"plain": 0, "speculative": 0}
            kept = calls = 0
            for i, prompt in enumerate(prompts):
                order = [("plain", a), ("speculative", b)]
                for name, url in order if i % 2 == 0 else order[::-1]:
                    wall, details = one(url, prompt, args.tokens, mode == "sampled", i)
                    time_s[name] += wall
                    tokens[name] += details["generated_tokens"]
                    if name == "speculative":
                        kept += details["accepted_draft_tokens"]
                        calls += details["target_calls"]
            rates = {k: tokens[k] / time_s[k] for k in time_s}
            result[mode] = {
                "plain_tokens_per_s": round(rates["plain"], 2),
                "speculative_tokens_per_s": round(rates["speculative"], 2),
                "speedup": round(rates["speculative"] / rates["plain"], 3),
                "kept_draft_tokens_per_target_call": round(kept / max(calls, 1), 2),
                "tokens_per_target_call": round(tokens["speculative"] / max(calls, 1), 2),
            }
    if args.local:
        result["local"] = local(args, prompts)
    if args.json:
        print(json.dumps(result))
        return
    print(f"{args.large} with draft {args.draft}, {args.prompts} prompts x {args.tokens} tokens")
    for mode in ("greedy", "sampled"):
        r = result[mode]
        print(
            f"{mode:8s} plain {r['plain_tokens_per_s']:6.2f} tok/s | speculative"
            f" {r['speculative_tokens_per_s']:6.2f} tok/s | {r['speedup']:.2f}x |"
            f" kept drafts per target call {r['kept_draft_tokens_per_target_call']:.2f}"
        )
    for mode, r in result.get("local", {}).items():
        print(
            f"local {mode:8s} plain {r['plain_tokens_per_s']:6.2f} tok/s | assisted"
            f" {r['assisted_tokens_per_s']:6.2f} tok/s | {r['speedup']:.2f}x |"
            f" kept draft tokens {r['kept_draft_tokens']} of {r['tokens']}"
        )


if __name__ == "__main__":
    main()
