"""`langgraph dev` serves langgraph.json's graphs; the SDK runs a search and streams its events."""

from __future__ import annotations

import asyncio
import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("langgraph_api") is None
    or importlib.util.find_spec("langgraph_cli") is None,
    reason="langgraph-cli[inmem] is not installed (pip install -e '.[dev-server]')",
)


def load_example():
    spec = importlib.util.spec_from_file_location(
        "langgraph_dev", ROOT / "examples/langgraph_dev.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_dev_server_runs_a_search_and_the_agent_offline() -> None:
    example = load_example()
    env = {
        "PYTHONPATH": str(ROOT / "tests"),
        "SPECSEARCH_COMPONENTS": "dev_components:make",
        "SPECSEARCH_CONFIG": json.dumps(
            {
                "n_drafts": 2,
                "beam_width": 2,
                "max_steps": 5,
                "carry_threshold": False,
                "speculation": {"drafts": 2},
            }
        ),
    }
    port = example.free_port()
    server = example.start_server(port, env, timeout_s=120)
    try:
        url = f"http://127.0.0.1:{port}"
        events, final = asyncio.run(example.search(url, "q?"))
        kinds = [e["event"] for e in events]
        assert kinds[0] == "regenerated" and kinds[-1] == "answer_found"
        assert {"drafted", "scored", "accepted", "rejected", "threshold_updated"} <= set(kinds)
        assert final["answer"] == events[-1]["answer"] == "7"
        assert [n["id"] for n in final["path"]] == [n["id"] for n in events[-1]["path"]]
        count, reply = asyncio.run(example.ask_agent(url, "Tom has 3 apples and buys 4 more?"))
        assert count > 0 and "The answer is 7" in reply
    finally:
        example.stop_server(server)
    assert server.poll() is not None
