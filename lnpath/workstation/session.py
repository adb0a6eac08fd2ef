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
from pathlib import Path
from typing import Any

import pandas as pd
from shapely.geometry import Point, Polygon

from lnpath.core.errors import InputError, ResultError, SignOutRefused, SlideError
from lnpath.core.vocabulary import main_call
from lnpath.io.configfile import load_config
from lnpath.io.hashing import recorded_sha256
from lnpath.io.qupath import QuPathFeature, read_qupath, write_qupath
from lnpath.report.charts import morphometry_thresholds
from lnpath.results.edits import CORTEX_FIELDS, beyond_slide
from lnpath.results.folder import load_result_json, read_audit, read_findings_csv, read_polygons
from lnpath.results.queue import review_order
from lnpath.results.seal import confirmation_event, verify
from lnpath.scoring.biopsy import merge_biopsy, normalise_biopsy
from lnpath.workstation.edits import PageEdits, biopsy_inputs, edited_table, scoring_view
from lnpath.workstation.records import (
    COMPONENT_LABELS,
    addenda_rows,
    glomerulus_record,
    summary,
)
from lnpath.workstation.tiles import DeepZoomTiles

LOG = logging.getLogger(__name__)


def drawn_outlines(
    added: list[list[tuple[float, float]]], dimensions: tuple[int, int]
) -> list[Polygon]:
    """The page's drawn outlines as polygons; one that crosses itself, encloses no area (three
    points in a line) or reaches past the slide's level-0 frame (``dimensions``, width and
    height in px) is refused, in the preview as in the save: review refused the last only at the
    save, naming a temporary file and a feature id the page never showed.

    Raises:
        InputError: an outline that is not a simple polygon with an area on the slide.
    """
    width, height = dimensions
    polygons = []
    for number, points in enumerate(added, start=1):
        polygon = Polygon(points)
        if not polygon.is_valid or polygon.area <= 0:
            raise InputError(
                f"drawn glomerulus {number}: its outline crosses itself or encloses no area; "
                "redraw it"
            )
        if beyond_slide(polygon, (width, height)):
            k, (x, y) = next(
                (k, p) for k, p in enumerate(points, 1) if beyond_slide(Point(p), (width, height))
            )
            raise InputError(
                f"drawn glomerulus {number}: point {k} ({x:.1f}, {y:.1f}) lies outside the slide "
                f"(x 0 to {width}, y 0 to {height} px); redraw it on the slide"
            )
        polygons.append(polygon)
    return polygons


class StaleRevision(ResultError):
    """The page's revision is no longer the folder's: someone saved in between."""


class ReadOnly(ResultError):
    """The result failed verification and is open for reading only."""


# --------------------------------------------------------------------------------------------
# Opening a result and finding its slide


def resolve_slide(folder: Path, result: Mapping[str, Any], candidates: list[Path]) -> Path:
    """The slide file of a result: a ``--slide`` candidate with its fingerprint, else its own path.

    Raises:
        SlideError: the recorded file is missing or changed, naming the path and ``--slide``.
    """
    info = result["slide"]
    recorded = Path(info["path"])
    fingerprint = info["fingerprint"]
    for path in (*candidates, recorded):
        if path.is_file() and recorded_sha256(path, fingerprint) == fingerprint["sha256"]:
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


# --------------------------------------------------------------------------------------------
# The session


