"""Load a lesion model folder as the caller its card's ``kind`` names."""

from __future__ import annotations

from pathlib import Path

from lnpath.analysis.calibrated import KIND, CalibratedMorphometryCaller, read_card
from lnpath.analysis.lesions import LesionCaller
from lnpath.models.store import resolve_model_path


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
