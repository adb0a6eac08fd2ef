"""The words lnpath shows for calls: lesion labels (QuPath classes), their colours, a main call.

One source for every room that names a call: the report, the QuPath export, review and the
workstation.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import pandas as pd

#: Lesion → QuPath class name, in the priority order that picks a glomerulus' main call: the call
#: that changes management most (global sclerosis, necrosis, crescents) names the glomerulus.
LESION_LABELS: dict[str, str] = {
    "global_sclerosis": "Global sclerosis",
    "fibrinoid_necrosis": "Fibrinoid necrosis",
    "cellular_crescent": "Cellular crescent",
    "fibrocellular_crescent": "Fibrocellular crescent",
    "fibrous_crescent": "Fibrous crescent",
    "segmental_sclerosis": "Segmental sclerosis",
    "endocapillary_hypercellularity": "Endocapillary hypercellularity",
    "neutrophils_karyorrhexis": "Neutrophils/karyorrhexis",
    "hyaline_deposits": "Hyaline deposits",
}
NO_LESION = "No lesion"
NOT_ASSESSED = "Not assessed"
CLASS_COLOURS: dict[str, tuple[int, int, int]] = {
    "Global sclerosis": (120, 120, 120),
    "Fibrinoid necrosis": (220, 0, 0),
    "Cellular crescent": (255, 120, 0),
    "Fibrocellular crescent": (230, 170, 0),
    "Fibrous crescent": (150, 90, 40),
    "Segmental sclerosis": (90, 90, 200),
    "Endocapillary hypercellularity": (200, 0, 160),
    "Neutrophils/karyorrhexis": (160, 0, 220),
    "Hyaline deposits": (0, 150, 200),
    NO_LESION: (0, 170, 0),
    NOT_ASSESSED: (230, 200, 0),
}


def main_call(calls: Mapping[Any, Any]) -> str:
    """The QuPath class of a glomerulus: its highest-priority positive call.

    A glomerulus with no positive call is ``No lesion`` if at least one lesion was assessed and
    ``Not assessed`` if none was, so that "nothing found" and "nothing looked at" never read alike.
    """
    assessed = False
    for lesion, label in LESION_LABELS.items():
        value = calls.get(lesion)
        if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
            continue
        assessed = True
        if bool(value):
            return label
    return NO_LESION if assessed else NOT_ASSESSED


def _class_words(klass: str) -> str:
    return klass.replace("+", " + ")


def class_phrase(klass: Mapping[str, Any], override: str | None = None) -> str:
    """The class part of the diagnosis line (spec §6), one wording for the report and the API.

    ``klass`` is the proposal's dict (``isn_rps_class``); ``override`` a pathologist's class,
    stated as it is. A machine proposal names the class its unassessed calls could still make
    it, so that "class III" never reads as settled while IV is open; a class open only on
    unassessed lesions says so, since IF/EM would not settle it.
    """
    if override:
        return f"ISN/RPS class {_class_words(override)}"
    if klass.get("proposal"):
        text = f"ISN/RPS class {_class_words(str(klass['proposal']))}"
        if klass.get("alternative"):
            names = " or ".join(_class_words(p) for p in str(klass["alternative"]).split(" or "))
            text += f", or {names} depending on lesions not assessed"
        return text
    if klass.get("determined", True) is False:
        label = str(klass.get("label") or "not determinable")
        return "ISN/RPS class " + label[0].lower() + label[1:]
    return "ISN/RPS class not determined by light microscopy (IF/EM needed)"
