"""Graph-structure snapshots (mermaid edges) of every template and expander.

A change to a graph's nodes or edges fails here until the snapshot is renewed on purpose:

    SPECSEARCH_UPDATE_SNAPSHOTS=1 pytest tests/test_graph_snapshots.py

The snapshot is the graph's node and edge list in mermaid syntax (`a --> b`, conditional
`a -.-> b`), sorted, with every nested graph drawn out under its node's name (the expander in
a template, the node pipeline inside the expander), so it does not depend on how LangGraph
styles its mermaid output.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from langgraph.pregel import Pregel
from scripted import ScriptedBackend, ScriptedPRM, by_text

from langgraph_specsearch.graphs.beam import create_beam_search
from langgraph_specsearch.graphs.best_of_n import create_best_of_n
from langgraph_specsearch.graphs.expanders import (
    create_ar_expander,
    create_speculative_expander,
    create_sps_expander,
)
from langgraph_specsearch.graphs.mcts import create_mcts
from langgraph_specsearch.speculation import SpeculationConfig

SNAPSHOTS = Path(__file__).parent / "snapshots"
BACKEND = ScriptedBackend("model", lambda prompt, call, i: "step 0.5")
PRM = ScriptedPRM(by_text)


def speculative() -> Any:
    return create_speculative_expander(small=BACKEND, large=BACKEND, prm=PRM)


GRAPHS: dict[str, Callable[[], Any]] = {
    "expander_specsearch": speculative,
    "expander_specsearch_lockstep": lambda: create_speculative_expander(
        small=BACKEND, large=BACKEND, prm=PRM, speculation=SpeculationConfig.paper()
    ),
    "expander_ar": lambda: create_ar_expander(large=BACKEND, prm=PRM),
    "expander_sps": lambda: create_sps_expander(large=BACKEND, prm=PRM),
    "beam_specsearch": lambda: create_beam_search(speculative()),
    "mcts_specsearch": lambda: create_mcts(speculative()),
    "best_of_n_specsearch": lambda: create_best_of_n(speculative()),
}


def lines(compiled: Pregel, prefix: str = "") -> list[str]:
    """Node and edge lines of one graph, then those of every graph nested in its nodes."""
    graph = compiled.get_graph()
    out = [f"node {prefix}{node_id}" for node_id in graph.nodes]
    out += [
        f"{prefix}{e.source} {'-.->' if e.conditional else '-->'} {prefix}{e.target}"
        for e in graph.edges
    ]
    for name, node in compiled.nodes.items():
        if isinstance(node.bound, Pregel):  # drawn even when not checkpointed (the pipeline)
            out += lines(node.bound, f"{prefix}{name}:")
    return out


def structure(builder: Any) -> str:
    """Sorted mermaid node and edge lines of the compiled graph and every nested graph."""
    return "\n".join(sorted(lines(builder.compile()))) + "\n"


@pytest.mark.parametrize("name", sorted(GRAPHS))
def test_graph_structure_matches_its_snapshot(name: str) -> None:
    text = structure(GRAPHS[name]())
    path = SNAPSHOTS / f"{name}.mmd"
    if os.environ.get("SPECSEARCH_UPDATE_SNAPSHOTS") == "1":
        SNAPSHOTS.mkdir(exist_ok=True)
        path.write_text(text)
    assert path.exists(), f"no snapshot for {name}; write it with SPECSEARCH_UPDATE_SNAPSHOTS=1"
    assert text == path.read_text(), f"{name} changed; renew with SPECSEARCH_UPDATE_SNAPSHOTS=1"


def test_a_structural_change_is_caught() -> None:
    beam = structure(create_beam_search(speculative()))
    ar_beam = structure(create_beam_search(create_ar_expander(large=BACKEND, prm=PRM)))
    assert "expand:pipeline:draft" in beam
    assert beam.splitlines() != structure(create_mcts(speculative())).splitlines()
    assert set(beam.splitlines()) == set(ar_beam.splitlines())  # the same graph, other models
