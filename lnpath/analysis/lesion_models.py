"""Load a lesion model folder as the caller its card's ``kind`` names."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lnpath.analysis.calibrated import KIND, CalibratedMorphometryCaller
from lnpath.analysis.lesions import LesionCaller
from lnpath.models.store import read_card, resolve_model_path


def load_lesion_model(
    name_or_path: str | Path, stain: str = "PAS", device: str = "cpu"
) -> LesionCaller:
    """The caller for a lesion model folder, chosen by its card's ``kind``.

    ``morphometry-logistic`` (``lnpath train-lesions --method morphometry``) gives a
    :class:`~lnpath.training.calibration.CalibratedMorphometryCaller` for ``stain``; anything else a
    :class:`TrainedLesionCaller` (the CNN) on ``device``.

    Raises:
        ModelError: no such folder, or its card is missing or malformed.
    """
    folder = resolve_model_path(name_or_path, kind="lesion model")
    if read_card(folder).get("kind") == KIND:
        return CalibratedMorphometryCaller(folder, stain=stain)
    from lnpath.analysis.lesion_cnn import TrainedLesionCaller  # torch only for CNN models

    return TrainedLesionCaller(folder, device=device)


_FIGURES = ("n", "positives", "groups", "kappa", "auc", "sensitivity", "specificity", "brier")


def _plain(value: Any) -> Any:
    """NaN as None, so that result.json stays plain JSON."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def validation_summary(card: Mapping[str, Any]) -> dict[str, Any]:
    """The validation figures of a model card that a result records beside the calls it made.

    Per lesion: n, positives, κ, AUC, sensitivity, specificity (with their 95 % intervals when the
    card has them) and Brier; plus the lesions refused for too few labels and how many confirmed
    biopsies it learned from. An empty ``lesions`` says the card records no validation.
    """
    cv = card.get("cross_validation") or {}
    lesions = {}
    for name, m in (cv.get("metrics") or {}).items():
        keys = [k for k in _FIGURES if k in m]
        keys += [f"{k}_ci" for k in _FIGURES if f"{k}_ci" in m]
        lesions[name] = {k: _plain(m[k]) for k in keys}
    return {
        "folds": cv.get("folds"),
        "grouped_by": cv.get("grouped_by"),
        "biopsies": (card.get("training_results") or {}).get("biopsies"),
        "trained_with": card.get("lnpath_version"),
        "lesions": lesions,
        "refused": dict(card.get("refused_labels") or {}),
    }
