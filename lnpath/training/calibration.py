"""Calibrate the morphometry lesion caller on a lab's own labelled glomeruli.

The default rules of :class:`lnpath.analysis.lesions.MorphometryCaller` are fixed a priori and, on
other
labs' PAS images, specific but insensitive. No licensed sclerosis labels with pixels exist to fit
better thresholds for everyone, so a lab fits them on its own labels instead: per lesion, an
L2-regularised logistic regression on the standardised ``m_*`` measurements of
:mod:`lnpath.analysis.measure`.

* **Why logistic regression**: it is fitted by maximum likelihood, so its outputs are
  probabilities in the lab's own population, prevalence included (calibration is checked out of
  fold with the Brier score; classes are not reweighted, so a rare lesion is called at p >= 0.5
  only when the evidence outweighs its rarity), and its coefficients on standardised
  measurements stay readable ("more open lumen, less sclerosis").
* **Regularisation**: a fixed Gaussian prior of unit variance on each standardised coefficient
  (L2 penalty ``0.5 * ||w||²``, the intercept unpenalised), chosen beforehand, not tuned: it keeps
  small or separable label sets from driving the coefficients to infinity.
* **Measurement**: glomeruli are measured with :func:`~lnpath.analysis.measure.measure_crop` at the
  working resolution :data:`~lnpath.analysis.measure.DEFAULT_MPP`, inside the QuPath polygon, or
  for a
  crops folder inside a mask image (CSV column ``mask``) or else the ellipse inscribed in the crop
  shrunk to 90 % (a bounding-box crop plus a little context: the ellipse approximates the outline
  without the surrounding tubules). Crop files are white-normalised against their own glass, as
  :func:`~lnpath.analysis.measure.measure_crop` does by default. Crops that cannot be measured are
  skipped
  with a warning and counted in the card.
* **Validation**: grouped k-fold cross-validation (all glomeruli of one slide/image in one fold);
  the standardisation is refitted inside each fold. The final model uses every sample.

The model folder holds only ``card.json``; its ``sha256`` covers a canonical JSON of the
``parameters`` (everything that determines a call), checked when the caller loads it.
"""

from __future__ import annotations

import datetime as _dt
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import optimize
from skimage import draw, transform

from lnpath import __version__
from lnpath.analysis.calibrated import (
    CARD_FILE,
    INTENDED_USE,
    KIND,
    parameters_sha256,
    sigmoid,
)
from lnpath.analysis.lesions import CALL_STAINS
from lnpath.analysis.measure import DEFAULT_MPP, MEASUREMENTS, measure_crop
from lnpath.core.args import refuse_eval_only
from lnpath.core.errors import InputError
from lnpath.core.progress import progress_bar
from lnpath.io.atomic import atomic_dir, check_output_dir, write_json
from lnpath.training.evaluation import MIN_PER_CLASS, evaluate, label_counts
from lnpath.training.lesion_data import (
    qupath_glomeruli,
    read_crop_image,
    read_label_table,
    resolve_targets,
)
from lnpath.training.lesions import cv_folds

log = logging.getLogger(__name__)

L2 = 1.0
ELLIPSE_SHRINK = 0.9


@dataclass
class MeasuredGlomeruli:
    """Labelled glomeruli as measurement vectors.

    Attributes:
        features: (N, F) measurements, columns named by ``feature_names``.
        feature_names: the ``m_*`` measurements used.
        targets: (N, L) 0/1 (NaN: not assessed), one column per entry of ``labels``.
        labels: lesion names (columns of the findings table).
        groups: (N,) slide or image of each glomerulus; cross-validation keeps a group in one fold.
        classes: the original class name of each glomerulus.
        mapping: class name -> lesions it asserts.
        source: what the glomeruli came from (for the model card).
        mask: how the glomerulus outline was obtained.
        skipped: labelled glomeruli that could not be measured.
        grouped_by: what ``groups`` are, for the card.
        provenance: extra card entries (e.g. the confirmed results the labels came from).
    """

    features: np.ndarray
    feature_names: tuple[str, ...]
    targets: np.ndarray
    labels: tuple[str, ...]
    groups: np.ndarray
    classes: list[str]
    mapping: dict[str, tuple[str, ...]]
    source: str
    mask: str
    skipped: int = 0
    grouped_by: str = "slide/image"
    provenance: dict[str, Any] = field(default_factory=dict)

    def counts(self) -> dict[str, dict[str, int]]:
        """Positive, negative and not-assessed (NaN) examples per label."""
        return label_counts(self.targets, self.labels)


