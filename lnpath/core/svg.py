"""Small standalone SVG charts: a frame with axes, labels, thresholds, and a data URI.

Shared by the slide report's evidence charts and the response report's change distributions.
Every text is escaped; the documents are embedded as base64 data URIs, never as markup.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from xml.sax.saxutils import escape, quoteattr

WIDTH, HEIGHT = 760, 260
LEFT, RIGHT, TOP, BOTTOM = 52, 16, 26, 44
AXIS = "#444"
FONT = "font-family='sans-serif' font-size='11'"


def svg_document(body: Sequence[str], title: str) -> str:
    return (
        f"<svg xmlns='http://www.w3.org/2000/svg' width='{WIDTH}' height='{HEIGHT}' "
        f"viewBox='0 0 {WIDTH} {HEIGHT}' {FONT}><title>{escape(title)}</title>"
        "<rect width='100%' height='100%' fill='white'/>" + "".join(body) + "</svg>"
    )


def svg_text(x: float, y: float, text: str, anchor: str = "middle", **attrs: str) -> str:
    extra = "".join(f" {k.replace('_', '-')}={quoteattr(v)}" for k, v in attrs.items())
    return f"<text x='{x:.1f}' y='{y:.1f}' text-anchor='{anchor}'{extra}>{escape(text)}</text>"


def svg_frame(y_label: str, y_max: float, ticks: Sequence[float]) -> list[str]:
    """Axes box with horizontal grid lines at ``ticks`` (data units, 0..y_max)."""
    plot_h = HEIGHT - TOP - BOTTOM
    out = [
        f"<rect x='{LEFT}' y='{TOP}' width='{WIDTH - LEFT - RIGHT}' height='{plot_h}' "
        f"fill='none' stroke='{AXIS}'/>"
    ]
    for tick in ticks:
        y = TOP + plot_h * (1 - tick / y_max)
        out.append(
            f"<line x1='{LEFT}' x2='{WIDTH - RIGHT}' y1='{y:.1f}' y2='{y:.1f}' stroke='#ddd'/>"
        )
        out.append(svg_text(LEFT - 4, y + 4, f"{tick:g}", anchor="end"))
    out.append(
        svg_text(12, TOP + plot_h / 2, y_label, transform=f"rotate(-90 12 {TOP + plot_h / 2:.1f})")
    )
    return out


def svg_threshold(y_value: float, y_max: float, label: str) -> list[str]:
    y = TOP + (HEIGHT - TOP - BOTTOM) * (1 - y_value / y_max)
    return [
        f"<line class='threshold' x1='{LEFT}' x2='{WIDTH - RIGHT}' y1='{y:.1f}' y2='{y:.1f}' "
        f"stroke='{AXIS}' stroke-dasharray='5 3'/>",
        svg_text(WIDTH - RIGHT - 4, y - 4, label, anchor="end"),
    ]


def svg_uri(svg: str) -> str:
    """A data URI for an SVG document (base64: nothing in it reaches the page as markup)."""
    return "data:image/svg+xml;base64," + base64.b64encode(svg.encode()).decode("ascii")
