"""The report's words: component and lesion names, the diagnosis line, index totals, status.

One place for how lnpath writes what pathologists write (spec §6), shared by the report, the
terminal summary and notebooks.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lnpath.core.vocabulary import LESION_LABELS, class_phrase

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
#: The glomerular lesions in the order pathologists list them (spec §6, item 3).
LESION_ORDER = (
    "endocapillary_hypercellularity",
    "neutrophils_karyorrhexis",
    "fibrinoid_necrosis",
    "hyaline_deposits",
    "cellular_crescent",
    "fibrocellular_crescent",
    "fibrous_crescent",
    "segmental_sclerosis",
    "global_sclerosis",
)
LESION_WORDS: dict[str, str] = {
    **{k: v.lower() for k, v in LESION_LABELS.items()},
    "neutrophils_karyorrhexis": "neutrophils / karyorrhexis",
    "hyaline_deposits": "hyaline deposits (wire loops, hyaline thrombi)",
}
#: The short names a gallery card uses.
LESION_SHORT: dict[str, str] = {
    "endocapillary_hypercellularity": "endocapillary",
    "neutrophils_karyorrhexis": "neutrophils",
    "fibrinoid_necrosis": "necrosis",
    "hyaline_deposits": "hyaline deposits",
    "cellular_crescent": "cellular crescent",
    "fibrocellular_crescent": "fibrocellular crescent",
    "fibrous_crescent": "fibrous crescent",
    "segmental_sclerosis": "segmental sclerosis",
    "global_sclerosis": "global sclerosis",
}
VESSEL_LABELS = {
    "arteries_sampled": "Arteries sampled",
    "intimal_fibrosis": "Arterial intimal fibrosis",
    "arteriolar_hyalinosis": "Arteriolar hyalinosis",
    "lupus_vasculopathy": "Lupus vasculopathy",
    "tma": "Thrombotic microangiopathy",
    "vasculitis": "Vasculitis",
}


def _label(name: str) -> str:
    return COMPONENT_LABELS.get(name, name.replace("_", " ").capitalize())


def _confirmed(result: Mapping[str, Any]) -> bool:
    return result.get("status") == "confirmed" and bool(result.get("confirmation"))


def _not_evaluable(result: Mapping[str, Any]) -> dict[str, str]:
    return dict((result.get("biopsy") or {}).get("not_evaluable") or {})


def index_text(index: Mapping[str, Any], not_evaluable: Mapping[str, str] | None = None) -> str:
    """``9/24``; an incomplete index as its range, ``0–21/24 (5 of 6 components not assessed)``;
    ``not evaluable (range 0–21/24; ...)`` once the pathologist marked every gap not evaluable.

    An unassessed component can only add to the total, so the assessed ones give the low end and
    the range's high end assumes the worst for each gap; a single number is never shown for an
    index that is not one.
    """
    if index.get("total") is None:  # e.g. an inadequate biopsy: counts only, by policy
        note = index.get("note")
        return f"not computed ({note})" if note else "not computed"
    top = index["max"]
    if index.get("complete"):
        return f"{index['total']}/{top}"
    missing = list(index.get("not_assessed", []))
    of = len(index["components"])
    span = index.get("total_range")
    whole = f"{span[0]}–{span[1]}/{top}" if span else f"{index['total']}/{top}"
    if missing and all(name in (not_evaluable or {}) for name in missing):
        return f"not evaluable (range {whole}; {len(missing)} of {of} components not evaluable)"
    return f"{whole} ({len(missing)} of {of} components not assessed)"


def status_text(result: Mapping[str, Any]) -> str:
    """``Electronically signed by NAME on DATE`` or the draft warning."""
    confirmation = result.get("confirmation")
    if _confirmed(result) and confirmation:
        when = _when(confirmation["confirmed_at"])
        return f"Electronically signed by {confirmation['pathologist']} on {when}"
    return "PROVISIONAL: computer-assisted draft pending pathologist review"


def _when(stamp: Any) -> str:
    text = str(stamp or "")
    return f"{text[:10]} {text[11:16]} UTC" if len(text) >= 16 else text


def final_class(result: Mapping[str, Any]) -> tuple[str | None, str]:
    """The class the report states and who set it: ``pathologist`` (override) or ``machine``."""
    override = result.get("class_override")
    if override and override.get("class"):
        return str(override["class"]), "pathologist"
    return result["scores"]["isn_rps_class"].get("proposal"), "machine"


def not_kidney(result: Mapping[str, Any]) -> str | None:
    """Why the section may not be a PAS-stained kidney (weak detections), or None."""
    for model in result.get("models") or []:
        quality = (model.get("run") or {}).get("detection_quality") or {}
        if quality.get("warning"):
            return str(quality["warning"])
    return None


def diagnosis_text(result: Mapping[str, Any]) -> str:
    """The primary diagnosis line in the RPS consensus order (spec §6): entity, class, indices."""
    reason = not_kidney(result)
    if reason:
        return f"Not evaluable: {reason}. No diagnosis is given."
    scores = result["scores"]
    klass, who = final_class(result)
    class_text = class_phrase(scores["isn_rps_class"], klass if who == "pathologist" else None)
    legacy = scores["isn_rps_class"].get("legacy_2003") or {}
    if legacy.get("label") and not result.get("class_override"):
        class_text += f" (ISN/RPS 2003: {legacy['label']})"
    gaps = _not_evaluable(result)
    return (
        f"Lupus nephritis, {class_text}; modified NIH (2018) activity index "
        f"{index_text(scores['activity_index'], gaps)}, chronicity index "
        f"{index_text(scores['chronicity_index'], gaps)}."
    )


def diagnosis_line(result: Mapping[str, Any]) -> str:
    """The diagnosis line and the sign-out status, for the terminal and notebooks."""
    return f"{diagnosis_text(result)} {status_text(result)}"