def ellipse_mask(shape: tuple[int, int], shrink: float = ELLIPSE_SHRINK) -> np.ndarray:
    """The ellipse inscribed in a crop, axes scaled by ``shrink`` (for crops without a mask)."""
    h, w = shape
    mask = np.zeros(shape, bool)
    rr, cc = draw.ellipse(h / 2, w / 2, shrink * h / 2, shrink * w / 2, shape=shape)
    mask[rr, cc] = True
    return mask


def resample_crop(
    rgb: np.ndarray, mask: np.ndarray, mpp: float, target_mpp: float = DEFAULT_MPP
) -> tuple[np.ndarray, np.ndarray]:
    """Resample a crop (anti-aliased) and its mask from ``mpp`` to ``target_mpp`` µm/px."""
    scale = mpp / target_mpp
    shape = (max(1, round(rgb.shape[0] * scale)), max(1, round(rgb.shape[1] * scale)))
    out = transform.resize(np.asarray(rgb)[..., :3], shape, anti_aliasing=True)
    small = transform.resize(mask.astype(float), shape, order=1, anti_aliasing=False) >= 0.5
    return np.clip(out * 255 + 0.5, 0, 255).astype(np.uint8), small


def _measure(rgb: np.ndarray, mask: np.ndarray, where: str) -> dict[str, float] | None:
    try:
        return measure_crop(rgb, mask, DEFAULT_MPP)
    except InputError as exc:
        log.warning("%s: not measured, skipped: %s", where, exc)
        return None


def _assemble(
    measured: list[dict[str, float] | None],
    classes: list[str],
    groups: list[str],
    mapping: Mapping[str, Sequence[str]],
    origin: str,
    source: str,
    mask: str,
) -> MeasuredGlomeruli:
    """Targets for the mapped classes; unmeasurable glomeruli dropped and counted."""
    targets, labels, keep = resolve_targets(classes, mapping, origin)
    kept = [m for m, k in zip(measured, keep, strict=True) if k]
    ok = np.array([m is not None for m in kept], bool)
    if not ok.any():
        raise InputError(f"{origin}: none of the labelled glomeruli could be measured")
    features = np.array([[m[f] for f in MEASUREMENTS] for m in kept if m is not None], float)
    data = MeasuredGlomeruli(
        features=features,
        feature_names=MEASUREMENTS,
        targets=targets[ok],
        labels=labels,
        groups=np.asarray(groups, dtype=object)[keep][ok],
        classes=[str(c) for c in np.asarray(classes, dtype=object)[keep][ok]],
        mapping={k: tuple(v) for k, v in mapping.items()},
        source=source,
        mask=mask,
        skipped=int((~ok).sum()),
    )
    if data.skipped:
        log.warning("%s: %d labelled glomeruli could not be measured", origin, data.skipped)
    return data


def measure_folder(
    folder: str | Path,
    table: str | Path,
    mapping: Mapping[str, Sequence[str]],
    crop_mpp: float,
    progress: bool | None = None,
) -> MeasuredGlomeruli:
    """Measure crops listed in a CSV (``image``, ``class``, optional ``group`` and ``mask``).

    Args:
        folder: folder the ``image`` (and ``mask``) paths are relative to.
        table: the label CSV.
        mapping: class name -> lesions.
        crop_mpp: µm/px of the crop images; they are resampled to the working resolution.
        progress: a bar over the crops; default on in Jupyter and on a terminal.

    Raises:
        InputError: the CSV is malformed, an image is unreadable, ``crop_mpp`` is not positive, a
            path lies under ``eval-only/``, or no class maps to a lesion.
    """

    if not crop_mpp > 0:
        raise InputError(f"crop µm/px must be positive, got {crop_mpp}")
    folder, table = Path(folder), Path(table)
    refuse_eval_only(folder, table)
    rows = read_label_table(table)
    kept = [r for r in rows if r["class"] in mapping]
    refuse_eval_only(*(folder / r[key] for r in kept for key in ("image", "mask") if r.get(key)))
    with_masks = any(r.get("mask") for r in rows)
    measured: list[dict[str, float] | None] = []
    for row in progress_bar(len(rows), "measuring crops", "crop", progress, iterable=rows):
        if row["class"] not in mapping:
            measured.append(None)  # dropped (and reported) by resolve_targets
            continue
        rgb = read_crop_image(folder / row["image"])
        if rgb.ndim != 3 or rgb.shape[-1] < 3:
            raise InputError(f"{folder / row['image']}: not an RGB image ({rgb.shape})")
        if row.get("mask"):
            stored = np.asarray(read_crop_image(folder / row["mask"]) > 0)
            mask = np.asarray(stored.any(axis=-1) if stored.ndim == 3 else stored)
            if mask.shape != rgb.shape[:2]:
                raise InputError(f"{folder / row['mask']}: mask size differs from its image")
        else:
            mask = ellipse_mask(rgb.shape[:2])
        rgb, mask = resample_crop(rgb, mask, crop_mpp)
        measured.append(_measure(rgb, mask, str(folder / row["image"])))
    how = "mask images" if with_masks else f"inscribed ellipse shrunk to {ELLIPSE_SHRINK:.0%}"
    return _assemble(
        measured,
        [r["class"] for r in rows],
        [r.get("group") or r["image"] for r in rows],
        mapping,
        str(table),
        f"crops from {folder.name} listed in {table.name} at {crop_mpp} µm/px",
        how,
    )


