"""Teacher maps for distillation: a model's flip-averaged output as a training target.

Four flipped forward passes (test-time augmentation) smooth the borders a small U-Net draws, but
cost four times the compute of one. A student trained to reproduce the averaged map on the same
training images can draw those borders in one pass; these helpers attach the teacher's map to each
training image so :class:`lnpath.training.sampler.PatchSampler` crops it with the mask.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import torch
from PIL import Image

from lnpath.nn.predict import predict_batch
from lnpath.nn.unet import UNet
from lnpath.training.glomeruli import score_predictions
from lnpath.training.glomeruli_data import LabelledImage, resample

ORIENTATIONS: dict[str, tuple[int, ...]] = {
    "as_scanned": (),
    "mirrored": (1,),
    "upside_down": (0,),
    "rotated_180": (0, 1),
}
"""The four flips of test-time augmentation, as axes of an (H, W, 3) image."""


def with_teacher(
    items: Sequence[LabelledImage], teacher: UNet, mpp: float, device: torch.device
) -> list[LabelledImage]:
    """The images with ``teacher`` set to the teacher's flip-averaged probability.

    The teacher sees each whole image at its working µm/px, as in inference; its map is brought
    back to the image's own resolution so that crops, zooms and flips treat it like the mask.
    """
    out = []
    for item in items:
        work = resample(item, mpp)
        prob = predict_batch(teacher, work.image[None], device, tta=True)[0]
        scaled = np.clip(np.rint(prob * 255.0), 0, 255).astype(np.uint8)
        height, width = item.mask.shape
        if scaled.shape != (height, width):
            resized = Image.fromarray(scaled).resize((width, height), Image.Resampling.BILINEAR)
            scaled = np.asarray(resized)
        out.append(replace(item, teacher=scaled))
    return out


def _orientation_maps(
    model: UNet, items: Sequence[LabelledImage], mpp: float, device: torch.device
) -> tuple[dict[str, list[np.ndarray]], list[np.ndarray]]:
    """One forward pass per image and orientation, each map flipped back onto the image; and
    the masks at ``mpp``."""
    maps: dict[str, list[np.ndarray]] = {name: [] for name in ORIENTATIONS}
    masks = []
    for item in items:
        work = resample(item, mpp)
        masks.append(work.mask)
        for name, axes in ORIENTATIONS.items():
            image = np.flip(work.image, axes) if axes else work.image
            prob = predict_batch(model, np.ascontiguousarray(image)[None], device, tta=False)[0]
            maps[name].append(np.flip(prob, axes) if axes else prob)
    return maps, masks


def single_pass_by_orientation(
    model: UNet,
    items: Sequence[LabelledImage],
    mpp: float,
    device: torch.device,
    threshold: float,
) -> dict[str, float]:
    """Validation Dice of one forward pass with the images presented in each of the four flips,
    and their mean.

    A flip changes nothing a pathologist sees, so the spread of these numbers is the noise of a
    small validation set: a single-pass model that beats its four-flip teacher in one
    orientation only has not shown that it matches it. The mean is the fair comparison.
    """
    maps, masks = _orientation_maps(model, items, mpp, device)
    dice = {
        name: round(score_predictions(list(zip(probs, masks, strict=True)), mpp, threshold).dice, 4)
        for name, probs in maps.items()
    }
    dice["mean"] = round(float(np.mean(list(dice.values()))), 4)
    return dice


TWO_FLIPS: dict[str, tuple[tuple[str, str], tuple[str, str]]] = {
    "rotated_180": (("as_scanned", "rotated_180"), ("mirrored", "upside_down")),
    "mirrored": (("as_scanned", "mirrored"), ("upside_down", "rotated_180")),
    "upside_down": (("as_scanned", "upside_down"), ("mirrored", "rotated_180")),
}
"""Half of test-time augmentation: the image and one flip of it. Each kind has two ensembles,
depending on how the slide lies on the scanner."""


def flip_ensembles(
    model: UNet,
    items: Sequence[LabelledImage],
    mpp: float,
    device: torch.device,
    threshold: float,
) -> dict[str, Any]:
    """Validation Dice and recall of the four-flip average and of each two-flip ensemble.

    Two flips would halve the cost of the default; whether they keep its quality is decided, as
    for a distilled student, on the mean over both ensembles of a kind, never on one.
    """
    maps, masks = _orientation_maps(model, items, mpp, device)

    def score(names: Sequence[str]) -> dict[str, float]:
        averaged = [np.mean([maps[n][i] for n in names], axis=0) for i in range(len(masks))]
        result = score_predictions(list(zip(averaged, masks, strict=True)), mpp, threshold)
        return {"dice": round(result.dice, 4), "recall": round(result.recall, 4)}

    out: dict[str, Any] = {"four_flips": score(list(ORIENTATIONS))}
    for kind, pairs in TWO_FLIPS.items():
        first, second = (score(pair) for pair in pairs)
        out[f"two_flips_{kind}"] = {
            "dice": round((first["dice"] + second["dice"]) / 2, 4),
            "recall": min(first["recall"], second["recall"]),
            "ensembles": [first, second],
        }
    return out
