"""Charts drawn on the server as inline SVG: no chart library, no JavaScript.

Each function returns SVG markup (escaped, safe to put in a template) with a ``<title>``
for screen readers and one per point or bar for hovering. A bar may link somewhere (the
runs histogram zooms into its bucket on click).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

from markupsafe import Markup

WIDTH = 380
"""Line charts fit a card of about that many CSS pixels, so their text is drawn at size."""
BAR_WIDTH = 1000
"""The runs histogram spans the page."""
HEIGHT = 150
_PAD_L = 44
_PAD_B = 20
_PAD_T = 8


@dataclass(frozen=True, slots=True)
class Series:
    """One line of a line chart; ``None`` values leave a gap."""

    name: str
    values: Sequence[float | None]
    colour: str


def _nice_max(value: float) -> float:
    if value <= 0:
        return 1.0
    magnitude = float(10 ** len(str(int(value))))
    for step in (0.1, 0.2, 0.25, 0.5, 1.0):
        if value <= magnitude * step:
            return magnitude * step
    return magnitude


def _fmt(value: float) -> str:
    if value >= 100 or value == int(value):
        return f"{value:,.0f}"
    return f"{value:.2g}"


def line_chart(
    title: str, labels: Sequence[str], series: Sequence[Series], *, unit: str = ""
) -> Markup:
    """A line chart of ``series`` over ``labels`` (the x-axis; first and last are shown)."""
    n = max(len(labels), 1)
    top = _nice_max(max((v for s in series for v in s.values if v is not None), default=0.0))
    inner_w, inner_h = WIDTH - _PAD_L - 8, HEIGHT - _PAD_B - _PAD_T

    def xy(i: int, v: float) -> tuple[float, float]:
        x = _PAD_L + (inner_w * i / (n - 1) if n > 1 else inner_w / 2)
        return x, _PAD_T + inner_h * (1 - v / top)

    parts = [
        f'<svg viewBox="0 0 {WIDTH} {HEIGHT}" width="100%" role="img" '
        f'aria-label="{escape(title)}"><title>{escape(title)}</title>',
        f'<line class="axis" x1="{_PAD_L}" y1="{_PAD_T + inner_h}" x2="{WIDTH - 8}" '
        f'y2="{_PAD_T + inner_h}"/>',
        f'<text x="{_PAD_L - 4}" y="{_PAD_T + 8}" text-anchor="end">{_fmt(top)}{unit}</text>',
        f'<text x="{_PAD_L - 4}" y="{_PAD_T + inner_h}" text-anchor="end">0</text>',
    ]
    if labels:
        parts.append(
            f'<text x="{_PAD_L}" y="{HEIGHT - 4}">{escape(labels[0])}</text>'
            f'<text x="{WIDTH - 8}" y="{HEIGHT - 4}" text-anchor="end">'
            f"{escape(labels[-1])}</text>"
        )
    for s in series:
        runs: list[list[tuple[float, float]]] = [[]]
        for i, v in enumerate(s.values):
            if v is None:
                runs.append([])
            else:
                runs[-1].append(xy(i, v))
        for run in runs:
            if len(run) > 1:
                points = " ".join(f"{x:.1f},{y:.1f}" for x, y in run)
                parts.append(
                    f'<polyline fill="none" stroke="{s.colour}" stroke-width="2" '
                    f'points="{points}"/>'
                )
        for i, v in enumerate(s.values):
            if v is not None:
                x, y = xy(i, v)
                label = labels[i] if i < len(labels) else ""
                parts.append(
                    f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.5" fill="{s.colour}">'
                    f"<title>{escape(s.name)} {escape(label)}: {_fmt(v)}{unit}</title></circle>"
                )
    legend_x = _PAD_L + 6
    for s in series:
        parts.append(
            f'<rect x="{legend_x}" y="{_PAD_T}" width="10" height="10" fill="{s.colour}"/>'
            f'<text x="{legend_x + 14}" y="{_PAD_T + 9}">{escape(s.name)}</text>'
        )
        legend_x += 22 + 7 * len(s.name)
    parts.append("</svg>")
    return Markup("".join(parts))


@dataclass(frozen=True, slots=True)
class Bar:
    """One bar of a stacked bar chart: its parts (name, value, colour) and a link."""

    label: str
    parts: Sequence[tuple[str, int, str]]
    href: str | None = None


def bar_chart(title: str, bars: Sequence[Bar], *, width: int = BAR_WIDTH) -> Markup:
    """Stacked bars, one per bucket; a bar with ``href`` is a link (click to zoom)."""
    n = max(len(bars), 1)
    top = _nice_max(float(max((sum(p[1] for p in b.parts) for b in bars), default=0)))
    inner_w, inner_h = width - _PAD_L - 8, HEIGHT - _PAD_B - _PAD_T
    bar_w = inner_w / n
    parts = [
        f'<svg viewBox="0 0 {width} {HEIGHT}" width="100%" role="img" '
        f'aria-label="{escape(title)}" data-testid="histogram"><title>{escape(title)}</title>',
        f'<line class="axis" x1="{_PAD_L}" y1="{_PAD_T + inner_h}" x2="{width - 8}" '
        f'y2="{_PAD_T + inner_h}"/>',
        f'<text x="{_PAD_L - 4}" y="{_PAD_T + 8}" text-anchor="end">{_fmt(top)}</text>',
    ]
    if bars:
        parts.append(
            f'<text x="{_PAD_L}" y="{HEIGHT - 4}">{escape(bars[0].label)}</text>'
            f'<text x="{width - 8}" y="{HEIGHT - 4}" text-anchor="end">'
            f"{escape(bars[-1].label)}</text>"
        )
    for i, bar in enumerate(bars):
        x = _PAD_L + i * bar_w
        y = float(_PAD_T + inner_h)
        total = sum(p[1] for p in bar.parts)
        words = ", ".join(f"{p[1]} {p[0].lower()}" for p in bar.parts if p[1])
        rects = []
        for _name, value, colour in bar.parts:
            if not value:
                continue
            h = inner_h * value / top
            y -= h
            rects.append(
                f'<rect x="{x + 1:.1f}" y="{y:.1f}" width="{max(bar_w - 2, 1):.1f}" '
                f'height="{h:.1f}" fill="{colour}"/>'
            )
        # An invisible full-height rect makes the whole column clickable.
        body = (
            f'<rect x="{x:.1f}" y="{_PAD_T}" width="{bar_w:.1f}" height="{inner_h}" '
            f'fill="transparent"/>' + "".join(rects)
        )
        detail = f": {escape(words)}" if words else ""
        tip = f"<title>{escape(bar.label)}: {total} runs{detail}</title>"
        if bar.href and total:
            parts.append(
                f'<a class="bar" href="{escape(bar.href)}" aria-label="{escape(bar.label)}: '
                f'{total} runs">{tip}{body}</a>'
            )
        else:
            parts.append(f"<g>{tip}{body}</g>")
    parts.append("</svg>")
    return Markup("".join(parts))
