"""What a pathologist states about the whole biopsy: IF/EM, vessels, class override, exclusions.

These are inputs no section image gives (spec §2.2: classes I, II and V need IF/EM; §6: vessels, IF
panel, EM deposits), entered by ``score_slide --biopsy``, ``lnpath review`` or the workstation and
kept in result.json (field layout: the shared contract in the layering notes). This module only
validates and normalises them, names them in plain words and maps them to the inputs the class
rules read; it knows nothing about files, so every layer can use it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import pandas as pd

from lnpath.core.errors import InputError
from lnpath.core.findings import is_missing
from lnpath.core.text import check_free_text
from lnpath.scoring.indices import ACTIVITY, CHRONICITY

__all__ = [
    "COMPONENTS",
    "EXCLUSIONS",
    "IF_INTENSITIES",
    "IF_LABELS",
    "STAIN_LABELS",
    "biopsy_changes",
    "class_inputs",
    "class_override",
    "counted_glomeruli",
    "exclusion",
    "merge_biopsy",
    "normalise_biopsy",
    "stain_panel",
    "stains_examined",
]

#: Index components that may be marked "not evaluable" (activity and chronicity, spec §1.2).
COMPONENTS: tuple[str, ...] = (*ACTIVITY, *CHRONICITY)
IF_LABELS: dict[str, str] = {
    "IgG": "IgG",
    "IgA": "IgA",
    "IgM": "IgM",
    "C3": "C3",
    "C1q": "C1q",
    "kappa": "κ",
    "lambda": "λ",
    "fibrin": "Fibrin",
}
IF_INTENSITIES = ("0", "trace", "1+", "2+", "3+")
#: The light-microscopy stains a pathologist examined (spec §3.3 asks for at least PAS and
#: trichrome or silver); the scanned slide is one of them, the others are read at the microscope.
STAIN_LABELS: dict[str, str] = {
    "PAS": "PAS",
    "HE": "H&E",
    "trichrome": "trichrome",
    "silver": "silver (Jones / PASM)",
}
_CONNECTIVE = frozenset({"trichrome", "silver"})
EXTENTS = ("segmental", "global")
INTIMAL_FIBROSIS = ("none", "mild", "moderate", "severe")
#: Exclusion kind -> what the report says; ``ischemic`` glomeruli stay in N but leave the class
#: fraction (spec §2.2 ``is_ischemic_non_LN``), ``not_glomerulus`` leaves every count.
EXCLUSIONS: dict[str, str] = {
    "not_glomerulus": "not a glomerulus",
    "ischemic": "ischemic / obsolescent, not lupus-related",
}
_SECTIONS: dict[str, dict[str, Any]] = {
    "membranous": {
        "present": bool,
        "extent": EXTENTS,
        "capillary_surface_fraction": float,
        "glomeruli_fraction": float,
    },
    "deposits": {"mesangial": bool, "subendothelial": bool, "subepithelial": bool},
    "if_panel": dict.fromkeys(IF_LABELS, IF_INTENSITIES),
    "stains_examined": dict.fromkeys(STAIN_LABELS, bool),
    "vessels": {
        "arteries_sampled": int,
        "intimal_fibrosis": INTIMAL_FIBROSIS,
        "arteriolar_hyalinosis": bool,
        "lupus_vasculopathy": bool,
        "tma": bool,
        "vasculitis": bool,
    },
}
_LABELS: dict[str, str] = {
    "membranous.present": "membranous component (IF/EM)",
    "membranous.extent": "membranous extent",
    "membranous.capillary_surface_fraction": "membranous: fraction of capillary surface",
    "membranous.glomeruli_fraction": "membranous: fraction of glomeruli",
    "deposits.mesangial": "mesangial deposits (IF/EM)",
    "deposits.subendothelial": "subendothelial deposits (IF/EM)",
    "deposits.subepithelial": "subepithelial deposits (IF/EM)",
    "mesangial_hypercellularity": "mesangial hypercellularity",
    "vessels.arteries_sampled": "arteries sampled",
    "vessels.intimal_fibrosis": "arterial intimal fibrosis",
    "vessels.arteriolar_hyalinosis": "arteriolar hyalinosis",
    "vessels.lupus_vasculopathy": "lupus vasculopathy",
    "vessels.tma": "thrombotic microangiopathy",
    "vessels.vasculitis": "vasculitis",
    **{f"if_panel.{k}": f"immunofluorescence {v}" for k, v in IF_LABELS.items()},
    **{f"stains_examined.{k}": f"stain examined: {v}" for k, v in STAIN_LABELS.items()},
}
#: The flat keys ``score-findings --biopsy`` has always taken, and where they live now.
_FLAT = {
    "membranous": ("membranous", "present"),
    "membranous_capillary_surface": ("membranous", "capillary_surface_fraction"),
    "membranous_glomeruli": ("membranous", "glomeruli_fraction"),
    "if_mesangial_deposits": ("deposits", "mesangial"),
}
_CLASS = re.compile(r"^(I|II|III|IV|V|VI)(-[SG])?( ?\((A|C|A/C)\))?(\+V)?$")


def _value(where: str, kind: Any, value: Any) -> Any:
    if value is None:
        return None
    if kind is bool:
        if not isinstance(value, bool):
            raise InputError(f"{where} must be true, false or null (got {value!r})")
        return value
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
            raise InputError(f"{where} must be a fraction in [0, 1] (got {value!r})")
        return float(value)
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise InputError(f"{where} must be a whole number >= 0 (got {value!r})")
        return value
    text = str(value).strip()
    if kind is IF_INTENSITIES and isinstance(value, int) and not isinstance(value, bool):
        text = "0" if value == 0 else f"{value}+"
    if text not in kind:
        raise InputError(f"{where} must be one of {', '.join(kind)} (got {value!r})")
    return text


def _reasons(where: str, value: Any) -> dict[str, str | None]:
    if not isinstance(value, Mapping):
        raise InputError(f"{where} must map an index component to the reason it is not evaluable")
    out: dict[str, str | None] = {}
    for name, reason in value.items():
        if name not in COMPONENTS:
            raise InputError(
                f"{where}: unknown index component {name!r} (known: {', '.join(COMPONENTS)})"
            )
        if reason is not None and (not isinstance(reason, str) or not reason.strip()):
            raise InputError(f"{where}.{name}: give the reason it is not evaluable")
        if reason is not None:
            check_free_text(reason, f"{where}.{name}")
        out[str(name)] = None if reason is None else " ".join(reason.split())
    return out


def normalise_biopsy(data: Any, where: str = "biopsy") -> dict[str, Any]:
    """A validated copy of biopsy-level inputs, in the result.json layout.

    Accepts the nested layout and the flat keys of ``score-findings --biopsy`` (``membranous:
    true``, ``if_mesangial_deposits``, ...). Only what was given is kept; a ``None`` value means
    "not stated" and, in ``not_evaluable``, removes the mark.

    Raises:
        InputError: unknown keys, wrong types, a "not evaluable" mark without a reason.
    """
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise InputError(f"{where}: expected a mapping of biopsy-level findings")
    out: dict[str, Any] = {}
    for key, value in data.items():
        if key in _FLAT and not isinstance(value, Mapping):
            section, name = _FLAT[key]
            kind = _SECTIONS[section][name]
            out.setdefault(section, {})[name] = _value(f"{where}: {key}", kind, value)
        elif key in _SECTIONS:
            if not isinstance(value, Mapping):
                raise InputError(f"{where}: {key} must be a mapping (got {value!r})")
            fields = _SECTIONS[key]
            section = out.setdefault(key, {})
            for name, item in value.items():
                if name not in fields:
                    raise InputError(
                        f"{where}: unknown {key} field {name!r} (known: {', '.join(fields)})"
                    )
                section[name] = _value(f"{where}: {key}.{name}", fields[name], item)
        elif key == "mesangial_hypercellularity":
            out[key] = _value(f"{where}: {key}", bool, value)
        elif key == "not_evaluable":
            out[key] = _reasons(f"{where}: not_evaluable", value)
        else:
            known = ", ".join([*_SECTIONS, "mesangial_hypercellularity", "not_evaluable"])
            raise InputError(f"{where}: unknown biopsy input {key!r} (known: {known})")
    return out


def merge_biopsy(current: Mapping[str, Any] | None, update: Mapping[str, Any]) -> dict[str, Any]:
    """``current`` with the fields of a normalised ``update`` set; None removes a mark."""
    merged: dict[str, Any] = {
        k: dict(v) if isinstance(v, Mapping) else v for k, v in (current or {}).items()
    }
    for key, value in update.items():
        if isinstance(value, Mapping):
            section = merged.setdefault(key, {})
            for name, item in value.items():
                if key == "not_evaluable" and item is None:
                    section.pop(name, None)
                else:
                    section[name] = item
        else:
            merged[key] = value
    return merged


def _flat(biopsy: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in biopsy.items():
        if isinstance(value, Mapping):
            for name, item in value.items():
                out[f"{key}.{name}"] = item
        else:
            out[key] = value
    return out


def label(field: str) -> str:
    """The plain-words name of a biopsy field (``if_panel.kappa`` -> ``immunofluorescence κ``)."""
    if field.startswith("not_evaluable."):
        return f"{field.split('.', 1)[1].replace('_', ' ')}: not evaluable"
    return _LABELS.get(field, field.replace("_", " ").replace(".", ": "))


def biopsy_changes(
    before: Mapping[str, Any] | None, after: Mapping[str, Any]
) -> list[tuple[str, Any, Any]]:
    """(field label, before, after) for every biopsy field that differs."""
    old, new = _flat(before or {}), _flat(after)
    return [
        (label(key), old.get(key), new.get(key))
        for key in sorted(set(old) | set(new))
        if old.get(key) != new.get(key)
    ]


def class_inputs(biopsy: Mapping[str, Any] | None) -> dict[str, Any]:
    """The biopsy-level inputs of the ISN/RPS class rules (spec §2.2), from the result layout.

    The membranous component is present when stated so, or when EM shows subepithelial deposits
    and nothing says otherwise.
    """
    biopsy = biopsy or {}
    membranous = biopsy.get("membranous") or {}
    deposits = biopsy.get("deposits") or {}
    present = membranous.get("present")
    if present is None and deposits.get("subepithelial") is not None:
        present = bool(deposits["subepithelial"])
    values = {
        "membranous": present,
        "membranous_capillary_surface": membranous.get("capillary_surface_fraction"),
        "membranous_glomeruli": membranous.get("glomeruli_fraction"),
        "if_mesangial_deposits": deposits.get("mesangial"),
        "mesangial_hypercellularity": biopsy.get("mesangial_hypercellularity"),
    }
    return {k: v for k, v in values.items() if v is not None}


def stains_examined(biopsy: Mapping[str, Any] | None) -> frozenset[str] | None:
    """The stains the pathologist says were examined; None when the panel was not recorded.

    A stain marked ``false`` was stated not examined, so a panel of only ``false`` marks is a
    recorded panel with nothing in it, not a missing one.
    """
    panel = (biopsy or {}).get("stains_examined") or {}
    if not any(v is not None for v in panel.values()):
        return None
    return frozenset(k for k, v in panel.items() if v)


def stain_panel(stains: frozenset[str]) -> bool:
    """Spec §3.3's minimum: PAS plus trichrome or silver."""
    return "PAS" in stains and bool(stains & _CONNECTIVE)


