"""The ISN/RPS 2003 label of a 2018 class proposal, for older trial protocols (spec §2.1).

Only in the explicit ``class_nomenclature: legacy_2003`` mode: classes III and IV get the A,
A/C or C suffix, and class IV the IV-S / IV-G split that the 2018 revision dropped.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from lnpath.core.errors import InputError
from lnpath.scoring.classification import ACTIVE_LESIONS, LN_LESIONS, kleene_any
from lnpath.scoring.config import ScoringConfig

__all__ = ["CHRONIC_LESIONS", "legacy_2003_label"]

#: ISN/RPS 2003 chronic glomerular lesions (with fibrous adhesions, an optional flag).
CHRONIC_LESIONS = ("segmental_sclerosis", "global_sclerosis", "fibrous_crescent")
_SUFFIX_ORDER = ("A", "A/C", "C")


def legacy_2003_label(
    table: pd.DataFrame, proposal: str | None, cfg: ScoringConfig
) -> dict[str, Any]:
    """The ISN/RPS 2003 label of a 2018 proposal (Weening 2004; spec §2.1, legacy mode only).

    Classes III and IV get the activity suffix: ``A`` (active lesions only), ``A/C`` (active and
    chronic) or ``C`` (chronic, inactive), from :data:`ACTIVE_LESIONS` and
    :data:`CHRONIC_LESIONS` (plus the ``adhesion`` flag). Class IV is split by the extent of the
    lesions in the involved glomeruli: IV-S when at least half have segmental lesions (< half of the
    tuft), IV-G when at least half have global ones. Extent comes from the ``lesion_extent``
    column; a globally sclerosed glomerulus is global, and one whose only lesion is segmental
    sclerosis is segmental. Where unassessed lesions or unrecorded extents leave the answer open,
    every label they allow is listed ("A or A/C") and ``determined`` is false. Other classes keep
    their 2018 name, which 2003 shares.

    Returns:
        ``label`` (e.g. ``IV-G (A/C)``), ``suffix``, ``subclass`` (``S``, ``G`` or None),
        ``determined`` and ``rationale``.
    """
    if proposal is None:
        return {
            "label": None,
            "suffix": None,
            "subclass": None,
            "determined": False,
            "rationale": "no class proposed",
        }
    prolif = next((c for c in ("IV", "III") if proposal.split("+")[0] == c), None)
    if prolif is None:
        return {
            "label": proposal,
            "suffix": None,
            "subclass": None,
            "determined": True,
            "rationale": f"class {proposal} is named alike in 2003",
        }
    ischemic = pd.Series(False, index=table.index)
    if cfg.ischemic_exclusion and "ischemic" in table:
        ischemic = table["ischemic"].fillna(False).astype(bool)
    rows = table[~ischemic]
    active = _biopsy_any(kleene_any(rows, ACTIVE_LESIONS))
    chronic_rows = kleene_any(rows, CHRONIC_LESIONS)
    if "adhesion" in rows:
        chronic_rows = chronic_rows | rows["adhesion"].fillna(False).astype("boolean")
    chronic = _biopsy_any(chronic_rows)
    suffixes = _suffixes(active, chronic)
    steps = [
        f"active lesions {_kleene_text(active)}, chronic lesions {_kleene_text(chronic)}"
        + (" (some not assessed)" if None in (active, chronic) else "")
    ]
    subclass: str | None = None
    head: str = prolif
    if prolif == "IV":
        adhesion = cfg.adhesion_as_sclerosis and "adhesion" in rows
        subclasses, extent_step = _iv_extent(rows, adhesion)
        steps.append(extent_step)
        head = " or ".join(f"IV-{c}" for c in subclasses)
        subclass = subclasses[0] if len(subclasses) == 1 else None
    suffix = suffixes[0] if len(suffixes) == 1 else None
    tail = " + V" if proposal.endswith("+V") else ""
    return {
        "label": f"{head} ({' or '.join(suffixes)}){tail}",
        "suffix": suffix,
        "subclass": subclass,
        "determined": suffix is not None and (prolif == "III" or subclass is not None),
        "rationale": "; ".join(steps),
    }


def _biopsy_any(per_glomerulus: pd.Series) -> bool | None:
    """True if any glomerulus has the lesion, False if none can, None if unassessed ones decide."""
    if bool(per_glomerulus.fillna(False).any()):
        return True
    return None if bool(per_glomerulus.isna().any()) else False


def _kleene_text(value: bool | None) -> str:
    return "present" if value else "absent" if value is False else "undetermined"


def _suffixes(active: bool | None, chronic: bool | None) -> list[str]:
    """Every 2003 suffix the (possibly unassessed) presence of lesions allows, in 2003 order."""
    options = {
        {(True, True): "A/C", (True, False): "A", (False, True): "C"}[(a, c)]
        for a in ((True, False) if active is None else (active,))
        for c in ((True, False) if chronic is None else (chronic,))
        if a or c
    }
    return [s for s in _SUFFIX_ORDER if s in options]


def _iv_extent(rows: pd.DataFrame, adhesion: bool) -> tuple[list[str], str]:
    """IV-S / IV-G from the extent of the involved glomeruli's lesions (ties give both).

    ``adhesion``: adhesions count as involvement (``adhesion_as_sclerosis``), as segmental lesions.
    """
    scars = ("segmental_sclerosis", "adhesion") if adhesion else ("segmental_sclerosis",)
    involved = rows[kleene_any(rows, (*LN_LESIONS, *scars[1:])).fillna(False).astype(bool)]
    extent = (
        involved["lesion_extent"].astype("string")
        if "lesion_extent" in involved
        else pd.Series(pd.NA, index=involved.index, dtype="string")
    )
    is_global = involved["global_sclerosis"].fillna(False).astype(bool)
    contradicted = is_global & (extent == "segmental").fillna(False).astype(bool)
    if contradicted.any():
        gid = involved.loc[contradicted, "glomerulus_id"].iloc[0]
        raise InputError(
            f"glomerulus {gid}: lesion_extent 'segmental' contradicts global_sclerosis"
        )
    others = [c for c in LN_LESIONS if c not in ("segmental_sclerosis", "global_sclerosis")]
    only_segmental_sclerosis = kleene_any(involved, scars).fillna(False).astype(bool) & (
        ~kleene_any(involved, tuple(others)).fillna(True).astype(bool)
    )
    glob = is_global | (extent == "global").fillna(False).astype(bool)
    seg = ~glob & ((extent == "segmental").fillna(False).astype(bool) | only_segmental_sclerosis)
    n, n_seg, n_glob = len(involved), int(seg.sum()), int(glob.sum())
    unknown = n - n_seg - n_glob
    outcomes = set()
    for k in range(unknown + 1):  # k unrecorded glomeruli segmental, the rest global
        s, g = n_seg + k, n_glob + unknown - k
        outcomes |= {"S"} if 2 * s >= n else set()
        outcomes |= {"G"} if 2 * g >= n else set()
    step = f"of {n} involved glomeruli {n_seg} segmental, {n_glob} global"
    if unknown:
        step += f", {unknown} without a recorded extent (lesion_extent)"
    if 2 * n_seg == n == 2 * n_glob:
        step += "; exactly half are segmental, so both IV-S and IV-G apply"
    return [c for c in ("S", "G") if c in outcomes], step
