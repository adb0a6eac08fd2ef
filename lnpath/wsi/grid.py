"""Tile-grid arithmetic: a grid spec at a µm/px, its level-0 rectangles, edges and overlap."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import pandas as pd

from lnpath.core.errors import InputError
from lnpath.wsi.slide import SNAP_TOLERANCE, LevelChoice, Slide, check_mpp, require_open

_COLUMNS = ["x", "y", "width", "height", "row", "col", "tissue_fraction"]


@dataclass(frozen=True)
class TileSpec:
    """How the tiles of a grid are made.

    Attributes:
        mpp: requested µm/px of the tile pixels.
        size: tile width and height in tile pixels.
        overlap: pixels shared by neighbouring tiles.
        stride: ``size - overlap``.
        level: pyramid level the pixels come from.
        downsample: level-0 pixels per tile pixel actually used (the level's own downsample
            when snapped within 5 %, else ``mpp / slide.mpp``). Map tile pixel ``(u, v)`` to
            level 0 as ``(x + u * downsample, y + v * downsample)``.
        scale: level pixels per tile pixel (1.0 when no resampling happens).
    """

    mpp: float
    size: int
    overlap: int
    stride: int
    level: int
    downsample: float
    scale: float = 1.0


class TileInfo(NamedTuple):
    """One tile's row of :attr:`TileGrid.table` (level-0 pixels)."""

    x: int
    y: int
    width: int
    height: int
    row: int
    col: int
    tissue_fraction: float


MAX_TILE_PX = 16384
"""Largest tile side: a 16384² RGB tile is 0.8 GB in memory, and no network or export needs more."""


def grid_shape(extent: float, size: int, stride: int) -> int:
    """Number of tiles along an axis: the fewest whose union covers ``extent`` tile pixels."""
    if extent <= size:
        return 1
    return math.ceil((extent - size) / stride) + 1


def _grid_origin(slide: Slide, spec: TileSpec) -> tuple[float, float]:
    """Level coordinates of the grid's first tile: the bounds' corner (or 0, 0), snapped to
    whole level pixels when no resampling happens so that crops are exact."""
    ds = slide.level_downsamples[spec.level]
    bx, by = slide.bounds[:2] if slide.bounds else (0, 0)
    if spec.scale == 1.0:
        return float(round(bx / ds)), float(round(by / ds))
    return bx / ds, by / ds


def make_spec(slide: Slide, mpp: float, size: int, overlap: int = 0) -> TileSpec:
    """Validate tiling parameters and decide the level and scale for ``mpp``."""
    require_open(slide, "tile")
    mpp = check_mpp(mpp, "mpp")
    if isinstance(size, bool) or not isinstance(size, int | np.integer) or size < 1:
        raise InputError(f"tile size must be a positive integer, got {size!r}")
    if size > MAX_TILE_PX:
        raise InputError(
            f"tile size must be at most {MAX_TILE_PX} px (one tile is read into memory whole), "
            f"got {size}"
        )
    if (
        isinstance(overlap, bool)
        or not isinstance(overlap, int | np.integer)
        or not 0 <= overlap < size
    ):
        raise InputError(f"overlap must be an integer in [0, size), got {overlap!r}")
    choice: LevelChoice = slide.best_level(mpp)
    ds = slide.level_downsamples[choice.level]
    return TileSpec(
        mpp=mpp,
        size=int(size),
        overlap=int(overlap),
        stride=int(size - overlap),
        level=choice.level,
        downsample=ds * choice.scale,
        scale=choice.scale,
    )


def refuse_upsampling(slide: Slide, spec: TileSpec) -> None:
    """Tiles asked for finer than the scan would be enlarged pixels passed off as detail.

    Raises:
        InputError: ``spec.mpp`` is finer than level 0 by more than the snapping tolerance.
    """
    if spec.mpp < slide.mpp * (1.0 - SNAP_TOLERANCE):
        raise InputError(
            f"{slide.path}: {spec.mpp:g} µm/px is finer than the scan ({slide.mpp:.4g} µm/px "
            "at level 0): tiles would be enlarged pixels with no more detail; "
            f"ask for {slide.mpp:.4g} µm/px or coarser"
        )


def grid_table(slide: Slide, spec: TileSpec) -> pd.DataFrame:
    """Every tile rectangle covering the slide (or its bounds), row-major, in level-0 px."""
    ds = slide.level_downsamples[spec.level]
    ext_w, ext_h = slide.bounds[2:] if slide.bounds else slide.dimensions
    cols = grid_shape(ext_w / spec.downsample, spec.size, spec.stride)
    rows = grid_shape(ext_h / spec.downsample, spec.size, spec.stride)
    ox, oy = _grid_origin(slide, spec)
    grid_r, grid_c = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
    rr, cc = grid_r.ravel(), grid_c.ravel()
    step = spec.stride * spec.scale
    extent = round(spec.size * spec.downsample)
    return pd.DataFrame(
        {
            "x": np.rint((ox + cc * step) * ds).astype(np.int64),
            "y": np.rint((oy + rr * step) * ds).astype(np.int64),
            "width": np.full(rr.size, extent, dtype=np.int64),
            "height": np.full(rr.size, extent, dtype=np.int64),
            "row": rr.astype(np.int64),
            "col": cc.astype(np.int64),
            "tissue_fraction": np.full(rr.size, np.nan),
        }
    )
