"""Train a lesion CNN on a lab's own labels, with cross-validated metrics and calibrated outputs.

No public data set labels the lupus activity lesions, so the trained caller is only as good as the
labels a lab brings: QuPath annotations whose class names are mapped to lesion columns, plus the
slides, or a folder of crops with a CSV. Metrics are estimated by grouped k-fold cross-validation
(all glomeruli of one slide/image stay in one fold, so neighbours do not leak between train and
test). The out-of-fold logits also fit a per-lesion Platt scaling (logistic regression on the
logit), so the ``p_<lesion>`` the model emits are calibrated on data it was not trained on --
the only calibration a small label set can justify. The metrics themselves score each fold with a
scaling fitted on the other folds, so no label calibrates its own call. The final network is
trained on every sample.
"""

from __future__ import annotations

import datetime as _dt
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lnpath import __version__
from lnpath.analysis.calibrated import INTENDED_USE
from lnpath.analysis.lesion_cnn import calibrated, predict_logits
from lnpath.core.errors import InputError
from lnpath.core.progress import progress_bar
from lnpath.io.atomic import atomic_dir, check_output_dir, write_json, write_text
from lnpath.io.hashing import file_sha256
from lnpath.models.store import CARD_FILE, write_weights
from lnpath.nn.lesion_net import LesionNet, LesionNetConfig
from lnpath.training.evaluation import evaluate, label_counts
from lnpath.training.lesion_data import LabelledCrops

log = logging.getLogger(__name__)

WEIGHTS_FILE = "weights.pt"


@dataclass
class CrossValidation:
    """Out-of-fold results of :func:`cross_validate`."""

    logits: np.ndarray
    folds: int
    grouped_by: str = "slide/image"
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    calibration: dict[str, dict[str, float]] = field(default_factory=dict)


