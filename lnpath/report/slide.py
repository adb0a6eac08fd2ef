"""The pathologist's report: one self-contained HTML file and an overlay image.

The report leads with the diagnosis line, then shows the evidence behind every number (component
tables with n/N, each glomerulus' crop with its calls) so that a pathologist can check the proposal
glomerulus by glomerulus. Images are inlined as base64 so the file can be mailed or archived alone.
Everything that comes from a user (names, notes, patient id, file names, class names) is escaped
by Jinja2's autoescape; nothing is inserted with ``|safe``.
"""

from __future__ import annotations

import base64
import io
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import jinja2
import numpy as np
import pandas as pd
from PIL import Image, ImageDraw, ImageFont
from shapely.geometry import MultiPolygon, Polygon
from shapely.geometry.base import BaseGeometry

from lnpath.core.findings import LESIONS
from lnpath.core.vocabulary import CLASS_COLOURS, LESION_LABELS, NO_LESION, NOT_ASSESSED
from lnpath.report.assets import Assets
from lnpath.report.charts import evidence_charts
from lnpath.report.lesion_note import lesion_calls_note
from lnpath.scoring.indices import ACTIVITY, CHRONICITY

COMPONENT_LABELS: dict[str, str] = {
    "endocapillary_hypercellularity": "Endocapillary hypercellularity",
    "neutrophils_karyorrhexis": "Neutrophils / karyorrhexis",
    "fibrinoid_necrosis": "Fibrinoid necrosis",
    "hyaline_deposits": "Hyaline deposits (wire loops, hyaline thrombi)",
    "cellular_fibrocellular_crescents": "Cellular / fibrocellular crescents",
    "interstitial_inflammation": "Interstitial inflammation",
    "glomerulosclerosis": "Total glomerulosclerosis (global + segmental)",
    "fibrous_crescents": "Fibrous crescents",
    "tubular_atrophy": "Tubular atrophy",
    "interstitial_fibrosis": "Interstitial fibrosis",
}
BANDS = ("absent", "<25%", "25–50%", ">50%")
ALWAYS_NEEDED = (
    "Immunofluorescence (IgG, IgA, IgM, C3, C1q, κ, λ) and electron microscopy: "
    "classes I, II and V cannot be confirmed by light microscopy",
    "Vessels: arteriosclerosis, arteriolar hyalinosis, lupus vasculopathy, "
    "thrombotic microangiopathy",
    "Mesangial hypercellularity, wire loops and crescent extent as seen on other stains",
)
_ENV = jinja2.Environment(
    loader=jinja2.PackageLoader("lnpath.report", "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


def _label(name: str) -> str:
    return COMPONENT_LABELS.get(name, name.replace("_", " ").capitalize())


def index_text(index: Mapping[str, Any]) -> str:
    """``9/24``, ``≥7/24 (incomplete: 2 of 6 components not assessed; ...)``, or ``not computed``.

    An unassessed component can only add to the total, so an incomplete index is shown by its lower
    bound: the assessed components plus the least the others can still give (a crescent entered in
    review makes its component at least band 1 even while the other glomeruli are unassessed).
    """
    if index.get("total") is None:  # e.g. an inadequate biopsy: counts only, by policy
        note = index.get("note")
        return f"not computed ({note})" if note else "not computed"
    if index.get("complete"):
        return f"{index['total']}/{index['max']}"
    missing = len(index.get("not_assessed", []))
    of = len(index["components"])
    span = index.get("total_range")
    low = span[0] if span else index["total"]
    partial = f"; assessed components give {index['total']}" if low != index["total"] else ""
    full = f"; full index {span[0]}–{span[1]}" if span else ""
    return (
        f"≥{low}/{index['max']} "
        f"(incomplete: {missing} of {of} components not assessed{partial}{full})"
    )


def status_text(result: Mapping[str, Any]) -> str:
    """``PROVISIONAL — pending pathologist review`` or ``CONFIRMED by NAME on DATE``."""
    confirmation = result.get("confirmation")
    if result.get("status") == "confirmed" and confirmation:
        return f"CONFIRMED by {confirmation['pathologist']} on {confirmation['confirmed_at'][:10]}"
    return "PROVISIONAL — pending pathologist review"


def diagnosis_line(result: Mapping[str, Any]) -> str:
    """The report's first line, in RPS consensus order: entity, class, indices, status."""
    scores = result["scores"]
    proposal = scores["isn_rps_class"].get("proposal")
    class_text = f"ISN/RPS class proposal {proposal}" if proposal else "no ISN/RPS class proposed"
    legacy = scores["isn_rps_class"].get("legacy_2003") or {}
    if legacy.get("label"):
        class_text += f" (ISN/RPS 2003: {legacy['label']})"
    return (
        f"Lupus nephritis, {class_text}. "
        f"Modified NIH activity index {index_text(scores['activity_index'])}; "
        f"chronicity index {index_text(scores['chronicity_index'])}. {status_text(result)}"
    )


# --------------------------------------------------------------------------------------------
# Images


def _rings(geometry: BaseGeometry) -> list[Sequence[tuple[float, float]]]:
    parts = list(geometry.geoms) if isinstance(geometry, MultiPolygon) else [geometry]
    return [list(p.exterior.coords) for p in parts if isinstance(p, Polygon)]


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=size)


def _colour(call: Any) -> tuple[int, int, int]:
    return CLASS_COLOURS.get(str(call), CLASS_COLOURS[NOT_ASSESSED])


def _hex(call: Any) -> str:
    red, green, blue = _colour(call)
    return f"#{red:02x}{green:02x}{blue:02x}"


def overlay_image(
    findings: pd.DataFrame, polygons: Mapping[int, BaseGeometry], assets: Assets
) -> Image.Image:
    """The thumbnail with each glomerulus outlined in its call's colour and numbered."""
    image = Image.fromarray(assets.thumbnail).convert("RGB")
    draw = ImageDraw.Draw(image)
    scale = assets.thumbnail_scale
    width = max(2, round(max(image.size) / 800))
    font = _font(max(12, round(max(image.size) / 90)))
    for row in findings.to_dict("records"):
        gid = int(row["glomerulus_id"])
        colour = _colour(row["main_call"])
        geometry = polygons[gid]
        for ring in _rings(geometry):
            draw.line([(x / scale, y / scale) for x, y in ring], fill=colour, width=width)
        x0, y0, _, _ = geometry.bounds
        draw.text((x0 / scale, y0 / scale - font.size), str(gid), fill=colour, font=font)  # type: ignore[union-attr]
    return image


def render_overlay(
    result: Mapping[str, Any],
    findings: pd.DataFrame,
    polygons: Mapping[int, BaseGeometry],
    assets: Assets,
) -> bytes:
    """``overlay.png``: the outlined thumbnail as PNG bytes."""
    buffer = io.BytesIO()
    overlay_image(findings, polygons, assets).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def _data_uri(image: Image.Image, fmt: str = "JPEG") -> str:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, quality=85)
    mime = "image/jpeg" if fmt == "JPEG" else "image/png"
    return f"data:{mime};base64,{base64.b64encode(buffer.getvalue()).decode('ascii')}"