class ResultSession:
    """One opened result: its slide tiles, its current state, and the single path to write it."""

    def __init__(self, folder: Path, slides: list[Path]) -> None:
        self.folder = Path(folder)
        result = load_result_json(self.folder)
        self.read_only: str | None = None
        try:
            verify(self.folder)
        except ResultError as exc:
            if not isinstance(result["slide"], dict):  # no slide to open it on, even read-only
                raise
            self.read_only = f"{exc} — opened read-only"
            LOG.warning("%s", self.read_only)
        self.name = str(result["slide"].get("name") or self.folder.name)
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
        events = read_audit(self.folder)
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
            # which scoring this is: a folder scored anew at the same path is another result
            "created_at": result.get("created_at"),
            "revision": revision,
            "status": result["status"],
            "confirmation": result.get("confirmation"),
            "last_event": {k: last.get(k) for k in ("event", "by", "at", "note")},
            "read_only": self.read_only,
            "warnings": [str(w) for w in result.get("warnings") or []],
            "glomeruli": glomeruli,
            "review_order": review_order(table),
            # a folder that failed verification vouches for no signature in it
            "addenda": addenda_rows(
                list(result.get("addenda") or []), [] if self.read_only else events
            ),
            # a sign-out signed with a key: an addendum added here (no key) is said unsigned
            "confirmation_signed": result["status"] == "confirmed"
            and bool(events)
            and not self.read_only
            and isinstance(confirmation_event(events).get("signature"), dict),
            "cortex": dict(result.get("cortex_fractions") or {}),
            "biopsy": result.get("biopsy") or {},
            "class_override": result.get("class_override"),
            "comment": result.get("comment"),
            "summary": summary(result["scores"], _marks(result.get("biopsy"))),
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
        from lnpath.workflow.scoring import score_findings

        result = load_result_json(self.folder)
        # a page left open while someone saved: its edits scored on their revision would be a
        # summary of neither; say so now, not only when it saves
        self._check_current(result, edits.base_revision, edits.base_created)
        biopsy = result.get("biopsy")
        if edits.biopsy is not None:
            # what the save will store: a value it would refuse is refused now
            biopsy = merge_biopsy(biopsy, normalise_biopsy(edits.biopsy))
        drawn_outlines(edits.added, _dimensions(result))  # one the save refuses is refused now
        table = edited_table(read_findings_csv(self.folder / "findings.csv"), edits)
        cortex = dict(result.get("cortex_fractions") or {})
        cortex.update(edits.cortex or {})
        score = score_findings(
            scoring_view(table, edits),
            cortex={k: v for k, v in cortex.items() if v is not None},
            config=load_config(result["config"]),
            biopsy=biopsy_inputs(biopsy),
        )
        out = summary(score.to_dict(), _marks(biopsy))
        out["main_calls"] = {
            str(int(row["glomerulus_id"])): main_call(row) for row in table.to_dict("records")
        }
        return out

    # -- writing ------------------------------------------------------------------------------

    def _check_writable(self, base_revision: int, base_created: str | None) -> None:
        if self.read_only:
            raise ReadOnly(f"{self.folder}: {self.read_only}")
        self._check_current(load_result_json(self.folder), base_revision, base_created)

    def _check_current(
        self, result: Mapping[str, Any], base_revision: int, base_created: str | None
    ) -> None:
        """Refuse edits made on a revision that is no longer the folder's (naming who saved), or
        on another scoring of the folder: one scored anew while the page was open starts again at
        revision 1, and the page's calls for its G3 would land on the new scoring's G3."""
        if base_created is not None and base_created != result.get("created_at"):
            raise StaleRevision(
                f"{self.folder} was scored anew ({result.get('created_at')}) since you opened "
                f"the scoring of {base_created}: it is another result — reload"
            )
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
            self._check_writable(edits.base_revision, edits.base_created)
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
            edited = edited_table(table, edits)
            # only what the page changed, "" to include again: a kept exclusion keeps its reason
            exclusions = {
                gid: values["exclusion"] or ""
                for gid, values in edits.glomeruli.items()
                if "exclusion" in values
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
        for polygon in drawn_outlines(added, _dimensions(load_result_json(self.folder))):
            features.append(
                QuPathFeature(
                    geometry=polygon, classification="Glomerulus", object_type="annotation"
                )
            )
        write_qupath(features, path)
        return path

    def confirm(
        self, base: tuple[int, str | None], pathologist: str, note: str | None
    ) -> dict[str, Any]:
        """Sign out the revision the page shows (``base``: its revision and ``created_at``),
        through :func:`lnpath.confirm`."""
        from lnpath.workflow.signoff import confirm

        with self.lock:
            self._check_writable(*base)
            _check_complete(self.folder)
            confirm(self.folder, pathologist=pathologist, note=note or None)
        return self.state()

    def addendum(self, base: tuple[int, str | None], pathologist: str, text: str) -> dict[str, Any]:
        """Add an addendum to the signed-out revision the page shows, through
        :func:`lnpath.add_addendum` (the signed content and its seal stay as signed)."""
        from lnpath.workflow.signoff import add_addendum

        with self.lock:
            self._check_writable(*base)
            add_addendum(self.folder, text, pathologist=pathologist)
        return self.state()


def _dimensions(result: Mapping[str, Any]) -> tuple[int, int]:
    """The slide's level-0 width and height in px, as result.json records them."""
    width, height = result["slide"]["dimensions"]
    return int(width), int(height)


def _marks(biopsy: Mapping[str, Any] | None) -> dict[str, str]:
    """The biopsy's "not evaluable" marks (component -> reason)."""
    return dict((biopsy or {}).get("not_evaluable") or {})


def _check_complete(folder: Path) -> None:
    """Refuse the sign-out of an incomplete index naming the page's fields, not the command line.

    The rule is :func:`lnpath.confirm`'s own (its check runs again under its lock); only the
    wording is the page's.

    Raises:
        SignOutRefused: an index component neither assessed nor marked not evaluable.
    """
    from lnpath.workflow.signoff import unsigned_gaps

    gaps = unsigned_gaps(load_result_json(folder))
    if not gaps:
        return
    names = [COMPONENT_LABELS.get(g, g.replace("_", " ")) for g in gaps]
    supply = []
    cortex = [COMPONENT_LABELS[g] for g in gaps if g in CORTEX_FIELDS]
    if cortex:
        supply.append(f"enter {', '.join(cortex)} under Biopsy > Cortex")
    if len(cortex) < len(gaps):
        supply.append("call the lesions left undecided (u: next undecided)")
    how = "; ".join(supply)
    raise SignOutRefused(
        f"cannot sign an incomplete index; not assessed: {', '.join(names)}. {how[0].upper()}"
        f"{how[1:]}, or give each a reason under Biopsy > Not evaluable; save, then sign out"
    )


# --------------------------------------------------------------------------------------------
# The one writer, whatever its signature today


def _review() -> Callable[..., Any]:
    from lnpath.workflow.signoff import review

    return review


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
