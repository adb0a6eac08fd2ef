"""One review, piece by piece: who, what was asked, the edits applied and the fields it sets.

:func:`lnpath.workflow.signoff.review` is the entry point; this module holds its parts so that
signoff stays about the rules (who may write a revision, when a result may be signed).
"""

from __future__ import annotations

import logging
import math
import numbers
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from lnpath.analysis.glomeruli import Glomerulus
from lnpath.core.args import check_flag
from lnpath.core.errors import InputError, LnpathError, SignOutRefused
from lnpath.core.findings import LESIONS
from lnpath.core.text import check_free_text, check_name
from lnpath.report.assets import Assets
from lnpath.report.slide import index_text
from lnpath.results.edits import (
    KEEP_COLUMNS,
    Edit,
    as_text,
    same_value,
)
from lnpath.results.folder import (
    load_result_json,
    read_audit,
    read_findings_csv,
    read_polygons,
)
from lnpath.results.merge import check_stamp, merge_stale
from lnpath.results.stamp import read_stamp
from lnpath.scoring.biopsy import (
    biopsy_changes,
    merge_biopsy,
    normalise_biopsy,
)
from lnpath.scoring.biopsy import class_override as valid_override
from lnpath.wsi.slide import open_slide

LOG = logging.getLogger(__name__)


def _scoring_table(table: pd.DataFrame) -> pd.DataFrame:
    """The rows and columns scoring reads: "not a glomerulus" rows leave every count, and an
    ischemic exclusion is the ``ischemic`` flag the class rules leave out (spec §2.2)."""
    rows = table
    if "exclusion" in table:
        kind = table["exclusion"].fillna("").astype(str)
        rows = table[kind != "not_glomerulus"].copy()
        ischemic = kind[kind != "not_glomerulus"] == "ischemic"
        if ischemic.any():
            flag = rows["ischemic"] if "ischemic" in rows else pd.Series(pd.NA, index=rows.index)
            rows["ischemic"] = (flag.astype("boolean").fillna(False) | ischemic).astype("boolean")
    keep = [c for c in rows.columns if c in KEEP_COLUMNS or c.startswith(("p_", "m_"))]
    return rows[keep].reset_index(drop=True)


def _summary_changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[dict[str, Any]]:
    pairs = [
        ("glomeruli", old["adequacy"]["n_glomeruli"], new["adequacy"]["n_glomeruli"]),
        (
            "ISN/RPS class",
            old["isn_rps_class"]["proposal"] or "none",
            new["isn_rps_class"]["proposal"] or "none",
        ),
        ("activity index", index_text(old["activity_index"]), index_text(new["activity_index"])),
        (
            "chronicity index",
            index_text(old["chronicity_index"]),
            index_text(new["chronicity_index"]),
        ),
    ]
    return [
        {
            "glomerulus": None,
            "field": name,
            "before": as_text(a),
            "after": as_text(b),
            "source": "re-scored",
        }
        for name, a, b in pairs
        if not same_value(a, b)
    ]


