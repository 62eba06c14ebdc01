"""A run's DAG as an SVG picture, laid out in Python.

Layout: steps are put in layers by their longest path from a root (a step with no
parents is in layer 0), left to right; ``on_failure``/``on_success`` handlers go in a last
layer of their own. Within a layer, steps keep their declaration order. Edges are cubic
curves from a parent's right side to a child's left side. An edge is drawn as a
*condition* edge — dashed, coloured and labelled ``wait for``, ``skip if`` or ``cancel if``
— when the child has a condition on that parent's output.

Children spawned at run time hang below the step that spawned them as dashed nodes; more
than :data:`COLLAPSE_ABOVE` collapse into one "xN" node with counts by status, which links
to the list of them.

Every node is a link (to the step's panel, or the child run's page) with a ``<title>``;
``data-step``/``data-status`` attributes give tests stable handles.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from html import escape

from markupsafe import Markup

from stoker._core.dag import ConditionSpec

NODE_W = 150
NODE_H = 40
GAP_X = 70
GAP_Y = 26
CHILD_W = 120
CHILD_H = 26
COLLAPSE_ABOVE = 20
PAD = 16
TIMES = "\u00d7"

FILL = {
    "COMPLETED": ("#dcfce7", "#15803d"),
    "FAILED": ("#fee2e2", "#b91c1c"),
    "CANCELLED": ("#f3e8ff", "#7e22ce"),
    "SKIPPED": ("#f3f4f6", "#6b7280"),
    "RUNNING": ("#dbeafe", "#1d4ed8"),
    "ASSIGNED": ("#cffafe", "#0e7490"),
    "QUEUED": ("#e5e7eb", "#374151"),
    "PENDING": ("#fef3c7", "#b45309"),
    "EVICTED": ("#ffedd5", "#c2410c"),
}
EDGE_STYLE = {
    "wait_for": ("#1d4ed8", "wait for"),
    "skip_if": ("#b45309", "skip if"),
    "cancel_if": ("#b91c1c", "cancel if"),
}


@dataclass(frozen=True, slots=True)
class Child:
    """A run spawned by a step."""

    run_id: str
    name: str
    status: str


@dataclass(frozen=True, slots=True)
class Node:
    """A step of the run as the picture needs it."""

    name: str
    task_name: str
    status: str
    role: str = "step"
    parents: Sequence[str] = ()
    conditions: dict[str, Sequence[ConditionSpec]] = field(default_factory=dict)
    children: Sequence[Child] = ()


def _parent_conditions(items: Sequence[ConditionSpec]) -> dict[str, str]:
    """The parents named by parent-output conditions (in ``or`` groups too), with their
    expressions."""
    found: dict[str, str] = {}
    for c in items:
        if c.kind == "parent" and c.parent:
            found[c.parent] = c.expression
        elif c.kind == "or":
            found.update(_parent_conditions(c.items))
    return found


def layers(nodes: Sequence[Node]) -> list[list[Node]]:
    """Steps by layer: longest path from a root; handlers last."""
    by_name = {n.name: n for n in nodes}
    depth: dict[str, int] = {}

    def depth_of(name: str, seen: frozenset[str] = frozenset()) -> int:
        if name in depth:
            return depth[name]
        node = by_name.get(name)
        if node is None or name in seen:
            return 0
        d = 1 + max((depth_of(p, seen | {name}) for p in node.parents if p in by_name), default=-1)
        depth[name] = d
        return d

    regular = [n for n in nodes if n.role == "step"]
    out: list[list[Node]] = []
    for n in regular:
        d = depth_of(n.name)
        while len(out) <= d:
            out.append([])
        out[d].append(n)
    handlers = [n for n in nodes if n.role != "step"]
    if handlers:
        out.append(handlers)
    return out


def _label(text: str, limit: int = 20) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def draw(nodes: Sequence[Node], *, selected: str | None, link: str, child_link: str) -> Markup:
    """The SVG of a run's steps. ``link`` and ``child_link`` are URL templates with
    ``{step}`` / ``{run_id}``."""
    grid = layers(nodes)
    pos: dict[str, tuple[float, float]] = {}
    height = 0.0
    for li, layer in enumerate(grid):
        y = float(PAD)
        for n in layer:
            pos[n.name] = (PAD + li * (NODE_W + GAP_X), y)
            extra = 0.0
            if n.children:
                shown = 1 if len(n.children) > COLLAPSE_ABOVE else len(n.children)
                extra = shown * (CHILD_H + 8) + 8
            y += NODE_H + GAP_Y + extra
        height = max(height, y)
    width = PAD * 2 + max(len(grid), 1) * (NODE_W + GAP_X) - GAP_X
    parts: list[str] = []
    edges = 0
    for n in nodes:
        if n.name not in pos:
            continue
        cx, cy = pos[n.name]
        conditional = {
            kind: _parent_conditions(items) for kind, items in n.conditions.items() if items
        }
        for p in n.parents:
            if p not in pos:
                continue
            px, py = pos[p]
            x1, y1 = px + NODE_W, py + NODE_H / 2
            x2, y2 = cx, cy + NODE_H / 2
            mid = (x1 + x2) / 2
            style = next((k for k, found in conditional.items() if p in found), None)
            colour, words = EDGE_STYLE[style] if style else ("#6b7280", "")
            dash = ' stroke-dasharray="6 4"' if style else ""
            kind = style or "parent"
            tip = f"{p} → {n.name}" + (f" ({words} {conditional[style][p]})" if style else "")
            parts.append(
                f'<g class="edge" data-edge="{escape(p)}->{escape(n.name)}" data-kind="{kind}">'
                f"<title>{escape(tip)}</title>"
                f'<path d="M{x1},{y1} C{mid},{y1} {mid},{y2} {x2},{y2}" fill="none" '
                f'stroke="{colour}" stroke-width="2"{dash} marker-end="url(#arrow)"/>'
            )
            if style:
                parts.append(
                    f'<text x="{mid:.0f}" y="{(y1 + y2) / 2 - 4:.0f}" text-anchor="middle" '
                    f'fill="{colour}">{escape(words)}</text>'
                )
            parts.append("</g>")
            edges += 1
    for n in nodes:
        if n.name not in pos:
            continue
        x, y = pos[n.name]
        fill, stroke = FILL.get(n.status, ("#ffffff", "#374151"))
        cls = "node selected" if n.name == selected else "node"
        role = "" if n.role == "step" else f" ({n.role.replace('_', ' ')})"
        href = escape(link.format(step=n.name))
        parts.append(
            f'<a class="{cls}" href="{href}" data-step="{escape(n.name)}" '
            f'data-status="{escape(n.status)}" aria-label="{escape(n.name)}: {n.status}">'
            f"<title>{escape(n.name)}{escape(role)}: {n.status}</title>"
            f'<rect x="{x}" y="{y}" width="{NODE_W}" height="{NODE_H}" rx="6" fill="{fill}" '
            f'stroke="{stroke}"/>'
            f'<text x="{x + 8}" y="{y + 16}" font-weight="600">{escape(_label(n.name))}</text>'
            f'<text x="{x + 8}" y="{y + 31}" fill="{stroke}">{n.status}{escape(role)}</text>'
            "</a>"
        )
        if n.children:
            parts.append(_children(n, x, y + NODE_H + 8, child_link, link))
    svg = (
        f'<svg viewBox="0 0 {width} {max(height, NODE_H + 2 * PAD)}" width="{width}" '
        f'role="img" aria-label="The run\'s steps: {len(pos)} nodes, {edges} edges" '
        f'data-testid="dag" data-nodes="{len(pos)}" data-edges="{edges}">'
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" '
        'markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" '
        'fill="#6b7280"/></marker></defs>' + "".join(parts) + "</svg>"
    )
    return Markup(svg)


def _children(n: Node, x: float, y: float, child_link: str, link: str) -> str:
    out: list[str] = []
    if len(n.children) > COLLAPSE_ABOVE:
        counts = Counter(c.status for c in n.children)
        words = ", ".join(f"{v} {k.lower()}" for k, v in sorted(counts.items()))
        href = escape(link.format(step=n.name) + "&children=all#children")
        out.append(
            f'<a href="{href}" data-collapsed="{len(n.children)}" '
            f'aria-label="{len(n.children)} child runs: {escape(words)}">'
            f"<title>{len(n.children)} child runs: {escape(words)}</title>"
            f'<rect x="{x + 14}" y="{y}" width="{CHILD_W}" height="{CHILD_H}" rx="4" '
            'fill="#ffffff" stroke="#374151" stroke-dasharray="4 3"/>'
            f'<text x="{x + 22}" y="{y + 17}">{TIMES}{len(n.children)} '
            f"({counts.get('COMPLETED', 0)} ok, {counts.get('FAILED', 0)} failed)</text></a>"
        )
        return "".join(out)
    for i, c in enumerate(n.children):
        cy = y + i * (CHILD_H + 8)
        fill, stroke = FILL.get(c.status, ("#ffffff", "#374151"))
        out.append(
            f'<a href="{escape(child_link.format(run_id=c.run_id))}" data-child="{c.run_id}" '
            f'data-status="{escape(c.status)}"><title>child {escape(c.name)}: {c.status}</title>'
            f'<rect x="{x + 14}" y="{cy}" width="{CHILD_W}" height="{CHILD_H}" rx="4" '
            f'fill="{fill}" stroke="{stroke}" stroke-dasharray="4 3"/>'
            f'<text x="{x + 22}" y="{cy + 17}">{escape(_label(c.name, 16))}</text></a>'
        )
    return "".join(out)
