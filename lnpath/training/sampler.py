"""Random augmented training crops for the glomerulus U-Net at its working µm/px."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image
from scipy import ndimage

from lnpath.nn.augment import colour_jitter, flip_rotate, stain_jitter
from lnpath.training.glomeruli_data import LabelledImage

if TYPE_CHECKING:
    from lnpath.training.glomeruli import TrainingConfig


class PatchSampler:
    """Random augmented training crops at the working µm/px.

    Crops are cut from the source resolution with a random zoom, then flipped/rotated and stain
    jittered. A share of crops is centred near a glomerulus pixel so that the rare foreground class
    is seen often enough.
    """

    def __init__(self, items: Sequence[LabelledImage], config: TrainingConfig) -> None:
        if not items:
            raise ValueError("no training images")
        self.items = list(items)
        self.config = config
        self.foreground = [
            _glomerulus_pixels(item.mask, config.balance_glomeruli) for item in self.items
        ]

    def sample(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """One crop: float32 RGB in [0, 1] (patch, patch, 3) and its float32 target (patch, patch):
        the mask, blended with the teacher's probability when distilling."""
        cfg = self.config
        index = int(rng.integers(len(self.items)))
        item, objects = self.items[index], self.foreground[index]
        fg = objects[int(rng.integers(len(objects)))] if objects else np.empty((0, 2), np.int64)
        lo, hi = np.log(cfg.scale_range[0]), np.log(cfg.scale_range[1])
        side = max(8, round(cfg.patch * cfg.mpp / item.mpp * float(np.exp(rng.uniform(lo, hi)))))
        height, width = item.mask.shape
        if len(fg) and rng.random() < cfg.foreground_crops:
            cy, cx = fg[int(rng.integers(len(fg)))] + rng.integers(-side // 3, side // 3 + 1, 2)
            y0, x0 = int(cy) - side // 2, int(cx) - side // 2
        else:
            y0 = int(rng.integers(min(0, height - side), max(0, height - side) + 1))
            x0 = int(rng.integers(min(0, width - side), max(0, width - side) + 1))
        size = (cfg.patch, cfg.patch)

        def cut(array: np.ndarray, fill: int) -> np.ndarray:
            crop = Image.fromarray(_crop(array, y0, x0, side, fill))
            return np.asarray(crop.resize(size, Image.Resampling.BILINEAR))

        image = cut(item.image, 255)
        target = (cut(item.mask.astype(np.uint8) * 255, 0) > 127).astype(np.float32)
        if item.teacher is not None and cfg.distill > 0:
            soft = cut(item.teacher, 0).astype(np.float32) / 255.0
            target = (1.0 - cfg.distill) * target + cfg.distill * soft
        image, target = flip_rotate(image, target, rng)
        rgb = colour_jitter(
            stain_jitter(image, rng, cfg.stain_strength, cfg.density_range),
            rng,
            cfg.saturation_range,
            cfg.hue_shift,
        )
        return rgb, target

    def batch(self, rng: np.random.Generator, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """A batch as tensors: images (N, H, W, 3) float in [0, 1] and masks (N, 1, H, W)."""
        crops = [self.sample(rng) for _ in range(size)]
        images = torch.from_numpy(np.stack([c[0] for c in crops]))
        masks = torch.from_numpy(np.stack([c[1] for c in crops]))[:, None]
        return images, masks


def _glomerulus_pixels(mask: np.ndarray, per_object: bool) -> list[np.ndarray]:
    """Foreground pixel coordinates, one array per glomerulus (or one for all of them)."""
    if not mask.any():
        return []
    if not per_object:
        return [np.argwhere(mask)]
    labels, count = ndimage.label(mask)
    return [np.argwhere(labels == index) for index in range(1, count + 1)]


def _crop(array: np.ndarray, y0: int, x0: int, side: int, fill: int) -> np.ndarray:
    """``array[y0:y0+side, x0:x0+side]`` padded with ``fill`` where it leaves the array."""
    out = np.full((side, side, *array.shape[2:]), fill, dtype=array.dtype)
    ys, xs = max(0, y0), max(0, x0)
    ye, xe = min(array.shape[0], y0 + side), min(array.shape[1], x0 + side)
    if ye > ys and xe > xs:
        out[ys - y0 : ye - y0, xs - x0 : xe - x0] = array[ys:ye, xs:xe]
    return out
