"""SpecSearch over two HTTP endpoints: a small and a large model, each its own server.

    python examples/two_endpoints.py

Starts two TGI-compatible servers (`python -m langgraph_specsearch.serve`, the same command as
`specsearch serve`) on free local ports: SmolLM2-135M-Instruct as the small model and
Gemma-3-270M as the large one, the latter with SmolLM2 as its draft model for speculative
decoding. Waits for `/health`, runs one search against them, and stops both servers. By hand:

    specsearch serve --model smollm2-135m --port 8081 &
    specsearch serve --model gemma3-270m --draft-model smollm2-135m --port 8082 &
    specsearch solve "QUESTION" --small-url http://127.0.0.1:8081 --large-url http://127.0.0.1:8082
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import httpx

from langgraph_specsearch.api import SearchConfig, solve

QUESTION = "Tom has 3 apples and buys 4 more. How many apples does he have now?"
SERVERS = {
    "small": ["--model", "smollm2-135m"],
    "large": ["--model", "gemma3-270m", "--draft-model", "smollm2-135m"],
}


def free_port() -> int:
    """An unused local TCP port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(args: list[str]) -> subprocess.Popen[bytes]:
    """One server process (127.0.0.1 only); its access log is dropped, its errors are shown."""
    return subprocess.Popen(
        [sys.executable, "-m", "langgraph_specsearch.serve", *args], stdout=subprocess.DEVNULL
    )


def wait_healthy(url: str, process: subprocess.Popen[bytes], timeout_s: float = 600) -> None:
    """Poll `/health` until the model is loaded."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server for {url} exited with {process.returncode}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise TimeoutError(f"{url} not healthy after {timeout_s}s")


def main() -> None:
    ports = {role: free_port() for role in SERVERS}
    processes = {role: start([*args, "--port", str(ports[role])]) for role, args in SERVERS.items()}
    urls = {role: f"http://127.0.0.1:{port}" for role, port in ports.items()}
    try:
        for role, url in urls.items():
            wait_healthy(url, processes[role])
            print(f"{role}: {httpx.get(f'{url}/info').json()['model_id']} at {url}")
        config = SearchConfig(
            small_url=urls["small"],
            large_url=urls["large"],
            prompt_format="fewshot",
            n_drafts=2,
            beam_width=1,
            max_steps=3,
            # both servers and this client share one machine's CPU here: a call can wait
            # behind the other server's work far longer than the 20 s meant for real endpoints
            timeout=180,
        )
        result = solve(QUESTION, config)
        for thought in result.path:
            print(f"[{thought.source}] {thought.text}")
        print("answer:", result.answer)
        for source in ("small", "large"):
            made = [n for n in result.nodes if n.source == source]
            kept = sum(not n.rejected for n in made)
            print(f"{source} model: {len(made)} thoughts in the tree, {kept} kept")
        s = result.stats
        print(
            f"acceptance rate: {s.acceptance_rate:.0%} ({s.accepted}/{s.drafts} drafts),"
            f" wall {s.wall_s:.1f}s"
        )
    finally:
        for process in processes.values():
            process.terminate()  # uvicorn shuts down gracefully on SIGTERM
        for process in processes.values():
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()


if __name__ == "__main__":
    main()
