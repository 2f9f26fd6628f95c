"""Hardening targets of `specsearch serve` / `solve` (issue 9), on real processes over loopback.

    python benchmarks/bench_hardening.py [--model smollm2-135m] [--duration 120] [--burst 200]
        [--body-seconds 20] [--skip-drill]

1. mixed load: 8 clients for `--duration` s, each cycling greedy / sampled / streamed requests
   (`/generate`, `/generate_stream`): target 0 failed requests;
2. a burst of `--burst` concurrent requests: each answered 200 or 429, none 5xx, none hanging
   (a client timeout of 300 s counts as hanging);
3. `/health` latency (p50 / p99 / max) while 4 clients keep sending 8 MB bodies (with and
   without Content-Length): target p99 < 100 ms;
4. kill -9 drill, once for the large and once for the small endpoint (tiny-random servers):
   `solve` against both, SIGKILL one after the first finished step; target: one error line
   naming the endpoint within 15 s; then the server is restarted on the same port and
   `solve --resume` must finish without recomputing a finished step (its first step number
   is after the last one finished before the kill).

Every server binds 127.0.0.1 and is stopped at the end; every phase has a deadline.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx

CLI = [sys.executable, "-m", "langgraph_specsearch.cli"]
PROMPT = "Question: Natalia sold clips to 48 of her friends in April. How many in May?\nAnswer:"
QUESTION = "Tom has 3 apples and buys 4 more. How many apples does he have?"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    """One `specsearch serve` process on 127.0.0.1."""

    def __init__(self, model: str, port: int | None = None, *extra: str) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        command = [*CLI, "serve", "--model", model, "--port", str(self.port), *extra]
        self.process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )

    def wait_healthy(self, timeout_s: float = 300) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.url} exited with {self.process.returncode}")
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"{self.url} not healthy after {timeout_s} s")

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


# -- 1. mixed load --------------------------------------------------------------------------


async def one_request(http: httpx.AsyncClient, url: str, kind: str, seed: int) -> str | None:
    """One greedy / sampled / streamed request; None when it succeeded, else why it failed."""
    params: dict[str, Any] = {"max_new_tokens": 16, "details": True}
    if kind != "greedy":
        params.update(do_sample=True, temperature=0.8, top_p=0.95, seed=seed)
    body = {"inputs": PROMPT, "parameters": params}
    if kind == "stream":
        async with http.stream("POST", f"{url}/generate_stream", json=body) as response:
            if response.status_code != 200:
                return f"stream HTTP {response.status_code}"
            last: dict[str, Any] = {}
            async for line in response.aiter_lines():
                if line.startswith("data:"):
                    last = json.loads(line[5:])
                    if "error" in last:
                        return f"stream error event: {last['error']}"
            return None if last.get("generated_text") is not None else "stream ended early"
    response = await http.post(f"{url}/generate", json=body)
    if response.status_code != 200:
        return f"HTTP {response.status_code}: {response.text[:120]}"
    return None


async def mixed_load(url: str, clients: int, duration_s: float) -> dict[str, Any]:
    kinds = ["greedy", "sampled", "stream"]
    deadline = time.monotonic() + duration_s
    outcomes: list[str | None] = []

    async def client(index: int) -> None:
        async with httpx.AsyncClient(timeout=300) as http:
            n = 0
            while time.monotonic() < deadline:
                kind = kinds[(index + n) % len(kinds)]
                try:
                    outcomes.append(await one_request(http, url, kind, seed=index * 1000 + n))
                except httpx.HTTPError as exc:
                    outcomes.append(f"{type(exc).__name__}: {exc}")
                n += 1

    await asyncio.gather(*(client(i) for i in range(clients)))
    failures = [o for o in outcomes if o is not None]
    return {
        "clients": clients,
        "seconds": duration_s,
        "requests": len(outcomes),
        "failed": len(failures),
        "first_failures": failures[:3],
    }


# -- 2. burst -------------------------------------------------------------------------------


async def burst(url: str, count: int) -> dict[str, Any]:
    statuses: dict[str, int] = {}
    started = time.monotonic()
    limits = httpx.Limits(max_connections=count + 10)
    async with httpx.AsyncClient(timeout=300, limits=limits) as http:

        async def one(i: int) -> str:
            params = {"max_new_tokens": 8, "do_sample": True, "seed": i + 1}
            try:
                response = await http.post(
                    f"{url}/generate", json={"inputs": PROMPT, "parameters": params}
                )
                return str(response.status_code)
            except httpx.TimeoutException:
                return "hung"
            except httpx.HTTPError as exc:
                return type(exc).__name__

        for status in await asyncio.gather(*(one(i) for i in range(count))):
            statuses[status] = statuses.get(status, 0) + 1
    return {
        "requests": count,
        "statuses": statuses,
        "seconds": round(time.monotonic() - started, 1),
        "ok": set(statuses) <= {"200", "429"},
    }


# -- 3. /health during 8 MB bodies ------------------------------------------------------------


def big_bodies(url: str, stop: threading.Event, counts: dict[str, int], chunked: bool) -> None:
    body = json.dumps({"inputs": "x" * 8_000_000}).encode()

    def pieces() -> Iterator[bytes]:
        for start in range(0, len(body), 65536):
            yield body[start : start + 65536]

    with httpx.Client(timeout=60) as http:
        while not stop.is_set():
            try:
                response = http.post(
                    f"{url}/generate",
                    content=pieces() if chunked else body,
                    headers={"Content-Type": "application/json"},
                )
                key = str(response.status_code)
            except httpx.HTTPError as exc:  # the server may close before the body is sent
                key = type(exc).__name__
            counts[key] = counts.get(key, 0) + 1


def health_under_big_bodies(url: str, seconds: float) -> dict[str, Any]:
    stop = threading.Event()
    counts: dict[str, int] = {}
    senders = [
        threading.Thread(target=big_bodies, args=(url, stop, counts, i % 2 == 1), daemon=True)
        for i in range(4)
    ]
    for sender in senders:
        sender.start()
    latencies = []
    failures = 0
    deadline = time.monotonic() + seconds
    with httpx.Client(timeout=10) as http:
        while time.monotonic() < deadline:
            started = time.perf_counter()
            try:
                ok = http.get(f"{url}/health").status_code == 200
            except httpx.HTTPError:
                ok = False
            latencies.append((time.perf_counter() - started) * 1000)
            failures += not ok
            time.sleep(0.01)
    stop.set()
    for sender in senders:
        sender.join(timeout=60)
    latencies.sort()
    return {
        "health_requests": len(latencies),
        "health_failed": failures,
        "p50_ms": round(statistics.median(latencies), 1),
        "p99_ms": round(latencies[int(0.99 * (len(latencies) - 1))], 1),
        "max_ms": round(latencies[-1], 1),
        "big_body_answers": counts,
    }


# -- 4. kill -9 drill -------------------------------------------------------------------------

STEP = re.compile(r"^step (\d+):")


def solve_command(small: str, large: str, checkpoint: str, thread: str) -> list[str]:
    return [
        *CLI,
        "solve",
        QUESTION,
        "--small-url",
        small,
        "--large-url",
        large,
        "--n-drafts",
        "2",
        "--beam-width",
        "1",
        "--max-steps",
        "6",
        "--max-new-tokens",
        "8",
        "--no-complete",
        "--threshold-mode",  # every draft rejected: both models are called at every step
        "random",
        "--reject-rate",
        "1.0",
        "--checkpoint",
        checkpoint,
        "--thread-id",
        thread,
        "--json",
    ]


def drill(victim: str, workdir: str) -> dict[str, Any]:
    """Kill `victim` ("small" or "large") after the first finished step; resume after restart."""
    servers = {role: Server("tiny-random", None, "--threads", "1") for role in ("small", "large")}
    try:
        for server in servers.values():
            server.wait_healthy()
        checkpoint = os.path.join(workdir, f"drill-{victim}.sqlite")
        command = solve_command(servers["small"].url, servers["large"].url, checkpoint, victim)
        env = {**os.environ, "SPECSEARCH_CACHE": os.path.join(workdir, "cache")}
        solve = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
        )
        assert solve.stderr is not None
        steps_before: list[int] = []
        lines: list[str] = []
        deadline = time.monotonic() + 300
        for line in solve.stderr:  # progress lines until the first finished step
            lines.append(line.rstrip("\n"))
            match = STEP.match(line.strip())
            if match:
                steps_before.append(int(match.group(1)))
                break
            if time.monotonic() > deadline:
                break
        servers[victim].kill()
        killed_at = time.monotonic()
        try:
            rest, _ = solve.communicate(timeout=60)[::-1]
        except subprocess.TimeoutExpired:
            solve.kill()
            rest, _ = solve.communicate()[::-1]
        exit_s = time.monotonic() - killed_at
        lines += (rest or "").splitlines()
        steps_before += [int(m.group(1)) for m in map(STEP.match, lines) if m]
        last = [line for line in lines if line.strip()][-1] if lines else ""
        # restart the victim on the same port, then resume
        servers[victim] = Server("tiny-random", servers[victim].port, "--threads", "1")
        servers[victim].wait_healthy()
        resumed = subprocess.run(
            [*command, "--resume"], capture_output=True, text=True, env=env, timeout=600
        )
        steps_after = [int(m.group(1)) for m in map(STEP.match, resumed.stderr.splitlines()) if m]
        result = json.loads(resumed.stdout) if resumed.returncode == 0 else {}
        return {
            "victim": victim,
            "exit_code": solve.returncode,
            "seconds_to_error": round(exit_s, 1),
            "error_line": last,
            "names_endpoint": servers[victim].url in last,
            "traceback": "Traceback" in "\n".join(lines),
            "steps_before_kill": sorted(set(steps_before)),
            "resume_exit_code": resumed.returncode,
            "resume_error": "" if resumed.returncode == 0 else resumed.stderr.strip()[-300:],
            "steps_after_resume": steps_after,
            "recomputed": sorted(set(steps_before) & set(steps_after)),
            "path_steps": len(result.get("path", [])),
        }
    finally:
        for server in servers.values():
            server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--duration", type=float, default=120.0)
    parser.add_argument("--burst", type=int, default=200)
    parser.add_argument("--body-seconds", type=float, default=20.0)
    parser.add_argument("--threads", type=int, default=None, help="serve's torch threads")
    parser.add_argument("--skip-drill", action="store_true")
    args = parser.parse_args()
    report: dict[str, Any] = {"model": args.model}
    extra = ["--threads", str(args.threads)] if args.threads else []
    server = Server(args.model, None, *extra)
    try:
        server.wait_healthy()
        report["mixed_load"] = asyncio.run(mixed_load(server.url, args.clients, args.duration))
        print(json.dumps({"mixed_load": report["mixed_load"]}), flush=True)
        report["burst"] = asyncio.run(burst(server.url, args.burst))
        print(json.dumps({"burst": report["burst"]}), flush=True)
        report["health_during_8mb_bodies"] = health_under_big_bodies(server.url, args.body_seconds)
        print(json.dumps({"health": report["health_during_8mb_bodies"]}), flush=True)
    finally:
        server.stop()
    if not args.skip_drill:
        with tempfile.TemporaryDirectory() as workdir:
            report["kill_drills"] = [drill(victim, workdir) for victim in ("large", "small")]
        for entry in report["kill_drills"]:
            print(json.dumps({"kill_drill": entry}), flush=True)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
