"""Pathologist review, confirmation and tamper checks: the pathologist has the last word.

- :func:`review` applies a pathologist's edits (a QuPath GeoJSON export with glomeruli
  reclassified, deleted, redrawn or added; an edited findings CSV; cortex fractions), re-scores,
  and writes a new provisional revision listing every change (glomerulus, field, before → after).
- :func:`confirm` seals the current revision with who, when and a sha256 over the result content.
  A confirmed revision is immutable: confirming twice is refused, and a later review starts a new
  provisional revision that needs its own confirmation.
- :func:`verify` recomputes the seals and raises :class:`~lnpath.errors.ResultError` on any edit.

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import shapely
from shapely.geometry.base import BaseGeometry

from .config import load_config
from .errors import InputError, LnpathError, ResultError
from .findings import DEFAULT_CLASS_MAP, LESIONS, OPTIONAL_FLAGS, read_findings
from .pipeline import lesion_caller
from .qupath import QuPathFeature, read_qupath
from .result import (
    DERIVED_FILES,
    LESION_LABELS,
    NO_LESION,
    NOT_ASSESSED,
    Assets,
    ResultContent,
    SlideResult,
    content_sha256,
    feature_id,
    file_sha256,
    load_result_json,
    main_call,
    read_audit,
    read_findings_csv,
    read_polygons,
    write_result,
)

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]

LOG = logging.getLogger(__name__)

CORTEX_FIELDS = ("interstitial_inflammation", "interstitial_fibrosis", "tubular_atrophy")
MATCH_MIN_IOU = 0.5  # an edited outline is the same glomerulus if it overlaps this much
OUTLINE_CHANGE = 0.01  # relative symmetric difference above which an outline counts as redrawn
SLIDE_TOLERANCE_PX = 2.0
MAX_GLOMERULUS_UM2 = 200_000.0  # ~500 µm across; the largest human glomeruli are ~300 µm
#: What each QuPath class asserts. Our own classes assert their lesion; the class maps of the
#: findings module (``Normal``/``Sclerotic``/...) are accepted too; ``Glomerulus`` asserts nothing.
_CLASS_ASSERTS: dict[str, dict[str, Any]] = {
    **{label: {lesion: True} for lesion, label in LESION_LABELS.items()},
    NO_LESION: dict.fromkeys(LESIONS, False),
    NOT_ASSESSED: dict.fromkeys(LESIONS, pd.NA),
    "Glomerulus": {},
    **DEFAULT_CLASS_MAP,
}
_LABEL_TO_LESION = {label: lesion for lesion, label in LESION_LABELS.items()}
_KEEP_COLUMNS = ("glomerulus_id", *LESIONS, *OPTIONAL_FLAGS, "source")


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


def _missing(value: Any) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


def _text(value: Any) -> str:
    if _missing(value):
        return "not assessed"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def _same(a: Any, b: Any) -> bool:
    if _missing(a) or _missing(b):
        return _missing(a) and _missing(b)
    return bool(a == b)


@dataclass
class _Edit:
    """The working copy of a result while edits are applied, with the change list."""

    table: pd.DataFrame
    polygons: dict[int, BaseGeometry]
    cortex: dict[str, float | None]
    mpp: float
    sha256: str
    changes: list[dict[str, Any]] = field(default_factory=list)
    added: dict[int, set[str]] = field(default_factory=dict)  # id -> lesions the class asserted
    redrawn: list[int] = field(default_factory=list)

    def log(self, gid: int | None, name: str, before: Any, after: Any, source: str) -> None:
        self.changes.append(
            {
                "glomerulus": gid,
                "field": name,
                "before": _text(before),
                "after": _text(after),
                "source": source,
            }
        )

    def set(self, gid: int, column: str, value: Any, source: str) -> None:
        """Set one cell, logging it only if it changes."""
        if column not in self.table:
            self.table[column] = pd.array([pd.NA] * len(self.table), dtype="boolean")
        index = self.table.index[self.table["glomerulus_id"] == gid][0]
        before = self.table.at[index, column]
        before = None if _missing(before) else bool(before)
        after = None if _missing(value) else bool(value)
        if _same(before, after):
            return
        self.table.at[index, column] = pd.NA if after is None else after
        label = LESION_LABELS.get(column, column.replace("_", " "))
        self.log(gid, label, before, after, source)


# --------------------------------------------------------------------------------------------
# Applying a QuPath GeoJSON export


def _check_slide(features: list[QuPathFeature], result: Mapping[str, Any], where: str) -> None:
    width, height = result["slide"]["dimensions"]
    sha16 = result["slide"]["fingerprint"]["sha256"][:16]
    for feature in features:
        tag = feature.properties.get("lnpath_slide")
        if tag is not None and tag != sha16:
            raise InputError(
                f"{where}: feature {feature.id} belongs to another slide (fingerprint {tag})"
            )
        x0, y0, x1, y1 = feature.geometry.bounds
        tol = SLIDE_TOLERANCE_PX
        if x0 < -tol or y0 < -tol or x1 > width + tol or y1 > height + tol:
            raise InputError(
                f"{where}: feature {feature.id} lies outside this slide ({width}x{height} px); "
                "is the export from another slide?"
            )


def _iou(a: BaseGeometry, b: BaseGeometry) -> float:
    union = a.union(b).area
    return a.intersection(b).area / union if union else 0.0


def _match(
    features: list[QuPathFeature], edit: _Edit, where: str
) -> tuple[dict[int, QuPathFeature], list[QuPathFeature]]:
    by_id = dict(zip(edit.table["feature_id"], edit.table["glomerulus_id"], strict=True))
    matched: dict[int, QuPathFeature] = {}
    unmatched: list[QuPathFeature] = []
    for feature in features:
        gid = by_id.get(feature.id)
        if gid is None:
            candidates = [
                (iou, g)
                for g, poly in edit.polygons.items()
                if g not in matched and (iou := _iou(poly, feature.geometry)) >= MATCH_MIN_IOU
            ]
            gid = max(candidates)[1] if candidates else None
        if gid is None:
            unmatched.append(feature)
            continue
        if int(gid) in matched:
            raise InputError(f"{where}: two features are glomerulus G{gid} (feature {feature.id})")
        matched[int(gid)] = feature
    if features and edit.polygons and not matched:
        raise InputError(
            f"{where}: no feature matches this result's glomeruli by id or outline; "
            "is the export from another slide?"
        )
    return matched, unmatched


def _class_values(name: str | None, where: str) -> dict[str, Any]:
    if name is None:
        return {}
    parts = [p.strip() for p in str(name).split(":")]
    values: dict[str, Any] = {}
    for part in parts:
        if part not in _CLASS_ASSERTS:
            known = ", ".join(sorted(_CLASS_ASSERTS))
            raise InputError(f"{where}: unknown glomerulus class {part!r} (known: {known})")
        values.update(_CLASS_ASSERTS[part])
    return values


def _measured_calls(feature: QuPathFeature) -> dict[str, Any]:
    out = {}
    for lesion in LESIONS:
        key = f"call: {lesion}"
        if key in feature.measurements:
            value = feature.measurements[key]
            out[lesion] = None if _missing(value) else bool(float(value) >= 0.5)
    return out


def _apply_geojson(edit: _Edit, path: Path, result: Mapping[str, Any]) -> None:
    where = str(path)
    features = read_qupath(path)
    _check_slide(features, result, where)
    matched, unmatched = _match(features, edit, where)
    source = f"review:{path.name}"
    for gid in sorted(set(edit.polygons) - set(matched)):
        edit.log(gid, "glomerulus", "present", "deleted", source)
        edit.table = edit.table[edit.table["glomerulus_id"] != gid].reset_index(drop=True)
        del edit.polygons[gid]
    for gid, feature in sorted(matched.items()):
        row = edit.table[edit.table["glomerulus_id"] == gid].iloc[0]
        _apply_outline(edit, gid, feature.geometry, source)
        for lesion, value in _measured_calls(feature).items():
            edit.set(gid, lesion, value, source)
        if feature.classification != row["main_call"]:
            values = _class_values(feature.classification, f"{where} feature {feature.id}")
            old = _LABEL_TO_LESION.get(str(row["main_call"]))
            if old is not None and old not in values:
                values[old] = False
            for lesion, value in values.items():
                edit.set(gid, lesion, value, source)
    next_id = int(max(edit.table["glomerulus_id"], default=0)) + 1
    for feature in unmatched:
        area_um2 = feature.geometry.area * edit.mpp**2
        if area_um2 > MAX_GLOMERULUS_UM2:
            raise InputError(
                f"{where}: feature {feature.id} covers {area_um2 / 1e6:.2f} mm², too large for a "
                "glomerulus (a tissue or region annotation? leave it out of the export)"
            )
        values = _class_values(feature.classification, f"{where} feature {feature.id}")
        _add(edit, next_id, feature.geometry, values, source)
        next_id += 1


def _outline(geometry: BaseGeometry) -> BaseGeometry:
    """One valid polygon: a glomerulus is one connected outline, so keep the largest part."""
    geometry = shapely.make_valid(geometry) if not geometry.is_valid else geometry
    parts = getattr(geometry, "geoms", [geometry])
    polygons = [p for p in parts if p.geom_type == "Polygon"]
    return max(polygons, key=lambda p: p.area) if polygons else geometry


def _apply_outline(edit: _Edit, gid: int, geometry: BaseGeometry, source: str) -> None:
    geometry = _outline(geometry)
    old = edit.polygons[gid]
    if old.symmetric_difference(geometry).area <= OUTLINE_CHANGE * old.area:
        return
    index = edit.table.index[edit.table["glomerulus_id"] == gid][0]
    area = geometry.area * edit.mpp**2
    edit.log(gid, "outline area µm²", round(old.area * edit.mpp**2), round(area), source)
    edit.polygons[gid] = geometry
    edit.table.at[index, "area_um2"] = round(area, 1)
    edit.table.at[index, "x"] = round(geometry.centroid.x, 1)
    edit.table.at[index, "y"] = round(geometry.centroid.y, 1)
    measured = [c for c in edit.table.columns if c.startswith("m_")]
    if measured:
        edit.table.loc[index, measured] = math.nan
    edit.redrawn.append(gid)


def _add(
    edit: _Edit, gid: int, geometry: BaseGeometry, values: Mapping[str, Any], source: str
) -> None:
    geometry = _outline(geometry)
    row: dict[str, Any] = {
        "glomerulus_id": gid,
        "feature_id": feature_id(edit.sha256, gid),
        "x": round(geometry.centroid.x, 1),
        "y": round(geometry.centroid.y, 1),
        "area_um2": round(geometry.area * edit.mpp**2, 1),
        "source": source,
    }
    row.update({lesion: values.get(lesion, pd.NA) for lesion in LESIONS})
    added = pd.DataFrame([row])
    for lesion in LESIONS:
        added[lesion] = added[lesion].astype("boolean")
    edit.table = pd.concat([edit.table, added], ignore_index=True)
    edit.polygons[gid] = geometry
    edit.added[gid] = set(values)
    calls = ", ".join(LESION_LABELS[k] for k, v in values.items() if v is True) or "no call"
    edit.log(gid, "glomerulus", "absent", f"added ({calls})", source)


# --------------------------------------------------------------------------------------------
# Applying an edited findings CSV and cortex fractions


def _apply_findings(edit: _Edit, path: Path) -> None:
    where = str(path)
    try:
        raw = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read findings table ({exc})") from None
    if "feature_id" in raw:
        known = set(edit.table["feature_id"])
        foreign = [f for f in raw["feature_id"] if f and f not in known]
        if foreign:
            raise InputError(
                f"{where}: feature id {foreign[0]} is not in this result; is it from another slide?"
            )
    keep = [c for c in raw.columns if c in _KEEP_COLUMNS or c.startswith("p_")]
    edited = read_findings(raw[keep])
    current = set(edit.table["glomerulus_id"].astype(int))
    ids = set(edited["glomerulus_id"].astype(int))
    unknown = sorted(ids - current)
    if unknown:
        raise InputError(
            f"{where}: glomerulus id(s) {unknown[:5]} not in this result "
            "(add glomeruli by drawing them in QuPath and reviewing with --geojson)"
        )
    source = f"review:{path.name}"
    for gid in sorted(current - ids):
        edit.log(gid, "glomerulus", "present", "deleted", source)
        edit.table = edit.table[edit.table["glomerulus_id"] != gid].reset_index(drop=True)
        del edit.polygons[gid]
    columns = [c for c in (*LESIONS, *OPTIONAL_FLAGS) if c in edited]
    for row in edited.to_dict("records"):
        for column in columns:
            edit.set(int(row["glomerulus_id"]), column, row[column], source)


def _apply_cortex(edit: _Edit, cortex: Mapping[str, float | None]) -> None:
    for name, value in cortex.items():
        if name not in CORTEX_FIELDS:
            raise InputError(f"cortex: unknown field {name!r} (known: {', '.join(CORTEX_FIELDS)})")
        if value is not None and not 0.0 <= float(value) <= 1.0:
            raise InputError(f"cortex: {name} = {value} is not a fraction in [0, 1]")
        before = edit.cortex.get(name)
        after = None if value is None else float(value)
        if _same(before, after):
            continue
        edit.cortex[name] = after
        edit.log(
            None, name.replace("_", " ") + " (fraction of cortex)", before, after, "review:cortex"
        )


# --------------------------------------------------------------------------------------------
# Review


def _scoring_table(table: pd.DataFrame) -> pd.DataFrame:
    keep = [c for c in table.columns if c in _KEEP_COLUMNS or c.startswith(("p_", "m_"))]
    return table[keep].reset_index(drop=True)


def _summary_changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[dict[str, Any]]:
    from .report import index_text

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
            "before": _text(a),
            "after": _text(b),
            "source": "re-scored",
        }
        for name, a, b in pairs
        if not _same(a, b)
    ]


def _refresh_from_slide(edit: _Edit, result: Mapping[str, Any], assets: Assets) -> None:
    """Measure and crop glomeruli added or redrawn in review, if the slide is still at hand.

    Added glomeruli get the machine's calls for the lesions their class did not assert (the
    pathologist's class always wins); redrawn ones get fresh measurements. Without the slide
    (moved, or changed since scoring) their measurements stay empty and the report says so.
    """
    from .glomeruli import Glomerulus
    from .slide import open_slide

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
    edit = _Edit(
        table=read_findings_csv(folder / "findings.csv"),
        polygons=read_polygons(folder),
        cortex=dict(result.get("cortex_fractions") or {}),
        mpp=float(result["slide"]["mpp"]),
        sha256=result["slide"]["fingerprint"]["sha256"],
    )
    if geojson is not None:
        _apply_geojson(edit, Path(geojson), result)
    if findings is not None:
        _apply_findings(edit, Path(findings))
    if cortex:
        _apply_cortex(edit, cortex)
    if not edit.changes:
        LOG.warning("%s: the edits change nothing; revision %s kept", folder, result["revision"])
        return SlideResult(folder, result)
    return _write_revision(folder, result, edit, reviewer, note)


def _write_revision(
    folder: Path, result: dict[str, Any], edit: _Edit, reviewer: str | None, note: str | None
) -> SlideResult:
    from .scoring import score_findings

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


def _check_snapshots(folder: Path) -> int:
    """Every revision's snapshot still matches the hashes its last audit event recorded."""
    last: dict[int, dict[str, Any]] = {}
    for event in read_audit(folder):
        last[int(event["revision"])] = event
    for revision, event in sorted(last.items()):
        snapshot = folder / "revisions" / f"r{revision:03d}"
        for name, sha in (event.get("snapshot") or {}).items():
            path = snapshot / name
            if not path.is_file() or file_sha256(path) != sha:
                raise ResultError(f"{path}: revision {revision} of the audit trail was modified")
    return len(last)


