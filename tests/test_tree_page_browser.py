"""The tree page in a real headless browser (Debian's `chromium`): it renders every thought."""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from scripted import ScriptedBackend, ScriptedPRM, by_text

from langgraph_specsearch.api import Components, SearchConfig, asolve
from langgraph_specsearch.speculation import SpeculationConfig
from langgraph_specsearch.tree_page import write_tree_html

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")


def big_result():
    """A scripted search of a few hundred thoughts (no answer until the last step)."""

    def small(prompt: str, call: int, i: int) -> str:
        return f"small c{call} d{i} {[0.9, 0.3, 0.7, 0.1][i % 4]}"

    def large(prompt: str, call: int, i: int) -> str:
        return f"large c{call} r{i} 0.{5 + i % 3}"

    components = Components(
        small=ScriptedBackend("small", small),
        large=ScriptedBackend("large", large),
        prm=ScriptedPRM(by_text),
    )
    config = SearchConfig(
        n_drafts=6,
        beam_width=6,
        max_steps=7,
        carry_threshold=False,
        speculation=SpeculationConfig(controller="off"),
    )
    return asyncio.run(asolve("A long question?", config, components=components))


def dump_dom(page: Path, fragment: str = "") -> str:
    assert CHROMIUM is not None
    out = subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--dump-dom",
            page.as_uri() + fragment,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return out.stdout


def test_chromium_renders_every_thought_and_the_controls_work(tmp_path: Path) -> None:
    result = big_result()
    assert len(result.nodes) > 200
    page = write_tree_html(result, tmp_path / "tree.html")
    dom = dump_dom(page)
    ids = re.findall(r'data-id="([^"]+)"', dom)
    assert sorted(ids) == sorted(n.id for n in result.nodes if n.parent_id is not None)
    chosen = set(re.findall(r'class="[^"]*\bchosen\b[^"]*" data-id="([^"]+)"', dom))
    assert chosen == {n.id for n in result.path}
    opened = len(re.findall(r"<details [^>]*\bopen\b", dom))
    folds = dom.count("<details ") - 1  # minus the threshold trace
    assert 0 < opened < folds  # the chosen path open, the rest folded
    expanded = dump_dom(page, "#all")  # the page's script ran: everything open
    assert len(re.findall(r"<details [^>]*\bopen\b", expanded)) == folds + 1
    shot = tmp_path / "tree.png"
    assert CHROMIUM is not None
    subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            f"--screenshot={shot}",
            "--window-size=1000,800",
            page.as_uri(),
        ],
        capture_output=True,
        timeout=120,
        check=True,
    )
    assert shot.stat().st_size > 10_000
