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
* crops are read again from each result's slide at the model's µm/px, after checking that the file
  found is the slide the result was scored on (its fingerprint);
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

from lnpath.core.errors import InputError, SlideError
from lnpath.core.findings import LESIONS, is_missing
from lnpath.core.progress import progress_bar
from lnpath.results.folder import read_polygons
from lnpath.training.evaluation import MIN_PER_CLASS, label_counts, thin_labels

log = logging.getLogger(__name__)

EXCLUSIONS = ("not_glomerulus", "ischemic")
GROUPED_BY = "patient (slide where no patient id)"


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
    """The slide file of a result: its recorded path, else ``slide_root/<slide name>``.

    Raises:
        SlideError: the slide is in neither place (moved), naming both and how to point at it.
    """
    info = result.record["slide"]
    recorded = Path(info["path"])
    candidates = [recorded]
    if slide_root is not None:
        candidates.append(Path(slide_root) / str(info.get("name") or recorded.name))
    for path in candidates:
        if path.is_file():
            return path
    where = f" nor in {slide_root}" if slide_root is not None else ""
    raise SlideError(
        f"{result.folder}: its slide {recorded} is not there{where} (moved?); pass the folder "
        "that now holds it with --slide-root DIR (slide_root= in Python)"
    )


def _outline(geometry: BaseGeometry) -> BaseGeometry:
    """A glomerulus is one connected outline: a MultiPolygon keeps its largest part."""
    parts = getattr(geometry, "geoms", [geometry])
    return max(parts, key=lambda g: g.area)


@dataclass
class _Outline:
    id: int
    polygon: BaseGeometry


def _open(result: ConfirmedResult, slide_root: str | Path | None) -> Any:
    """The result's slide, refused when the file found is not the slide that was scored."""
    from lnpath.wsi.slide import open_slide

    path = locate_slide(result, slide_root)
    slide = open_slide(path, mpp=result.record["slide"].get("mpp"))
    if slide.fingerprint().get("sha256") != result.slide_sha256:
        slide.close()
        raise SlideError(
            f"{path}: not the slide {result.folder} was scored on (fingerprint differs); "
            "point --slide-root at the original file"
        )
    return slide


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
    """Labels per result, the lesions kept, and what the card records about them."""

    tables: list[tuple[ConfirmedResult, pd.DataFrame]]
    labels: tuple[str, ...]
    refused: dict[str, str]
    excluded: int


def _assemble(results: Sequence[ConfirmedResult], slide_root: str | Path | None) -> _Assembly:
    """Labels of every result, after checking that every slide can be found (fail before work)."""
    tables, excluded = [], 0
    for result in results:
        locate_slide(result, slide_root)
        table = confirmed_labels(result.findings)
        excluded += len(result.findings) - len(table)
        tables.append((result, table))
    stacked = np.concatenate([t[list(LESIONS)].to_numpy(float) for _, t in tables])
    labels, refused = select_labels(label_counts(stacked, LESIONS))
    groups = {result.group for result in results}
    if len(groups) < 2:
        who = "patient" if groups.pop().startswith("patient:") else "slide"
        raise InputError(
            f"the confirmed biopsies ({len(results)}) are all of one {who}: validation would "
            f"test on the {who} it learned from; nothing written (confirmed biopsies of at least "
            "two patients are needed, or two slides where no patient id is recorded)"
        )
    return _Assembly(tables, labels, refused, excluded)


def _glomeruli(
    assembly: _Assembly, slide_root: str | Path | None
) -> Iterator[tuple[ConfirmedResult, pd.DataFrame, Any, list[_Outline]]]:
    """Per result: its labelled rows, open slide and outlines (rows without any kept label out)."""
    for result, table in assembly.tables:
        rows = table[table[list(assembly.labels)].notna().any(axis=1)]
        polygons = read_polygons(result.folder)
        outlines = [_Outline(int(g), _outline(polygons[int(g)])) for g in rows["glomerulus_id"]]
        slide = _open(result, slide_root)
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
) -> Any:
    """Glomerulus crops and confirmed labels for the lesion CNN (:class:`LabelledCrops`).

    Raises:
        InputError: no lesion has enough labels. SlideError: a slide moved or changed.
    """

    from lnpath.analysis.lesions import square_crop
    from lnpath.analysis.measure import read_glomerulus
    from lnpath.training.lesion_data import LabelledCrops

    assembly = _assemble(results, slide_root)
    images, targets, groups, classes = [], [], [], []
    used: dict[str, int] = {}
    unreadable = 0
    total = sum(len(t) for _, t in assembly.tables)
    bar = progress_bar(total, "reading confirmed glomeruli", "glom", progress)
    with bar:
        for result, rows, slide, outlines in _glomeruli(assembly, slide_root):
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
        source=f"confirmed calls of {len(results)} confirmed result folders",
        mpp=mpp,
        grouped_by=GROUPED_BY,
        provenance=_provenance(assembly, used, ignored, unreadable),
    )


def measure_results(
    results: Sequence[ConfirmedResult],
    ignored: dict[str, list[str]],
    slide_root: str | Path | None = None,
    progress: bool | None = None,
) -> Any:
    """Measurements and confirmed labels for the morphometry calibration
    (:class:`~lnpath.training.calibration.MeasuredGlomeruli`), measured afresh from the slides so
    that the model is fitted on exactly what this lnpath version measures when it calls.

    Raises:
        InputError: no lesion has enough labels. SlideError: a slide moved or changed.
    """
    from lnpath.analysis.measure import DEFAULT_MPP, MEASUREMENTS, measure_glomeruli
    from lnpath.training.calibration import MeasuredGlomeruli

    assembly = _assemble(results, slide_root)
    features, targets, groups, classes = [], [], [], []
    used: dict[str, int] = {}
    unreadable = 0
    for result, rows, slide, outlines in _glomeruli(assembly, slide_root):
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
        source=f"confirmed calls of {len(results)} confirmed result folders",
        mask="result outline",
        skipped=unreadable,
        grouped_by=GROUPED_BY,
        provenance=_provenance(assembly, used, ignored, unreadable),
    )
