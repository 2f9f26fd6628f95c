"""Pictures of a search: the tree it explored (mermaid or a terminal tree) and the graph."""

from __future__ import annotations

from collections.abc import Iterable

from rich.markup import escape
from rich.tree import Tree

from langgraph_specsearch.types import SearchResult, Thought


def _label(node: Thought, width: int) -> str:
    """Short one-line label of a node."""
    text = " ".join(node.text.split())
    text = text if len(text) <= width else text[: width - 1] + "…"
    score = "" if node.score is None else f" {node.score:.2f}"
    return f"{node.source}{score}: {text}"


def _children(nodes: Iterable[Thought]) -> dict[str | None, list[Thought]]:
    """Children lists by parent id."""
    table: dict[str | None, list[Thought]] = {}
    for node in nodes:
        table.setdefault(node.parent_id, []).append(node)
    return table


def search_tree_mermaid(result: SearchResult, *, width: int = 40) -> str:
    """Mermaid flowchart of the explored tree: path in bold, rejected drafts dashed and grey."""
    on_path = {n.id for n in result.path}
    lines = ["flowchart TD", '  n0["question"]']
    for node in result.nodes:
        if node.parent_id is None:
            continue
        nid, pid = "n" + node.id.replace(".", "_"), "n" + node.parent_id.replace(".", "_")
        label = _label(node, width).replace('"', "'")
        lines.append(f'  {pid} {"-.->" if node.rejected else "-->"} {nid}["{label}"]')
        if node.rejected:
            lines.append(f"  class {nid} rejected")
        elif node.id in on_path:
            lines.append(f"  class {nid} chosen")
        elif node.source == "large":
            lines.append(f"  class {nid} large")
    lines += [
        "  classDef chosen stroke-width:3px,stroke:#2a7",
        "  classDef rejected stroke-dasharray:4,color:#999",
        "  classDef large fill:#eef",
    ]
    return "\n".join(lines) + "\n"


def search_tree_rich(result: SearchResult, *, width: int = 70) -> Tree:
    """Terminal tree (rich) of the explored search tree."""
    children = _children(result.nodes)
    on_path = {n.id for n in result.path}
    root = Tree(f"[bold]{escape(result.question[:width])}[/]")

    def add(branch: Tree, parent_id: str) -> None:
        for node in children.get(parent_id, []):
            style = "strike dim" if node.rejected else ("bold green" if node.id in on_path else "")
            label = escape(_label(node, width))
            add(branch.add(f"[{style}]{label}[/]" if style else label), node.id)

    add(root, "0")
    return root
