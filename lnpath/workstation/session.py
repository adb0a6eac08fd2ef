"""One result folder opened in the workstation: what the page shows, previews and saves.

The page never writes a result itself: a save becomes one :func:`lnpath.review` call (an edited
findings table, a GeoJSON with the glomeruli drawn on the page, cortex and biopsy fields) and a
sign-out one :func:`lnpath.confirm` call, so the browser goes through the same checks, audit
trail and seals as the command line. Previews score the edited table with
:func:`lnpath.score_findings` without writing anything; the page does no scoring of its own.
"""

from __future__ import annotations

import inspect
import json
import logging
import tempfile
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from shapely.geometry import Polygon

from ..config import load_config
from ..errors import InputError, ResultError, SlideError
from ..findings import LESION_EXTENT, LESIONS, is_missing
from ..qupath import QuPathFeature, read_qupath, write_qupath
from ..report import index_text
from ..report_charts import morphometry_thresholds
from ..result import (
    CLASS_COLOURS,
    LESION_LABELS,
    load_result_json,
    main_call,
    read_audit,
    read_findings_csv,
    read_polygons,
)
from .tiles import DeepZoomTiles

LOG = logging.getLogger(__name__)

EXCLUSIONS = ("not_glomerulus", "ischemic")
#: Digit key -> lesion, in the table order of the 2018 index (the page shows the same list).
LESION_KEYS = {str(i + 1): lesion for i, lesion in enumerate(LESIONS)}
COMPONENT_LABELS = {
    "endocapillary_hypercellularity": "Endocapillary hypercellularity",
    "neutrophils_karyorrhexis": "Neutrophils/karyorrhexis",
    "fibrinoid_necrosis": "Fibrinoid necrosis",
    "hyaline_deposits": "Hyaline deposits",
    "cellular_fibrocellular_crescents": "Cellular/fibrocellular crescents",
    "interstitial_inflammation": "Interstitial inflammation",
    "glomerulosclerosis": "Glomerulosclerosis",
    "fibrous_crescents": "Fibrous crescents",
    "tubular_atrophy": "Tubular atrophy",
    "interstitial_fibrosis": "Interstitial fibrosis",
}


class StaleRevision(ResultError):
    """The page's revision is no longer the folder's: someone saved in between."""


class ReadOnly(ResultError):
    """The result failed verification and is open for reading only."""


# --------------------------------------------------------------------------------------------
# Opening a result and finding its slide


def _fingerprint(path: Path, mpp: float) -> dict[str, Any]:
    from ..slide import open_slide

    with open_slide(path, mpp=mpp) as slide:
        return dict(slide.fingerprint())


def resolve_slide(folder: Path, result: Mapping[str, Any], candidates: list[Path]) -> Path:
    """The slide file of a result: a ``--slide`` candidate with its fingerprint, else its own path.

    Raises:
        SlideError: the recorded file is missing or changed, naming the path and ``--slide``.
    """
    info = result["slide"]
    recorded = Path(info["path"])
    expected = info["fingerprint"]["sha256"]
    for path in (*candidates, recorded):
        if path.is_file() and _fingerprint(path, float(info["mpp"]))["sha256"] == expected:
            return path
    if recorded.is_file():
        raise SlideError(
            f"{folder}: its slide {recorded} changed since it was scored (fingerprint differs); "
            "point at the original file with --slide PATH"
        )
    raise SlideError(
        f"{folder}: its slide {recorded} is missing (moved?); point at it with --slide PATH"
    )


def _last_event(folder: Path, revision: int) -> dict[str, Any]:
    events = [e for e in read_audit(folder) if e.get("revision") == revision]
    return events[-1] if events else {}


def _value(value: Any) -> Any:
    if is_missing(value):
        return None
    if hasattr(value, "item"):
        return value.item()
    return value


def _polygon_coords(geometry: Any) -> list[list[float]]:
    exterior = getattr(geometry, "exterior", None)
    if exterior is None:  # a multipolygon from an edit: show its largest part
        geometry = max(geometry.geoms, key=lambda g: g.area)
        exterior = geometry.exterior
    return [[round(x, 1), round(y, 1)] for x, y in exterior.coords]


# --------------------------------------------------------------------------------------------
# What the page shows


def _measurement_rows(row: Mapping[str, Any], thresholds: Mapping[str, float] | None) -> list:
    """Each morphometry measurement beside the rule threshold that used it, if any."""
    rules: dict[str, list[str]] = {}
    if thresholds:
        rules = {
            "m_sclerosed_fraction": [
                f"global sclerosis > {thresholds['global_sclerosis']:g}",
                f"segmental sclerosis > {thresholds['segmental_min']:g}",
            ],
            "m_nuclei_per_1000um2": [
                f"endocapillary > {thresholds['endocapillary_nuclei_per_1000um2']:g}"
            ],
            "m_lumen_fraction": [f"endocapillary < {thresholds['endocapillary_max_lumen']:g}"],
        }
    out = []
    for column, value in row.items():
        if str(column).startswith("m_") and not is_missing(value):
            out.append(
                {
                    "name": str(column)[2:]
                    .replace("_", " ")
                    .replace(" um2", " µm²")
                    .replace(" um", " µm"),
                    "value": round(float(value), 3),
                    "rules": rules.get(str(column), []),
                }
            )
    return out


