"""A pathologist's edits applied to a result: QuPath GeoJSON exports, findings CSVs, cortex.

:func:`lnpath.review.review` loads a result into an :class:`Edit`, applies the edits here and then
re-scores. Each change is logged as (glomerulus, field, before → after, source), so the new revision
lists exactly what the pathologist changed:

- a QuPath export: glomeruli matched to the result's by outline overlap (IoU >= 0.5) are
  reclassified or redrawn, unmatched ones are added, missing ones deleted;
- an edited findings CSV: lesion calls and flags per glomerulus;
- cortex fractions (interstitial inflammation, fibrosis, tubular atrophy).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import shapely
from shapely.geometry.base import BaseGeometry

from lnpath.core.errors import InputError
from lnpath.core.findings import (
    DEFAULT_CLASS_MAP,
    LESION_EXTENT,
    LESIONS,
    OPTIONAL_FLAGS,
    is_missing,
    read_findings,
)
from lnpath.core.vocabulary import LESION_LABELS, NO_LESION, NOT_ASSESSED
from lnpath.io.jsonfile import not_a_file
from lnpath.io.qupath import QuPathFeature, read_qupath
from lnpath.io.tables import check_row_lengths, measured_calls
from lnpath.results.folder import feature_id
from lnpath.scoring.biopsy import exclusion
from lnpath.scoring.indices import CORTEX_BASIS

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
    **DEFAULT_CLASS_MAP,  # Glomerulus among them, asserting nothing
}
_LABEL_TO_LESION = {label: lesion for lesion, label in LESION_LABELS.items()}
KEEP_COLUMNS = ("glomerulus_id", *LESIONS, *OPTIONAL_FLAGS, LESION_EXTENT, "source")
#: Per-glomerulus exclusion by the pathologist (kinds in :data:`lnpath.scoring.biopsy.EXCLUSIONS`).
EXCLUSION_COLUMNS = ("exclusion", "exclusion_reason")
TEXT_COLUMNS = (LESION_EXTENT, *EXCLUSION_COLUMNS)


def as_text(value: Any) -> str:
    if is_missing(value):
        return "not assessed"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def same_value(a: Any, b: Any) -> bool:
    if is_missing(a) or is_missing(b):
        return is_missing(a) and is_missing(b)
    return bool(a == b)


@dataclass
class Edit:
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
                "before": as_text(before),
                "after": as_text(after),
                "source": source,
            }
        )

    def set(self, gid: int, column: str, value: Any, source: str, index: int | None = None) -> None:
        """Set one cell, logging it only if it changes.

        ``index`` is the glomerulus's row label when the caller already knows it: finding it
        scans the table, which for every cell of a 100-glomerulus table was most of a save.
        """
        text = column in TEXT_COLUMNS  # the others are booleans
        if column not in self.table:
            missing = [pd.NA] * len(self.table)
            self.table[column] = (
                pd.array(missing, dtype="string") if text else pd.array(missing, dtype="boolean")
            )
        if index is None:
            index = self.table.index[self.table["glomerulus_id"] == gid][0]
        convert = str if text else bool
        before = self.table.at[index, column]
        before = None if is_missing(before) or before == "" else convert(before)
        after = None if is_missing(value) or value == "" else convert(value)
        if same_value(before, after):
            return
        self.table.at[index, column] = pd.NA if after is None else after
        label = LESION_LABELS.get(column, column.replace("_", " "))
        if text:  # an empty exclusion is "none", an empty extent "not recorded": neither is a
            # lesion call "not assessed"
            empty = "not recorded" if column == LESION_EXTENT else "none"
            before, after = before or empty, after or empty
        self.log(gid, label, before, after, source)


# --------------------------------------------------------------------------------------------
# Applying a QuPath GeoJSON export


def beyond_slide(geometry: BaseGeometry, dimensions: tuple[int, int]) -> bool:
    """Whether an outline reaches past the slide's level-0 frame (by more than 2 px)."""
    x0, y0, x1, y1 = geometry.bounds
    width, height = dimensions
    tol = SLIDE_TOLERANCE_PX
    return x0 < -tol or y0 < -tol or x1 > width + tol or y1 > height + tol


def _check_slide(features: list[QuPathFeature], result: Mapping[str, Any], where: str) -> None:
    width, height = result["slide"]["dimensions"]
    sha16 = result["slide"]["fingerprint"]["sha256"][:16]
    for feature in features:
        tag = feature.properties.get("lnpath_slide")
        if tag is not None and tag != sha16:
            raise InputError(
                f"{where}: feature {feature.id} belongs to another slide (fingerprint {tag})"
            )
        if beyond_slide(feature.geometry, (width, height)):
            raise InputError(
                f"{where}: feature {feature.id} lies outside this slide ({width}x{height} px); "
                "is the export from another slide?"
            )


def _iou(a: BaseGeometry, b: BaseGeometry) -> float:
    union = a.union(b).area
    return a.intersection(b).area / union if union else 0.0


