"""Labels from a lab's own sign-outs: the confirmed calls of confirmed result folders.

A confirmed result is a pathologist's call on every glomerulus of a biopsy, so a lab that signs out
with lnpath accumulates the labelled set no public data offers. This module turns already
verified, confirmed results (:mod:`lnpath.training.learning` checks the seals) into the training
sets of :mod:`lnpath.training.lesions` (crops) and :mod:`lnpath.training.calibration`
(measurements):

* a lesion value ``True``/``False`` is a label; ``<NA>`` (not assessed) is a *missing* label, never
  a negative;
* glomeruli the pathologist excluded (``exclusion`` ``not_glomerulus``/``ischemic``, or the older
  ``ischemic`` flag) are skipped;
* crops are read again from each result's slide at the model's µm/px, after checking, before any
  work, that the file found is the slide the result was scored on (its whole-file sha256); a result
  whose slide is missing or is another file stops the run, or with ``skip_missing_slides`` is left
  out, counted and named in the card (slides archived away must not block learning from the rest);
* the folds group glomeruli by patient, else by slide, so no patient is in train and test
  (patient ids compared without case or extra spaces); biopsies of a single patient are refused;
* a lesion with too few positive or negative labels is refused and named in the card.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from shapely.geometry.base import BaseGeometry

from lnpath.core.args import refuse_eval_only
from lnpath.core.errors import InputError, SlideError
from lnpath.core.findings import LESIONS, is_missing
from lnpath.core.progress import progress_bar
from lnpath.io.hashing import recorded_sha256
from lnpath.results.folder import read_polygons
from lnpath.training.evaluation import MIN_PER_CLASS, label_counts, thin_labels

log = logging.getLogger(__name__)

EXCLUSIONS = ("not_glomerulus", "ischemic")
GROUPED_BY = "patient (slide where no patient id)"
#: ``ignored`` keys of results left out for their slide (``skip_missing_slides``)
SLIDE_LEFT_OUT = ("missing_slide", "changed_slide")
_SKIP_HINT = "or leave such results out with --skip-missing-slides (skip_missing_slides=True)"


class SlideUnavailable(SlideError):
    """A result's slide is not found (``missing_slide``) or the file found is another
    (``changed_slide``): the two reasons a lab may choose to leave a result out for."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass
class ConfirmedResult:
    """A verified, confirmed result folder: its record, content seal and findings."""

    folder: Path
    record: dict[str, Any]
    content_sha256: str
    findings: pd.DataFrame

    @property
    def slide_sha256(self) -> str:
        """The slide fingerprint: two results with the same one are two readings of one biopsy."""
        return str(self.record["slide"]["fingerprint"]["sha256"])

    @property
    def group(self) -> str:
        """Patient id, else the slide: what a cross-validation fold must keep together."""
        # " p1" and "P1" are one patient: merging them can only make validation stricter
        patient = " ".join(str(self.record.get("patient_id") or "").split()).casefold()
        return f"patient:{patient}" if patient else f"slide:{self.slide_sha256}"

    def summary(self, glomeruli: int) -> dict[str, Any]:
        """What the model card records of this result (no patient id: cards travel)."""
        confirmation = self.record.get("confirmation") or {}
        models = self.record.get("models") or [{}]
        return {
            "result": self.folder.name,
            "slide_sha256": self.slide_sha256,
            "content_sha256": self.content_sha256,
            # the sealed audit head: which sign-out of that content (a re-signing has another)
            "audit_head": (self.record.get("seal") or {}).get("audit_head"),
            "revision": self.record.get("revision"),
            "confirmed_by": confirmation.get("pathologist"),
            "confirmed_at": confirmation.get("confirmed_at"),
            "lnpath_version": self.record.get("lnpath_version"),
            "lesion_model": {k: models[-1].get(k) for k in ("name", "sha256")},
            "glomeruli": glomeruli,
            # how much of it the pathologist changed rather than accepted from the machine
            "edits": sum(
                1 for c in self.record.get("changes") or [] if c.get("glomerulus") is not None
            ),
        }


def confirmed_labels(findings: pd.DataFrame) -> pd.DataFrame:
    """``glomerulus_id`` and one float column per lesion: 1 present, 0 absent, NaN not assessed.

    Excluded glomeruli are dropped; a folder without the ``exclusion`` column (older results) has
    none excluded beyond its ``ischemic`` flag.
    """
    keep = pd.Series(True, index=findings.index)
    if "exclusion" in findings:
        reason = findings["exclusion"].map(lambda v: "" if is_missing(v) else str(v).strip())
        keep &= ~reason.isin(EXCLUSIONS)
    if "ischemic" in findings:
        keep &= ~findings["ischemic"].astype("boolean").fillna(False).astype(bool)
    rows = findings[keep]
    out = pd.DataFrame({"glomerulus_id": rows["glomerulus_id"].astype(int).to_numpy()})
    for lesion in LESIONS:
        column = rows[lesion] if lesion in rows else pd.Series(pd.NA, index=rows.index)
        out[lesion] = [np.nan if is_missing(v) else float(bool(v)) for v in column]
    return out


