"""The explored search tree as one self-contained HTML page (no remote assets).

Every thought is a collapsible row: the model that wrote it, its PRM score, the threshold
beta at its step, and what became of it: `accepted` (a small-model draft that reached beta),
`rejected` (a draft that did not, or was not needed), `regenerated` (the large model's thought
in an expansion that had drafts), `large` (a large-only expansion: warm-up, AR, SpS, the
controller's fallback). The chosen path is highlighted and open; the rest starts collapsed, so
trees of a few hundred thoughts stay readable (open the page with `#all` to expand everything,
`#path` for the chosen path only). `specsearch viz RESULT.json -o tree.html` or
`specsearch solve ... --html tree.html` write it.
"""

from __future__ import annotations

import html
from collections.abc import Iterable
from pathlib import Path

from langgraph_specsearch.types import SearchResult, Thought

_STYLE = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:1.5em;color:#222;
max-width:70em}
h1{font-size:1.25em;margin:0 0 .3em}
.meta{color:#555;margin:.2em 0}
.answer{font-size:1.1em;margin:.5em 0}
.legend span,.badge{display:inline-block;border-radius:3px;padding:0 .45em;margin-right:.3em;
font-size:.85em;border:1px solid transparent}
.controls{margin:.8em 0}
.controls button,.controls label{margin-right:.6em;font:inherit}
details{margin-left:1.3em;border-left:1px dotted #bbb;padding-left:.4em}
details.root{margin-left:0;border:0}
summary{cursor:pointer;padding:.1em 0;list-style-position:outside}
.text{white-space:pre-wrap}
div.node{margin-left:1.3em;padding-left:1.4em;border-left:1px dotted #bbb}
div.node .row{padding:.1em 0}
.small{background:#e8f0fe;border-color:#9ab}
.large{background:#fdf0e0;border-color:#cb9}
.accepted{background:#e3f5e1;border-color:#8b8}
.rejected{background:#f6e0e0;border-color:#c99}
.regenerated{background:#fff3c4;border-color:#cb6}
.largeonly{background:#eee;border-color:#bbb}
.score{font-variant-numeric:tabular-nums;color:#333}
.beta{color:#777;font-variant-numeric:tabular-nums}
.node-rejected>summary,.node-rejected>.row{color:#888}
.node-rejected>summary .text,.node-rejected>.row .text{text-decoration:line-through;
text-decoration-color:#c99}
.chosen>summary,.chosen>.row,.legend .chosen{background:#dff3e4;font-weight:600;
border-radius:3px}
.terminal{font-weight:600;color:#275}
body.hide-rejected .node-rejected{display:none}
.trace{border-collapse:collapse;margin:.6em 0;font-size:.9em}
.trace td,.trace th{border:1px solid #ddd;padding:.15em .5em;text-align:right}
"""

_SCRIPT = """
function setAll(open){document.querySelectorAll('details').forEach(d=>d.open=open)}
function pathOnly(){document.querySelectorAll('details').forEach(
  d=>d.open=d.classList.contains('on-path'))}
document.getElementById('btn-expand').onclick=()=>setAll(true);
document.getElementById('btn-collapse').onclick=()=>setAll(false);
document.getElementById('btn-path').onclick=pathOnly;
document.getElementById('btn-hide').onchange=e=>document.body.classList.toggle(
  'hide-rejected',e.target.checked);
if(location.hash==='#all')setAll(true);
if(location.hash==='#path')pathOnly();
"""


def _fmt(value: float | None) -> str:
    """A score or threshold, or a dash."""
    return "—" if value is None else f"{value:.3f}"


def _children(nodes: Iterable[Thought]) -> dict[str | None, list[Thought]]:
    """Children lists by parent id."""
    table: dict[str | None, list[Thought]] = {}
    for node in nodes:
        table.setdefault(node.parent_id, []).append(node)
    return table


def status(node: Thought, siblings: list[Thought]) -> str:
    """What became of a thought: accepted, rejected, regenerated or large."""
    if node.source == "small":
        return "rejected" if node.rejected else "accepted"
    if node.rejected:
        return "rejected"
    return "regenerated" if any(s.source == "small" for s in siblings) else "large"


def _thresholds(result: SearchResult) -> dict[int, list[float | None]]:
    """beta used at each step (MCTS may expand a step several times)."""
    by_step: dict[int, list[float | None]] = {}
    for point in result.threshold_trace:
        by_step.setdefault(point.step, []).append(point.beta)
    return by_step


def render_tree_html(result: SearchResult, *, title: str = "SpecSearch tree") -> str:
    """The page for one search result, as a string."""
    children = _children(result.nodes)
    on_path = {n.id for n in result.path}
    betas = _thresholds(result)
    root = next((n for n in result.nodes if n.parent_id is None), None)
    counts: dict[str, int] = {}
    rows: list[str] = []

    def add(parent_id: str, depth: int) -> None:
        siblings = children.get(parent_id, [])
        for node in siblings:
            kind = status(node, siblings)
            counts[kind] = counts.get(kind, 0) + 1
            seen = betas.get(node.step, [])
            beta = " / ".join(_fmt(b) for b in seen) if seen else "—"
            classes = ["node", f"node-{kind}"]
            if node.id in on_path:
                classes += ["chosen", "on-path"]
            is_open = node.id in on_path and any(c.id in on_path for c in children.get(node.id, []))
            text = html.escape(" ".join(node.text.split()))
            model = "large" if node.source == "large" else "small"
            label = "large-only" if kind == "large" else kind
            css = "largeonly" if kind == "large" else kind
            end = ' <span class="terminal">■ end</span>' if node.terminal else ""
            head = (
                f'<span class="badge {model}">{model}</span>'
                f'<span class="badge {css}">{label}</span>'
                f'<span class="score">score {_fmt(node.score)}</span> '
                f'<span class="beta">β {beta}</span> '
                f'<span class="beta">#{html.escape(node.id)}</span>{end}<br>'
                f'<span class="text">{text}</span>'
            )
            attrs = (
                f'class="{" ".join(classes)}" data-id="{html.escape(node.id)}" data-status="{kind}"'
            )
            if node.id not in children:  # a leaf: nothing to fold
                rows.append(f'<div {attrs}><div class="row">{head}</div></div>')
                continue
            rows.append(f"<details {attrs}{' open' if is_open else ''}><summary>{head}</summary>")
            add(node.id, depth + 1)
            rows.append("</details>")

    if root is not None:
        add(root.id, 1)
    stats = result.stats
    accept = (
        f"{stats.accepted}/{stats.drafts} drafts accepted ({stats.acceptance_rate:.0%})"
        if stats.drafts and stats.acceptance_rate is not None
        else "no drafts"
    )
    trace_rows = "".join(
        f"<tr><td>{p.step}</td><td>{html.escape(str(p.decision))}</td><td>{_fmt(p.beta)}</td>"
        f"<td>{_fmt(p.beta_next)}</td><td>{p.accepted}</td><td>{p.rejected}</td></tr>"
        for p in result.threshold_trace
    )
    legend = " ".join(
        f'<span class="{css}">{name} {counts.get(kind, 0)}</span>'
        for kind, css, name in [
            ("accepted", "accepted", "accepted"),
            ("rejected", "rejected", "rejected"),
            ("regenerated", "regenerated", "regenerated"),
            ("large", "largeonly", "large-only"),
        ]
    )
    question = html.escape(result.question)
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>"
        f"<h1>{html.escape(title)}</h1>"
        f'<p class="meta"><b>Question:</b> {question}</p>'
        f'<p class="answer"><b>Answer:</b> {html.escape(str(result.answer))}</p>'
        f'<p class="meta">{html.escape(result.method)} · {html.escape(result.search)} · '
        f"{len(result.nodes) - (root is not None)} thoughts · {accept} · "
        f"{stats.expansions} expansions · {stats.wall_s:.1f} s</p>"
        f'<p class="legend">{legend} <span class="chosen">chosen path</span></p>'
        '<p class="controls"><button id="btn-expand">expand all</button>'
        '<button id="btn-collapse">collapse all</button>'
        '<button id="btn-path">chosen path only</button>'
        '<label><input type="checkbox" id="btn-hide"> hide rejected</label></p>'
        f'<div class="tree">{"".join(rows)}</div>'
        '<details class="root"><summary>Threshold trace</summary><table class="trace">'
        "<tr><th>step</th><th>decision</th><th>β</th><th>β next</th><th>kept</th>"
        f"<th>rejected</th></tr>{trace_rows}</table></details>"
        f"<script>{_SCRIPT}</script></body></html>\n"
    )


def write_tree_html(result: SearchResult, path: str | Path, *, title: str | None = None) -> Path:
    """Write the page for `result` to `path` and return the path."""
    out = Path(path)
    out.write_text(render_tree_html(result, title=title or "SpecSearch tree"), encoding="utf-8")
    return out