def _match(
    features: list[QuPathFeature], edit: Edit, where: str
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


def apply_geojson(edit: Edit, path: Path, result: Mapping[str, Any]) -> None:
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
        for lesion, value in measured_calls(feature).items():
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


def _apply_outline(edit: Edit, gid: int, geometry: BaseGeometry, source: str) -> None:
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
    edit: Edit, gid: int, geometry: BaseGeometry, values: Mapping[str, Any], source: str
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


def apply_findings(edit: Edit, path: Path | pd.DataFrame) -> None:
    """Apply an edited findings table (a CSV file, or a DataFrame from the workstation)."""
    if isinstance(path, pd.DataFrame):
        where, name = "findings table", "findings"
        raw = path.map(lambda v: "" if is_missing(v) else str(v))
    else:
        where, name = str(path), path.name
        if not path.is_file():  # not "[Errno 2] No such file or directory: ..."
            raise not_a_file(path, "findings file")
        if path.suffix.lower() in (".geojson", ".json"):
            raise InputError(f"{path}: a GeoJSON export, not a findings CSV (use --geojson)")
        try:
            check_row_lengths(path)  # pandas would shift or fill a row of the wrong length
            raw = pd.read_csv(path, dtype=str, keep_default_na=False)
        except (OSError, ValueError, UnicodeDecodeError, csv.Error) as exc:
            detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise InputError(f"{path}: cannot read findings table ({detail})") from None
    if "glomerulus_id" in raw:
        raw["glomerulus_id"] = [_whole_id(v, i, where) for i, v in enumerate(raw["glomerulus_id"])]
    if "feature_id" in raw:
        known = dict(zip(edit.table["feature_id"], edit.table["glomerulus_id"], strict=True))
        foreign = [f for f in raw["feature_id"] if f and f not in known]
        if foreign:
            raise InputError(
                f"{where}: feature id {foreign[0]} is not in this result; is it from another slide?"
            )
        if "glomerulus_id" in raw:
            pairs = zip(raw["feature_id"], raw["glomerulus_id"], strict=True)
            for line, (fid, gid) in enumerate(pairs, start=2):
                if fid and gid and str(known[fid]) != gid:  # read_findings names an empty id
                    raise InputError(
                        f"{where}: line {line}: feature_id {fid} is glomerulus {known[fid]}, "
                        f"not {gid} (rows shifted while editing?)"
                    )
    keep = [c for c in raw.columns if c in KEEP_COLUMNS or c.startswith("p_")]
    edited = read_findings(raw[keep], where)  # errors name the file, not "findings table"
    current = set(edit.table["glomerulus_id"].astype(int))
    ids = set(edited["glomerulus_id"].astype(int))
    unknown = sorted(ids - current)
    if unknown:
        raise InputError(
            f"{where}: glomerulus id(s) {unknown[:5]} not in this result "
            "(add glomeruli by drawing them in QuPath and reviewing with --geojson)"
        )
    source = f"review:{name}"
    for gid in sorted(current - ids):
        edit.log(gid, "glomerulus", "present", "deleted", source)
        edit.table = edit.table[edit.table["glomerulus_id"] != gid].reset_index(drop=True)
        del edit.polygons[gid]
    columns = [c for c in (*LESIONS, *OPTIONAL_FLAGS, LESION_EXTENT) if c in edited]
    rows = dict(zip(edit.table["glomerulus_id"].astype(int), edit.table.index, strict=True))
    for row in edited.to_dict("records"):
        gid = int(row["glomerulus_id"])
        for column in columns:
            edit.set(gid, column, row[column], source, index=rows[gid])
    if "exclusion" in raw and "glomerulus_id" in raw:
        reasons = raw["exclusion_reason"] if "exclusion_reason" in raw else [""] * len(raw)
        for gid, kind, reason in zip(raw["glomerulus_id"], raw["exclusion"], reasons, strict=True):
            text = f"{kind}: {reason}" if kind.strip() and reason.strip() else kind
            set_exclusion(edit, int(gid), text, source, f"{where}: glomerulus {gid}")


def set_exclusion(edit: Edit, gid: int, value: Any, source: str, where: str) -> None:
    """Exclude a glomerulus (``ischemic`` or ``not_glomerulus``, optionally ``kind: reason``)."""
    kind, reason = exclusion(value, where)
    edit.set(gid, "exclusion", kind, source)
    edit.set(gid, "exclusion_reason", reason, source)


def apply_exclusions(edit: Edit, exclusions: Mapping[int, Any]) -> None:
    """Apply ``{glomerulus id: kind}`` from the API or ``lnpath review --exclude ID=KIND``."""
    known = {int(g) for g in edit.table["glomerulus_id"]}
    for gid, value in exclusions.items():
        try:
            number = int(gid)
        except (TypeError, ValueError):
            raise InputError(f"exclusion: glomerulus id {gid!r} is not a whole number") from None
        if number not in known:
            raise InputError(f"exclusion: glomerulus {number} is not in this result")
        set_exclusion(edit, number, value, "review:exclusion", f"exclusion of glomerulus {number}")


def _whole_id(value: str, position: int, where: str) -> str:
    """A glomerulus id as its integer text; ``7.0`` (a spreadsheet's way of writing 7) is 7."""
    text = value.strip()
    head, _, tail = text.partition(".")
    if head.lstrip("-").isdigit() and set(tail) <= {"0"}:
        return str(int(head))
    if not text:
        return text  # read_findings names the empty id
    raise InputError(f"{where}: line {position + 2}: glomerulus_id {value!r} is not a whole number")


def apply_cortex(edit: Edit, cortex: Mapping[str, float | None]) -> None:
    for name, value in cortex.items():
        if name not in CORTEX_FIELDS:
            raise InputError(f"cortex: unknown field {name!r} (known: {', '.join(CORTEX_FIELDS)})")
        if value is not None and not 0.0 <= float(value) <= 1.0:
            raise InputError(f"cortex: {name} = {value} is not a fraction in [0, 1]")
        before = edit.cortex.get(name)
        after = None if value is None else float(value)
        if same_value(before, after):
            continue
        edit.cortex[name] = after
        basis = CORTEX_BASIS[name].replace("% of", "fraction of")  # atrophy: of cortical tubules
        edit.log(None, f"{name.replace('_', ' ')} ({basis})", before, after, "review:cortex")
