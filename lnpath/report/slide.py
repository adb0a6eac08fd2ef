"""The report a renal pathologist completes, signs and prints: one self-contained HTML file.

It reads like a pathology report (spec §6): a diagnosis block in the form pathologists write, light
microscopy counts, the activity and chronicity tables with the denominator of each component,
IF/EM, vessels, the comment and the sign-out block. Until a pathologist confirms it, it is marked a
draft; once confirmed it says who signed it and when, and no longer calls anything a proposal.
Machine details (probabilities, measurements, provenance, audit trail) sit in a collapsed appendix.
Images are inlined so the file can be mailed or archived alone; everything from a user is escaped
by Jinja2's autoescape, and nothing is inserted with ``|safe``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import jinja2
import pandas as pd
from shapely.geometry.base import BaseGeometry

from lnpath.core.views import css_text
from lnpath.report.appendix import _legacy, _machine_notes, _measure_table, _provenance
from lnpath.report.assets import Assets
from lnpath.report.charts import evidence_charts
from lnpath.report.images import (
    _gallery,
    _hex,
    _overview,
    never_assessed,
    overlay_image,
    render_overlay,
)
from lnpath.report.lesion_note import lesion_calls_note
from lnpath.report.sections import (
    _changes,
    _if_em,
    _index_section,
    _light_microscopy,
    _not_assessed,
    _vessels,
)
from lnpath.report.words import (
    COMPONENT_LABELS,
    LESION_WORDS,
    _confirmed,
    _not_evaluable,
    _when,
    diagnosis_line,
    diagnosis_text,
    index_text,
    not_kidney,
    status_text,
)
from lnpath.scoring.biopsy import STAIN_LABELS, stains_examined

__all__ = [
    "COMPONENT_LABELS",
    "diagnosis_line",
    "diagnosis_text",
    "index_text",
    "overlay_image",
    "render_overlay",
    "render_report",
    "status_text",
]

_ENV = jinja2.Environment(
    loader=jinja2.PackageLoader("lnpath.report", "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


def _stains_text(slide_stain: str | None, biopsy: Mapping[str, Any]) -> str:
    """The scanned slide's stain and, when recorded, every stain examined (spec §3.3's panel)."""
    text = f"Slide stain {slide_stain or 'not recorded'}"
    examined = stains_examined(biopsy)
    if examined is None:
        return text
    names = [STAIN_LABELS[k] for k in STAIN_LABELS if k in examined] or ["none recorded"]
    return f"{text}; stains examined: {', '.join(names)}"


def _print_footer(result: Mapping[str, Any]) -> str:
    """What every printed page says at its foot: which slide, which revision, signed or draft.

    The diagnosis block says it once, on page 1; a page printed or copied alone must still say
    whether it is a signed report or a draft.
    """
    parts = [f"Slide {result['slide'].get('name')}", f"revision {result.get('revision')}"]
    if result.get("patient_id"):
        parts.insert(0, f"Patient {result['patient_id']}")
    return css_text(" · ".join([*parts, status_text(result)]))


def _addenda(result: Mapping[str, Any], audit: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The addenda, each naming the signed revision it was added to when that is an earlier,
    superseded one (a revised report carries them, and they must not read as its own)."""
    revision_of = {
        (e.get("at"), e.get("by"), e.get("text")): e.get("revision")
        for e in audit
        if e.get("event") == "addendum"
    }
    rows = []
    for a in result.get("addenda") or []:
        revision = revision_of.get((a.get("at"), a.get("by"), a.get("text")))
        earlier = revision is not None and revision != result.get("revision")
        rows.append(
            {
                "text": a.get("text"),
                "by": a.get("by"),
                "at": _when(a.get("at")),
                "to": f"revision {revision}, a superseded sign-out" if earlier else None,
            }
        )
    return rows


