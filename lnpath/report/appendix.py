"""The collapsed appendix: machine details (probabilities, measurements, provenance, notes)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from lnpath.core.findings import MASK_AREA, is_missing
from lnpath.core.vocabulary import LESION_LABELS
from lnpath.report.words import LESION_WORDS, _label, final_class


def _value_text(value: Any) -> str:
    if is_missing(value):
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


def _measure_table(findings: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    probs = [c for c in findings.columns if str(c).startswith("p_") and str(c)[2:] in LESION_LABELS]
    # one area per glomerulus, the outline's ("Area µm²"): the mask's differs a little
    measures = [c for c in findings.columns if str(c).startswith("m_") and c != MASK_AREA]
    head = ["Glomerulus", "Main finding", "Area µm²", "Detection probability"]
    head += [f"Probability: {LESION_WORDS[str(c)[2:]]}" for c in probs]
    head += [str(c)[2:].replace("_", " ") for c in measures]
    rows = []
    for row in findings.to_dict("records"):
        values = [
            row["glomerulus_id"],
            row["main_call"],
            row.get("area_um2"),
            row.get("probability"),
        ]
        values += [row.get(c) for c in probs] + [row.get(c) for c in measures]
        rows.append([_value_text(v) for v in values])
    return head, rows


def _provenance(result: Mapping[str, Any]) -> list[tuple[str, str]]:
    slide = result["slide"]
    fingerprint = slide.get("fingerprint") or {}
    whole = fingerprint.get("scheme", "sha256") == "sha256"
    rows = [
        ("Slide", str(slide.get("name"))),
        ("Path", str(slide.get("path"))),
        (
            "Slide file sha256 (whole file)" if whole else "Slide fingerprint (first and last MiB)",
            str(fingerprint.get("sha256")),
        ),
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


def _machine_notes(result: Mapping[str, Any], confirmed: bool) -> list[str]:
    scores = result["scores"]
    isn = scores["isn_rps_class"]
    _, source = final_class(result)
    machine = isn.get("proposal")
    notes = []
    if source == "pathologist":
        notes.append(
            "The class was set by the pathologist; the class rules alone gave "
            f"{machine or 'no class'}."
        )
    rationale = str(isn.get("rationale") or "")
    if rationale:
        notes.append(f"Class rules (light microscopy): {rationale}")
    uncertainty = scores.get("uncertainty") or {}
    if uncertainty.get("assumption"):
        notes.append(f"Sampling uncertainty: {uncertainty['assumption']}")
    for key in ("activity_index", "chronicity_index"):
        interval = (uncertainty.get(key) or {}).get("interval_95")
        if interval:
            notes.append(f"{_label(key)}: 95% sampling interval {interval[0]}–{interval[1]}.")
    near = [
        _label(n)
        for n, u in (uncertainty.get("components") or {}).items()
        if u.get("near_band_edge")
        and (
            scores["activity_index"]["components"].get(n)
            or scores["chronicity_index"]["components"].get(n)
            or {}
        ).get("n")
    ]
    if near:
        notes.append(f"One glomerulus could change the score band of: {', '.join(near)}.")
    text = [n for n in notes]
    if confirmed:  # the signed report states results, not proposals
        text = [
            t.replace("not proposed", "not assigned")
            .replace("proposal", "result")
            .replace("proposed", "assigned")
            for t in text
        ]
    return text


def _legacy(result: Mapping[str, Any]) -> dict[str, Any] | None:
    """The ISN/RPS 2003 label, shown only in the legacy mode that asks for it (spec §2.1)."""
    legacy = result["scores"]["isn_rps_class"].get("legacy_2003")
    if not legacy:
        return None
    return {
        "label": legacy.get("label") or "none",
        "rationale": legacy.get("rationale") or "",
        "undetermined": bool(legacy.get("label")) and not legacy.get("determined"),
    }
