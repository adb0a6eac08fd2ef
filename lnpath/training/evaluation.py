"""Validation figures a lab can trust: per-lesion agreement with intervals, calibration, counts.

Out-of-fold probabilities from grouped cross-validation are summarised per lesion as Cohen's κ,
ROC AUC, sensitivity and specificity of the calls ``p >= threshold``, each with a 95 % percentile
interval from a *cluster* bootstrap that resamples whole groups (patients, else slides): the
glomeruli of one biopsy are not independent, so resampling glomeruli would make the intervals too
narrow. Calibration is the Brier score beside that of always predicting the prevalence, and a
reliability table (observed frequency per bin of predicted probability). A lesion with fewer than
:data:`MIN_PER_CLASS` positive or negative labels is refused: nothing can be estimated from it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy import stats

MIN_PER_CLASS = 5
BOOTSTRAP = 1000
RELIABILITY_BINS = 10
_FIGURES = ("kappa", "auc", "sensitivity", "specificity")


def label_counts(targets: np.ndarray, labels: Sequence[str]) -> dict[str, dict[str, int]]:
    """Positive, negative and missing (not assessed, NaN) labels per lesion."""
    y = np.asarray(targets, dtype=float)
    observed = ~np.isnan(y)
    positive = np.nansum(y, axis=0)
    return {
        name: {
            "positive": int(positive[j]),
            "negative": int(observed[:, j].sum() - positive[j]),
            "not_assessed": int((~observed[:, j]).sum()),
        }
        for j, name in enumerate(labels)
    }


def thin_labels(counts: Mapping[str, Mapping[str, int]]) -> dict[str, str]:
    """Lesions with too few positive or negative labels to estimate anything, and why."""
    return {
        name: f"{c['positive']} positive and {c['negative']} negative labels; "
        f"need at least {MIN_PER_CLASS} of each"
        for name, c in counts.items()
        if min(c["positive"], c["negative"]) < MIN_PER_CLASS
    }


def agreement(y: np.ndarray, p: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    """κ, AUC, sensitivity, specificity (NaN where undefined), vectorised for the bootstrap."""
    call = p >= threshold
    tp, fn = float((call & y).sum()), float((~call & y).sum())
    fp, tn = float((call & ~y).sum()), float((~call & ~y).sum())
    n = tp + fn + fp + tn
    n_pos, n_neg = tp + fn, fp + tn
    observed = (tp + tn) / n
    expected = ((tp + fp) * n_pos + (fn + tn) * n_neg) / (n * n)
    auc = math.nan
    if n_pos and n_neg:
        ranks = stats.rankdata(p)
        auc = (ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
    return {
        "kappa": (observed - expected) / (1.0 - expected) if expected < 1 else math.nan,
        "auc": float(auc),
        "sensitivity": tp / n_pos if n_pos else math.nan,
        "specificity": tn / n_neg if n_neg else math.nan,
    }


def bootstrap_intervals(
    y: np.ndarray,
    p: np.ndarray,
    groups: np.ndarray,
    threshold: float = 0.5,
    resamples: int = BOOTSTRAP,
    seed: int = 0,
) -> dict[str, list[float] | None]:
    """95 % percentile intervals of :func:`agreement` from a cluster bootstrap over ``groups``.

    An interval is None when fewer than half the resamples define the figure (e.g. a lesion seen
    in a single biopsy leaves most resamples without positives) or there is only one group.
    """
    codes = np.unique(np.asarray(groups).astype(str), return_inverse=True)[1]
    members = [np.flatnonzero(codes == g) for g in range(codes.max() + 1)]
    if len(members) < 2:
        return dict.fromkeys(_FIGURES)
    rng = np.random.default_rng(seed)
    draws: dict[str, list[float]] = {name: [] for name in _FIGURES}
    for _ in range(resamples):
        idx = np.concatenate([members[g] for g in rng.integers(0, len(members), len(members))])
        for name, value in agreement(y[idx], p[idx], threshold).items():
            draws[name].append(value)
    out: dict[str, list[float] | None] = {}
    for name, values in draws.items():
        arr = np.asarray(values, dtype=float)
        arr = arr[~np.isnan(arr)]
        ok = len(arr) >= resamples / 2
        out[name] = [float(v) for v in np.percentile(arr, [2.5, 97.5])] if ok else None
    return out


def reliability_table(
    y: np.ndarray, p: np.ndarray, bins: int = RELIABILITY_BINS
) -> list[dict[str, float]]:
    """Observed frequency against mean predicted probability per equal-width bin (non-empty)."""
    which = np.minimum((p * bins).astype(int), bins - 1)
    rows = []
    for b in range(bins):
        inside = which == b
        if inside.any():
            rows.append(
                {
                    "from": b / bins,
                    "to": (b + 1) / bins,
                    "n": int(inside.sum()),
                    "mean_predicted": float(p[inside].mean()),
                    "observed": float(y[inside].mean()),
                }
            )
    return rows


def evaluate(
    y: np.ndarray,
    p: np.ndarray,
    groups: np.ndarray,
    threshold: float = 0.5,
    seed: int = 0,
) -> dict[str, Any]:
    """Every validation figure for one lesion, on the glomeruli whose label is known.

    Args:
        y: 1/0 labels, NaN where not assessed (left out).
        p: out-of-fold probabilities.
        groups: patient (else slide) of each glomerulus, resampled by the bootstrap.
        threshold: the call is ``p >= threshold``.
        seed: bootstrap seed.
    """
    y = np.asarray(y, dtype=float)
    known = ~np.isnan(y)
    truth, prob = y[known] > 0.5, np.asarray(p, dtype=float)[known]
    group = np.asarray(groups).astype(str)[known]
    prevalence = float(truth.mean())
    result: dict[str, Any] = {
        "n": int(known.sum()),
        "positives": int(truth.sum()),
        "groups": len(np.unique(group)),
        **agreement(truth, prob, threshold),
        "brier": float(np.mean((prob - truth) ** 2)),
        "brier_prevalence": prevalence * (1.0 - prevalence),
        "reliability": reliability_table(truth.astype(float), prob),
    }
    intervals = bootstrap_intervals(truth, prob, group, threshold, seed=seed)
    result.update({f"{name}_ci": interval for name, interval in intervals.items()})
    result["interval"] = "95 % percentile, cluster bootstrap over the groups"
    return result
