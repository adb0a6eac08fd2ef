"""Pre-conditions of a response endpoint (spec §3.3): adequate biopsies, one index version and
set of rules, comparable stains, two different biopsies."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from lnpath.response.sides import BiopsySide
from lnpath.scoring.biopsy import STAIN_LABELS, stain_panel


@dataclass(frozen=True)
class Check:
    """One §3.3 pre-condition: passed, failed (a reason for not_evaluable) or not checkable."""

    name: str
    status: str  # "pass" | "fail" | "not_checked"
    message: str

    def to_dict(self) -> dict[str, str]:
        return {"name": self.name, "status": self.status, "message": self.message}


_IGNORED_CONFIG_KEYS = frozenset({"response_preset", "class_nomenclature", "presets"})
_CANONICAL = {
    "pas": "PAS",
    "he": "HE",
    "masson": "trichrome",
    "trichrome": "trichrome",
    "silver": "silver",
    "jones": "silver",
    "pasm": "silver",
}


def _stains(stain: str) -> frozenset[str]:
    text = stain.lower().replace("h&e", "he")
    return frozenset(s.strip() for s in re.split(r"[+,/;&]| and ", text) if s.strip())


def check_preconditions(bl: BiopsySide, fu: BiopsySide, params: Mapping[str, Any]) -> list[Check]:
    """The §3.3 pre-conditions, each as a :class:`Check`.

    Long because it holds one check per pre-condition of spec §3.3, in the spec's order.
    """
    checks: list[Check] = []

    def add(name: str, ok: bool | None, message: str) -> None:
        checks.append(
            Check(name, "not_checked" if ok is None else "pass" if ok else "fail", message)
        )

    if bl.patient_id and fu.patient_id:
        same = bl.patient_id.strip() == fu.patient_id.strip()
        add("same_patient", same, f"patient {bl.patient_id!r} vs {fu.patient_id!r}")
    else:
        add("same_patient", None, "patient id not recorded on both biopsies; not checked")

    if bl.slide_sha256 and fu.slide_sha256:
        same_slide = bl.slide_sha256 == fu.slide_sha256
        add(
            "different_biopsies",
            not same_slide,
            f"both results score the same slide file (sha256 {bl.slide_sha256[:16]}…): two "
            "readings of one biopsy, not a baseline and a follow-up"
            if same_slide
            else "different slide files",
        )
    else:
        add("different_biopsies", None, "slide fingerprint not recorded on both; not checked")

    if bl.biopsy_date and fu.biopsy_date:
        d0, d1 = bl.biopsy_date, fu.biopsy_date
        if d1 > d0:
            add("followup_after_baseline", True, f"{d0} → {d1} ({(d1 - d0).days} days)")
        elif d1 == d0:
            add("followup_after_baseline", False, f"both biopsies are dated {d0}")
        else:
            add(
                "followup_after_baseline",
                False,
                f"follow-up ({d1}) is dated before baseline ({d0}): refused, the two biopsies "
                "look swapped",
            )
    else:
        add("followup_after_baseline", None, "biopsy date not recorded on both; order not checked")

    for label, side in (("baseline", bl), ("follow-up", fu)):
        if side.confirmed:
            seal = side.seal_message or "not a result folder; seal not checked"
            who = side.confirmed_by or "unknown"
            add(
                f"{label.replace('-', '')}_confirmation_sealed",
                side.seal_verified,
                f"{label} confirmed by {who}: {seal}",
            )

    accepted = {"adequate", "limited"} if params["accept_limited_adequacy"] else {"adequate"}
    for label, side in (("baseline", bl), ("follow-up", fu)):
        n = side.n_glomeruli
        add(
            f"{label.replace('-', '')}_adequate",
            side.adequacy_status in accepted,
            f"{label}: {side.adequacy_status or 'adequacy unknown'}"
            + ("" if n is None else f" ({n} glomeruli)"),
        )

    if bl.nih_version and fu.nih_version:
        add(
            "same_nih_version",
            bl.nih_version == fu.nih_version,
            f"{bl.nih_version} vs {fu.nih_version}",
        )
    else:
        add("same_nih_version", False, "nih_version missing; scores of unknown version refused")

    cfg_bl = {k: v for k, v in bl.config.items() if k not in _IGNORED_CONFIG_KEYS}
    cfg_fu = {k: v for k, v in fu.config.items() if k not in _IGNORED_CONFIG_KEYS}
    diff = sorted(k for k in set(cfg_bl) | set(cfg_fu) if cfg_bl.get(k) != cfg_fu.get(k))
    add(
        "same_scoring_config",
        not diff,
        "identical scoring configuration" if not diff else f"differs in {', '.join(diff)}",
    )

    if params["require_same_software_version"]:
        if bl.lnpath_version and fu.lnpath_version:
            add(
                "same_software_version",
                bl.lnpath_version == fu.lnpath_version,
                f"lnpath {bl.lnpath_version} vs {fu.lnpath_version}",
            )
        else:
            add("same_software_version", None, "software version not recorded on both")
    if bl.models is not None and fu.models is not None:
        add(
            "same_models",
            bl.models == fu.models,
            "same models"
            if bl.models == fu.models
            else f"models differ: {[m[0] for m in bl.models]} vs {[m[0] for m in fu.models]}",
        )

    if bl.stain and fu.stain:
        add(
            "comparable_stains", _stains(bl.stain) == _stains(fu.stain), f"{bl.stain} vs {fu.stain}"
        )
    else:
        add("comparable_stains", None, "stain not recorded on both biopsies; not checked")
    for label, side in (("baseline", bl), ("follow-up", fu)):
        _stain_panel_check(label, side, params["require_stain_panel"], add)
    return checks


def _stain_panel_check(label: str, side: BiopsySide, required: bool, add: Any) -> None:
    """§3.3's minimum panel: decided from the stains the pathologist recorded as examined.

    The scanned slide is one stain; the others are read at the microscope, so a PAS slide alone
    says nothing against the panel. Unrecorded, the panel is not checked (a caveat says so)
    unless ``require_stain_panel`` asks for it on the slide's own stain.
    """
    name = f"{label.replace('-', '')}_stain_panel"
    needs = "needs PAS + trichrome or silver"
    slide = slide_stains(side.stain)
    if side.stains_examined is not None:
        panel = side.stains_examined | slide
        names = ", ".join(STAIN_LABELS.get(s, s) for s in sorted(panel)) or "none"
        add(name, stain_panel(panel), f"{label}: stains examined {names} ({needs})")
    elif stain_panel(slide):
        add(name, True, f"{label}: slide stained {side.stain}")
    elif required:
        slide_text = side.stain or "stain not recorded"
        add(name, False, f"{label}: {slide_text}, stains examined not recorded ({needs})")
    else:
        add(name, None, f"{label}: stains examined not recorded; panel not checked ({needs})")


def slide_stains(stain: str | None) -> frozenset[str]:
    """Canonical names of the stains a slide's stain field names (``PAS+trichrome``, ``Jones``)."""
    return frozenset(_CANONICAL.get(s, s) for s in _stains(stain or ""))


def has_stain_panel(side: BiopsySide) -> bool:
    """§3.3 minimum on everything known of one biopsy: the recorded panel and the slide's stain."""
    return stain_panel((side.stains_examined or frozenset()) | slide_stains(side.stain))