def render_report(
    result: Mapping[str, Any],
    findings: pd.DataFrame,
    polygons: Mapping[int, BaseGeometry],
    assets: Assets,
    audit: Sequence[Mapping[str, Any]] = (),
    folder_name: str = "RESULT_DIR",
) -> str:
    """The complete ``report.html`` as a string (all images inline).

    Long because it assembles the template's context field by field, one line per field.
    """
    scores = result["scores"]
    confirmed = _confirmed(result)
    biopsy = result.get("biopsy") or {}
    gaps = _not_evaluable(result)
    doubt = not_kidney(result)
    lm = _light_microscopy(result, findings)
    if_rows, em_lines = _if_em(biopsy)
    counts = {str(k): int(v) for k, v in findings["main_call"].value_counts().items()}
    override = result.get("class_override") or {}
    notes = []
    if override.get("class"):
        notes.append(f"Class set by the pathologist: {override.get('reason')}")
    if not confirmed and not doubt:
        notes.append(
            "Computer-assisted light microscopy of one section; every value is a machine "
            "proposal until a pathologist signs the report."
        )
    confirmation = result.get("confirmation") or {}
    supersedes = result.get("supersedes")
    meta = [f"Slide {result['slide'].get('name')}"]
    if result.get("patient_id"):
        meta.insert(0, f"Patient {result['patient_id']}")
    if result.get("biopsy_date"):
        meta.append(f"Biopsy {result['biopsy_date']}")
    meta.append(_stains_text(result.get("stain"), biopsy))
    meta.append(f"Revision {result.get('revision')}")
    audit_rows = [
        {
            "revision": e.get("revision"),
            "event": e.get("event"),
            "at": _when(e.get("at")),
            "by": e.get("by") or "unknown (recorded before names were required)",
            "note": e.get("note") or "",
        }
        for e in audit
    ]
    head, rows = _measure_table(findings)
    context = {
        "title": f"Kidney biopsy report: {result['slide'].get('name')}",
        "heading": "Kidney biopsy: not evaluable"
        if doubt
        else (
            "Kidney biopsy report: lupus nephritis"
            if confirmed
            else "Kidney biopsy: lupus nephritis (draft for pathologist review)"
        ),
        "meta": meta,
        "status_class": "not-evaluable" if doubt else ("confirmed" if confirmed else "provisional"),
        "diagnosis": diagnosis_text(result),
        "diagnosis_notes": notes,
        "legacy": _legacy(result),
        "banner": None if confirmed else status_text(result),
        "supersedes": (
            f"This revision supersedes the confirmation by {supersedes.get('pathologist')} on "
            f"{_when(supersedes.get('confirmed_at'))} (revision {supersedes.get('revision')})."
            if supersedes
            else None
        ),
        "warnings": [w for w in result.get("warnings") or [] if w != doubt],
        "lm_lines": lm["lines"],
        "lesion_rows": lm["rows"],
        "lm_notes": lm["notes"],
        "indices": [
            _index_section(
                "activity",
                "Modified NIH activity index",
                scores["activity_index"],
                gaps,
                result.get("cortex") or {},
            ),
            _index_section(
                "chronicity",
                "Modified NIH chronicity index",
                scores["chronicity_index"],
                gaps,
                result.get("cortex") or {},
            ),
        ],
        "if_rows": if_rows,
        "em_lines": em_lines,
        "vessel_rows": _vessels(biopsy),
        "comment": result.get("comment"),
        "addenda": _addenda(result, audit),
        "print_footer": _print_footer(result),
        "signature": {
            "signed": confirmed,
            "by": confirmation.get("pathologist"),
            "on": _when(confirmation.get("confirmed_at")),
            "note": confirmation.get("note"),
            "seal": confirmation.get("sha256"),
            "revision": result.get("revision"),
            "pending": "A pathologist must review and confirm this draft (lnpath confirm).",
        },
        "overview": _overview(result, findings, polygons, assets),
        "legend": [
            {"name": name, "colour": _hex(name), "n": n} for name, n in sorted(counts.items())
        ],
        "gallery": _gallery(findings, polygons, assets),
        "never_assessed": [LESION_WORDS[k] for k in never_assessed(findings)],
        "lesion_calls": lesion_calls_note(result),
        "changes": _changes(result, audit),
        "machine": {
            "notes": _machine_notes(result, confirmed),
            "pending": [] if confirmed else _not_assessed(result, findings),
            "charts": evidence_charts(result, findings),
            "table_head": head,
            "table_rows": rows,
            "provenance": _provenance(result),
            "audit": audit_rows,
            "config": json.dumps(result.get("config"), indent=2, ensure_ascii=False, default=str),
        },
        "folder_name": folder_name,
    }
    return _ENV.get_template("report.html").render(**context)
