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

import math
from collections.abc import Mapping
from typing import Any

import pandas as pd

from lnpath.core.findings import is_missing
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
    svg_threshold,
    svg_uri,
)
from lnpath.core.vocabulary import CLASS_COLOURS, LESION_LABELS, NO_LESION, NOT_ASSESSED


def _colour(lesion: str, value: Any) -> str:
    if is_missing(value):
        rgb = CLASS_COLOURS[NOT_ASSESSED]
    else:
        rgb = CLASS_COLOURS[LESION_LABELS[lesion] if bool(value) else NO_LESION]
    return "#{:02x}{:02x}{:02x}".format(*rgb)


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
    body = svg_frame("sclerosed tuft fraction", 1.0, (0, 0.25, 0.5, 0.75, 1.0))
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
            body.append(svg_text(x + step / 2, HEIGHT - BOTTOM + 13, f"G{gid}"))
    body.append(svg_text(LEFT + plot_w / 2, HEIGHT - 8, "glomeruli, lowest fraction first"))
    if thresholds:
        body += svg_threshold(
            thresholds["global_sclerosis"], 1.0, f"global > {thresholds['global_sclerosis']:g}"
        )
        body += svg_threshold(
            thresholds["segmental_min"], 1.0, f"segmental > {thresholds['segmental_min']:g}"
        )
    return svg_document(body, "Sclerosed tuft fraction per glomerulus")


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
    body = svg_frame("tuft nuclei / 1000 µm²", y_max, ticks)
    if thresholds:
        lumen = thresholds["endocapillary_max_lumen"]
        dens = thresholds["endocapillary_nuclei_per_1000um2"]
        body.append(
            f"<rect class='call-region' x='{LEFT}' y='{TOP}' width='{sx(lumen) - LEFT:.1f}' "
            f"height='{sy(dens) - TOP:.1f}' fill='#c800a0' fill-opacity='0.08' "
            f"stroke='#c800a0' stroke-dasharray='4 3'/>"
        )
        body.append(
            svg_text(
                sx(lumen) + 4, TOP + 12, f"called: ≥ {dens:g} nuclei and lumen < {lumen:g}", "start"
            )
        )
    for k in range(6):
        v = x_max * k / 5
        body.append(svg_text(sx(v), HEIGHT - BOTTOM + 13, f"{v:.2f}"))
    body.append(
        svg_text(LEFT + plot_w / 2, HEIGHT - 8, "open capillary-lumen fraction of the tuft")
    )
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
        body.append(svg_text(x + 6, y + 4, f"G{gid}", anchor="start", fill="#555"))
    return svg_document(body, "Tuft nuclear density against open-lumen fraction")


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