def measure_qupath(
    pairs: Sequence[tuple[str | Path, str | Path]],
    mapping: Mapping[str, Sequence[str]],
    slide_mpp: float | None = None,
    progress: bool | None = None,
) -> MeasuredGlomeruli:
    """Measure the classified glomerulus polygons of QuPath exports on their slides.

    Raises:
        InputError: no class maps to a lesion, or no polygon could be read.
    """

    measured: list[dict[str, float] | None] = []
    classes: list[str] = []
    groups: list[str] = []
    glomeruli = qupath_glomeruli(pairs, DEFAULT_MPP, slide_mpp)
    bar = progress_bar(None, "measuring glomeruli", "glom", progress, iterable=glomeruli)
    for rgb, mask, name, group in bar:
        classes.append(name)
        groups.append(group)
        where = f"{group}: glomerulus {len(classes)} ({name})"
        measured.append(_measure(rgb, mask, where) if name in mapping else None)
    if not classes:
        raise InputError(f"{[str(g) for g, _ in pairs]}: no readable classified polygons")
    origin = ", ".join(str(g) for g, _ in pairs)
    source = f"QuPath annotations ({len(pairs)} slides)"
    return _assemble(measured, classes, groups, mapping, origin, source, "QuPath polygon")


def require_counts(counts: Mapping[str, Mapping[str, int]], origin: str) -> None:
    """Refuse labels with too few examples to fit and cross-validate a model on.

    Raises:
        InputError: a label has fewer than :data:`MIN_PER_CLASS` positives or negatives.
    """
    for name, c in counts.items():
        if min(c["positive"], c["negative"]) < MIN_PER_CLASS:
            raise InputError(
                f"{origin}: label {name} has {c['positive']} positive and {c['negative']} "
                f"negative glomeruli; need at least {MIN_PER_CLASS} of each"
            )