def _certainty(row: Mapping[str, Any]) -> float | None:
    """How sure the machine was of this glomerulus (0 = a coin toss), or None if it gave no
    probabilities: the smallest margin of its lesion probabilities and detection probability."""
    margins = [
        abs(float(v) - 0.5) * 2
        for k, v in row.items()
        if (str(k).startswith("p_") or k == "probability") and not is_missing(v)
    ]
    return min(margins) if margins else None


def _exclusion(row: Mapping[str, Any]) -> str:
    value = row.get("exclusion")
    if not is_missing(value) and str(value) in EXCLUSIONS:
        return str(value)
    return "ischemic" if _value(row.get("ischemic")) is True else ""


def glomerulus_record(
    row: Mapping[str, Any], polygon: Any, thresholds: Mapping[str, float] | None, crop: bool
) -> dict[str, Any]:
    """One glomerulus as the page needs it (plain JSON)."""
    label = str(row.get("main_call"))
    return {
        "id": int(row["glomerulus_id"]),
        "x": _value(row.get("x")),
        "y": _value(row.get("y")),
        "area_um2": _value(row.get("area_um2")),
        "probability": _value(row.get("probability")),
        "calls": {lesion: _value(row.get(lesion)) for lesion in LESIONS},
        "p": {
            lesion: round(float(row[f"p_{lesion}"]), 3)
            for lesion in LESIONS
            if not is_missing(row.get(f"p_{lesion}"))
        },
        "extent": _value(row.get(LESION_EXTENT)),
        "exclusion": _exclusion(row),
        "main_call": label,
        "source": _value(row.get("source")),
        "measurements": _measurement_rows(row, thresholds),
        "certainty": _certainty(row),
        "polygon": _polygon_coords(polygon),
        "crop": crop,
    }


