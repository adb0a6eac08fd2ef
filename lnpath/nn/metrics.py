"""Segmentation metrics: pixel Dice and object matching at an IoU threshold.

Object-level recall is what matters clinically (a glomerulus missed is a glomerulus not scored);
pixel Dice alone hides a model that finds the big glomeruli and misses the small ones.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field

import numpy as np


@dataclass
class SegmentationScore:
    """Accumulates pixel and object counts over images; report with :meth:`to_dict`."""

    iou_threshold: float = 0.5
    intersection: int = 0
    predicted_pixels: int = 0
    true_pixels: int = 0
    true_positives: int = 0
    predicted_objects: int = 0
    true_objects: int = 0
    images: int = 0
    per_image: list[dict[str, float]] = field(default_factory=list, repr=False)

    def add(self, pred_labels: np.ndarray, true_labels: np.ndarray) -> None:
        """Add one image: two label maps (0 = background) of the same shape."""
        pred, true = pred_labels > 0, true_labels > 0
        inter = int(np.count_nonzero(pred & true))
        tp = matched_objects(pred_labels, true_labels, self.iou_threshold)
        n_pred, n_true = _count(pred_labels), _count(true_labels)
        self.intersection += inter
        self.predicted_pixels += int(pred.sum())
        self.true_pixels += int(true.sum())
        self.true_positives += tp
        self.predicted_objects += n_pred
        self.true_objects += n_true
        self.images += 1
        self.per_image.append(
            {
                "tp": tp,
                "pred": n_pred,
                "true": n_true,
                "dice": _dice(inter, int(pred.sum()), int(true.sum())),
            }
        )

    @property
    def dice(self) -> float:
        """Pixel Dice pooled over all images (every pixel weighs the same)."""
        return _dice(self.intersection, self.predicted_pixels, self.true_pixels)

    @property
    def precision(self) -> float:
        return self.true_positives / self.predicted_objects if self.predicted_objects else 1.0

    @property
    def recall(self) -> float:
        return self.true_positives / self.true_objects if self.true_objects else 1.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0

    def to_dict(self) -> dict[str, float | int]:
        """Summary for a model card (rounded to 4 decimals)."""
        counts = {k: v for k, v in asdict(self).items() if k != "per_image"}
        rates = {
            "dice": self.dice,
            "precision": self.precision,
            "recall": self.recall,
            "f1": self.f1,
        }
        return {**counts, **{k: round(v, 4) for k, v in rates.items()}}


def matched_objects(pred_labels: np.ndarray, true_labels: np.ndarray, iou_threshold: float) -> int:
    """Number of true objects matched one-to-one by a predicted object with IoU ≥ threshold.

    At IoU > 0.5 a match is necessarily unique; below it pairs are matched greedily by IoU.
    """
    pairs = _iou_pairs(pred_labels, true_labels)
    used_pred: set[int] = set()
    used_true: set[int] = set()
    for iou, p, t in sorted(pairs, reverse=True):
        if iou >= iou_threshold and p not in used_pred and t not in used_true:
            used_pred.add(p)
            used_true.add(t)
    return len(used_true)


def _iou_pairs(pred: np.ndarray, true: np.ndarray) -> Iterable[tuple[float, int, int]]:
    both = (pred > 0) & (true > 0)
    if not both.any():
        return []
    pair_ids, inter = np.unique(
        np.stack([pred[both], true[both]]).astype(np.int64), axis=1, return_counts=True
    )
    pred_area = np.bincount(pred.ravel())
    true_area = np.bincount(true.ravel())
    out = []
    for (p, t), i in zip(pair_ids.T, inter, strict=True):
        union = pred_area[p] + true_area[t] - i
        out.append((float(i / union), int(p), int(t)))
    return out


def _count(labels: np.ndarray) -> int:
    return int(np.count_nonzero(np.unique(labels)))


def _dice(inter: int, a: int, b: int) -> float:
    return 2 * inter / (a + b) if a + b else 1.0
