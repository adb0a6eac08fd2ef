"""The response report's chart: the distribution of an index change, as an SVG."""

from __future__ import annotations

import math
from collections.abc import Sequence

from lnpath.core.svg import (
    BOTTOM,
    HEIGHT,
    LEFT,
    RIGHT,
    TOP,
    WIDTH,
    svg_document,
    svg_frame,
    svg_text,
)


def delta_chart(label: str, low: int, p: Sequence[float], observed: int | None) -> str | None:
    """Bars of P(Δ = d) for an index change (follow-up − baseline), the observed Δ outlined.

    Only the span holding all but 1e-4 of the probability is drawn, so a ΔAI on -24..24 with its
    mass on -8..-2 stays readable. Returns None for an empty distribution.
    """
    values = [float(v) for v in p]
    if not values or sum(values) <= 0:
        return None
    mass = [i for i, v in enumerate(values) if v > 1e-4]
    first, last = min(mass), max(mass)
    if observed is not None:
        first, last = min(first, observed - low), max(last, observed - low)
    first, last = min(first, -low), max(last, -low)  # always show Δ = 0
    shown = range(first, last + 1)
    y_max = max(0.2, math.ceil(max(values[i] for i in shown) * 5) / 5)  # a multiple of 0.2
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    step = plot_w / len(shown)
    ticks = [y_max * k / 4 for k in range(5)]
    body = svg_frame(f"P({label})", y_max, [round(t, 3) for t in ticks])
    label_every = max(1, math.ceil(len(shown) / 25))
    for j, i in enumerate(shown):
        d, v = low + i, values[i]
        x = LEFT + j * step
        outline = " stroke='#111' stroke-width='2'" if d == observed else ""
        fill = "#4a78b5" if d < 0 else "#b54a4a" if d > 0 else "#888888"
        body.append(
            f"<rect class='bar' data-delta='{d}' x='{x + 0.1 * step:.1f}' "
            f"y='{TOP + plot_h * (1 - v / y_max):.1f}' width='{0.8 * step:.1f}' "
            f"height='{plot_h * v / y_max:.1f}' fill='{fill}'{outline}/>"
        )
        if j % label_every == 0 or d in (0, observed):
            body.append(svg_text(x + step / 2, HEIGHT - BOTTOM + 13, f"{d:+d}" if d else "0"))
    note = f"; observed {observed:+d} outlined".replace("+0", "0") if observed is not None else ""
    body.append(svg_text(LEFT + plot_w / 2, HEIGHT - 8, f"{label} (follow-up − baseline){note}"))
    return svg_document(body, f"Distribution of {label}")
