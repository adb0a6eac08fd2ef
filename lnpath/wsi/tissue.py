"""Find every piece of tissue on a slide at low resolution, ignoring glass, pen ink and dust.

A renal biopsy usually arrives as several needle cores on one slide, so the mask keeps every
component above a minimum area rather than the largest one (histolab's default drops the other
cores; peers.md #9). Stained tissue (PAS, H&E) is coloured — magenta to purple, with green the
most absorbed channel — while glass is bright and grey, and marker ink is green/blue (green
brighter than red, which no PAS/H&E stain produces) or a red more saturated than eosin; the
blurred, untextured rim around a stroke goes with the stroke. Validated on histolab's named
tissue / no-tissue / pen tiles (tests/test_tissue.py).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage as ndi
from shapely.geometry import Polygon

from lnpath.core.errors import InputError
from lnpath.wsi.slide import Slide, require_open

log = logging.getLogger(__name__)

DEFAULT_MPP = 4.0
"""Detection resolution (µm/px): a 1 mm core is 250 px wide, a glomerulus ~40 px."""
MIN_AREA_MM2 = 0.01
"""Smallest tissue piece kept (a 100 µm square); dust and debris are smaller."""
_MIN_SATURATION = 0.08  # (max - min) / max of RGB; glass stays below ~0.05
_MAX_BRIGHTNESS = 235  # brightest channel of tissue; glass sits at ~240
_DARK = 200  # pixels darker than this need less saturation (dense nuclei, thick cores)
_DARK_SATURATION = 0.04
_GREEN_INK_MARGIN = 25  # green above red by this much: green/blue marker
_INK_MAX_TEXTURE = 0.5  # high-pass energy (grey levels) below which a pixel is smooth
_RED_INK_HUE_DEG = 25  # red marker: hue within this of pure red ...
_RED_INK_SATURATION = 0.5  # ... and saturation above what stained tissue shows


def pen_mask(rgb: np.ndarray) -> np.ndarray:
    """Pixels of marker ink: green/blue (green above red) or strongly saturated red.

    Red ink has the hue of eosin but a saturation tissue rarely reaches, so it is told apart
    by hue within ±25° of pure red *and* saturation >= 0.5.
    """
    r, g, b = (rgb[..., i].astype(np.int16) for i in range(3))
    green_blue = g > r + _GREEN_INK_MARGIN
    lo = np.minimum(g, b)
    chroma = r - lo
    red = (
        (r >= np.maximum(g, b))
        & (chroma >= _RED_INK_SATURATION * r)
        & (np.abs(g - b) * 60 <= _RED_INK_HUE_DEG * chroma)
        & (chroma > 0)
    )
    return green_blue | red


def _texture(rgb: np.ndarray) -> np.ndarray:
    """Local high-frequency energy of brightness: nuclei and fibres give texture, while ink
    (out of focus, on the coverslip) is smooth even across its blurred rim, where a plain local
    standard deviation would see the ramp."""
    grey = rgb.astype(np.float32).mean(axis=-1)
    return ndi.uniform_filter(np.abs(grey - ndi.gaussian_filter(grey, 1.0)), 5)


def stained_mask(rgb: np.ndarray) -> np.ndarray:
    """Pixels that look like stained tissue: coloured (or dark) and not glass, not ink.

    Ink is found in two steps: pixels of ink colour, then every smooth (untextured) coloured
    pixel connected to them — the blurred rim and dark overlaps of a stroke, which by colour
    alone could be tissue.
    """
    hi = rgb.max(axis=-1).astype(np.float32)
    lo = rgb.min(axis=-1).astype(np.float32)
    saturation = (hi - lo) / np.maximum(hi, 1.0)
    coloured = (saturation >= _MIN_SATURATION) & (hi <= _MAX_BRIGHTNESS)
    dark = (hi < _DARK) & (saturation >= _DARK_SATURATION)
    candidate = coloured | dark
    ink = pen_mask(rgb)
    if ink.any():
        smooth = _texture(rgb) < _INK_MAX_TEXTURE
        ink = ndi.binary_propagation(ink, mask=ink | (candidate & smooth))
    return candidate & ~ink


def tissue_mask(rgb: np.ndarray, min_area_px: int, hole_area_px: int | None = None) -> np.ndarray:
    """Boolean tissue mask of an RGB image: stained pixels, cleaned, small pieces dropped.

    Args:
        rgb: (H, W, 3) uint8 image, white background.
        min_area_px: components smaller than this many pixels are dropped (dust, debris).
        hole_area_px: holes up to this size are filled (lumina, ink removed over tissue);
            default ``min_area_px``.
    """
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise InputError(f"expected an (H, W, 3) RGB image, got shape {rgb.shape}")
    mask = stained_mask(rgb)
    # Opening removes pen lines and speckle one pixel wide; closing joins fragmented stroma.
    mask = ndi.binary_opening(mask, structure=np.ones((3, 3)))
    mask = ndi.binary_closing(mask, structure=np.ones((3, 3)), border_value=0)
    labels, n = ndi.label(~mask)
    if n:
        sizes = np.bincount(labels.ravel())
        limit = min_area_px if hole_area_px is None else hole_area_px
        border = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
        small = sizes <= limit
        small[0] = False
        small[border] = False  # background touching the edge is glass, not a hole
        mask |= small[labels]
    labels, n = ndi.label(mask)
    if n:
        sizes = np.bincount(labels.ravel())
        keep = sizes >= max(1, min_area_px)
        keep[0] = False
        mask = keep[labels]
    return mask


@dataclass
class TissueMask:
    """Tissue at low resolution, in the slide's level-0 frame.

    Attributes:
        mask: (H, W) bool, one pixel per ``mpp`` µm; pixel (i, j) covers level-0
            ``[j * f, (j + 1) * f) x [i * f, (i + 1) * f)`` with ``f = mpp / slide_mpp``.
        mpp: µm/px of the mask.
        slide_mpp: level-0 µm/px of the slide it was made from.
    """

    mask: np.ndarray
    mpp: float
    slide_mpp: float
    _integral: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        padded = np.zeros((self.mask.shape[0] + 1, self.mask.shape[1] + 1), dtype=np.int64)
        padded[1:, 1:] = np.cumsum(np.cumsum(self.mask, axis=0), axis=1)
        self._integral = padded

    def __repr__(self) -> str:
        h, w = self.mask.shape
        return (
            f"TissueMask({self.n_components} piece(s), {self.area_mm2:.2f} mm², "
            f"{w}×{h} px at {self.mpp:g} µm/px)"
        )

    def _repr_html_(self) -> str:
        from lnpath.wsi.pictures import tissue_html

        return tissue_html(self)

    def plot(self, slide: Slide | None = None, ax: Any = None) -> Any:
        """The mask's outline over ``slide`` (or the mask alone); returns the matplotlib Axes."""
        from lnpath.wsi.pictures import plot_tissue

        return plot_tissue(self, slide, ax)

    @property
    def factor(self) -> float:
        """Level-0 pixels per mask pixel."""
        return self.mpp / self.slide_mpp

    @property
    def area_mm2(self) -> float:
        """Tissue area in mm², to tell an adequate core from a sliver before scoring it."""
        return float(self.mask.sum()) * (self.mpp / 1000.0) ** 2

    @property
    def n_components(self) -> int:
        """Separate pieces of tissue (a renal biopsy often has several cores)."""
        return int(ndi.label(self.mask)[1])

    def fractions_in(
        self, x: np.ndarray, y: np.ndarray, width: np.ndarray, height: np.ndarray
    ) -> np.ndarray:
        """Tissue fraction of many level-0 rectangles at once (outside the slide = no tissue)."""
        f = self.factor
        h, w = self.mask.shape
        x0 = np.floor(np.asarray(x) / f).astype(np.int64)
        y0 = np.floor(np.asarray(y) / f).astype(np.int64)
        x1 = np.maximum(np.ceil((np.asarray(x) + np.asarray(width)) / f).astype(np.int64), x0 + 1)
        y1 = np.maximum(np.ceil((np.asarray(y) + np.asarray(height)) / f).astype(np.int64), y0 + 1)
        total = (x1 - x0) * (y1 - y0)
        cx0, cx1 = np.clip(x0, 0, w), np.clip(x1, 0, w)
        cy0, cy1 = np.clip(y0, 0, h), np.clip(y1, 0, h)
        s = self._integral
        inside = s[cy1, cx1] - s[cy0, cx1] - s[cy1, cx0] + s[cy0, cx0]
        return inside / total

    def fraction_in(self, x: float, y: float, width: float, height: float) -> float:
        """Tissue fraction of one level-0 rectangle."""
        one = self.fractions_in(np.array([x]), np.array([y]), np.array([width]), np.array([height]))
        return float(one[0])

    def polygons(self) -> list[Polygon]:
        """Tissue outlines as shapely Polygons (with holes) in level-0 pixels."""
        from skimage import measure

        f = self.factor
        labels, _ = ndi.label(self.mask)
        result = []
        for i, sl in enumerate(ndi.find_objects(labels), start=1):
            if sl is None:
                continue
            piece = np.pad(labels[sl] == i, 1)
            rings = [
                c[:, ::-1] + (sl[1].start - 1, sl[0].start - 1)
                for c in measure.find_contours(piece.astype(np.uint8), 0.5)
                if len(c) >= 4
            ]
            if not rings:
                continue
            rings.sort(key=lambda c: Polygon(c).area, reverse=True)
            shell, holes = rings[0], rings[1:]
            poly = Polygon((shell + 0.5) * f, [(h + 0.5) * f for h in holes])
            result.append(poly if poly.is_valid else poly.buffer(0))
        return result