def _component_rows(index: Mapping[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for name, c in (index.get("components") or {}).items():
        rows.append(
            {
                "name": name,
                "label": COMPONENT_LABELS.get(name, name.replace("_", " ")),
                "n": c.get("n"),
                "N": c.get("N"),
                "fraction": c.get("fraction"),
                "score": c.get("score"),
                "weight": c.get("weight"),
                "assessed": c.get("assessed"),
                "range": c.get("score_range"),
                "note": c.get("note"),
            }
        )
    return rows


def summary(scores: Mapping[str, Any]) -> dict[str, Any]:
    """The live summary: both indices with their components, the class, adequacy, uncertainty."""
    out: dict[str, Any] = {}
    for key, name in (("activity_index", "ai"), ("chronicity_index", "ci")):
        index = scores[key]
        span = index.get("total_range")
        low = index["total"] if index.get("complete") or not span else span[0]
        out[name] = {
            "text": index_text(index),
            "low": low,
            "total": index.get("total"),
            "max": index.get("max"),
            "complete": bool(index.get("complete")),
            "range": span,
            "components": _component_rows(index),
            "interval_95": (scores.get("uncertainty", {}).get(key) or {}).get("interval_95"),
        }
    klass = scores["isn_rps_class"]
    out["class"] = {
        "proposal": klass.get("proposal"),
        "label": klass.get("label"),
        "rationale": klass.get("rationale"),
        "needs_if_em": klass.get("needs_if_em") or [],
    }
    out["adequacy"] = dict(scores["adequacy"])
    out["pending_review"] = list(scores.get("pending_review") or [])
    return out


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


def _edited_table(table: pd.DataFrame, edits: PageEdits) -> pd.DataFrame:
    """The findings table with the page's per-glomerulus values applied (ids unchanged)."""
    table = table.copy()
    if "exclusion" not in table:
        table["exclusion"] = ""
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


def _scoring_view(table: pd.DataFrame, edits: PageEdits) -> pd.DataFrame:
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


def _biopsy_inputs(biopsy: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The sign-out ``biopsy`` fields that score_findings' class proposal reads."""
    if not biopsy:
        return None
    membranous = biopsy.get("membranous") or {}
    deposits = biopsy.get("deposits") or {}
    inputs = {
        "membranous": membranous.get("present"),
        "membranous_capillary_surface": membranous.get("capillary_surface_fraction"),
        "membranous_glomeruli": membranous.get("glomeruli_fraction"),
        "if_mesangial_deposits": deposits.get("mesangial"),
        "mesangial_hypercellularity": biopsy.get("mesangial_hypercellularity"),
    }
    return {k: v for k, v in inputs.items() if v is not None} or None


# --------------------------------------------------------------------------------------------
# The session


class ResultSession:
    """One opened result: its slide tiles, its current state, and the single path to write it."""

    def __init__(self, folder: Path, slides: list[Path]) -> None:
        self.folder = Path(folder)
        result = load_result_json(self.folder)
        self.name = str(result["slide"].get("name") or self.folder.name)
        self.read_only: str | None = None
        try:
            _verify()(self.folder)
        except ResultError as exc:
            self.read_only = f"{exc} — opened read-only"
            LOG.warning("%s", self.read_only)
        self.slide_path = resolve_slide(self.folder, result, slides)
        self.tiles = DeepZoomTiles(self.slide_path)
        self.lock = threading.Lock()  # one save or sign-out at a time from this server

    def close(self) -> None:
        """Close the slide."""
        self.tiles.close()

    # -- reading ------------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """Everything the page shows for the current revision."""
        result = load_result_json(self.folder)
        table = read_findings_csv(self.folder / "findings.csv")
        polygons = read_polygons(self.folder)
        crops = set(_crop_ids(self.folder))
        thresholds = morphometry_thresholds(result)
        glomeruli = [
            glomerulus_record(row, polygons[int(row["glomerulus_id"])], thresholds, gid in crops)
            for row in table.to_dict("records")
            if (gid := int(row["glomerulus_id"])) in polygons
        ]
        revision = int(result["revision"])
        last = _last_event(self.folder, revision)
        return {
            "name": self.name,
            "folder": str(self.folder),
            "slide": {
                "path": str(self.slide_path),
                "mpp": float(result["slide"]["mpp"]),
                "dimensions": result["slide"]["dimensions"],
            },
            "patient_id": result.get("patient_id"),
            "biopsy_date": result.get("biopsy_date"),
            "stain": result.get("stain"),
            "revision": revision,
            "status": result["status"],
            "confirmation": result.get("confirmation"),
            "last_event": {k: last.get(k) for k in ("event", "by", "at", "note")},
            "read_only": self.read_only,
            "warnings": [str(w) for w in result.get("warnings") or []],
            "glomeruli": glomeruli,
            "cortex": dict(result.get("cortex_fractions") or {}),
            "biopsy": result.get("biopsy") or {},
            "class_override": result.get("class_override"),
            "comment": result.get("comment"),
            "summary": summary(result["scores"]),
            "supports": sorted(_review_keywords()),
        }

    def crop(self, gid: int) -> bytes:
        """The stored JPEG crop of a glomerulus; ``KeyError`` if it has none."""
        index = _crop_index(self.folder)
        entry = index.get(str(gid))
        if entry is None:
            raise KeyError(gid)
        return (self.folder / "assets" / entry["file"]).read_bytes()

    # -- previewing ---------------------------------------------------------------------------

    def preview(self, edits: PageEdits) -> dict[str, Any]:
        """The summary the edits would give, scored as the save will score it; nothing written."""
        from ..scoring import score_findings

        result = load_result_json(self.folder)
        table = _edited_table(read_findings_csv(self.folder / "findings.csv"), edits)
        cortex = dict(result.get("cortex_fractions") or {})
        cortex.update(edits.cortex or {})
        score = score_findings(
            _scoring_view(table, edits),
            cortex={k: v for k, v in cortex.items() if v is not None},
            config=load_config(result["config"]),
            biopsy=_biopsy_inputs(
                edits.biopsy if edits.biopsy is not None else result.get("biopsy")
            ),
        )
        out = summary(score.to_dict())
        out["main_calls"] = {
            str(int(row["glomerulus_id"])): main_call(row) for row in table.to_dict("records")
        }
        return out

    # -- writing ------------------------------------------------------------------------------

    def _check_writable(self, base_revision: int) -> None:
        if self.read_only:
            raise ReadOnly(f"{self.folder}: {self.read_only}")
        result = load_result_json(self.folder)
        current = int(result["revision"])
        if base_revision != current:
            last = _last_event(self.folder, current)
            raise StaleRevision(
                f"revision {current} was saved since you opened revision {base_revision}: "
                f"changed by {last.get('by') or 'unknown'} at {last.get('at') or '?'} — reload"
            )

    def save(self, edits: PageEdits) -> dict[str, Any]:
        """Write the page's edits as one new revision through :func:`lnpath.review`."""
        if not edits.pathologist:
            raise InputError("save: enter your name first (it goes into the audit trail)")
        with self.lock:
            self._check_writable(edits.base_revision)
            with tempfile.TemporaryDirectory(prefix="lnpath-ws-") as tmp:
                kwargs = self._review_arguments(edits, Path(tmp))
                if not kwargs:
                    raise InputError("save: nothing to save")
                _call_review(self.folder, edits, kwargs)
        return self.state()

    def _review_arguments(self, edits: PageEdits, tmp: Path) -> dict[str, Any]:
        """The :func:`lnpath.review` keywords for the edits (files written under ``tmp``)."""
        supported = _review_keywords()
        kwargs: dict[str, Any] = {}
        table = read_findings_csv(self.folder / "findings.csv")
        if edits.glomeruli or edits.added:
            edited = _edited_table(table, edits)
            exclusions = {
                int(g): str(e)
                for g, e in zip(edited["glomerulus_id"], edited["exclusion"], strict=True)
                if e
            }
            if "exclusions" in supported:
                kwargs["exclusions"] = exclusions or None
            else:  # this lnpath's review knows only deletion and the ischemic flag
                edited = edited[edited["exclusion"] != "not_glomerulus"].copy()
                if "ischemic" not in edited:
                    edited["ischemic"] = pd.array([pd.NA] * len(edited), dtype="boolean")
                edited.loc[edited["exclusion"] == "ischemic", "ischemic"] = True
            edited = edited.drop(columns=["exclusion"])
            if edits.added:
                kwargs["geojson"] = self._geojson_with(edits.added, tmp / "glomeruli.geojson")
                start = int(table["glomerulus_id"].max()) + 1
                new = pd.DataFrame({"glomerulus_id": range(start, start + len(edits.added))})
                edited = pd.concat([edited, new], ignore_index=True)
            path = tmp / "findings.csv"
            edited.to_csv(path, index=False)
            kwargs["findings"] = path
        if edits.cortex:
            kwargs["cortex"] = dict(edits.cortex)
        for name in ("biopsy", "class_override", "comment"):
            value = getattr(edits, name)
            if value is not None:
                kwargs[name] = value
        return kwargs

    def _geojson_with(self, added: list[list[tuple[float, float]]], path: Path) -> Path:
        """The result's own GeoJSON plus the drawn outlines, for review to add them."""
        features = read_qupath(self.folder / "glomeruli.geojson")
        for points in added:
            polygon = Polygon(points)
            if not polygon.is_valid or polygon.area <= 0:
                raise InputError("save: a drawn glomerulus outline crosses itself; redraw it")
            features.append(
                QuPathFeature(
                    geometry=polygon, classification="Glomerulus", object_type="annotation"
                )
            )
        write_qupath(features, path)
        return path

    def confirm(self, base_revision: int, pathologist: str, note: str | None) -> dict[str, Any]:
        """Sign out the revision the page shows, through :func:`lnpath.confirm`."""
        from ..signoff import confirm

        with self.lock:
            self._check_writable(base_revision)
            confirm(self.folder, pathologist=pathologist, note=note or None)
        return self.state()


# --------------------------------------------------------------------------------------------
# The one writer, whatever its signature today


def _review() -> Callable[..., Any]:
    from ..signoff import review

    return review


def _verify() -> Callable[..., Any]:
    from ..signoff import verify

    return verify


def _review_keywords() -> set[str]:
    return set(inspect.signature(_review()).parameters)


def _call_review(folder: Path, edits: PageEdits, kwargs: dict[str, Any]) -> None:
    """Call :func:`lnpath.review` with the sign-out keywords (``pathologist``, ``base_revision``,
    ``biopsy`` ...); a field this lnpath's review does not take yet is refused, never dropped."""
    supported = _review_keywords()
    missing = sorted(k for k in kwargs if k not in supported)
    if missing:
        raise InputError(
            f"save: this lnpath cannot record {', '.join(missing)} yet (its review has no "
            "such field); leave those fields unchanged"
        )
    who = "pathologist" if "pathologist" in supported else "reviewer"
    kwargs[who] = edits.pathologist
    kwargs["note"] = edits.note
    if "base_revision" in supported:
        kwargs["base_revision"] = edits.base_revision
    try:
        _review()(folder, **kwargs)
    except ResultError as exc:
        if "changed by" in str(exc):
            raise StaleRevision(str(exc)) from None
        raise


def _crop_index(folder: Path) -> dict[str, Any]:
    try:
        index = json.loads((folder / "assets" / "index.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return dict(index.get("crops") or {})


def _crop_ids(folder: Path) -> list[int]:
    return [int(g) for g in _crop_index(folder)]


def colours() -> dict[str, str]:
    """QuPath class -> CSS colour, the report's palette."""
    return {label: f"rgb({r},{g},{b})" for label, (r, g, b) in CLASS_COLOURS.items()}


def lesion_labels() -> list[dict[str, str]]:
    """The lesions in key order with their labels and digit keys."""
    return [
        {"key": key, "lesion": lesion, "label": LESION_LABELS[lesion]}
        for key, lesion in LESION_KEYS.items()
    ]
