"""The edits a page sends, validated, and the findings table they give.

The same table is what a preview scores and what a save hands to :func:`lnpath.review`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd

from lnpath.core.errors import InputError
from lnpath.core.findings import LESION_EXTENT, LESIONS, is_missing
from lnpath.results.edits import CORTEX_FIELDS
from lnpath.scoring.biopsy import class_inputs
from lnpath.scoring.biopsy import class_override as valid_override
from lnpath.workflow.revision import ReviewRequest
from lnpath.workstation.records import EXCLUSIONS

# --------------------------------------------------------------------------------------------
# Edits from the page


class TooLarge(InputError):
    """A request body over :data:`MAX_BODY`: no edit the page makes comes near it."""


#: The largest request body read: a comment is at most 20,000 characters and a drawn outline a
#: few hundred points, so 8 MiB is far beyond any page's edits yet bounds what one request holds.
MAX_BODY = 8 * 2**20


@dataclass
class PageEdits:
    """What the page sends: per-glomerulus values, drawn outlines and biopsy-level fields.

    Only what the pathologist touched is present; ``None`` fields were not edited.
    """

    base_revision: int
    #: the ``created_at`` of the scoring the page shows: a folder scored anew at the same path
    #: counts its revisions from 1 again, so the revision alone cannot tell it from the one seen
    base_created: str | None
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
        glomeruli = {
            _glomerulus_id(gid): dict(values)
            for gid, values in (body.get("glomeruli") or {}).items()
        }
        added = [_drawn(number, poly) for number, poly in enumerate(body.get("added") or [], 1)]
        base = base_revision(body)
        for gid, values in glomeruli.items():
            unknown = set(values) - {*LESIONS, "extent", "exclusion"}
            if unknown:
                raise InputError(f"edits: G{gid}: unknown field(s) {', '.join(sorted(unknown))}")
            if not isinstance(values.get("extent") or "", str):
                raise InputError(f"edits: G{gid}: extent must be text or null")
            if values.get("exclusion", "") not in ("", *EXCLUSIONS):
                raise InputError(f"edits: G{gid}: unknown exclusion {_json(values['exclusion'])}")
            for lesion in LESIONS:
                if values.get(lesion) not in (True, False, None):
                    raise InputError(
                        f"edits: G{gid}: {lesion} must be true, false or null, "
                        f"not {_json(values[lesion])}"
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
        _check_as_review(body)
        pathologist = str(body.get("pathologist") or "").strip()
        return cls(
            base_revision=base,
            base_created=body.get("base_created"),
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
    "base_created": (str, "text"),
}


def _check_shape(body: Mapping[str, Any]) -> None:
    """Refuse a field of the wrong JSON type with one line, before it reaches pandas or review
    (where a list for an object, or ``"no"`` for ``false``, failed late or meant the opposite)."""
    for name, (kind, wanted) in _SHAPES.items():
        value = body.get(name)
        if value is not None and not isinstance(value, kind):
            raise InputError(f"edits: {name} must be {wanted} (or null), not {_json(value)}")
    for gid, values in (body.get("glomeruli") or {}).items():
        if not isinstance(values, dict):
            raise InputError(f"edits: G{gid}: expected an object of lesion calls")
    # review's own rules, here so that the preview refuses what the save would (it warned and
    # scored an unknown cortex field, where the save refused it)
    for name, value in (body.get("cortex") or {}).items():
        if name not in CORTEX_FIELDS:
            raise InputError(
                f"cortex: unknown field {_json(name)} (known: {', '.join(CORTEX_FIELDS)})"
            )
        if value is not None and not (_number(value) and 0 <= value <= 1):
            raise InputError(f"cortex: {name} = {_json(value)} is not a fraction in [0, 1]")
    for name, value in (body.get("class_override") or {}).items():
        if value is not None and not isinstance(value, str):
            raise InputError(f"class override: {name} must be text, not {_json(value)}")


def _check_as_review(body: Mapping[str, Any]) -> None:
    """Review's own checks of the class override, comment and note, run when the edits are
    parsed: the preview accepted a class "VII", an override without its reason and a comment
    holding a control character, each of which the save then refused."""
    request = ReviewRequest(
        class_override=body.get("class_override"),
        comment=body.get("comment"),
        note=body.get("note") or None,
    )
    request.check()
    valid_override(request.class_override)


def _number(value: Any) -> bool:
    """A finite JSON number (``true`` is no number, though Python counts it as 1)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _json(value: Any) -> str:
    """A value as the page sent it (JSON, cut short), for a refusal: its Python spelling
    (``None``, ``True``, ``{'a': 1}``) is not what anyone typed or sent."""
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= 40 else f"{text[:39]}…"


def _glomerulus_id(gid: str) -> int:
    """A ``glomeruli`` key as the glomerulus id (``int()`` said "invalid literal ... base 10")."""
    if not (gid.isascii() and gid.strip().isdigit()):
        raise InputError(f"edits: glomeruli: {_json(gid)} is not a glomerulus id (a whole number)")
    return int(gid)


def _drawn(number: int, poly: Any) -> list[tuple[float, float]]:
    """One drawn outline as its points, refused in words: a bare number, a point of three
    coordinates or a text coordinate was refused as Python's unpacking error ("cannot unpack
    non-iterable int object"); NaN or infinity reached shapely as a server error."""
    where = f"drawn glomerulus {number}"
    if not isinstance(poly, list):
        raise InputError(f"{where}: must be a list of points [[x, y], ...], not {_json(poly)}")
    for k, point in enumerate(poly, 1):
        if not (isinstance(point, list) and len(point) == 2 and all(map(_number, point))):
            raise InputError(
                f"{where}: each point must be a pair of finite numbers [x, y] "
                f"(point {k} is {_json(point)})"
            )
    if len(poly) < 3:
        raise InputError(f"{where}: an outline needs at least three points")
    return [(float(x), float(y)) for x, y in poly]


def base_revision(body: Mapping[str, Any]) -> int:
    """The ``base_revision`` the edits, sign-out or addendum were made on, as a whole number
    (``int()`` took 1.5, ``true`` and ``"1"`` for revision 1, and saved on them)."""
    value = body.get("base_revision")
    if isinstance(value, bool) or not isinstance(value, int):
        raise InputError(f"base_revision must be a whole number, not {_json(value)} (reload)")
    return value


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


def text_field(body: dict[str, Any], name: str) -> str:
    """A text field of a sign-out or addendum ("" when absent): a list or an object was signed as
    its Python spelling (``['Dr A']``)."""
    value = body.get(name)
    if value is not None and not isinstance(value, str):
        raise InputError(f"{name} must be text, not {_json(value)}")
    return value or ""


def base_of(body: dict[str, Any]) -> tuple[int, str | None]:
    """The revision and scoring (``created_at``) a sign-out or addendum was made on."""
    created = body.get("base_created")
    if created is not None and not isinstance(created, str):
        raise InputError(f"base_created must be text, not {_json(created)} (reload)")
    return base_revision(body), created