def class_override(value: Any, where: str = "class override") -> dict[str, str] | None:
    """A validated ``{"class": ..., "reason": ...}``; None (or an empty class) clears it.

    Raises:
        InputError: a class that is not an ISN/RPS class, or no reason.
    """
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise InputError(f"{where}: expected {{'class': ..., 'reason': ...}}")
    unknown = set(value) - {"class", "reason"}
    if unknown:
        raise InputError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
    klass = " ".join(str(value.get("class") or "").split())
    if not klass:
        return None
    klass = re.sub(r"\s*\+\s*", "+", klass)
    if not _CLASS.match(klass):
        raise InputError(
            f"{where}: {klass!r} is not an ISN/RPS class (I, II, III, IV, V, VI, III+V, IV+V, "
            "optionally with (A), (A/C) or (C))"
        )
    reason = value.get("reason")
    if not isinstance(reason, str) or not reason.strip():
        raise InputError(f"{where}: give the reason for overriding the class with {klass}")
    check_free_text(reason, f"{where}: the reason")
    return {"class": klass, "reason": " ".join(reason.split())}


def exclusion(value: Any, where: str = "exclusion") -> tuple[str, str]:
    """``(kind, reason)`` from ``"ischemic"``, ``"ischemic: obsolescent, hilar"`` or ``""``.

    An empty value clears the exclusion; the default reason is the kind in plain words.

    Raises:
        InputError: a kind other than those in :data:`EXCLUSIONS`.
    """
    text = "" if value is None else str(value).strip()
    kind, _, reason = text.partition(":")
    kind = kind.strip().lower().replace("-", "_").replace(" ", "_")
    if not kind:
        return "", ""
    kind = {"ischaemic": "ischemic", "obsolescent": "ischemic"}.get(kind, kind)
    if kind not in EXCLUSIONS:
        raise InputError(
            f"{where}: {value!r} is not an exclusion (known: {', '.join(EXCLUSIONS)}; ischemic "
            "covers ischaemic/obsolescent glomeruli, not lupus-related)"
        )
    return kind, " ".join(reason.split()) or EXCLUSIONS[kind]