def locate_slide(result: ConfirmedResult, slide_root: str | Path | None = None) -> Path:
    """The slide file of a result: its recorded path, else ``slide_root/<slide name>``, whichever
    is the slide it was scored on.

    Every candidate found is hashed (in the scheme result.json recorded) and the first that
    matches is returned: a different file left at the recorded path must never be read as the
    signed slide, nor hide the original under ``slide_root``.

    Raises:
        SlideUnavailable: the slide is in neither place (moved), or the files there are others,
            naming the path and how to point at the slide or leave the result out.
    """
    info = result.record["slide"]
    recorded = Path(info["path"])
    candidates = [recorded]
    if slide_root is not None:
        candidates.append(Path(slide_root) / str(info.get("name") or recorded.name))
    found = [path for path in candidates if path.is_file()]
    for path in found:
        if recorded_sha256(path, result.record["slide"]["fingerprint"]) == result.slide_sha256:
            return path
    if found:
        names = " nor ".join(str(path) for path in found)
        raise SlideUnavailable(
            f"{result.folder}: {names} is not the slide it was scored on (fingerprint differs); "
            "point --slide-root DIR at the original file",
            "changed_slide",
        )
    where = f" nor in {slide_root}" if slide_root is not None else ""
    raise SlideUnavailable(
        f"{result.folder}: its slide {recorded} is not there{where} (moved?); pass the folder "
        "that now holds it with --slide-root DIR (slide_root= in Python)",
        "missing_slide",
    )


def _outline(geometry: BaseGeometry) -> BaseGeometry:
    """A glomerulus is one connected outline: a MultiPolygon keeps its largest part."""
    parts = getattr(geometry, "geoms", [geometry])
    return max(parts, key=lambda g: g.area)


@dataclass
class _Outline:
    id: int
    polygon: BaseGeometry


@dataclass(frozen=True)
class _Verified:
    """A slide file whose sha256 matched, and its size and time then (to notice a later swap)."""

    path: Path
    size: int
    mtime_ns: int

    @classmethod
    def of(cls, path: Path) -> _Verified:
        refuse_eval_only(path)  # a slide scored for evaluation is not one to learn from
        stat = path.stat()
        return cls(path, stat.st_size, stat.st_mtime_ns)


def _open(result: ConfirmedResult, verified: _Verified) -> Any:
    """The result's slide, refused if the verified file was replaced since it was hashed."""
    from lnpath.wsi.slide import open_slide

    if _Verified.of(verified.path) != verified:
        raise SlideError(
            f"{verified.path}: replaced while training on {result.folder} (its size or time "
            "changed after its fingerprint was checked); nothing written"
        )
    return open_slide(verified.path, mpp=result.record["slide"].get("mpp"))


def select_labels(counts: dict[str, dict[str, int]]) -> tuple[tuple[str, ...], dict[str, str]]:
    """Lesions with enough labels to train and validate on, and those refused (with why).

    A lesion no glomerulus has a label for is neither: it simply is not in the data.

    Raises:
        InputError: no lesion has enough labels (nothing would be written).
    """
    present = {n: c for n, c in counts.items() if c["positive"] + c["negative"] > 0}
    refused = thin_labels(present)
    kept = tuple(n for n in present if n not in refused)
    if not kept:
        detail = "; ".join(f"{n}: {why}" for n, why in refused.items()) or "no confirmed calls"
        raise InputError(
            f"no lesion has enough confirmed labels to learn ({detail}); nothing written "
            f"(each lesion needs {MIN_PER_CLASS} positive and {MIN_PER_CLASS} negative glomeruli)"
        )
    for name, why in refused.items():  # recorded in the card and printed by the CLI
        log.info("%s refused: %s", name, why)
    return kept, refused


@dataclass
class _Assembly:
    """Labels per usable result, their verified slides, the lesions kept, and what the card
    records about them."""

    tables: list[tuple[ConfirmedResult, pd.DataFrame]]
    slides: dict[str, _Verified]
    labels: tuple[str, ...]
    refused: dict[str, str]
    excluded: int
    unavailable: list[dict[str, str]]


