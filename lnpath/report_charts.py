"""Evidence charts for the report: each glomerulus's measurements against the call thresholds.

A pathologist reviewing machine calls wants to see which glomeruli sit near a threshold (review
those first) and which calls a reviewer changed against the measurement. Two small SVG charts do
that: the sclerosed tuft fraction per glomerulus (global / segmental sclerosis) and the tuft
nuclear density against the open-lumen fraction (endocapillary hypercellularity). Each mark is
coloured by the *current* call (after review), so a reclassified glomerulus stands out against its
measurement. The charts are standalone SVG documents embedded as data URIs: every text in them
(glomerulus ids only) is XML-escaped, and nothing is inserted into the report's HTML unescaped.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Mapping, Sequence
from typing import Any
from xml.sax.saxutils import escape, quoteattr

import pandas as pd

from .findings import is_missing
from .result import CLASS_COLOURS, LESION_LABELS, NO_LESION, NOT_ASSESSED

WIDTH, HEIGHT = 760, 260
LEFT, RIGHT, TOP, BOTTOM = 52, 16, 26, 44
_AXIS = "#444"
_FONT = "font-family='sans-serif' font-size='11'"


def _colour(lesion: str, value: Any) -> str:
    if is_missing(value):
        rgb = CLASS_COLOURS[NOT_ASSESSED]
    else:
        rgb = CLASS_COLOURS[LESION_LABELS[lesion] if bool(value) else NO_LESION]
    return "#{:02x}{:02x}{:02x}".format(*rgb)


def _svg(body: Sequence[str], title: str) -> str:
    return (
        f"<svg xmlns='http://www.w3.org/2000/svg' width='{WIDTH}' height='{HEIGHT}' "
        f"viewBox='0 0 {WIDTH} {HEIGHT}' {_FONT}><title>{escape(title)}</title>"
        "<rect width='100%' height='100%' fill='white'/>" + "".join(body) + "</svg>"
    )


def _text(x: float, y: float, text: str, anchor: str = "middle", **attrs: str) -> str:
    extra = "".join(f" {k.replace('_', '-')}={quoteattr(v)}" for k, v in attrs.items())
    return f"<text x='{x:.1f}' y='{y:.1f}' text-anchor='{anchor}'{extra}>{escape(text)}</text>"


def _frame(y_label: str, y_max: float, ticks: Sequence[float]) -> list[str]:
    """Axes box with horizontal grid lines at ``ticks`` (data units, 0..y_max)."""
    plot_h = HEIGHT - TOP - BOTTOM
    out = [
        f"<rect x='{LEFT}' y='{TOP}' width='{WIDTH - LEFT - RIGHT}' height='{plot_h}' "
        f"fill='none' stroke='{_AXIS}'/>"
    ]
    for tick in ticks:
        y = TOP + plot_h * (1 - tick / y_max)
        out.append(
            f"<line x1='{LEFT}' x2='{WIDTH - RIGHT}' y1='{y:.1f}' y2='{y:.1f}' stroke='#ddd'/>"
        )
        out.append(_text(LEFT - 4, y + 4, f"{tick:g}", anchor="end"))
    out.append(
        _text(12, TOP + plot_h / 2, y_label, transform=f"rotate(-90 12 {TOP + plot_h / 2:.1f})")
    )
    return out


def _threshold(y_value: float, y_max: float, label: str) -> list[str]:
    y = TOP + (HEIGHT - TOP - BOTTOM) * (1 - y_value / y_max)
    return [
        f"<line class='threshold' x1='{LEFT}' x2='{WIDTH - RIGHT}' y1='{y:.1f}' y2='{y:.1f}' "
        f"stroke='{_AXIS}' stroke-dasharray='5 3'/>",
        _text(WIDTH - RIGHT - 4, y - 4, label, anchor="end"),
    ]


def sclerosis_chart(findings: pd.DataFrame, thresholds: Mapping[str, float] | None) -> str | None:
    """Bars of ``m_sclerosed_fraction`` per glomerulus, lowest first, coloured by its call.

    Returns None when no glomerulus has the measurement (e.g. outlines-only results).
    """
    if "m_sclerosed_fraction" not in findings:
        return None
    rows = findings[findings["m_sclerosed_fraction"].notna()]
    if rows.empty:
        return None
    rows = rows.sort_values(["m_sclerosed_fraction", "glomerulus_id"])
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    step = plot_w / len(rows)
    label_every = max(1, math.ceil(len(rows) / 40))
    body = _frame("sclerosed tuft fraction", 1.0, (0, 0.25, 0.5, 0.75, 1.0))
    for i, (_, row) in enumerate(rows.iterrows()):
        value = float(row["m_sclerosed_fraction"])
        calls = (row.get("global_sclerosis"), row.get("segmental_sclerosis"))
        call: Any
        if not is_missing(calls[0]) and bool(calls[0]):
            lesion, call = "global_sclerosis", True
        elif not is_missing(calls[1]) and bool(calls[1]):
            lesion, call = "segmental_sclerosis", True
        else:  # neither: "no" only when both were assessed
            lesion, call = "segmental_sclerosis", pd.NA if any(map(is_missing, calls)) else False
        x = LEFT + i * step
        gid = int(row["glomerulus_id"])
        body.append(
            f"<rect class='bar' data-glomerulus='{gid}' x='{x + 0.15 * step:.1f}' "
            f"y='{TOP + plot_h * (1 - value):.1f}' width='{0.7 * step:.1f}' "
            f"height='{plot_h * value:.1f}' fill='{_colour(lesion, call)}'/>"
        )
        if i % label_every == 0:
            body.append(_text(x + step / 2, HEIGHT - BOTTOM + 13, f"G{gid}"))
    body.append(_text(LEFT + plot_w / 2, HEIGHT - 8, "glomeruli, lowest fraction first"))
    if thresholds:
        body += _threshold(
            thresholds["global_sclerosis"], 1.0, f"global > {thresholds['global_sclerosis']:g}"
        )
        body += _threshold(
            thresholds["segmental_min"], 1.0, f"segmental > {thresholds['segmental_min']:g}"
        )
    return _svg(body, "Sclerosed tuft fraction per glomerulus")


def endocapillary_chart(
    findings: pd.DataFrame, thresholds: Mapping[str, float] | None
) -> str | None:
    """Tuft nuclei per 1000 µm² against the open-lumen fraction, coloured by the endocapillary call.

    With the morphometry thresholds, the corner where the rule calls the lesion (dense nuclei *and*
    narrowed lumina) is shaded.
    """
    needed = ("m_nuclei_per_1000um2", "m_lumen_fraction")
    if any(c not in findings for c in needed):
        return None
    rows = findings.dropna(subset=list(needed))
    if rows.empty:
        return None
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    top = float(rows["m_nuclei_per_1000um2"].max()) * 1.1
    if thresholds:
        top = max(top, thresholds["endocapillary_nuclei_per_1000um2"] * 1.2)
    y_max = 4.0 * max(1, math.ceil(top / 4))  # four whole-number grid steps
    x_max = max(0.5, math.ceil(float(rows["m_lumen_fraction"].max()) * 10 + 1) / 10)

    def sx(v: float) -> float:
        return LEFT + plot_w * v / x_max

    def sy(v: float) -> float:
        return TOP + plot_h * (1 - v / y_max)

    ticks = [y_max * k / 4 for k in range(5)]
    body = _frame("tuft nuclei / 1000 µm²", y_max, ticks)
    if thresholds:
        lumen = thresholds["endocapillary_max_lumen"]
        dens = thresholds["endocapillary_nuclei_per_1000um2"]
        body.append(
            f"<rect class='call-region' x='{LEFT}' y='{TOP}' width='{sx(lumen) - LEFT:.1f}' "
            f"height='{sy(dens) - TOP:.1f}' fill='#c800a0' fill-opacity='0.08' "
            f"stroke='#c800a0' stroke-dasharray='4 3'/>"
        )
        body.append(
            _text(
                sx(lumen) + 4, TOP + 12, f"called: ≥ {dens:g} nuclei and lumen < {lumen:g}", "start"
            )
        )
    for k in range(6):
        v = x_max * k / 5
        body.append(_text(sx(v), HEIGHT - BOTTOM + 13, f"{v:.2f}"))
    body.append(_text(LEFT + plot_w / 2, HEIGHT - 8, "open capillary-lumen fraction of the tuft"))
    for _, row in rows.iterrows():
        gid = int(row["glomerulus_id"])
        x, y = sx(float(row["m_lumen_fraction"])), sy(float(row["m_nuclei_per_1000um2"]))
        colour = _colour(
            "endocapillary_hypercellularity", row.get("endocapillary_hypercellularity")
        )
        body.append(
            f"<circle class='point' data-glomerulus='{gid}' cx='{x:.1f}' cy='{y:.1f}' r='4' "
            f"fill='{colour}' stroke='#222' stroke-width='0.5'/>"
        )
        body.append(_text(x + 6, y + 4, f"G{gid}", anchor="start", fill="#555"))
    return _svg(body, "Tuft nuclear density against open-lumen fraction")


def morphometry_thresholds(result: Mapping[str, Any]) -> dict[str, float] | None:
    """The rule thresholds when the calls came from the morphometry caller, else None."""
    for model in result.get("models") or []:
        settings = (model or {}).get("settings") or {}
        if settings.get("source") == "morphometry" and settings.get("calls"):
            return dict(settings.get("thresholds") or {}) or None
    return None


def evidence_charts(result: Mapping[str, Any], findings: pd.DataFrame) -> list[dict[str, str]]:
    """``[{"title", "caption", "uri"}]`` for the charts this result has measurements for."""
    thresholds = morphometry_thresholds(result)
    rule = (
        "dashed lines and the shaded corner are the morphometry caller's thresholds"
        if thresholds
        else "the calls did not come from the morphometry rules, so no thresholds are drawn"
    )
    charts = []
    for title, svg, caption in (
        (
            "Sclerosed tuft fraction per glomerulus",
            sclerosis_chart(findings, thresholds),
            "Share of each tuft that is solid, lumen-free, paucicellular matrix. Colour: "
            "current call (grey global, blue segmental sclerosis, green neither, yellow not "
            "assessed).",
        ),
        (
            "Tuft nuclear density against open-lumen fraction",
            endocapillary_chart(findings, thresholds),
            "Colour: current endocapillary hypercellularity call (magenta yes, green no, "
            "yellow not assessed).",
        ),
    ):
        if svg is not None:
            charts.append(
                {"title": title, "caption": f"{caption} The {rule}.", "uri": svg_uri(svg)}
            )
    return charts


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
    body = _frame(f"P({label})", y_max, [round(t, 3) for t in ticks])
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
            body.append(_text(x + step / 2, HEIGHT - BOTTOM + 13, f"{d:+d}" if d else "0"))
    note = f"; observed {observed:+d} outlined".replace("+0", "0") if observed is not None else ""
    body.append(_text(LEFT + plot_w / 2, HEIGHT - 8, f"{label} (follow-up − baseline){note}"))
    return _svg(body, f"Distribution of {label}")


def svg_uri(svg: str) -> str:
    """A data URI for an SVG document (base64: nothing in it reaches the page as markup)."""
    return "data:image/svg+xml;base64," + base64.b64encode(svg.encode()).decode("ascii")
