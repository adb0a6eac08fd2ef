"""Training data for the glomerulus U-Net: labelled tiles, resampling, windows from QuPath
outlines."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, UnidentifiedImageError
from skimage.draw import polygon as draw_polygon

from lnpath.analysis.glomeruli import Glomeruli
from lnpath.analysis.measure import normalise_white, slide_white
from lnpath.core.args import as_path
from lnpath.core.errors import InputError
from lnpath.wsi.slide import MPP_RANGE

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

    def __post_init__(self) -> None:
        """Refuse a pair that cannot train or score here, not as a shape error deep in torch."""
        image, mask = np.asarray(self.image), np.asarray(self.mask)
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise InputError(
                f"labelled image {self.name!r}: image must be uint8 RGB (H, W, 3), "
                f"got {image.dtype} {image.shape}"
            )
        if mask.shape != image.shape[:2]:
            raise InputError(
                f"labelled image {self.name!r}: mask is {_size(mask.shape)} px but the image "
                f"{_size(image.shape)} px; they must be the same size"
            )
        if self.teacher is not None and np.shape(self.teacher) != image.shape[:2]:
            raise InputError(f"labelled image {self.name!r}: teacher map is not the image's size")
        check_mpp(self.mpp, f"labelled image {self.name!r}")
        self.image, self.mask = image, mask.astype(bool, copy=False)


def check_mpp(mpp: object, what: str) -> float:
    """``mpp`` as a float when it is a plausible µm/px (the range slides are accepted in).

    Raises:
        InputError: not a number, or outside :data:`lnpath.wsi.slide.MPP_RANGE`.
    """
    low, high = MPP_RANGE
    if isinstance(mpp, int | float) and not isinstance(mpp, bool) and low <= mpp <= high:
        return float(mpp)  # NaN fails the comparison
    raise InputError(f"{what}: mpp must be a number of µm/px in {low:g}-{high:g} (got {mpp!r})")


def load_labelled_tiles(
    folder: str | Path, names: Sequence[str] | None, mpp: float
) -> list[LabelledImage]:
    """Read a folder of labelled tiles to fine-tune or evaluate the glomerulus model on.

    The layout is the Bueno set's: ``images/NAME.png`` beside ``masks/NAME.png`` (red channel >
    127 = glomerulus), all scanned at ``mpp`` µm/px. Each image is white-balanced against its own
    glass (:func:`lnpath.analysis.measure.normalise_white`), as whole-slide inference does with the
    slide's, so a model sees tiles as it will see slides.

    Args:
        folder: The folder holding ``images/`` and ``masks/``.
        names: Tile names (file stems) in this order, e.g. one split; ``None``: every image.
        mpp: µm/px of the tiles.

    Raises:
        InputError: No such folder, no tiles, a tile without its mask, an unreadable PNG, a mask
            of another size than its image, or an implausible ``mpp``.
    """
    folder = as_path(folder, "load_labelled_tiles: folder")
    mpp = check_mpp(mpp, str(folder))
    if not (folder / "images").is_dir() or not (folder / "masks").is_dir():
        raise InputError(f"{folder}: not a labelled tile folder (needs images/ and masks/)")
    if isinstance(names, str) or not (names is None or isinstance(names, Sequence)):
        raise InputError(f"names must be a list of tile names or None (got {names!r})")
    names = sorted(p.stem for p in (folder / "images").glob("*.png")) if names is None else names
    if not names:
        raise InputError(f"{folder}: no tiles to read (no images/*.png or no names given)")
    return [_read_tile(folder, str(name), mpp) for name in names]


def _read_tile(folder: Path, name: str, mpp: float) -> LabelledImage:
    pixels = []
    for part in ("images", "masks"):
        path = folder / part / f"{name}.png"
        if not path.is_file():
            raise InputError(f"{path}: no such file (tile {name!r} needs an image and a mask)")
        try:
            with Image.open(path) as picture:
                pixels.append(np.asarray(picture.convert("RGB")))
        except (OSError, UnidentifiedImageError) as exc:
            raise InputError(f"{path}: not a readable PNG ({exc})") from None
    image, mask_rgb = pixels
    return LabelledImage(name, normalise_white(image), mask_rgb[..., 0] > 127, mpp)


def _size(shape: tuple[int, ...]) -> str:
    """``(H, W, ...)`` as ``WxH``, as image sizes are usually written."""
    return "x".join(map(str, shape[1::-1]))


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
