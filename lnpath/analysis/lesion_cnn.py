"""Lesion calls from a CNN trained on a lab's own labels (``lnpath train-lesions``)."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from lnpath.analysis.lesions import empty_findings, require_label_set, square_crop
from lnpath.analysis.measure import crop_tissue_fraction, read_glomerulus, require_tissue
from lnpath.core.errors import InputError, ModelError
from lnpath.core.findings import LESIONS
from lnpath.io.hashing import file_sha256
from lnpath.models.store import (
    CARD_FILE,
    load_state_dict,
    misfit,
    read_card,
    resolve_model_path,
)
from lnpath.nn.lesion_net import LesionNet, LesionNetConfig
from lnpath.nn.predict import resolve_device
from lnpath.wsi.slide import require_open

log = logging.getLogger(__name__)

KIND = "lesion-classifier"


def _card_mpp(value: Any, card_path: Path) -> float:
    """The µm/px a lesion model reads glomeruli at; a card without one gets 1.0, with a warning.

    Raises:
        ModelError: the card's mpp is not a positive number (0 once silently became 1.0).
    """
    if value is None:
        log.warning(
            "%s: trained on crops of unknown µm/px; glomeruli are read at 1.0 µm/px", card_path
        )
        return 1.0
    number = value if isinstance(value, int | float) and not isinstance(value, bool) else math.nan
    if not (math.isfinite(number) and number > 0):
        raise ModelError(f"{card_path}: mpp {value!r} must be a positive number of µm/px")
    return float(number)


def _require_kind(card: dict[str, Any], card_path: Path) -> None:
    """Refuse a card of another task (a U-Net's, a foreign kind) in one line naming what it is;
    a card without ``kind`` but with a lesion ``network`` is taken for a lesion CNN."""
    kind = card.get("kind")
    if kind == KIND or (kind is None and "network" in card):
        return
    what = f"kind {kind!r}" if kind is not None else "no kind"
    if kind is None and "architecture" in card:
        what = "a glomerulus segmentation model"
    raise ModelError(
        f"{card_path}: {what}, not a lesion model (the kinds train-lesions writes: {KIND!r} "
        "with --method cnn, 'morphometry-logistic' with --method morphometry)"
    )


def _number(value: Any, what: str, card_path: Path) -> float:
    """A finite number from the card, or a one-line refusal naming it."""
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    if not (ok and math.isfinite(value)):
        raise ModelError(f"{card_path}: {what} must be a finite number, got {value!r}")
    return float(value)


def _calibration(
    card: dict[str, Any], labels: Sequence[str], card_path: Path
) -> dict[str, tuple[float, float]]:
    """Platt ``(a, b)`` per label (``(1, 0)`` where the card has none), checked at load so that a
    malformed card fails before a slide is read, not in the middle of scoring it."""
    section = card.get("calibration")
    section = {} if section is None else section
    per_label = section.get("labels", {}) if isinstance(section, dict) else None
    if not isinstance(per_label, dict):
        raise ModelError(f"{card_path}: calibration must be {{'labels': {{LESION: {{a, b}}}}}}")
    out = {}
    for name in labels:
        entry = per_label.get(name, {})
        if not isinstance(entry, dict):
            raise ModelError(f"{card_path}: calibration of {name} is not an object")
        out[name] = (
            _number(entry.get("a", 1.0), f"calibration a of {name}", card_path),
            _number(entry.get("b", 0.0), f"calibration b of {name}", card_path),
        )
    return out


def _to_tensor(images: np.ndarray) -> torch.Tensor:
    # slide pixels may be RGB views of OpenSlide's ARGB buffer, whose strides torch refuses
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div_(255.0)


@torch.no_grad()
def predict_logits(net: LesionNet, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """Logits (N, L) for uint8 crops (N, S, S, 3)."""
    net.eval()
    device = next(net.parameters()).device
    out = [
        net(_to_tensor(images[i : i + batch_size]).to(device)).float().cpu().numpy()
        for i in range(0, len(images), batch_size)
    ]
    return np.concatenate(out) if out else np.zeros((0, len(net.config.labels)), np.float32)


def calibrated(logits: np.ndarray, a: float, b: float) -> np.ndarray:
    """``sigmoid(a * logits + b)`` without overflow."""
    return 0.5 * (1.0 + np.tanh(0.5 * (a * np.asarray(logits, dtype=float) + b)))


class TrainedLesionCaller:
    """Calls from a lesion CNN trained with ``lnpath train-lesions``.

    Args:
        folder: model folder with ``card.json`` and the weights it names.
        expected_labels: lesions the caller is configured to provide; a model whose label set
            differs raises :class:`~lnpath.core.errors.ModelError` rather than silently leaving
            some out.
        device: ``auto``, ``cpu`` or ``cuda`` (``auto`` takes a GPU when there is one).
    """

    def __init__(
        self,
        folder: str | Path,
        expected_labels: Sequence[str] | None = None,
        device: str = "cpu",
    ) -> None:
        self.folder = Path(folder)
        card_path = self.folder / CARD_FILE
        self.card: dict[str, Any] = read_card(self.folder)
        _require_kind(self.card, card_path)
        labels = (self.card.get("network") or {}).get("labels")
        if isinstance(labels, str):  # from_dict would take its letters for labels
            raise ModelError(f"{card_path}: network labels must be a list, got {labels!r}")
        try:
            weights = self.folder / self.card["weights"]
            config = LesionNetConfig.from_dict(self.card["network"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ModelError(f"{card_path}: missing or malformed model card ({exc})") from exc
        unknown = [name for name in config.labels if name not in LESIONS]
        if unknown:
            raise ModelError(f"{card_path}: labels {unknown} are not lesion columns {LESIONS}")
        require_label_set(card_path, config.labels, expected_labels)
        if not weights.is_file():
            raise ModelError(f"{weights}: weights file missing")
        if not self.card.get("sha256"):
            raise ModelError(f"{card_path}: records no sha256; unverified weights are not loaded")
        digest = file_sha256(weights)
        if digest != self.card.get("sha256"):
            raise ModelError(f"{weights}: sha256 {digest[:12]}… does not match the model card")
        self.sha256 = digest
        self.config = config
        self.mpp = _card_mpp(self.card.get("mpp"), card_path)
        self.threshold = _number(self.card.get("threshold", 0.5), "threshold", card_path)
        if not 0.0 < self.threshold < 1.0:
            raise ModelError(f"{card_path}: threshold {self.threshold:g} is not a probability")
        self.calibration = _calibration(self.card, config.labels, card_path)
        self.device = str(resolve_device(device))
        self.net = LesionNet(config)
        state = load_state_dict(weights)
        try:
            self.net.load_state_dict(state)
        except (RuntimeError, ValueError, OSError) as exc:
            raise ModelError(
                f"{weights}: weights do not fit the card's network ({misfit(self.net, state)})"
            ) from exc
        self.net.to(self.device).eval()
        self.name = str(self.card.get("name") or self.folder.name)
        self.source = f"lesion-model:{self.name}"

    @classmethod
    def from_name(
        cls,
        name_or_path: str | Path,
        expected_labels: Sequence[str] | None = None,
        device: str = "cpu",
    ) -> TrainedLesionCaller:
        """Load a model folder by path, or by name from the repository's ``models/``."""
        return cls(
            resolve_model_path(name_or_path, kind="lesion model"),
            expected_labels=expected_labels,
            device=device,
        )

    def probabilities(self, crops: np.ndarray) -> np.ndarray:
        """Calibrated probabilities (N, L) for uint8 crops (N, S, S, 3) at the input size."""
        logits = predict_logits(self.net, crops)
        probs = np.empty_like(logits, dtype=float)
        for j, name in enumerate(self.config.labels):
            a, b = self.calibration[name]
            probs[:, j] = calibrated(logits[:, j], a, b)
        return probs

    def call(self, glomeruli: Any, slide: Any) -> pd.DataFrame:
        """Findings with ``p_<label>`` and calls ``p >= card threshold`` for the card's labels."""
        require_open(slide, "TrainedLesionCaller.call")
        ids = [g.id for g in glomeruli]
        table = empty_findings(ids, self.source)
        size = self.config.input_size
        crops = np.zeros((len(ids), size, size, 3), np.uint8)
        ok = np.zeros(len(ids), bool)
        for i, g in enumerate(glomeruli):
            try:
                rgb, mask = read_glomerulus(slide, g.polygon, self.mpp)
                require_tissue(crop_tissue_fraction(rgb, mask))
            except InputError as exc:
                log.warning("%s: glomerulus %s not assessed: %s", slide.path, g.id, exc)
                continue
            crops[i], ok[i] = square_crop(rgb, size), True
        probs = np.full((len(ids), len(self.config.labels)), math.nan)
        if ok.any():
            probs[ok] = self.probabilities(crops[ok])
        for j, name in enumerate(self.config.labels):
            table[f"p_{name}"] = probs[:, j]
            table[name] = pd.array(
                [bool(p >= self.threshold) if not math.isnan(p) else pd.NA for p in probs[:, j]],
                dtype="boolean",
            )
        return table