def counted_glomeruli(table: pd.DataFrame) -> pd.DataFrame:
    """The rows the indices and the class count, read from an ``exclusion`` column.

    A result's findings.csv keeps the glomeruli a pathologist excluded, with the kind in
    ``exclusion``: a ``not_glomerulus`` row is no glomerulus and leaves every count (spec §1.4:
    N is the glomeruli evaluable by light microscopy), an ``ischemic`` one stays in N and
    becomes the ``ischemic`` flag the class fraction leaves out (spec §2.2). Without this the
    same table scored by ``lnpath score-findings`` would count what its result left out.

    Raises:
        InputError: an exclusion kind that is not one of :data:`EXCLUSIONS`.
    """
    if "exclusion" not in table:
        return table
    kinds = [
        "" if is_missing(v) else exclusion(v, f"glomerulus_id {gid!r}, exclusion")[0]
        for gid, v in zip(table["glomerulus_id"], table["exclusion"], strict=True)
    ]
    kind = pd.Series(kinds, index=table.index)
    rows = table[kind != "not_glomerulus"].copy()
    ischemic = kind[kind != "not_glomerulus"] == "ischemic"
    if ischemic.any():
        flag = rows["ischemic"] if "ischemic" in rows else pd.Series(pd.NA, index=rows.index)
        rows["ischemic"] = (flag.astype("boolean").fillna(False) | ischemic).astype("boolean")
    return rows.drop(columns=["exclusion"]).reset_index(drop=True)
