"""The edits a page sends, validated, and the findings table they give.

The same table is what a preview scores and what a save hands to :func:`lnpath.review`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd

from lnpath.core.errors import InputError
from lnpath.core.findings import LESION_EXTENT, LESIONS, is_missing
from lnpath.scoring.biopsy import class_inputs
from lnpath.workstation.records import EXCLUSIONS

# --------------------------------------------------------------------------------------------
# Edits from the page


@dataclass
class PageEdits:
    """What the page sends: per-glomerulus values, drawn outlines and biopsy-level fields.

    Only what the pathologist touched is present; ``None`` fields were not edited.
    """

    base_revision: int
    glomeruli: dict[int, dict[str, Any]]
    added: list[list[tuple[float, float]]]
    cortex: dict[str, float | None] | None
    biopsy: dict[str, Any] | None
    class_override: dict[str, Any] | None
    comment: str | None
    pathologist: str
    note: str | None

    @classmethod
    def parse(cls, body: Any) -> PageEdits:
        """Validate the JSON body of a preview or save."""
        if not isinstance(body, dict):
            raise InputError("edits: expected a JSON object")
        _check_shape(body)
        try:
            glomeruli = {
                int(gid): dict(values) for gid, values in (body.get("glomeruli") or {}).items()
            }
            added = [[(float(x), float(y)) for x, y in poly] for poly in body.get("added") or []]
            base = int(body["base_revision"])
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"edits: malformed ({type(exc).__name__}: {exc})") from None
        for poly in added:
            if len(poly) < 3:
                raise InputError("edits: a drawn glomerulus needs at least three points")
        for gid, values in glomeruli.items():
            unknown = set(values) - {*LESIONS, "extent", "exclusion"}
            if unknown:
                raise InputError(f"edits: G{gid}: unknown field(s) {', '.join(sorted(unknown))}")
            if values.get("exclusion", "") not in ("", *EXCLUSIONS):
                raise InputError(f"edits: G{gid}: unknown exclusion {values['exclusion']!r}")
            for lesion in LESIONS:
                if values.get(lesion) not in (True, False, None):
                    raise InputError(
                        f"edits: G{gid}: {lesion} must be true, false or null, "
                        f"not {values[lesion]!r}"
                    )
        override = body.get("class_override") or {}
        if (
            not str(override.get("class") or "").strip()
            and str(override.get("reason") or "").strip()
        ):
            # review takes an empty class for "clear the override": the reason would be dropped
            raise InputError(
                "class override: choose the class the reason is for (a reason alone is not "
                "recorded)"
            )
        pathologist = str(body.get("pathologist") or "").strip()
        return cls(
            base_revision=base,
            glomeruli=glomeruli,
            added=added,
            cortex=body.get("cortex"),
            biopsy=body.get("biopsy"),
            class_override=body.get("class_override"),
            comment=body.get("comment"),
            pathologist=pathologist,
            note=body.get("note") or None,
        )


#: The body's fields, the JSON type each may take (or null: not edited) and its name in words.
_SHAPES: dict[str, tuple[type, str]] = {
    "glomeruli": (dict, "an object"),
    "added": (list, "a list"),
    "cortex": (dict, "an object"),
    "biopsy": (dict, "an object"),
    "class_override": (dict, "an object"),
    "comment": (str, "text"),
    "pathologist": (str, "text"),
    "note": (str, "text"),
}


def _check_shape(body: Mapping[str, Any]) -> None:
    """Refuse a field of the wrong JSON type with one line, before it reaches pandas or review
    (where a list for an object, or ``"no"`` for ``false``, failed late or meant the opposite)."""
    for name, (kind, wanted) in _SHAPES.items():
        value = body.get(name)
        if value is not None and not isinstance(value, kind):
            raise InputError(f"edits: {name} must be {wanted} (or null), not {value!r:.60}")
    for gid, values in (body.get("glomeruli") or {}).items():
        if not isinstance(values, dict):
            raise InputError(f"edits: G{gid}: expected an object of lesion calls")


def edited_table(table: pd.DataFrame, edits: PageEdits) -> pd.DataFrame:
    """The findings table with the page's per-glomerulus values applied (ids unchanged)."""
    table = table.copy()
    # a saved table leaves the column empty (NaN) where nothing is excluded: "" everywhere, so
    # that an empty cell is never taken for an exclusion named "nan" by the next save
    table["exclusion"] = (
        table["exclusion"].map(lambda v: "" if is_missing(v) else str(v)).astype(object)
        if "exclusion" in table
        else ""
    )
    for gid, values in edits.glomeruli.items():
        index = table.index[table["glomerulus_id"] == gid]
        if index.empty:
            raise InputError(f"edits: G{gid} is not in this revision (reload the page)")
        for lesion in LESIONS:
            if lesion in values:
                value = values[lesion]
                table.loc[index, lesion] = pd.NA if value is None else bool(value)
        if "extent" in values:
            if LESION_EXTENT not in table:
                table[LESION_EXTENT] = pd.array([pd.NA] * len(table), dtype="string")
            table.loc[index, LESION_EXTENT] = values["extent"] or pd.NA
        if "exclusion" in values:
            table.loc[index, "exclusion"] = values["exclusion"] or ""
    return table


def scoring_view(table: pd.DataFrame, edits: PageEdits) -> pd.DataFrame:
    """What scoring sees: not-a-glomerulus rows left out, ischemic ones flagged, drawn ones added
    (with every lesion not assessed until the save measures them)."""
    excluded = table["exclusion"].fillna("")
    view = table[excluded != "not_glomerulus"].copy()
    if "ischemic" not in view:
        view["ischemic"] = pd.array([pd.NA] * len(view), dtype="boolean")
    view.loc[excluded[view.index] == "ischemic", "ischemic"] = True
    start = int(table["glomerulus_id"].max() if len(table) else 0) + 1
    rows = [{"glomerulus_id": start + i} for i in range(len(edits.added))]
    if rows:
        view = pd.concat([view, pd.DataFrame(rows)], ignore_index=True)
    keep = ["glomerulus_id", *LESIONS, "ischemic", LESION_EXTENT]
    keep += [c for c in view.columns if str(c).startswith(("p_", "m_"))]
    return view[[c for c in keep if c in view]]


def biopsy_inputs(biopsy: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The sign-out ``biopsy`` fields that score_findings' class proposal reads.

    The review's own mapping (:func:`lnpath.scoring.biopsy.class_inputs`), so that the preview
    proposes the class the save will: a copy of it here missed that subepithelial deposits
    stand for the membranous component when it is not stated (the preview said I, the save V).
    """
    return class_inputs(biopsy) or None