@dataclass
class Verification:
    """What :func:`verify` checked: the revision, its status and its content sha256."""

    folder: Path
    revision: int
    status: str
    content_sha256: str
    checked: list[str]


def verify(result_dir: str | os.PathLike[str]) -> Verification:
    """Check that the result folder is exactly what lnpath last wrote.

    The audit trail's last event for the current revision records the content sha256 and the
    sha256 of the report and overlay; a confirmation repeats them in ``result.json``. Any
    difference, a status that disagrees with the audit trail (an "unconfirmed" confirmed result),
    or an edited earlier revision means the folder was edited outside lnpath.

    Raises:
        ResultError: naming the first file or seal that does not match.
    """
    folder = Path(result_dir)
    result = load_result_json(folder)
    revision = int(result["revision"])
    events = [e for e in read_audit(folder) if e.get("revision") == revision]
    if not events:
        raise ResultError(
            f"{folder}: no audit record for revision {revision} (edited outside lnpath?)"
        )
    last = events[-1]
    sha = content_sha256(folder, result)
    if sha != last["content_sha256"]:
        raise ResultError(
            f"{folder}: content of revision {revision} was modified after it was written "
            "(edit a copy of a file and pass it to lnpath review instead)"
        )
    checked = ["content"]
    for name in DERIVED_FILES:
        if file_sha256(folder / name) != (last.get("snapshot") or {}).get(name):
            raise ResultError(f"{folder / name}: modified after lnpath wrote it")
        checked.append(name)
    confirmation = result.get("confirmation")
    if last["event"] == "confirmed":
        if result["status"] != "confirmed" or not confirmation:
            raise ResultError(
                f"{folder}: revision {revision} was confirmed but reads {result['status']!r}"
            )
        sealed_files = confirmation.get("files") or {}
        if (
            confirmation.get("sha256") != sha
            or confirmation.get("pathologist") != last.get("by")
            or any(sealed_files.get(n) != last["snapshot"].get(n) for n in DERIVED_FILES)
        ):
            raise ResultError(f"{folder}: confirmation seal does not match the audit trail")
    elif result["status"] != "provisional" or confirmation is not None:
        raise ResultError(
            f"{folder}: revision {revision} was never confirmed but reads {result['status']!r}"
        )
    checked.append(f"{_check_snapshots(folder)} revision snapshot(s)")
    return Verification(folder, int(result["revision"]), str(result["status"]), sha, checked)