def _refresh_from_slide(edit: Edit, result: Mapping[str, Any], assets: Assets) -> None:
    """Measure and crop glomeruli added or redrawn in review, if the slide is still at hand.

    Added glomeruli get the machine's calls for the lesions their class did not assert (the
    pathologist's class always wins); redrawn ones get fresh measurements. Without the slide
    (moved, or changed since scoring) their measurements stay empty and the report says so.
    """
    targets = sorted({*edit.added, *edit.redrawn})
    info = result["slide"]
    path = Path(info["path"])
    if not targets or not path.is_file():
        return
    try:
        with open_slide(path, mpp=info["mpp"]) as slide:
            if slide.fingerprint().get("sha256") != info["fingerprint"]["sha256"]:
                LOG.warning("%s: slide changed since scoring; edited glomeruli not measured", path)
                return
            glomeruli = [
                Glomerulus(
                    id=g,
                    polygon=edit.polygons[g],
                    area_um2=edit.polygons[g].area * edit.mpp**2,
                    centroid=(edit.polygons[g].centroid.x, edit.polygons[g].centroid.y),
                    probability=math.nan,
                )
                for g in targets
            ]
            from lnpath.workflow.pipeline import lesion_caller  # torch: only to re-call lesions

            caller = lesion_caller(result.get("lesion_model"), stain=result.get("stain", "PAS"))
            calls = caller.call(glomeruli, slide)
            assets.add_crops(slide, {g: edit.polygons[g] for g in targets})
    except LnpathError as exc:
        LOG.warning("%s: cannot measure edited glomeruli (%s)", path, exc)
        return
    for row in calls.to_dict("records"):
        gid = int(row["glomerulus_id"])
        index = edit.table.index[edit.table["glomerulus_id"] == gid][0]
        for column, value in row.items():
            machine_call = column in LESIONS and gid in edit.added
            if column.startswith("m_") or (machine_call and column not in edit.added[gid]):
                if column not in edit.table:
                    edit.table[column] = math.nan
                edit.table.at[index, column] = value


def _name(pathologist: Any, what: str) -> str:
    """A pathologist's name, required for every review and confirmation (the audit says who)."""
    if not isinstance(pathologist, str) or not pathologist.strip():
        raise InputError(f"{what}: the pathologist's name is required (--pathologist NAME)")
    if any(ch in pathologist for ch in "\r\n"):
        raise InputError(f"{what}: the pathologist's name must be one line")
    check_name(pathologist, what)
    return " ".join(pathologist.split())


def _last_change(folder: Path, result: Mapping[str, Any]) -> str:
    """``reviewed by X at T``: who last wrote the current revision, for refusal messages."""
    events = [e for e in read_audit(folder) if e.get("revision") == result["revision"]]
    if not events:
        return f"revision {result['revision']}"
    last = events[-1]
    return f"{last.get('event')} by {last.get('by') or 'unknown'} at {last.get('at')}"


@dataclass
class ReviewRequest:
    """Everything one :func:`review` asks for."""

    findings: str | os.PathLike[str] | pd.DataFrame | None = None
    geojson: str | os.PathLike[str] | None = None
    cortex: Mapping[str, float | None] | None = None
    biopsy: Mapping[str, Any] | None = None
    class_override: Mapping[str, Any] | None = None
    comment: str | None = None
    exclusions: Mapping[int, str] | None = None
    base_revision: int | None = None
    supersede: bool = False
    merge: str | None = None
    note: str | None = None

    def empty(self) -> bool:
        given = (self.findings, self.geojson, self.biopsy, self.class_override, self.comment)
        return all(v is None for v in given) and not self.cortex and not self.exclusions

    def check(self) -> None:
        """Refuse values of the wrong kind up front, naming the argument: from Python they
        once failed deep inside as TypeError, AttributeError or ValueError.

        Raises:
            InputError: an argument is not what :func:`review` documents.
        """
        paths = (str, os.PathLike)
        kinds: tuple[tuple[str, Any, tuple[type, ...], str], ...] = (
            ("findings", self.findings, (*paths, pd.DataFrame), "a path or a DataFrame"),
            ("geojson", self.geojson, paths, "a path"),
            ("cortex", self.cortex, (Mapping,), "a mapping of name to fraction"),
            ("biopsy", self.biopsy, (Mapping,), "a mapping"),
            ("class_override", self.class_override, (Mapping,), "a mapping"),
            ("comment", self.comment, (str,), "text"),
            ("exclusions", self.exclusions, (Mapping,), "a mapping of glomerulus id to kind"),
            ("note", self.note, (str,), "text"),
        )
        for name, value, types, words in kinds:
            if value is not None and not isinstance(value, types):
                raise InputError(f"review: {name} must be {words} (got {type(value).__name__})")
        for name, text in (("comment", self.comment), ("note", self.note)):
            if text is not None:
                check_free_text(text, f"review: the {name}")
        for name, fraction in (self.cortex or {}).items():
            number = isinstance(fraction, numbers.Real) and not isinstance(fraction, bool)
            if fraction is not None and not number:
                raise InputError(f"cortex: {name} = {fraction!r} is not a number")
        revision = self.base_revision
        whole = isinstance(revision, numbers.Integral) and not isinstance(revision, bool)
        if revision is not None and not whole:
            raise InputError(f"review: base_revision must be a whole number (got {revision!r})")
        check_flag(self.supersede, "review: supersede")  # "no" would revise a confirmed result
        if self.merge not in (None, "keep-current", "take-export"):
            raise InputError(
                f"review: merge must be keep-current or take-export (got {self.merge!r})"
            )


