"""Pixels already read at one µm/px, kept so that a second pass over the same tissue cuts them out
instead of decoding and resampling them again.

``score_slide`` needs the tissue twice at 1 µm/px: segmentation (512 px tiles) and then the cortex
measurement (1024 px tiles). On the demo the cortex's reads were 1.3-1.4 s of CPU, half of it
OpenSlide's JPEG decoding and half the Lanczos resampling, for pixels segmentation had already
made. A resampled pixel depends only on where its centre falls in the level it is made from (the
reads carry the filter's margin), so a tile of one grid cut out of another grid's tiles is the
same array, bit for bit, wherever the grids' output pixels line up; where they do not, or where
nothing was kept, the pixels are read as before.

Kept tiles are copied into anonymous memory maps of their own rather than held where the reader
allocated them: held in place they pinned the reader thread's malloc arena around them, so the
4x slide's 163 MB of tiles raised segmentation's peak RSS by 225-510 MB.
"""

from __future__ import annotations

import math
import mmap
from dataclasses import dataclass

import numpy as np

from lnpath.core.errors import InputError
from lnpath.wsi.grid import TileInfo, TileSpec
from lnpath.wsi.slide import Slide, check_mpp, require_open

DEFAULT_BUDGET_BYTES = 256 << 20
"""Tiles kept at most: about 330 tiles of 512 px, a biopsy of four to five times the demo."""

_CELL = 128
"""Output px of the squares in which what was not kept is read (runs of them in one read)."""

_SLAB_BYTES = 64 << 20
"""Size of each memory map kept tiles are copied into (untouched pages cost no memory)."""


@dataclass(frozen=True)
class _Kept:
    x: int  # level-0 corner
    y: int
    pixels: np.ndarray  # (h, w, 3) at the store's µm/px


def require_kept(kept: object, what: str) -> None:
    """None or a :class:`KeptPixels`: anything else (a slide, a flag) is named here, not as
    ``'str' object has no attribute 'accepts'`` halfway through a slide."""
    if kept is not None and not isinstance(kept, KeptPixels):
        raise InputError(
            f"{what}: expected KeptPixels(slide, mpp) or None, got {type(kept).__name__}"
        )


class KeptPixels:
    """Tiles of one slide at one µm/px, kept by a first pass and cut out by a later one.

    Args:
        slide: the slide both passes read.
        mpp: the µm/px of both passes; tiles of a grid at another one are neither kept nor served.
        budget_bytes: stop keeping beyond this (the later pass reads the rest itself).

    ``served`` counts the output pixels :meth:`read` cut out of kept tiles (``kept_px``) and
    read from the slide (``read_px``): what a benchmark or a test checks the sharing by.
    """

    def __init__(self, slide: Slide, mpp: float, budget_bytes: int = DEFAULT_BUDGET_BYTES) -> None:
        require_open(slide, "KeptPixels")
        self.slide = slide
        self.mpp = check_mpp(mpp, "KeptPixels: mpp")
        self.budget_bytes = budget_bytes
        self._tiles: list[_Kept] = []
        self._bytes = 0
        self._slabs: list[mmap.mmap] = []
        self._slab_used = 0
        self.served = {"kept_px": 0, "read_px": 0}

    def __repr__(self) -> str:
        return f"KeptPixels({len(self._tiles)} tiles at {self.mpp:g} µm/px, {self._bytes >> 20} MB)"

    def __len__(self) -> int:
        return len(self._tiles)

    def accepts(self, spec: TileSpec) -> bool:
        """Whether tiles of a grid with this spec are at this store's µm/px and level."""
        return math.isclose(spec.mpp, self.mpp, rel_tol=1e-9) and spec.level == self._level()

    def keep(self, info: TileInfo, pixels: np.ndarray) -> bool:
        """Keep a copy of one tile; False once over the budget."""
        nbytes = pixels.nbytes
        if self._bytes + nbytes > self.budget_bytes:
            return False
        if not self._slabs or self._slab_used + nbytes > len(self._slabs[-1]):
            self._slabs.append(mmap.mmap(-1, max(_SLAB_BYTES, nbytes)))
            self._slab_used = 0
        copy = np.ndarray(pixels.shape, np.uint8, buffer=self._slabs[-1], offset=self._slab_used)
        copy[...] = pixels
        copy.flags.writeable = False
        self._slab_used += nbytes
        self._tiles.append(_Kept(int(info.x), int(info.y), copy))
        self._bytes += nbytes
        return True

    def clear(self) -> None:
        """Let the kept tiles go (their maps are unmapped once nothing refers to them)."""
        self._tiles.clear()
        self._slabs.clear()
        self._slab_used = 0
        self._bytes = 0

    def read(self, info: TileInfo, size: int) -> np.ndarray:
        """The ``size`` x ``size`` tile at ``info``'s level-0 corner, as its grid would read it:
        cut from kept tiles where their pixels line up with it, read from the slide elsewhere."""
        factor = self.mpp / self.slide.mpp  # level-0 px per output px
        canvas = np.empty((size, size, 3), np.uint8)
        covered = np.zeros((size, size), bool)
        for kept in self._tiles:
            dx, dy = (kept.x - info.x) / factor, (kept.y - info.y) / factor
            if not (_whole(dx) and _whole(dy)):
                continue  # output pixels between the requested ones: not the same pixels
            dx, dy = round(dx), round(dy)
            h, w = kept.pixels.shape[:2]
            x0, y0, x1, y1 = max(dx, 0), max(dy, 0), min(dx + w, size), min(dy + h, size)
            if x1 > x0 and y1 > y0:
                canvas[y0:y1, x0:x1] = kept.pixels[y0 - dy : y1 - dy, x0 - dx : x1 - dx]
                covered[y0:y1, x0:x1] = True
        n_kept = int(covered.sum())
        self.served["kept_px"] += n_kept
        self.served["read_px"] += size * size - n_kept
        if n_kept < size * size:
            self._read_uncovered(canvas, covered, info, factor)
        canvas.flags.writeable = False  # as grid tiles are: copy one before changing it
        return canvas

    def _read_uncovered(
        self, canvas: np.ndarray, covered: np.ndarray, info: TileInfo, factor: float
    ) -> None:
        """Fill what no kept tile covers, reading each band of cells in runs of uncovered ones."""
        size = canvas.shape[0]
        for cy0 in range(0, size, _CELL):
            cy1 = min(cy0 + _CELL, size)
            band = ~covered[cy0:cy1]
            cells = [bool(band[:, cx : cx + _CELL].any()) for cx in range(0, size, _CELL)]
            for start, stop in _runs(cells):
                cx0, cx1 = start * _CELL, min(stop * _CELL, size)
                canvas[cy0:cy1, cx0:cx1] = self.slide.read(
                    info.x + cx0 * factor,
                    info.y + cy0 * factor,
                    (cx1 - cx0) * factor,
                    (cy1 - cy0) * factor,
                    mpp=self.mpp,
                )

    def _level(self) -> int:
        return self.slide.best_level(self.mpp).level


def _whole(value: float) -> bool:
    return abs(value - round(value)) < 1e-6


def _runs(flags: list[bool]) -> list[tuple[int, int]]:
    """``[start, stop)`` of each run of True."""
    runs, start = [], None
    for i, flag in enumerate([*flags, False]):
        if flag and start is None:
            start = i
        elif not flag and start is not None:
            runs.append((start, i))
            start = None
    return runs
