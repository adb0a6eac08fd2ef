"""Lesion calls from a lab-calibrated morphometry model (``train-lesions --method morphometry``).

The model is a logistic regression per lesion on the ``m_*`` measurements; its card holds the
parameters and their sha256, so the caller needs no weights file.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lnpath.analysis.cortex import normalise_stain
from lnpath.analysis.lesions import CALL_STAINS, empty_findings, require_label_set, warn_not_called
from lnpath.analysis.measure import MEASUREMENTS, measure_glomeruli
from lnpath.core.args import as_path
from lnpath.core.errors import ModelError
from lnpath.core.findings import LESIONS
from lnpath.models.store import CARD_FILE, read_card

KIND = "morphometry-logistic"
INTENDED_USE = "proposal until a pathologist confirms"


def sigmoid(z: np.ndarray) -> np.ndarray:
    """``1 / (1 + exp(-z))`` without overflow."""
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(z, dtype=float)))


def parameters_sha256(parameters: Mapping[str, Any]) -> str:
    """sha256 of the canonical JSON (sorted keys, no spaces, no NaN) of the model parameters."""
    text = json.dumps(parameters, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class CalibratedMorphometryCaller:
    """Lesion calls from a lab-calibrated morphometry model (``lnpath train-lesions --method
    morphometry``).

    Glomeruli are measured as by :class:`~lnpath.analysis.lesions.MorphometryCaller`; each of the
    model's
    labels gets ``p_<label>`` (the logistic model's probability) and the call
    ``p >= threshold``. Other lesions stay ``<NA>``. The measurements' pixel classes are defined
    for PAS, so on other stains the calls and probabilities are left not assessed, with a warning.

    Args:
        folder: model folder with ``card.json``.
        stain: the section's stain.
        expected_labels: lesions the caller is configured to provide; a model whose label set
            differs raises :class:`~lnpath.core.errors.ModelError`.

    Raises:
        ModelError: the card is missing, malformed, of another kind, or its parameters do not
            match its sha256.
    """

    def __init__(
        self,
        folder: str | Path,
        stain: str = "PAS",
        expected_labels: Sequence[str] | None = None,
    ) -> None:
        self.folder = as_path(folder, "CalibratedMorphometryCaller: folder")
        card_path = self.folder / CARD_FILE
        self.card = read_card(self.folder)
        if self.card.get("kind") != KIND:
            raise ModelError(f"{card_path}: kind {self.card.get('kind')!r} is not {KIND!r}")
        params = self.card.get("parameters")
        if not isinstance(params, dict):
            raise ModelError(f"{card_path}: no model parameters")
        try:
            digest = parameters_sha256(params)
        except (TypeError, ValueError) as exc:
            raise ModelError(f"{card_path}: parameters are not plain JSON ({exc})") from exc
        if digest != self.card.get("sha256"):
            raise ModelError(
                f"{card_path}: parameters sha256 {digest[:12]}… does not match the card"
            )
        try:
            self.labels = tuple(str(v) for v in params["labels"])
            self.features = tuple(str(v) for v in params["features"])
            self.means = np.array([params["means"][f] for f in self.features], float)
            self.stds = np.array([params["stds"][f] for f in self.features], float)
            self.weights = np.array(
                [[params["coefficients"][la][f] for f in self.features] for la in self.labels],
                float,
            )
            self.intercepts = np.array([params["intercepts"][la] for la in self.labels], float)
            self.threshold = float(params["threshold"])
            self.mpp = float(params["mpp"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"{card_path}: malformed model parameters ({exc})") from exc
        bad = [la for la in self.labels if la not in LESIONS]
        bad += [f for f in self.features if f not in MEASUREMENTS]
        if bad:
            raise ModelError(f"{card_path}: unknown labels or measurements {bad}")
        require_label_set(card_path, self.labels, expected_labels)
        self.sha256 = digest
        self.stain = normalise_stain(stain)
        self.name = str(self.card.get("name") or self.folder.name)
        self.source = f"morphometry-model:{self.name}"

    def describe(self) -> dict[str, Any]:
        """Model identity, labels, threshold and cross-validated metrics, for result provenance."""
        return {
            "source": self.source,
            "kind": KIND,
            "sha256": self.sha256,
            "mpp": self.mpp,
            "stain": self.stain,
            "calls": self.stain in CALL_STAINS,
            "labels": list(self.labels),
            "threshold": self.threshold,
            "cross_validation": self.card.get("cross_validation"),
            "intended_use": self.card.get("intended_use", INTENDED_USE),
        }

    def probabilities(self, measurements: pd.DataFrame) -> np.ndarray:
        """Probabilities (N, L) from a measurement table; NaN where a measurement is missing."""
        x = measurements[list(self.features)].to_numpy(dtype=float)
        prob = sigmoid(((x - self.means) / self.stds) @ self.weights.T + self.intercepts)
        prob[~np.isfinite(x).all(axis=1)] = math.nan
        return prob

    def call(
        self, glomeruli: Iterable[Any], slide: Any, progress: bool | None = None
    ) -> pd.DataFrame:
        """Measure every glomerulus and emit ``p_<label>`` and calls for the model's labels."""
        measurements = measure_glomeruli(glomeruli, slide, mpp=self.mpp, progress=progress)
        table = empty_findings(measurements["glomerulus_id"].tolist(), self.source)
        prob = self.probabilities(measurements)
        if self.stain not in CALL_STAINS:
            warn_not_called(slide, self.stain)
            prob[:] = math.nan
        for j, name in enumerate(self.labels):
            table[f"p_{name}"] = prob[:, j]
            table[name] = pd.array(
                [bool(p >= self.threshold) if not math.isnan(p) else pd.NA for p in prob[:, j]],
                dtype="boolean",
            )
        for col in MEASUREMENTS:
            table[col] = measurements[col].to_numpy(dtype=float)
        return table