def group_folds(groups: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """Fold index per sample; whole groups are dealt round-robin after a seeded shuffle."""
    unique = np.unique(groups.astype(str))
    if len(unique) < 2:
        raise InputError("cross-validation needs crops from at least two slides/images")
    folds = min(folds, len(unique))
    order = np.random.default_rng(seed).permutation(len(unique))
    fold_of = {unique[k]: i % folds for i, k in enumerate(order)}
    return np.array([fold_of[g] for g in groups.astype(str)])


def cv_folds(
    groups: np.ndarray, folds: int, seed: int, grouped_by: str = "slide/image"
) -> tuple[np.ndarray, str]:
    """Fold index per sample and what the folds are grouped by.

    Samples of one group (slide/image, or patient) stay in one fold. When they all come from a
    single group, folds are made per glomerulus instead, with a warning: the estimate is then
    optimistic, because train and test glomeruli share the slide's staining and patient.
    """
    if len(np.unique(groups.astype(str))) < 2:
        log.warning(
            "all crops come from one slide/image: cross-validating per glomerulus (optimistic)"
        )
        single = np.arange(len(groups)).astype(object)
        return group_folds(single, folds, seed), "glomerulus (single slide)"
    return group_folds(groups, folds, seed), grouped_by


def _augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random flips and 90° rotations: glomeruli have no preferred orientation."""
    if torch.rand(1, generator=gen).item() < 0.5:
        x = x.flip(-1)
    k = int(torch.randint(0, 4, (1,), generator=gen).item())
    return torch.rot90(x, k, dims=(-2, -1))


def _to_tensor(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div_(255.0)


def fit(
    images: np.ndarray,
    targets: np.ndarray,
    config: LesionNetConfig,
    epochs: int = 10,
    batch_size: int = 32,
    lr: float = 3e-3,
    seed: int = 0,
) -> LesionNet:
    """Train a :class:`LesionNet` (AdamW, class-balanced BCE, flips/rotations).

    ``targets`` may hold NaN where a lesion was not assessed: those entries are left out of the
    loss, so "not assessed" is never learned as "absent".
    """
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    net = LesionNet(config)
    x_all = _to_tensor(images)
    known = torch.from_numpy(~np.isnan(targets)).float()  # a not-assessed label teaches nothing
    y_all = torch.from_numpy(np.nan_to_num(targets, nan=0.0)).float()
    pos = (y_all * known).sum(0).clamp(min=1.0)
    weight = ((known.sum(0) - pos).clamp(min=1.0) / pos).expand_as(y_all)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    steps = max(1, epochs * math.ceil(len(x_all) / batch_size))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    net.train()
    for _ in range(epochs):
        order = torch.randperm(len(x_all), generator=gen)
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            if len(idx) < 2:  # batch norm needs two samples
                continue
            opt.zero_grad()
            seen = known[idx]
            loss = torch.nn.functional.binary_cross_entropy_with_logits(
                net(_augment(x_all[idx], gen)),
                y_all[idx],
                weight=seen,
                pos_weight=weight[0],
                reduction="sum",
            ) / seen.sum().clamp(min=1.0)
            loss.backward()
            opt.step()
            sched.step()
    return net.eval()


def fit_platt(logits: np.ndarray, y: np.ndarray, iterations: int = 100) -> tuple[float, float]:
    """Platt scaling ``p = sigmoid(a * logit + b)`` (Platt 1999, with Lin et al. 2007 safeguards).

    Uses Platt's smoothed targets ((N+ + 1)/(N+ + 2) and 1/(N- + 2)) so that separable data do not
    drive the slope to infinity, and Newton steps with backtracking line search on the negative
    log-likelihood so that the fit never diverges.
    """
    x = np.asarray(logits, dtype=float)
    y = np.asarray(y, dtype=float)
    n_pos, n_neg = y.sum(), len(y) - y.sum()
    t = np.where(y > 0.5, (n_pos + 1.0) / (n_pos + 2.0), 1.0 / (n_neg + 2.0))

    def nll(a: float, b: float) -> float:
        z = a * x + b
        return float(np.sum(np.logaddexp(0.0, z) - t * z))

    a, b = 1.0, 0.0
    value = nll(a, b)
    for _ in range(iterations):
        p = 0.5 * (1.0 + np.tanh(0.5 * (a * x + b)))  # overflow-free sigmoid
        w = p * (1.0 - p) + 1e-12
        grad = np.array([np.sum((p - t) * x), np.sum(p - t)])
        hess = np.array([[np.sum(w * x * x), np.sum(w * x)], [np.sum(w * x), np.sum(w)]])
        step = np.linalg.solve(hess + 1e-6 * np.eye(2), grad)
        scale = 1.0
        while scale > 1e-10:
            na, nb = a - scale * step[0], b - scale * step[1]
            new = nll(na, nb)
            if new <= value + 1e-4 * scale * float(grad @ -step) or new < value:
                break
            scale *= 0.5
        if scale <= 1e-10:
            break
        a, b, improvement = na, nb, value - new
        value = new
        if abs(improvement) < 1e-10 * max(1.0, abs(value)):
            break
    return float(a), float(b)


def binary_metrics(y: np.ndarray, p: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    """n, positives, ROC AUC, sensitivity, specificity, Cohen's κ of calls ``p >= threshold``."""
    y = np.asarray(y).astype(bool)
    p = np.asarray(p, dtype=float)
    call = p >= threshold
    tp, tn = float((call & y).sum()), float((~call & ~y).sum())
    fp, fn = float((call & ~y).sum()), float((~call & y).sum())
    n = tp + tn + fp + fn
    observed = (tp + tn) / n
    expected = ((tp + fp) * (tp + fn) + (fn + tn) * (fp + tn)) / (n * n)
    kappa = (observed - expected) / (1.0 - expected) if expected < 1 else math.nan
    ranks = np.argsort(np.argsort(p, kind="stable"), kind="stable") + 1.0
    for value in np.unique(p):  # average ranks of ties
        tie = p == value
        ranks[tie] = ranks[tie].mean()
    n_pos, n_neg = y.sum(), (~y).sum()
    auc = (ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg) if n_pos and n_neg else None
    return {
        "n": int(n),
        "positives": int(n_pos),
        "auc": math.nan if auc is None else float(auc),
        "sensitivity": tp / (tp + fn) if tp + fn else math.nan,
        "specificity": tn / (tn + fp) if tn + fp else math.nan,
        "kappa": float(kappa),
    }


def cross_validate(
    data: LabelledCrops,
    config: LesionNetConfig,
    folds: int = 5,
    epochs: int = 10,
    seed: int = 0,
    progress: bool | None = None,
) -> CrossValidation:
    """Grouped k-fold cross-validation (:func:`cv_folds`), Platt-calibrated out-of-fold metrics."""

    fold, grouped_by = cv_folds(data.groups, folds, seed, data.grouped_by)
    n_folds = int(fold.max()) + 1
    logits = np.zeros_like(data.targets)
    for k in progress_bar(n_folds, "cross-validation", "fold", progress, iterable=range(n_folds)):
        test = fold == k
        net = fit(data.images[~test], data.targets[~test], config, epochs=epochs, seed=seed + k)
        logits[test] = predict_logits(net, data.images[test])
    result = CrossValidation(logits=logits, folds=n_folds, grouped_by=grouped_by)
    for j, name in enumerate(data.labels):
        known = ~np.isnan(data.targets[:, j])
        a, b = fit_platt(logits[known, j], data.targets[known, j])  # for the model written
        result.calibration[name] = {"a": a, "b": b}
        prob = out_of_fold_calibrated(logits[:, j], data.targets[:, j], fold)
        result.metrics[name] = evaluate(data.targets[:, j], prob, data.groups, seed=seed)
    return result


def out_of_fold_calibrated(logits: np.ndarray, targets: np.ndarray, fold: np.ndarray) -> np.ndarray:
    """Probabilities of each fold's logits, Platt-calibrated on the *other* folds' logits.

    Calibrating on all out-of-fold logits and scoring the same glomeruli would fit the threshold
    on the validation labels (optimistic sensitivity, specificity, κ and Brier). A fold whose
    other folds lack a positive or a negative label keeps the uncalibrated sigmoid.
    """
    prob = np.empty(len(logits), dtype=float)
    known = ~np.isnan(targets)
    for k in np.unique(fold):
        test, train = fold == k, (fold != k) & known
        a, b = 1.0, 0.0
        if 0 < targets[train].sum() < train.sum():
            a, b = fit_platt(logits[train], targets[train])
        prob[test] = calibrated(logits[test], a, b)
    return prob


def write_model_folder(
    net: LesionNet, card: dict[str, Any], out: str | Path, overwrite: bool = False
) -> dict[str, Any]:
    """Write ``weights.pt`` (a plain state dict), ``weights.pt.sha256`` and ``card.json``.

    ``card`` gets ``name``, ``kind``, ``labels``, ``network``, ``weights`` and ``sha256`` filled in
    from the network and the written file, so the card always describes the weights beside it.

    Returns:
        The completed card.
    """
    out = Path(out)
    with atomic_dir(out, overwrite=overwrite, marker="card.json") as tmp:
        weights = tmp / WEIGHTS_FILE
        write_weights(net.state_dict(), weights)
        digest = file_sha256(weights)
        write_text(tmp / f"{WEIGHTS_FILE}.sha256", f"{digest}  {WEIGHTS_FILE}\n")
        card = {
            "name": out.name,
            "kind": "lesion-classifier",
            "lnpath_version": __version__,
            "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            **card,
            "labels": list(net.config.labels),
            "network": net.config.to_dict(),
            "weights": WEIGHTS_FILE,
            "sha256": digest,
        }
        write_json(tmp / CARD_FILE, card)
    log.info("wrote lesion model %s (sha256 %s)", out, digest[:12])
    return card


def train_lesion_model(
    data: LabelledCrops,
    out: str | Path,
    arch: str = "small",
    folds: int = 5,
    epochs: int = 10,
    seed: int = 0,
    overwrite: bool = False,
    progress: bool | None = None,
) -> dict[str, Any]:
    """Cross-validate, train on everything, and write a model folder (:func:`write_model_folder`).

    The card records labels, counts, class mapping, cross-validated metrics and the Platt
    calibration fitted on the out-of-fold logits.

    Returns:
        The model card.
    """
    check_output_dir(out, overwrite, marker="card.json")  # a file or a lab's folder: not after CV
    size = int(data.images.shape[1])
    config = LesionNetConfig(labels=data.labels, arch=arch, input_size=size)
    cv = cross_validate(data, config, folds=folds, epochs=epochs, seed=seed, progress=progress)
    net = fit(data.images, data.targets, config, epochs=epochs, seed=seed)
    card = {
        "mpp": data.mpp,
        "class_mapping": {k: list(v) for k, v in data.mapping.items()},
        "counts": label_counts(data.targets, data.labels),
        "training": {
            "source": data.source,
            "epochs": epochs,
            "seed": seed,
            "samples": len(data.targets),
        },
        "cross_validation": {"folds": cv.folds, "grouped_by": cv.grouped_by, "metrics": cv.metrics},
        "calibration": {
            "method": "platt on out-of-fold logits (metrics: each fold scaled on the other folds)",
            "labels": cv.calibration,
        },
        "threshold": 0.5,
        "intended_use": INTENDED_USE,
        "status": "trained on a lab's own labels; validate locally before relying on it",
        **data.provenance,
    }
    return write_model_folder(net, card, out, overwrite=overwrite)
