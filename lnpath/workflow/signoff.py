"""Pathologist review, confirmation and tamper checks: the pathologist has the last word.

- :func:`review` applies a pathologist's edits (a QuPath GeoJSON export with glomeruli
  reclassified, deleted, redrawn or added; an edited findings CSV; cortex fractions), re-scores,
  and writes a new provisional revision listing every change (glomerulus, field, before → after).
- :func:`confirm` seals the current revision with who, when and a sha256 over the result content.
  A confirmed revision is immutable: confirming twice is refused, and a later review starts a new
  provisional revision that needs its own confirmation.
- :func:`verify` recomputes the seals and raises :class:`~lnpath.core.errors.ResultError` on any
  edit.

Every revision is kept under ``revisions/rNNN/`` and every event in ``revisions/audit.jsonl``.
Hashes detect accidental or casual edits; they are not signatures, so anyone able to rewrite the
whole folder consistently could forge one.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import math
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from lnpath.analysis.glomeruli import Glomerulus
from lnpath.core.errors import InputError, LnpathError, ResultError
from lnpath.core.findings import LESIONS
from lnpath.core.vocabulary import main_call
from lnpath.io.configfile import load_config
from lnpath.report.assets import Assets
from lnpath.report.slide import index_text
from lnpath.results.edits import (
    KEEP_COLUMNS,
    Edit,
    apply_cortex,
    apply_findings,
    apply_geojson,
    as_text,
    same_value,
)
from lnpath.results.folder import (
    ResultContent,
    SlideResult,
    load_result_json,
    read_findings_csv,
    read_polygons,
    write_result,
)
from lnpath.results.seal import (
    verify,
)
from lnpath.scoring.score import score_findings
from lnpath.workflow.pipeline import lesion_caller
from lnpath.wsi.slide import open_slide

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]


LOG = logging.getLogger(__name__)


@contextlib.contextmanager
def _exclusive(folder: Path) -> Iterator[None]:
    """One writer at a time per result folder, so two reviews never both become revision N+1.

    The lock file lives beside the folder because the folder itself is replaced on every write.
    Where ``fcntl`` does not exist (Windows) there is no lock.
    """
    if fcntl is None or not folder.parent.is_dir():
        yield
        return
    with open(folder.parent / f".{folder.name}.lock", "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ResultError(f"{folder}: another review or confirmation is writing it") from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


# --------------------------------------------------------------------------------------------
# Review


def _scoring_table(table: pd.DataFrame) -> pd.DataFrame:
    keep = [c for c in table.columns if c in KEEP_COLUMNS or c.startswith(("p_", "m_"))]
    return table[keep].reset_index(drop=True)


def _summary_changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[dict[str, Any]]:

    pairs = [
        ("glomeruli", old["adequacy"]["n_glomeruli"], new["adequacy"]["n_glomeruli"]),
        (
            "ISN/RPS class proposal",
            old["isn_rps_class"]["proposal"] or "not proposed",
            new["isn_rps_class"]["proposal"] or "not proposed",
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


def review(
    result_dir: str | os.PathLike[str],
    geojson: str | os.PathLike[str] | None = None,
    findings: str | os.PathLike[str] | None = None,
    cortex: Mapping[str, float | None] | None = None,
    reviewer: str | None = None,
    note: str | None = None,
) -> SlideResult:
    """Apply a pathologist's edits, re-score, and write a new provisional revision.

    Args:
        result_dir: a folder written by :func:`lnpath.score_slide`.
        geojson: a QuPath GeoJSON export of the result's ``glomeruli.geojson`` after editing.
            Glomeruli are matched by feature id, else by outline overlap (IoU ≥ 0.5); a missing
            glomerulus is deleted, an unmatched feature is added, a changed class sets its lesion
            (and clears the previous main call), edited ``call: <lesion>`` measurements apply.
        findings: an edited ``findings.csv``; a row left out is a deleted glomerulus.
        cortex: cortex fractions in [0, 1] to set (None = not assessed), e.g.
            ``{"interstitial_fibrosis": 0.3}``.
        reviewer: who made the edits (recorded in the audit trail).
        note: free text for the audit trail.

    Returns:
        The new revision; unchanged (and nothing written) if the edits change nothing.

    Raises:
        ResultError: the folder is not a result or fails :func:`verify`.
        InputError: an edit file is malformed or belongs to another slide.
    """
    folder = Path(result_dir)
    if geojson is None and findings is None and not cortex:
        raise InputError(
            "review: give an edited GeoJSON, an edited findings CSV or cortex fractions"
        )
    with _exclusive(folder):
        return _review(folder, geojson, findings, cortex, reviewer, note)


def _review(
    folder: Path,
    geojson: str | os.PathLike[str] | None,
    findings: str | os.PathLike[str] | None,
    cortex: Mapping[str, float | None] | None,
    reviewer: str | None,
    note: str | None,
) -> SlideResult:
    verify(folder)
    result = load_result_json(folder)
    edit = Edit(
        table=read_findings_csv(folder / "findings.csv"),
        polygons=read_polygons(folder),
        cortex=dict(result.get("cortex_fractions") or {}),
        mpp=float(result["slide"]["mpp"]),
        sha256=result["slide"]["fingerprint"]["sha256"],
    )
    before = len(edit.table)
    if geojson is not None:
        apply_geojson(edit, Path(geojson), result)
    if findings is not None:
        apply_findings(edit, Path(findings))
    if cortex:
        apply_cortex(edit, cortex)
    if before and edit.table.empty:
        raise InputError(
            f"review: the edit deletes all {before} glomeruli (an empty export or a findings "
            "file without rows?); nothing written"
        )
    if not edit.changes:
        LOG.warning("%s: the edits change nothing; revision %s kept", folder, result["revision"])
        return SlideResult(folder, result)
    return _write_revision(folder, result, edit, reviewer, note)


def _write_revision(
    folder: Path, result: dict[str, Any], edit: Edit, reviewer: str | None, note: str | None
) -> SlideResult:

    assets = Assets.load(folder)
    _refresh_from_slide(edit, result, assets)
    config = load_config(result["config"])
    cortex = {k: v for k, v in edit.cortex.items() if v is not None}
    score = score_findings(_scoring_table(edit.table), cortex=cortex, config=config).to_dict()
    edit.table["main_call"] = [main_call(r) for r in edit.table.to_dict("records")]
    revision = int(result["revision"]) + 1
    at = _now()
    changes = edit.changes + _summary_changes(result["scores"], score)
    for change in changes:
        change.update(revision=revision, at=at)
    new = {
        **result,
        "status": "provisional",
        "revision": revision,
        "scores": score,
        "cortex_fractions": edit.cortex,
        "confirmation": None,
        "changes": [*result.get("changes", []), *changes],
    }
    event = {"event": "reviewed", "at": at, "by": reviewer, "note": note, "n_changes": len(changes)}
    content = ResultContent(edit.table, edit.polygons, assets)
    write_result(folder, new, event, content, overwrite=True)
    LOG.info("%s: revision %d with %d change(s)", folder, revision, len(changes))
    return SlideResult.load(folder)


# --------------------------------------------------------------------------------------------
# Confirm and verify


def confirm(
    result_dir: str | os.PathLike[str], pathologist: str, note: str | None = None
) -> SlideResult:
    """Mark the current revision confirmed by ``pathologist``, sealed with a content sha256.

    Raises:
        ResultError: already confirmed (immutable), or the folder fails :func:`verify`.
        InputError: the pathologist's name is empty.
    """
    folder = Path(result_dir)
    if not pathologist or not pathologist.strip():
        raise InputError("confirm: the pathologist's name is required")
    if any(ch in pathologist for ch in "\r\n"):
        raise InputError("confirm: the pathologist's name must be one line")
    with _exclusive(folder):
        return _confirm(folder, pathologist.strip(), note)


def _confirm(folder: Path, pathologist: str, note: str | None) -> SlideResult:
    verify(folder)
    result = load_result_json(folder)
    if result["status"] == "confirmed":
        who = result["confirmation"]["pathologist"]
        raise ResultError(
            f"{folder}: revision {result['revision']} is already confirmed by {who}; "
            "a confirmed result is immutable (review it to start a new revision)"
        )
    at = _now()
    new = {
        **result,
        "status": "confirmed",
        "confirmation": {
            "pathologist": pathologist,
            "confirmed_at": at,
            "sha256": None,
            "note": note,
        },
    }
    event = {"event": "confirmed", "at": at, "by": pathologist, "note": note}
    write_result(folder, new, event, overwrite=True)
    return SlideResult.load(folder)
