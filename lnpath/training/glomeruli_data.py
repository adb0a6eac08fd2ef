"""Training data for the glomerulus U-Net: labelled tiles, resampling, windows from QuPath
outlines."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image
from skimage.draw import polygon as draw_polygon

from lnpath.analysis.glomeruli import Glomeruli
from lnpath.analysis.measure import normalise_white, slide_white

if TYPE_CHECKING:
    from lnpath.wsi.slide import Slide


@dataclass
class LabelledImage:
    """One training or evaluation image with its binary glomerulus mask.

    Attributes:
        name: Identifier for logs and the model card.
        image: uint8 RGB (H, W, 3).
        mask: bool (H, W), True inside glomeruli.
        mpp: µm/px of ``image`` and ``mask``.
        teacher: uint8 (H, W) foreground probability × 255 from a teacher model, or ``None``; a
            distilled student learns this map beside the mask (see ``TrainingConfig.distill``).
    """

    name: str
    image: np.ndarray
    mask: np.ndarray
    mpp: float
    teacher: np.ndarray | None = None


def load_tile_folder(folder: str | Path, names: Sequence[str], mpp: float) -> list[LabelledImage]:
    """Read ``images/NAME.png`` + ``masks/NAME.png`` pairs (the Bueno layout: red = glomerulus).

    Each image is white-balanced against its own glass
    (:func:`lnpath.analysis.measure.normalise_white`),
    as whole-slide inference does with the slide's.
    """
    folder = Path(folder)
    out = []
    for name in names:
        image = normalise_white(
            np.asarray(Image.open(folder / "images" / f"{name}.png").convert("RGB"))
        )
        mask_rgb = np.asarray(Image.open(folder / "masks" / f"{name}.png").convert("RGB"))
        out.append(LabelledImage(name, image, mask_rgb[..., 0] > 127, mpp))
    return out


def resample(item: LabelledImage, mpp: float) -> LabelledImage:
    """The same image and mask at ``mpp`` (area-averaged image, mask re-thresholded at 0.5)."""
    if math.isclose(item.mpp, mpp, rel_tol=1e-3):
        return item
    factor = item.mpp / mpp
    size = (
        max(1, round(item.image.shape[1] * factor)),
        max(1, round(item.image.shape[0] * factor)),
    )
    image = np.asarray(Image.fromarray(item.image).resize(size, Image.Resampling.LANCZOS))
    mask = Image.fromarray(item.mask.astype(np.uint8) * 255).resize(size, Image.Resampling.BOX)
    return LabelledImage(item.name, image, np.asarray(mask) > 127, mpp)


def windows_from_annotations(
    slide: Slide, glomeruli: Glomeruli, mpp: float, window: int
) -> list[LabelledImage]:
    """Training windows centred on annotated glomeruli, read at ``mpp`` with their masks.

    Each window (``window`` px at ``mpp``) is centred on a glomerulus not already inside an earlier
    window; every annotated outline overlapping it is drawn into its mask. Windows are
    white-balanced with the slide's glass, as in whole-slide inference. The annotations are taken as
    complete inside these windows (QuPath reviews usually outline every glomerulus of a region).
    """
    side = window * mpp / slide.mpp  # level-0 px
    white = slide_white(slide)
    taken: list[tuple[float, float]] = []
    out = []
    for g in sorted(glomeruli, key=lambda g: (g.centroid[1], g.centroid[0])):
        cx, cy = g.centroid
        if any(abs(cx - x) < side / 4 and abs(cy - y) < side / 4 for x, y in taken):
            continue
        taken.append((cx, cy))
        x0, y0 = cx - side / 2, cy - side / 2
        image = normalise_white(slide.read(x0, y0, side, side, mpp=mpp), white)
        mask = np.zeros(image.shape[:2], bool)
        scale = slide.mpp / mpp
        for other in glomeruli:
            minx, miny, maxx, maxy = other.polygon.bounds
            if maxx < x0 or maxy < y0 or minx > x0 + side or miny > y0 + side:
                continue
            ring = np.asarray(other.polygon.exterior.coords)
            rr, cc = draw_polygon((ring[:, 1] - y0) * scale, (ring[:, 0] - x0) * scale, mask.shape)
            mask[rr, cc] = True
        out.append(LabelledImage(f"{slide.path.name}@{cx:.0f},{cy:.0f}", image, mask, mpp))
    return out
