"""What the page shows, as plain JSON: glomeruli with their calls, measurements and thresholds,
and the summary (indices, components, class, adequacy) from a scores dict.

The summary is read from what :func:`lnpath.score_findings` returned; nothing here scores.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from lnpath.core.findings import LESION_EXTENT, LESIONS, MASK_AREA, is_missing
from lnpath.core.vocabulary import CLASS_COLOURS, LESION_LABELS
from lnpath.report.sections import band_text
from lnpath.report.slide import index_text

EXCLUSIONS = ("not_glomerulus", "ischemic")
#: Digit key -> lesion, in the table order of the 2018 index (the page shows the same list).
LESION_KEYS = {str(i + 1): lesion for i, lesion in enumerate(LESIONS)}
COMPONENT_LABELS = {
    "endocapillary_hypercellularity": "Endocapillary hypercellularity",
    "neutrophils_karyorrhexis": "Neutrophils/karyorrhexis",
    "fibrinoid_necrosis": "Fibrinoid necrosis",
    "hyaline_deposits": "Hyaline deposits",
    "cellular_fibrocellular_crescents": "Cellular/fibrocellular crescents",
    "interstitial_inflammation": "Interstitial inflammation",
    "glomerulosclerosis": "Glomerulosclerosis",
    "fibrous_crescents": "Fibrous crescents",
    "tubular_atrophy": "Tubular atrophy",
    "interstitial_fibrosis": "Interstitial fibrosis",
}


def _value(value: Any) -> Any:
    if is_missing(value):
        return None
    if hasattr(value, "item"):
        return value.item()
    return value


def _outline(geometry: Any) -> list[list[list[list[float]]]]:
    """Every part of an outline (a multipolygon from an edit or an export has several), each as
    its exterior ring then its holes: the page draws and hit-tests them even-odd, so a ring-shaped
    outline is not shown filled."""
    parts = getattr(geometry, "geoms", [geometry])
    return [
        [
            [[round(x, 1), round(y, 1)] for x, y in ring.coords]
            for ring in (p.exterior, *p.interiors)
        ]
        for p in parts
        if not p.is_empty
    ]


# --------------------------------------------------------------------------------------------
# What the page shows


def _measurement_rows(row: Mapping[Any, Any], thresholds: Mapping[str, float] | None) -> list:
    """Each morphometry measurement beside the rule threshold that used it, if any: ``value`` as
    stored, ``shown`` as a pathologist reads it, and the thresholds in the same unit (a fraction
    shown as 25.6% beside "> 0.5" would be compared across units)."""
    rules: dict[str, list[str]] = {}
    if thresholds:
        rules = {
            "m_sclerosed_fraction": [
                f"global sclerosis > {_percent(thresholds['global_sclerosis'])}",
                f"segmental sclerosis > {_percent(thresholds['segmental_min'])}",
            ],
            "m_nuclei_per_1000um2": [
                f"endocapillary > {thresholds['endocapillary_nuclei_per_1000um2']:g}"
            ],
            "m_lumen_fraction": [
                f"endocapillary < {_percent(thresholds['endocapillary_max_lumen'])}"
            ],
        }
    out = []
    for column, value in row.items():
        # one area per glomerulus: the outline's, beside "Machine:" (the mask's differs a little)
        if str(column).startswith("m_") and column != MASK_AREA and not is_missing(value):
            name, shown = _measure(str(column)[2:], float(value))
            out.append(
                {
                    "name": name,
                    "value": round(float(value), 3),
                    "shown": shown,
                    "rules": rules.get(str(column), []),
                }
            )
    return out


def _percent(fraction: float) -> str:
    """A threshold fraction as the % it is (0.35 as 35%, 0.125 as 12.5%)."""
    return f"{round(100 * fraction, 6):g}%"


def _measure(key: str, value: float) -> tuple[str, str]:
    """A measurement's name and value rounded as it is read at the microscope (``103.191`` is
    false precision): a fraction (of the tuft, of the capsule) as a % to one decimal, an area or
    a length in whole µm² or µm (the unit moved from the name to the value), a count whole, a
    density to one decimal."""
    name = key.replace("_", " ").replace("pas ", "PAS ").replace("bowman", "Bowman")
    if key.endswith(("fraction", "circumference")):
        return name, f"{100 * value:.1f}%"
    unit = re.search(r"(?<!per)_(um2?)$", key)
    if unit:
        return name[: unit.start()], f"{value:,.0f} {'µm²' if unit.group(1) == 'um2' else 'µm'}"
    if key.endswith(("nuclei", "cells")):
        return name, f"{value:,.0f}"
    return _unit(name), f"{value:.1f}"


def _unit(name: str) -> str:
    """``um``/``um2`` as µm/µm², after a digit too (``nuclei per 1000um2``), never inside a word
    (``lumen``)."""
    return re.sub(r"(?<![a-z])um(2?)\b", lambda m: "µm²" if m.group(1) else "µm", name)


def _certainty(row: Mapping[Any, Any]) -> float | None:
    """How sure the machine was of this glomerulus (0 = a coin toss), or None if it gave no
    probabilities: the smallest margin of its lesion probabilities and detection probability."""
    margins = [
        abs(float(v) - 0.5) * 2
        for k, v in row.items()
        if (str(k).startswith("p_") or k == "probability") and not is_missing(v)
    ]
    return min(margins) if margins else None


def _exclusion(row: Mapping[Any, Any]) -> str:
    value = row.get("exclusion")
    if not is_missing(value) and str(value) in EXCLUSIONS:
        return str(value)
    return "ischemic" if _value(row.get("ischemic")) is True else ""


def glomerulus_record(
    row: Mapping[Any, Any], polygon: Any, thresholds: Mapping[str, float] | None, crop: bool
) -> dict[str, Any]:
    """One glomerulus as the page needs it (plain JSON)."""
    label = str(row.get("main_call"))
    return {
        "id": int(row["glomerulus_id"]),
        "x": _value(row.get("x")),
        "y": _value(row.get("y")),
        "area_um2": _value(row.get("area_um2")),
        "probability": _value(row.get("probability")),
        "calls": {lesion: _value(row.get(lesion)) for lesion in LESIONS},
        "p": {
            lesion: round(float(row[f"p_{lesion}"]), 3)
            for lesion in LESIONS
            if not is_missing(row.get(f"p_{lesion}"))
        },
        "extent": _value(row.get(LESION_EXTENT)),
        "exclusion": _exclusion(row),
        "main_call": label,
        "source": _value(row.get("source")),
        "measurements": _measurement_rows(row, thresholds),
        "certainty": _certainty(row),
        "outline": _outline(polygon),
        "crop": crop,
    }


def _component_rows(index: Mapping[str, Any], marks: Mapping[str, str]) -> list[dict[str, Any]]:
    rows = []
    for name, c in (index.get("components") or {}).items():
        rows.append(
            {
                "name": name,
                "label": COMPONENT_LABELS.get(name, name.replace("_", " ")),
                "n": c.get("n"),
                "N": c.get("N"),
                "n_not_assessed": c.get("n_not_assessed") or 0,
                "fraction": c.get("fraction"),
                "score": c.get("score"),
                "weight": c.get("weight"),
                "assessed": c.get("assessed"),
                "range": c.get("score_range"),
                "note": c.get("note"),
                "not_evaluable": None if c.get("assessed") else marks.get(name),
            }
        )
    return rows


def summary(
    scores: Mapping[str, Any], not_evaluable: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """The live summary: both indices with their components, the class, adequacy, uncertainty.

    ``not_evaluable`` (component -> reason, the biopsy's marks) is what the report words the
    indices with, so that the page and the report say the same of a marked gap.
    """
    marks = {k: v for k, v in (not_evaluable or {}).items() if v}
    out: dict[str, Any] = {}
    for key, name in (("activity_index", "ai"), ("chronicity_index", "ci")):
        index = scores[key]
        span = index.get("total_range")
        low = index["total"] if index.get("complete") or not span else span[0]
        out[name] = {
            "text": index_text(index, marks),
            # the report heading's §1.7 word, by its own function: "low (0–5)", or None
            "band": band_text(index),
            "low": low,
            "total": index.get("total"),
            "max": index.get("max"),
            "complete": bool(index.get("complete")),
            "range": span,
            "components": _component_rows(index, marks),
            "interval_95": (scores.get("uncertainty", {}).get(key) or {}).get("interval_95"),
        }
    klass = scores["isn_rps_class"]
    out["class"] = {
        "proposal": klass.get("proposal"),
        "label": klass.get("label"),
        "rationale": klass.get("rationale"),
        "needs_if_em": klass.get("needs_if_em") or [],
    }
    out["adequacy"] = dict(scores["adequacy"])
    out["pending_review"] = list(scores.get("pending_review") or [])
    return out


def addenda_rows(
    addenda: Sequence[Mapping[str, Any]], events: Sequence[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """The addenda, each saying whether its audit event carries a key's signature.

    ``addenda`` are the audit trail's addendum events in order (:func:`lnpath.verify` holds them
    to it), so the n-th addendum is the n-th such event; one without a signature must never read
    as signed beside a signed sign-out.
    """
    recorded = [e for e in events if e.get("event") == "addendum"]
    rows = []
    for number, entry in enumerate(addenda):
        event = recorded[number] if number < len(recorded) else {}
        rows.append({**entry, "signed": isinstance(event.get("signature"), dict)})
    return rows


def colours() -> dict[str, str]:
    """QuPath class -> CSS colour, the report's palette."""
    return {label: f"rgb({r},{g},{b})" for label, (r, g, b) in CLASS_COLOURS.items()}


def lesion_labels() -> list[dict[str, str]]:
    """The lesions in key order with their labels and digit keys."""
    return [
        {"key": key, "lesion": lesion, "label": LESION_LABELS[lesion]}
        for key, lesion in LESION_KEYS.items()
    ]