def standardise(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Column means and standard deviations (1 where a column is constant)."""
    means = x.mean(axis=0)
    stds = x.std(axis=0)
    return means, np.where(stds > 1e-12, stds, 1.0)


def fit_logistic(z: np.ndarray, y: np.ndarray, l2: float = L2) -> tuple[np.ndarray, float]:
    """L2-regularised maximum-likelihood logistic regression on standardised features.

    Minimises ``sum(log(1 + exp(s)) - y * s) + 0.5 * l2 * ||w||²`` with ``s = z @ w + b`` (the
    intercept unpenalised) by L-BFGS with the analytic gradient; the objective is strictly convex,
    so the optimum is unique.

    Returns:
        ``(w, b)``: coefficients per standardised feature and intercept.
    """
    z = np.asarray(z, dtype=float)
    y = np.asarray(y, dtype=float)

    def objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
        w, b = theta[:-1], theta[-1]
        s = z @ w + b
        r = sigmoid(s) - y
        value = float(np.sum(np.logaddexp(0.0, s) - y * s) + 0.5 * l2 * w @ w)
        return value, np.append(z.T @ r + l2 * w, r.sum())

    prior = np.clip(y.mean(), 1e-3, 1 - 1e-3)
    start = np.append(np.zeros(z.shape[1]), math.log(prior / (1 - prior)))
    result = optimize.minimize(objective, start, jac=True, method="L-BFGS-B")
    if not result.success:
        log.warning("logistic fit stopped before convergence: %s", result.message)
    return result.x[:-1], float(result.x[-1])


def fit_models(x: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    """Standardisation and one logistic model per label, each on its assessed (non-NaN) rows."""
    means, stds = standardise(x)
    z = (x - means) / stds
    known = ~np.isnan(y)
    fits = [fit_logistic(z[known[:, j]], y[known[:, j], j]) for j in range(y.shape[1])]
    return {
        "means": means,
        "stds": stds,
        "w": np.stack([w for w, _ in fits]),
        "b": [b for _, b in fits],
    }


def predict_models(model: Mapping[str, Any], x: np.ndarray) -> np.ndarray:
    """Probabilities (N, L) of the models :func:`fit_models` returned."""
    z = (x - model["means"]) / model["stds"]
    return sigmoid(z @ model["w"].T + np.asarray(model["b"]))


def cross_validate_logistic(
    features: np.ndarray,
    targets: np.ndarray,
    groups: np.ndarray,
    labels: Sequence[str],
    folds: int = 5,
    seed: int = 0,
    threshold: float = 0.5,
    grouped_by: str = "slide/image",
) -> dict[str, Any]:
    """Grouped k-fold cross-validation of the per-label logistic models.

    Each fold refits the standardisation and the models on the other folds. Metrics per label are
    those of :func:`~lnpath.training.evaluation.evaluate` on the out-of-fold probabilities (κ,
    AUC, sensitivity, specificity with cluster-bootstrap intervals; Brier score beside that of
    always predicting the prevalence; reliability table).

    Returns:
        ``{"folds", "grouped_by", "metrics": {label: {...}}}``.
    """
    x = np.asarray(features, dtype=float)
    y = np.asarray(targets, dtype=float)
    fold, grouped_by = cv_folds(np.asarray(groups, dtype=object), folds, seed, grouped_by)
    n_folds = int(fold.max()) + 1
    prob = np.zeros_like(y)
    for k in range(n_folds):
        test = fold == k
        prob[test] = predict_models(fit_models(x[~test], y[~test]), x[test])
    metrics = {
        name: evaluate(y[:, j], prob[:, j], groups, threshold, seed)
        for j, name in enumerate(labels)
    }
    return {"folds": n_folds, "grouped_by": grouped_by, "metrics": metrics}


def calibrate_morphometry(
    data: MeasuredGlomeruli,
    out: str | Path,
    folds: int = 5,
    seed: int = 0,
    threshold: float = 0.5,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Cross-validate, fit on every glomerulus and write a morphometry-logistic model folder.

    Returns:
        The model card (also written to ``out/card.json``).

    Raises:
        InputError: a label has too few examples (:func:`require_counts`), or ``out`` exists and
            ``overwrite`` is false.
    """
    out = Path(out)
    check_output_dir(out, overwrite, marker="card.json")  # a file or a lab's folder: not after CV
    counts = data.counts()
    require_counts(counts, data.source)
    cv = cross_validate_logistic(
        data.features,
        data.targets,
        data.groups,
        data.labels,
        folds,
        seed,
        threshold,
        data.grouped_by,
    )
    model = fit_models(data.features, data.targets)
    names = list(data.feature_names)
    parameters = {
        "labels": list(data.labels),
        "features": names,
        "mpp": DEFAULT_MPP,
        "means": dict(zip(names, map(float, model["means"]), strict=True)),
        "stds": dict(zip(names, map(float, model["stds"]), strict=True)),
        "coefficients": {
            label: dict(zip(names, map(float, model["w"][j]), strict=True))
            for j, label in enumerate(data.labels)
        },
        "intercepts": dict(zip(data.labels, map(float, model["b"]), strict=True)),
        "threshold": float(threshold),
        "l2": L2,
    }
    card: dict[str, Any] = {
        "name": out.name,
        "kind": KIND,
        "lnpath_version": __version__,
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "labels": list(data.labels),
        "features": names,
        "stains": list(CALL_STAINS),
        "parameters": parameters,
        "sha256": parameters_sha256(parameters),
        "class_mapping": {k: list(v) for k, v in data.mapping.items()},
        "counts": counts,
        "training": {
            "source": data.source,
            "mask": data.mask,
            "measured_at_mpp": DEFAULT_MPP,
            "samples": len(data.targets),
            "skipped_unmeasurable": data.skipped,
            "seed": seed,
            "model": f"L2-regularised logistic regression (penalty {L2} on standardised "
            "coefficients), maximum likelihood",
        },
        "cross_validation": cv,
        "threshold": float(threshold),
        "intended_use": INTENDED_USE,
        "status": "calibrated on a lab's own labels; validate locally before relying on it",
        **data.provenance,
    }
    with atomic_dir(out, overwrite=overwrite, marker="card.json") as tmp:
        write_json(tmp / CARD_FILE, card)
    log.info("wrote morphometry model %s (parameters sha256 %s)", out, card["sha256"][:12])
    return card