def _assemble(
    results: Sequence[ConfirmedResult],
    slide_root: str | Path | None,
    skip_missing_slides: bool,
    ignored: dict[str, list[str]],
    progress: bool | None,
) -> _Assembly:
    """Labels of every result whose slide is found and verified (checked before any work).

    Results left out for their slide (``skip_missing_slides``) are added to ``ignored``.
    """
    if slide_root is not None and not Path(slide_root).is_dir():  # not "nor in FILE (moved?)"
        raise InputError(f"{slide_root}: --slide-root (slide_root=) is not a folder")
    tables, slides, unavailable, excluded = [], {}, [], 0
    ignored.update({key: ignored.get(key, []) for key in SLIDE_LEFT_OUT})
    checking = progress_bar(len(results), "checking slide fingerprints", "slide", progress, results)
    for result in checking:
        try:
            slides[str(result.folder)] = _Verified.of(locate_slide(result, slide_root))
        except SlideUnavailable as exc:
            if not skip_missing_slides:
                raise SlideUnavailable(f"{exc}, {_SKIP_HINT}", exc.reason) from None
            log.warning("left out: %s", exc)
            ignored[exc.reason].append(str(result.folder))
            # enough to find the slide in an archive (sha256sum) and train on it next time
            unavailable.append(
                {
                    "result": result.folder.name,
                    "slide": str(result.record["slide"]["path"]),
                    "slide_sha256": result.slide_sha256,
                    "reason": exc.reason,
                }
            )
            continue
        table = confirmed_labels(result.findings)
        excluded += len(result.findings) - len(table)
        tables.append((result, table))
    if not tables:
        missing, changed = (sum(u["reason"] == k for u in unavailable) for k in SLIDE_LEFT_OUT)
        where = f" nor in {slide_root}" if slide_root is not None else ""
        raise InputError(
            f"none of the {len(results)} confirmed results has its slide ({missing} missing, "
            f"{changed} another file at its path{where}); nothing written: pass the folder that "
            "holds the slides with --slide-root DIR"
        )
    stacked = np.concatenate([t[list(LESIONS)].to_numpy(float) for _, t in tables])
    labels, refused = select_labels(label_counts(stacked, LESIONS))
    groups = {result.group for result, _ in tables}
    if len(groups) < 2:
        who = "patient" if groups.pop().startswith("patient:") else "slide"
        raise InputError(
            f"the confirmed biopsies ({len(tables)}) are all of one {who}: validation would "
            f"test on the {who} it learned from; nothing written (confirmed biopsies of at least "
            "two patients are needed, or two slides where no patient id is recorded)"
        )
    return _Assembly(tables, slides, labels, refused, excluded, unavailable)


def _glomeruli(
    assembly: _Assembly,
) -> Iterator[tuple[ConfirmedResult, pd.DataFrame, Any, list[_Outline]]]:
    """Per result: its labelled rows, open slide and outlines (rows without any kept label out)."""
    for result, table in assembly.tables:
        rows = table[table[list(assembly.labels)].notna().any(axis=1)]
        polygons = read_polygons(result.folder)
        outlines = [_Outline(int(g), _outline(polygons[int(g)])) for g in rows["glomerulus_id"]]
        slide = _open(result, assembly.slides[str(result.folder)])
        try:
            yield result, rows, slide, outlines
        finally:
            slide.close()


def _provenance(
    assembly: _Assembly,
    used: dict[str, int],
    ignored: dict[str, list[str]],
    unreadable: int,
) -> dict[str, Any]:
    results = [r.summary(used.get(str(r.folder), 0)) for r, _ in assembly.tables]
    return {
        "training_results": {
            "results": results,
            "biopsies": len(results),
            "groups": len({r.group for r, _ in assembly.tables}),
            "lnpath_versions": sorted({str(r["lnpath_version"]) for r in results}),
            "lesion_models": sorted({str(r["lesion_model"]["name"]) for r in results}),
            "ignored": ignored,
            "slides_left_out": assembly.unavailable,
            "skipped_glomeruli": {"excluded": assembly.excluded, "unreadable": unreadable},
            "labels": "the confirmed calls; not assessed = missing label, not a negative",
        },
        "refused_labels": assembly.refused,
    }


def _targets(rows: pd.DataFrame, labels: tuple[str, ...]) -> np.ndarray:
    return rows[list(labels)].to_numpy(np.float32)


def _refuse_after_reading(
    targets: np.ndarray, labels: tuple[str, ...], refused: dict[str, str]
) -> tuple[np.ndarray, tuple[str, ...]]:
    """Drop lesions that unreadable crops left with too few labels (recorded in ``refused``)."""
    kept, more = select_labels(label_counts(targets, labels))
    refused.update(more)
    return targets[:, [labels.index(n) for n in kept]], kept


