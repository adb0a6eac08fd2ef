"""The report's sections in pathologists' order: light microscopy, the index tables with the
denominator of each component, IF/EM, vessels, and the change list (score-moving changes first).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from lnpath.core.findings import is_missing
from lnpath.report.words import (
    LESION_ORDER,
    LESION_WORDS,
    VESSEL_LABELS,
    _label,
    _not_evaluable,
    _when,
    index_text,
    not_kidney,
)
from lnpath.scoring.biopsy import EXCLUSIONS, IF_LABELS, class_inputs, stains_examined
from lnpath.scoring.classification import ACTIVE_LESIONS
from lnpath.scoring.indices import CORTEX_BASIS, INDEX_BANDS, index_band
from lnpath.scoring.legacy import CHRONIC_LESIONS
from lnpath.scoring.uncertainty import band_pct

# --------------------------------------------------------------------------------------------
# Report sections


def _pct(n: Any, total: Any) -> str:
    if not total or is_missing(n):
        return "—"
    return band_pct(float(n) / float(total))


def _fraction_pct(value: Any) -> str:
    if value is None or is_missing(value):
        return "—"
    return band_pct(float(value))


def _denominator(basis: str) -> str:
    basis = basis or "all glomeruli"
    return basis if basis.startswith("%") else f"of {basis}"


def _cortex_reason(cortex: Mapping[str, Any], name: str) -> str | None:
    """Why the cortex measurement did not grade a component (recorded with the measurement)."""
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


def _index_section(
    key: str,
    title: str,
    index: Mapping[str, Any],
    gaps: Mapping[str, str],
    cortex: Mapping[str, Any],
) -> dict[str, Any]:
    rows = []
    for name, comp in index["components"].items():
        assessed = bool(comp.get("assessed"))
        n, big_n = comp.get("n"), comp.get("N")
        glomerular = (
            n is not None and big_n is not None and not str(comp.get("basis", "")).startswith("%")
        )
        if assessed:  # a note names glomeruli not assessed inside a band they cannot change
            note, score = comp.get("note"), comp.get("score")
        elif name in gaps:
            note, score = f"not evaluable: {gaps[name]}", "not evaluable"
        else:
            reason = None if glomerular else _cortex_reason(cortex, name)
            why = f" ({reason})" if reason else ""
            note = f"not assessed{why}: supply it or mark it not evaluable"
            score = "not assessed"
        rows.append(
            {
                "label": _label(name),
                "count": f"{n}/{big_n}" if assessed and glomerular else "—",
                "denominator": _denominator(str(comp.get("basis") or "")),
                "pct": _fraction_pct(comp.get("fraction")) if assessed else "—",
                "score": score,
                "weight": comp.get("weight"),
                "points": comp.get("weighted") if assessed else "—",
                "note": note,
            }
        )
    total = f"{index['total']}/{index['max']}" if index.get("complete") else index_text(index, gaps)
    return {
        "id": key,
        "title": title,
        "text": index_text(index, gaps),
        "band": band_text(index),
        "rows": rows,
        "total": total,
    }


def band_text(index: Mapping[str, Any]) -> str | None:
    """``moderate (6–11)``: the §1.7 word a report gives its index, computed from the total (or
    from a range whose every total has that word), so results written before it carry it too."""
    top, total = index.get("max"), index.get("total")
    span = (total, total) if index.get("complete") else index.get("total_range")
    if top not in INDEX_BANDS or total is None or not span or None in span:
        return None
    words = {index_band(int(t), top) for t in span if t is not None}
    if len(words) != 1:
        return None
    (word,) = words
    edges = [lowest for lowest, _ in INDEX_BANDS[top]]  # from the top band down
    at = [w for _, w in INDEX_BANDS[top]].index(word)
    upper = top if at == 0 else edges[at - 1] - 1
    return f"{word} ({edges[at]}–{upper})"


def _scoring_rows(findings: pd.DataFrame) -> pd.DataFrame:
    if "exclusion" not in findings:
        return findings
    return findings[findings["exclusion"].fillna("") != "not_glomerulus"]


def _any(rows: pd.DataFrame, lesions: Sequence[str]) -> tuple[int, int]:
    """Glomeruli with any of ``lesions`` present, and those that might have one (unassessed)."""
    present = pd.Series(False, index=rows.index)
    unknown = pd.Series(False, index=rows.index)
    for lesion in lesions:
        if lesion not in rows:
            unknown |= True
            continue
        column = rows[lesion]
        present |= column.fillna(False).astype(bool)
        unknown |= column.isna()
    return int(present.sum()), int((unknown & ~present).sum())


def _light_microscopy(result: Mapping[str, Any], findings: pd.DataFrame) -> dict[str, Any]:
    scores = result["scores"]
    counts = scores.get("counts") or {}
    rows = _scoring_rows(findings)
    n = int(counts.get("n_glomeruli", len(rows)))
    lesions = counts.get("lesions") or {}
    kidney_doubt = not_kidney(result)
    lines = []
    if kidney_doubt:
        lines.append(
            f"The machine outlined {n} objects as glomeruli, but weakly: they may not be "
            "glomeruli, so no count is reported as such."
        )
    else:
        lines.append(
            f"{n} glomeruli counted: {counts.get('globally_sclerosed', 0)} globally sclerosed, "
            f"{counts.get('segmentally_sclerosed', 0)} segmentally sclerosed."
        )
    kinds = findings["exclusion"].fillna("") if "exclusion" in findings else None
    for kind, words in EXCLUSIONS.items():
        ids = (
            [] if kinds is None else [int(g) for g in findings.loc[kinds == kind, "glomerulus_id"]]
        )
        if ids:
            numbers = ", ".join(str(i) for i in ids)
            what = f"{len(ids)} glomerul{'us' if len(ids) == 1 else 'i'} (no. {numbers})"
            tail = (
                "left out of every count"
                if kind == "not_glomerulus"
                else "counted, but left out of the lupus class fraction"
            )
            lines.append(f"Marked {words}: {what}; {tail}.")
    adequacy = scores.get("adequacy") or {}
    if adequacy and not kidney_doubt:
        message = str(adequacy.get("message", "")).replace(">=", "at least")
        lines.append(f"Adequacy: {adequacy.get('status')}; {message}.")
    table = []
    for lesion in LESION_ORDER:
        c = lesions.get(lesion) or {}
        present, missing = c.get("present", 0), c.get("not_assessed", 0)
        if missing and missing == n:
            count, pct = "not assessed", "—"
        else:
            count = f"{present}/{n}" + (f" ({missing} not assessed)" if missing else "")
            pct = _pct(present, n)
        table.append({"label": LESION_WORDS[lesion].capitalize(), "count": count, "pct": pct})
    notes = []
    for words, group in (("active", ACTIVE_LESIONS), ("chronic", CHRONIC_LESIONS)):
        present, unknown = _any(rows, group)
        text = f"Glomeruli with {words} lesions: {_pct(present, n)} ({present}/{n})"
        if unknown:
            has = "glomerulus has" if unknown == 1 else "glomeruli have"
            text += f"; at least, as {unknown} more {has} {words} lesions not assessed"
        notes.append(text + ".")
    notes.append(
        "Sclerosed glomeruli are counted as lupus-related unless marked ischemic / obsolescent."
    )
    cortex = result.get("cortex_fractions") or {}
    for name, basis in CORTEX_BASIS.items():  # each figure with what it is a fraction of
        value = cortex.get(name)
        if value is not None:
            notes.append(f"{_cortex_label(name)}: {_fraction_pct(value)} {basis[2:]}.")
    return {"lines": lines, "rows": table, "notes": notes}


def _cortex_label(key: str) -> str:
    """``tubular_atrophy_cortex_area`` -> "Tubular atrophy" (its basis says the rest)."""
    for name in ("interstitial_inflammation", "tubular_atrophy"):
        if key.startswith(name):
            return _label(name)
    return _label(key)


def _yes_no(value: Any) -> str:
    if value is None:
        return "not reported"
    if isinstance(value, bool):
        return "present" if value else "absent"
    return str(value)


def _if_em(biopsy: Mapping[str, Any]) -> tuple[list[tuple[str, str]], list[str]]:
    panel = biopsy.get("if_panel") or {}
    rows = [(label, panel[key]) for key, label in IF_LABELS.items() if panel.get(key) is not None]
    lines = [] if rows else ["Immunofluorescence: not reported."]
    deposits = biopsy.get("deposits") or {}
    if any(v is not None for v in deposits.values()):
        parts = [
            f"{name} {_yes_no(deposits.get(name))}"
            for name in ("mesangial", "subendothelial", "subepithelial")
        ]
        lines.append("Immune deposits (IF/EM): " + "; ".join(parts) + ".")
    membranous = biopsy.get("membranous") or {}
    present = class_inputs(biopsy).get("membranous")  # as the class rules read it
    if present is not None:
        text = f"Membranous component: {_yes_no(present)}"
        extras = [] if membranous.get("present") is not None else ["from subepithelial deposits"]
        if membranous.get("extent"):
            extras.append(str(membranous["extent"]))
        if membranous.get("capillary_surface_fraction") is not None:
            extras.append(
                f"{_fraction_pct(membranous['capillary_surface_fraction'])} of capillary surface"
            )
        if membranous.get("glomeruli_fraction") is not None:
            extras.append(f"in {_fraction_pct(membranous['glomeruli_fraction'])} of glomeruli")
        lines.append(text + (f" ({', '.join(extras)})" if extras else "") + ".")
    else:
        lines.append(
            "Membranous component: not reported; classes I, II and V cannot be confirmed by light "
            "microscopy alone."
        )
    if biopsy.get("mesangial_hypercellularity") is not None:
        lines.append(
            f"Mesangial hypercellularity: {_yes_no(biopsy['mesangial_hypercellularity'])}."
        )
    return rows, lines


def _vessels(biopsy: Mapping[str, Any]) -> list[tuple[str, str]]:
    vessels = biopsy.get("vessels") or {}
    return [
        (label, _yes_no(vessels[key]))
        for key, label in VESSEL_LABELS.items()
        if vessels.get(key) is not None
    ]


# the re-scored class is the one the findings give; a class the pathologist sets is its own line
# ("class set by the pathologist"), so a bare "ISN/RPS class" beside a different diagnosis misleads
_FIELD_WORDS = {
    "ISN/RPS class proposal": "ISN/RPS class from the findings",
    "ISN/RPS class": "ISN/RPS class from the findings",
}
_VALUE_WORDS = {"not proposed": "none"}


def _change_text(change: Mapping[str, Any]) -> dict[str, Any]:
    field = str(change.get("field"))
    gid = change.get("glomerulus")
    return {
        "glomerulus": "biopsy" if gid is None else str(gid),
        "scored": change.get("source") == "re-scored",
        "field": _FIELD_WORDS.get(field, field),
        "before": _VALUE_WORDS.get(str(change.get("before")), str(change.get("before"))),
        "after": _VALUE_WORDS.get(str(change.get("after")), str(change.get("after"))),
    }


def _changes(
    result: Mapping[str, Any], audit: Sequence[Mapping[str, Any]]
) -> dict[str, list[dict[str, Any]]]:
    """Per revision: the changes that moved a score or the class (and biopsy-level entries)
    first, the glomerulus-level rest folded."""
    who = {}
    for event in audit:
        if event.get("event") == "reviewed":
            who[int(event.get("revision", 0))] = (event.get("by"), _when(event.get("at")))
    by_revision: dict[int, list[Mapping[str, Any]]] = {}
    for change in result.get("changes") or []:
        by_revision.setdefault(int(change.get("revision") or 0), []).append(change)
    merge = result.get("merge") or {}
    revisions = []
    for revision in sorted(by_revision, reverse=True):
        items = [_change_text(c) for c in by_revision[revision]]
        items.sort(key=lambda c: not c["scored"])  # what moved a score or the class first
        key = [
            f"{c['field']}: {c['before']} → {c['after']}"
            for c in items
            if c["glomerulus"] == "biopsy"
        ]
        other = [c for c in items if c["glomerulus"] != "biopsy"]
        refused = []
        if revision == result.get("revision"):
            refused = [
                f"glomerulus {r['glomerulus']} {r['field']}: export {r['export']}, "
                f"kept {r['current']}"
                for r in merge.get("refused") or []
                if r.get("resolution") == "current"
            ]
        by, at = who.get(revision, (None, None))
        revisions.append(
            {
                "revision": revision,
                "by": by,
                "at": at,
                "key": key,
                "other": other,
                "refused": refused,
            }
        )
    return {"revisions": revisions}


def _not_assessed(result: Mapping[str, Any], findings: pd.DataFrame) -> list[str]:
    """What a pathologist still has to supply before signing (provisional reports only)."""
    scores = result["scores"]
    gaps = _not_evaluable(result)
    items = []
    for key in ("activity_index", "chronicity_index"):
        for name in scores[key].get("not_assessed", []):
            reason = _cortex_reason(result.get("cortex") or {}, name)
            if name not in gaps and reason:
                items.append(
                    f"{_label(name)}: not assessed ({reason}); supply it or mark it not evaluable"
                )
            elif name not in gaps:
                items.append(
                    f"{_label(name)}: not assessed; supply it, or mark it not evaluable "
                    "with a reason"
                )
    biopsy = result.get("biopsy") or {}
    if class_inputs(biopsy).get("membranous") is None:
        items.append("Membranous component (class V) by IF/EM")
    if (biopsy.get("deposits") or {}).get("mesangial") is None:
        items.append("Mesangial immune deposits by IF (classes I and II)")
    if stains_examined(biopsy) is None:
        items.append(
            "Stains examined (a response endpoint needs PAS and trichrome or silver on both "
            "biopsies)"
        )
    if not biopsy.get("vessels"):
        items.append(
            "Vessels: arteries sampled, intimal fibrosis, arteriolar hyalinosis, lupus "
            "vasculopathy, thrombotic microangiopathy"
        )
    return items