def _crop_uri(gid: int, call: Any, geometry: BaseGeometry, assets: Assets) -> str | None:
    crop = assets.crops.get(gid)
    if crop is None:
        return None
    image = Image.fromarray(crop.image).convert("RGB")
    draw = ImageDraw.Draw(image)
    for ring in _rings(geometry):
        pts = [((x - crop.x) / crop.scale, (y - crop.y) / crop.scale) for x, y in ring]
        draw.line(pts, fill=_colour(call), width=2)
    return _data_uri(image)


# --------------------------------------------------------------------------------------------
# Tables


def _pct(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{round(100 * float(value))}%"


def _component_rows(
    index: Mapping[str, Any], uncertainty: Mapping[str, Any]
) -> list[dict[str, Any]]:
    rows = []
    for name, comp in index["components"].items():
        unc = uncertainty.get("components", {}).get(name, {})
        assessed = bool(comp.get("assessed"))
        n, big_n = comp.get("n"), comp.get("N")
        wilson = unc.get("wilson_95")
        bands = unc.get("band_probabilities")
        score = comp.get("score")
        rows.append(
            {
                "label": _label(name),
                "count": f"{n}/{big_n}"
                if assessed and n is not None and big_n is not None
                else "—",
                "note": comp.get("note"),
                "percent": _pct(comp.get("fraction")) if assessed else "—",
                "band": BANDS[comp["score"]] if assessed and comp.get("score") is not None else "—",
                "score": comp.get("score") if assessed else "not assessed",
                "weight": comp.get("weight"),
                "weighted": comp.get("weighted") if assessed else "—",
                "interval": f"{_pct(wilson[0])}–{_pct(wilson[1])}" if assessed and wilson else "—",
                "near_edge": bool(unc.get("near_band_edge")) and assessed,
                "other_band": _pct(1 - bands[score])
                if assessed and bands and score is not None
                else "—",
                "assessed": assessed,
            }
        )
    return rows


def _index_interval(unc: Mapping[str, Any] | None) -> str:
    interval = (unc or {}).get("interval_95")
    return f"{interval[0]}–{interval[1]}" if interval else "not computed"


def _not_assessed(result: Mapping[str, Any], findings: pd.DataFrame) -> list[str]:
    scores = result["scores"]
    items = []
    listed: set[str] = set()  # lesion columns already covered by a not-assessed component
    for key, components in (("activity_index", ACTIVITY), ("chronicity_index", CHRONICITY)):
        for name in scores[key].get("not_assessed", []):
            reason = _cortex_reason(result.get("cortex") or {}, name)
            items.append(
                f"{_label(name)}: not assessed{f' ({reason})' if reason else ''}; supply it"
            )
            listed.update(components.get(name, (None, 0))[0] or ())
    for lesion in LESIONS:
        if lesion in listed:
            continue
        if lesion in findings and len(findings) and findings[lesion].isna().all():
            items.append(f"{LESION_LABELS[lesion]}: not called by the machine for any glomerulus")
    items += [
        f"{item} (needed for the class)" for item in scores["isn_rps_class"].get("needs_if_em", [])
    ]
    items += list(ALWAYS_NEEDED)
    return items


def _cortex_reason(cortex: Mapping[str, Any], name: str) -> str | None:
    for key in ("not_assessed", "reasons"):
        value = cortex.get(key)
        if isinstance(value, Mapping) and value.get(name):
            return str(value[name])
    entry = cortex.get(name)
    if isinstance(entry, Mapping):
        for key in ("reason", "not_assessed_reason", "not_assessed"):
            if isinstance(entry.get(key), str):
                return str(entry[key])
    return None


def _value_text(value: Any) -> str:
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if isinstance(value, bool | np.bool_):
        return "yes" if value else "no"
    if isinstance(value, float | np.floating):
        number = float(value)
        if number.is_integer() and abs(number) < 1e9:
            return f"{int(number):,}"
        if abs(number) >= 100:
            return f"{number:,.0f}"
        return f"{number:.3g}"
    return str(value)


def _gallery(
    findings: pd.DataFrame, polygons: Mapping[int, BaseGeometry], assets: Assets
) -> list[dict[str, Any]]:
    entries = []
    for row in findings.to_dict("records"):
        gid = int(row["glomerulus_id"])
        calls = []
        for lesion in LESIONS:
            value = row.get(lesion)
            prob = row.get(f"p_{lesion}")
            state = _value_text(value)
            if state == "—":
                state = "not assessed"
            prob_text = _value_text(prob)
            if prob_text != "—":
                state = f"{state} (p={prob_text})"
            calls.append({"name": LESION_LABELS[lesion], "value": state, "positive": value is True})
        measurements = [
            {"name": str(key)[2:].replace("_", " "), "value": _value_text(value)}
            for key, value in row.items()
            if str(key).startswith("m_")
        ]
        entries.append(
            {
                "id": gid,
                "call": row["main_call"],
                "colour": _hex(row["main_call"]),
                "image": _crop_uri(gid, row["main_call"], polygons[gid], assets),
                "area": _value_text(row.get("area_um2")),
                "probability": _value_text(row.get("probability")),
                "source": _value_text(row.get("source")),
                "calls": calls,
                "measurements": measurements,
            }
        )
    return entries


def _provenance(result: Mapping[str, Any]) -> list[tuple[str, str]]:
    slide = result["slide"]
    fingerprint = slide.get("fingerprint") or {}
    rows = [
        ("Slide", str(slide.get("name"))),
        ("Path", str(slide.get("path"))),
        ("Slide fingerprint (sha256)", str(fingerprint.get("sha256"))),
        ("Slide size (bytes)", str(fingerprint.get("size"))),
        ("Dimensions (level 0, px)", " × ".join(str(d) for d in slide.get("dimensions", []))),
        ("µm/px", f"{slide.get('mpp')} (source: {slide.get('mpp_source')})"),
        ("Vendor", str(slide.get("vendor"))),
        ("Stain", str(result.get("stain"))),
        ("lnpath version", str(result.get("lnpath_version"))),
        ("NIH index version", str(result["scores"].get("nih_version"))),
        ("Scored at", str(result.get("created_at"))),
        ("Revision", str(result.get("revision"))),
    ]
    for model in result.get("models", []):
        sha = model.get("sha256")
        settings = model.get("settings")
        text = f"sha256 {sha}" if sha else "rules, no weights"
        if settings:
            text += f"; settings {json.dumps(settings, ensure_ascii=False, default=str)}"
        rows.append((f"Model {model.get('name')}", text))
    timings = result.get("timings") or {}
    rows.append(("Timings (s)", ", ".join(f"{k} {v}" for k, v in timings.items())))
    return rows


_CHANGE_KEYS = ("revision", "glomerulus", "field", "before", "after", "source")
_AUDIT_KEYS = ("revision", "event", "at", "by", "note")


def _pick(entry: Mapping[str, Any], keys: Sequence[str]) -> dict[str, Any]:
    return {key: entry.get(key) for key in keys}


def render_report(
    result: Mapping[str, Any],
    findings: pd.DataFrame,
    polygons: Mapping[int, BaseGeometry],
    assets: Assets,
    audit: Sequence[Mapping[str, Any]] = (),
    folder_name: str = "RESULT_DIR",
) -> str:
    """The complete ``report.html`` as a string (all images inline)."""
    scores = result["scores"]
    uncertainty = scores.get("uncertainty") or {}
    ai, ci = scores["activity_index"], scores["chronicity_index"]
    counts = {str(k): int(v) for k, v in findings["main_call"].value_counts().items()}
    context = {
        "title": f"lnpath report: {result['slide'].get('name')}",
        "diagnosis": diagnosis_line(result),
        "status": result.get("status"),
        "status_text": status_text(result),
        "confirmation": _pick(result["confirmation"], ("sha256", "note"))
        if result.get("confirmation")
        else None,
        "patient_id": result.get("patient_id"),
        "biopsy_date": result.get("biopsy_date"),
        "slide_name": result["slide"].get("name"),
        "adequacy": _pick(scores.get("adequacy") or {}, ("n_glomeruli", "status", "message")),
        "warnings": list(result.get("warnings") or []),
        "isn": _pick(scores["isn_rps_class"], ("proposal", "rationale", "legacy_2003")),
        "ai": {"text": index_text(ai), "rows": _component_rows(ai, uncertainty)},
        "ci": {"text": index_text(ci), "rows": _component_rows(ci, uncertainty)},
        "ai_interval": _index_interval(uncertainty.get("activity_index")),
        "ci_interval": _index_interval(uncertainty.get("chronicity_index")),
        "assumption": uncertainty.get("assumption"),
        "near_edge": [
            _label(n)
            for n, u in (uncertainty.get("components") or {}).items()
            if u.get("near_band_edge")
        ],
        "not_assessed": _not_assessed(result, findings),
        "lesion_calls": lesion_calls_note(result),
        "overview": _data_uri(overlay_image(findings, polygons, assets)),
        "legend": [
            {"name": name, "colour": _hex(name), "n": n} for name, n in sorted(counts.items())
        ],
        "charts": evidence_charts(result, findings),
        "gallery": _gallery(findings, polygons, assets),
        "provenance": _provenance(result),
        "config": json.dumps(result.get("config"), indent=2, ensure_ascii=False, default=str),
        "changes": [_pick(c, _CHANGE_KEYS) for c in result.get("changes") or []],
        "classes": [*LESION_LABELS.values(), NO_LESION, NOT_ASSESSED],
        "folder_name": folder_name,
        "audit": [_pick(e, _AUDIT_KEYS) for e in audit],
    }
    return _ENV.get_template("report.html").render(**context)