def _number(value: object, name: str, zero: bool) -> float:
    """``value`` as a finite float > 0 (>= 0 with ``zero``), else one line naming it."""
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        number = math.nan
    if not (number >= 0 if zero else number > 0) or not math.isfinite(number):
        bound = ">= 0" if zero else "> 0"
        raise InputError(f"detect_tissue: {name} must be a number {bound} (got {value!r})")
    return number


def detect_tissue(
    slide: Slide, mpp: float = DEFAULT_MPP, min_area_mm2: float = MIN_AREA_MM2
) -> TissueMask:
    """Detect every tissue piece of ``slide`` on a thumbnail at ``mpp`` µm/px.

    Args:
        slide: an open slide.
        mpp: resolution of the detection (coarser is faster; finer keeps smaller pieces).
        min_area_mm2: pieces smaller than this are dust or debris and are dropped (in an image
            smaller than four times this, pieces smaller than a quarter of the image).

    Returns:
        The mask; a slide without tissue gives an empty mask and a logged warning.
    """
    require_open(slide, "detect_tissue")
    mpp = max(_number(mpp, "mpp", zero=False), slide.mpp)  # never finer than the scan itself
    min_area_mm2 = _number(min_area_mm2, "min_area_mm2", zero=True)
    rgb = slide.thumbnail(mpp)
    min_area_px = max(1, math.ceil(min_area_mm2 / (mpp / 1000.0) ** 2))
    # A snapshot or a single-glomerulus crop can be smaller than the dust limit itself and show
    # no glass at all: a stained piece covering a quarter of the image is tissue, not dust.
    min_area_px = min(min_area_px, max(1, rgb.shape[0] * rgb.shape[1] // 4))
    mask = TissueMask(tissue_mask(rgb, min_area_px), mpp=mpp, slide_mpp=slide.mpp)
    if not mask.mask.any():
        log.warning("%s: no tissue found", slide.path)
    else:
        log.info(
            "%s: %d tissue piece(s), %.2f mm²", slide.path.name, mask.n_components, mask.area_mm2
        )
    return mask