def crops_from_results(
    results: Sequence[ConfirmedResult],
    ignored: dict[str, list[str]],
    mpp: float = 1.0,
    size: int = 64,
    slide_root: str | Path | None = None,
    progress: bool | None = None,
    skip_missing_slides: bool = False,
) -> Any:
    """Glomerulus crops and confirmed labels for the lesion CNN (:class:`LabelledCrops`).

    Raises:
        InputError: no lesion has enough labels, or no slide is left. SlideError: a slide moved
            or changed (without ``skip_missing_slides``).
    """

    from lnpath.analysis.lesions import square_crop
    from lnpath.analysis.measure import read_glomerulus
    from lnpath.training.lesion_data import LabelledCrops

    assembly = _assemble(results, slide_root, skip_missing_slides, ignored, progress)
    images, targets, groups, classes = [], [], [], []
    used: dict[str, int] = {}
    unreadable = 0
    total = sum(len(t) for _, t in assembly.tables)
    bar = progress_bar(total, "reading confirmed glomeruli", "glom", progress)
    with bar:
        for result, rows, slide, outlines in _glomeruli(assembly):
            for outline, (_, row) in zip(outlines, rows.iterrows(), strict=True):
                bar.update()
                try:
                    rgb, _ = read_glomerulus(slide, outline.polygon, mpp)
                except InputError as exc:
                    log.warning("%s: glomerulus %d skipped: %s", result.folder, outline.id, exc)
                    unreadable += 1
                    continue
                images.append(square_crop(rgb, size))
                targets.append(row[list(assembly.labels)].to_numpy(np.float32))
                groups.append(result.group)
                classes.append(f"{result.folder.name}:G{outline.id}")
                used[str(result.folder)] = used.get(str(result.folder), 0) + 1
    if not images:
        raise InputError("none of the confirmed glomeruli could be read from their slides")
    y, labels = _refuse_after_reading(np.stack(targets), assembly.labels, assembly.refused)
    return LabelledCrops(
        images=np.stack(images),
        targets=y,
        labels=labels,
        groups=np.asarray(groups, dtype=object),
        classes=classes,
        mapping={},
        source=f"confirmed calls of {len(assembly.tables)} confirmed result folders",
        mpp=mpp,
        grouped_by=GROUPED_BY,
        provenance=_provenance(assembly, used, ignored, unreadable),
    )


def measure_results(
    results: Sequence[ConfirmedResult],
    ignored: dict[str, list[str]],
    slide_root: str | Path | None = None,
    progress: bool | None = None,
    skip_missing_slides: bool = False,
) -> Any:
    """Measurements and confirmed labels for the morphometry calibration
    (:class:`~lnpath.training.calibration.MeasuredGlomeruli`), measured afresh from the slides so
    that the model is fitted on exactly what this lnpath version measures when it calls.

    Raises:
        InputError: no lesion has enough labels, or no slide is left. SlideError: a slide moved
            or changed (without ``skip_missing_slides``).
    """
    from lnpath.analysis.measure import DEFAULT_MPP, MEASUREMENTS, measure_glomeruli
    from lnpath.training.calibration import MeasuredGlomeruli

    assembly = _assemble(results, slide_root, skip_missing_slides, ignored, progress)
    features, targets, groups, classes = [], [], [], []
    used: dict[str, int] = {}
    unreadable = 0
    for result, rows, slide, outlines in _glomeruli(assembly):
        measured = measure_glomeruli(outlines, slide, mpp=DEFAULT_MPP, progress=progress)
        measured = measured.set_index("glomerulus_id").loc[[o.id for o in outlines]]
        x = measured[list(MEASUREMENTS)].to_numpy(float)
        ok = np.isfinite(x).all(axis=1)
        unreadable += int((~ok).sum())
        features.append(x[ok])
        targets.append(_targets(rows, assembly.labels)[ok])
        groups += [result.group] * int(ok.sum())
        classes += [f"{result.folder.name}:G{g}" for g in rows["glomerulus_id"][ok]]
        used[str(result.folder)] = int(ok.sum())
    if not classes:
        raise InputError("none of the confirmed glomeruli could be measured on their slides")
    y, labels = _refuse_after_reading(np.concatenate(targets), assembly.labels, assembly.refused)
    return MeasuredGlomeruli(
        features=np.concatenate(features),
        feature_names=MEASUREMENTS,
        targets=y,
        labels=labels,
        groups=np.asarray(groups, dtype=object),
        classes=classes,
        mapping={},
        source=f"confirmed calls of {len(assembly.tables)} confirmed result folders",
        mask="result outline",
        skipped=unreadable,
        grouped_by=GROUPED_BY,
        provenance=_provenance(assembly, used, ignored, unreadable),
    )
