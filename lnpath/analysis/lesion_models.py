"""Load a lesion model folder as the caller its card's ``kind`` names."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lnpath.analysis.calibrated import KIND, CalibratedMorphometryCaller
from lnpath.analysis.lesions import LesionCaller
from lnpath.core.errors import ModelError
from lnpath.models.store import CARD_FILE, read_card, resolve_model_path


def load_lesion_model(
    name_or_path: str | Path, stain: str = "PAS", device: str = "cpu"
) -> LesionCaller:
    """The caller for a lesion model folder, chosen by its card's ``kind``.

    ``morphometry-logistic`` (``lnpath train-lesions --method morphometry``) gives a
    :class:`~lnpath.training.calibration.CalibratedMorphometryCaller` for ``stain``; anything else a
    :class:`TrainedLesionCaller` (the CNN) on ``device``.

    The card's validation figures are checked here too, before any slide is read: a malformed
    one would otherwise fail only when the result is written, after the whole slide was scored.

    Raises:
        ModelError: no such folder, its card is missing or malformed, or it is not a lesion model.
    """
    folder = resolve_model_path(name_or_path, kind="lesion model")
    card = read_card(folder)
    validation_summary(card, folder / CARD_FILE)
    if card.get("kind") == KIND:
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


def _section(card: Mapping[str, Any], key: str, where: object) -> Mapping[str, Any]:
    """``card[key]`` as a JSON object ({} when absent)."""
    value = card.get(key)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ModelError(f"{where}: {key} must be a JSON object, got {type(value).__name__}")
    return value


def _figure(value: Any, what: str, where: object) -> Any:
    """A validation figure: a number, None (undefined) or, for ``*_ci``, two numbers."""
    if what.endswith("_ci") and value is not None:
        if not (isinstance(value, list) and len(value) == 2):
            raise ModelError(f"{where}: {what} must be two numbers or null, got {value!r}")
        return [_figure(v, what[:-3], where) for v in value]
    if value is None or (isinstance(value, int | float) and not isinstance(value, bool)):
        return _plain(value)
    raise ModelError(f"{where}: {what} must be a number or null, got {value!r}")


def validation_summary(card: Mapping[str, Any], where: object = "model card") -> dict[str, Any]:
    """The validation figures of a model card that a result records beside the calls it made.

    Per lesion: n, positives, κ, AUC, sensitivity, specificity (with their 95 % intervals when the
    card has them) and Brier; plus the lesions refused for too few labels and how many confirmed
    biopsies it learned from. An empty ``lesions`` says the card records no validation.

    Raises:
        ModelError: a section is not of its kind (a hand-edited or foreign card), named with
            ``where``; the report would otherwise fail after the slide was scored.
    """
    cv = _section(card, "cross_validation", where)
    lesions = {}
    metrics = _section(cv, "metrics", where)
    for name, m in metrics.items():
        if not isinstance(m, Mapping):
            raise ModelError(f"{where}: cross_validation metrics of {name} are not an object")
        keys = [k for k in _FIGURES if k in m]
        keys += [f"{k}_ci" for k in _FIGURES if f"{k}_ci" in m]
        lesions[str(name)] = {k: _figure(m[k], f"{name} {k}", where) for k in keys}
    refused = _section(card, "refused_labels", where)
    return {
        "folds": _figure(cv.get("folds"), "cross_validation folds", where),
        "grouped_by": None if cv.get("grouped_by") is None else str(cv["grouped_by"]),
        "biopsies": _figure(
            _section(card, "training_results", where).get("biopsies"), "biopsies", where
        ),
        "trained_with": card.get("lnpath_version"),
        "lesions": lesions,
        "refused": {str(k): str(v) for k, v in refused.items()},
    }