def _edit(result: Mapping[str, Any], where: Path) -> Edit:
    return Edit(
        table=read_findings_csv(where / "findings.csv"),
        polygons=read_polygons(where),
        cortex=dict(result.get("cortex_fractions") or {}),
        mpp=float(result["slide"]["mpp"]),
        sha256=result["slide"]["fingerprint"]["sha256"],
    )


def _apply_file(
    folder: Path,
    result: Mapping[str, Any],
    edit: Edit,
    path: Path,
    apply: Callable[[Edit], None],
    request: ReviewRequest,
) -> dict[str, Any] | None:
    """Apply an edit file, or merge it three-way when it was exported from an older revision."""
    stamp = read_stamp(path)
    base = check_stamp(path, stamp, result, folder, _last_change(folder, result), request.merge)
    if base is None:
        apply(edit)
        return None
    snapshot = folder / "revisions" / f"r{base:03d}"
    old = load_result_json(snapshot)
    return merge_stale(edit, _edit(old, snapshot), base, apply, str(request.merge))


def _supersedes(folder: Path, result: Mapping[str, Any], supersede: bool) -> dict[str, Any] | None:
    """Whose confirmation a review of a confirmed result supersedes; refused without consent."""
    if result["status"] != "confirmed":
        return None
    confirmation = result["confirmation"]
    if not supersede:
        raise SignOutRefused(
            f"{folder}: revision {result['revision']} is confirmed by "
            f"{confirmation['pathologist']} on {str(confirmation['confirmed_at'])[:10]}; a "
            "review would start a new provisional revision that supersedes that confirmation: "
            "pass supersede=True (--supersede) to do so"
        )
    return {
        "revision": int(result["revision"]),
        "pathologist": confirmation["pathologist"],
        "confirmed_at": confirmation["confirmed_at"],
    }


def _record_fields(edit: Edit, result: Mapping[str, Any], request: ReviewRequest) -> dict[str, Any]:
    """The result.json fields a review sets (biopsy, class override, comment), changes logged."""
    fields: dict[str, Any] = {}
    if request.biopsy is not None:
        merged = merge_biopsy(result.get("biopsy"), normalise_biopsy(request.biopsy))
        for name, old, new in biopsy_changes(result.get("biopsy"), merged):
            edit.log(None, name, _stated(old), _stated(new), "review:biopsy")
        fields["biopsy"] = merged
    if request.class_override is not None:
        override = valid_override(request.class_override)
        old = result.get("class_override")
        if override != old:
            edit.log(None, "class set by the pathologist", _override_text(old),
                     _override_text(override), "review:class")  # fmt: skip
        fields["class_override"] = override
    if request.comment is not None:
        text = request.comment.strip() or None
        if text != result.get("comment"):
            # a comment is absent, not "not assessed" (as_text's word for a missing call)
            before, after = result.get("comment") or "none", text or "none"
            edit.log(None, "comment", before, after, "review:comment")
        fields["comment"] = text
    return fields


def _stated(value: Any) -> Any:
    return "not stated" if value is None else value


def _override_text(override: Mapping[str, Any] | None) -> str:
    return f"{override['class']} ({override['reason']})" if override else "none"
