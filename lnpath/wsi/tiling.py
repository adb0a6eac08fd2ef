"""A µm/px-aware tile grid over a slide, read in file-aligned blocks, in memory or in workers.

``tile(slide, mpp=2.0, size=512)`` returns a :class:`TileGrid`: a table of tile rectangles in
level-0 pixels plus a :class:`TileSpec` saying how pixels were obtained. Iterating it yields
``(TileInfo, array)``. Tiles are cut from blocks that span several tiles and are aligned to the
file's own tile grid, because OpenSlide decodes whole file tiles and small unaligned reads waste
~40 % of the time (peers.md). Worker processes get the slide's *path* and open their own handle.
"""

from __future__ import annotations

import collections
import itertools
import logging
import math
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import shared_memory
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lnpath.core.args import check_count, check_flag
from lnpath.core.errors import InputError
from lnpath.core.progress import progress_bar
from lnpath.core.threads import ordered_on_threads
from lnpath.wsi.backends import packed_pixels, rgb_image, unpacked_rgb
from lnpath.wsi.grid import (
    _COLUMNS,
    TileInfo,
    TileSpec,
    _grid_origin,
    grid_table,
    make_spec,
    refuse_upsampling,
)
from lnpath.wsi.slide import Slide, resample, resample_margin
from lnpath.wsi.tile_folder import save_tiles
from lnpath.wsi.tissue import TissueMask, detect_tissue
from lnpath.wsi.workers import (
    available_cpus,
    can_start_workers,
    quiet_worker,
    worker_context,
)

log = logging.getLogger(__name__)

_BLOCK_WIDTH = 4096
"""Widest block (level px) read at once: wide enough to amortise calls, small enough for RAM."""
_MAX_CACHE_BYTES = 256 << 20
_MIN_PARALLEL_BYTES = 32 << 20
"""Below ~8 Mpx (4 bytes each as decoded; ~0.3 s of decoding) starting worker processes costs
more than it saves."""


@dataclass(frozen=True)
class _Block:
    """One read: a level rectangle and the tiles cut from it (float level origins)."""

    level: int
    x: int
    y: int
    width: int
    height: int
    origins: tuple[tuple[float, float], ...]


class TileGrid:
    """Tiles of one slide at one resolution: :attr:`table`, :attr:`spec`, and iteration."""

    def __init__(
        self, slide: Slide, spec: TileSpec, table: pd.DataFrame, min_tissue: float = 0.0
    ) -> None:
        self.slide = slide
        self.spec = spec
        self.table = table
        self.min_tissue = min_tissue

    def _repr_html_(self) -> str:
        from lnpath.wsi.pictures import grid_html

        return grid_html(self)

    def plot(self, ax: Any = None) -> Any:
        """Every tile over the slide, coloured by tissue fraction; returns the matplotlib Axes."""
        from lnpath.wsi.pictures import plot_grid

        return plot_grid(self, ax)

    def save(
        self,
        out: str | Path,
        workers: int = 1,
        overwrite: bool = False,
        progress: bool | None = None,
    ) -> Path:
        """Write the tiles as PNGs with ``tiles.csv`` and ``tiles.json`` into a new folder
        (:func:`lnpath.wsi.tile_folder.save_tiles`)."""
        return save_tiles(self, out, workers=workers, overwrite=overwrite, progress=progress)

    def __len__(self) -> int:
        return len(self.table)

    def __repr__(self) -> str:
        return f"TileGrid({len(self)} tiles of {self.spec.size} px at {self.spec.mpp} µm/px)"

    def __iter__(self) -> Iterator[tuple[TileInfo, np.ndarray]]:
        return self.iter()

    def infos(self) -> Iterator[TileInfo]:
        """Every tile's :class:`TileInfo`, in table order, without reading pixels."""
        return (TileInfo(*row) for row in self.table[_COLUMNS].itertuples(index=False))

    def origins(self) -> np.ndarray:
        """Level coordinates (x, y) of every tile's top-left pixel, in table order.

        Whole level pixels when no resampling happens (tiles are exact crops of the level);
        otherwise the table's integer level-0 corner divided by the level's downsample, so
        that ``slide.read(x, y, width, height, mpp)`` of a table row gives the same pixels.
        """
        spec = self.spec
        if spec.scale != 1.0:
            ds = self.slide.level_downsamples[spec.level]
            return self.table[["x", "y"]].to_numpy(dtype=float) / ds
        ox, oy = _grid_origin(self.slide, spec)
        cols = self.table["col"].to_numpy(dtype=float)
        rows = self.table["row"].to_numpy(dtype=float)
        return np.column_stack([ox + cols * spec.stride, oy + rows * spec.stride])

    def _blocks(self) -> list[_Block]:
        """Group runs of tiles from one grid row, left to right, into reads of at most
        ``_BLOCK_WIDTH`` level pixels (plus the resampling filter's margin)."""
        spec, slide = self.spec, self.slide
        native = slide.native_tile_size(spec.level)
        gap = native[0] if native else 0  # bridge small gaps: those file tiles decode anyway
        span = spec.size * spec.scale
        margin = resample_margin(spec.scale)
        blocks: list[_Block] = []
        origins = self.origins()
        rows = self.table["row"].to_numpy()
        start = 0
        while start < len(origins):
            end = start + 1
            x_lo = math.floor(origins[start, 0]) - margin
            while (
                end < len(origins)
                and rows[end] == rows[start]
                and origins[end, 0] >= origins[end - 1, 0]
                and math.ceil(origins[end, 0] + span) + margin - x_lo <= max(_BLOCK_WIDTH, span)
                and origins[end, 0] - (origins[end - 1, 0] + span) <= gap
            ):
                end += 1
            chunk = origins[start:end]
            x_hi = math.ceil(chunk[-1, 0] + span) + margin
            y_lo = math.floor(chunk[0, 1]) - margin
            y_hi = math.ceil(chunk[0, 1] + span) + margin
            blocks.append(
                _Block(
                    spec.level,
                    x_lo,
                    y_lo,
                    x_hi - x_lo,
                    y_hi - y_lo,
                    tuple((float(a), float(b)) for a, b in chunk),
                )
            )
            start = end
        return blocks

    def _band_cache_bytes(self) -> int:
        """Decoded-tile cache that lets the next grid row reuse the file tiles it shares with
        this one (0 when rows start on file-tile boundaries and share none)."""
        spec = self.spec
        native = self.slide.native_tile_size(spec.level)
        if native is None:
            return 0
        th = native[1]
        oy = _grid_origin(self.slide, spec)[1]
        if spec.scale == 1.0 and oy % th == 0 and spec.stride % th == 0:
            return 0
        level_w = self.slide.level_dimensions[spec.level][0]
        band = th + math.ceil(spec.size * spec.scale) + 2 * resample_margin(spec.scale)
        return int(min(_MAX_CACHE_BYTES, level_w * band * 4 * 1.25))

    def iter(
        self,
        workers: int = 1,
        progress: bool | None = None,
        start_method: str | None = None,
        threads: int = 1,
    ) -> Iterator[tuple[TileInfo, np.ndarray]]:
        """Yield ``(TileInfo, (size, size, 3) uint8 array)`` in table order.

        Args:
            workers: processes reading blocks; each opens its own slide handle. 1 reads here.
            threads: with one worker, blocks decoded at once on threads sharing the slide
                handle (OpenSlide and PIL's resampling release the GIL): 2 read the demo's
                55 resampled tiles 1.9x faster than 1 on 2 cores. Ignored with workers.
            progress: a bar over the tiles;
            on in Jupyter and on a terminal, off in pipes (``LNPATH_PROGRESS``).
            start_method: multiprocessing start method for workers; default ``forkserver``
                on Linux (cheap to start, no inherited slide handles), else ``spawn``. The
                fork server preloads this module when lnpath starts it; one started earlier
                by other code makes every worker import numpy/OpenSlide itself (~0.5 s). A
                script that calls this outside ``if __name__ == "__main__":`` reads in this
                process instead (workers would run the script again; see
                :func:`lnpath.wsi.workers.unguarded_script`).

        Tiles are read-only views into the block they were cut from when no resampling is
        needed (copy one before changing it); resampled tiles are new arrays.
        """
        workers = check_count(workers, "workers")
        threads = check_count(threads, "threads")
        infos = self.infos()
        bar = progress_bar(len(self), self.slide.path.name, "tile", progress)
        blocks = self._blocks()
        if workers > 1 and not can_start_workers(str(self)):
            workers = 1
        if workers > 1 and sum(_block_bytes(self.spec, b) for b in blocks) < _MIN_PARALLEL_BYTES:
            log.info("%s: small grid, reading in this process (workers cost more)", self)
            workers = 1
        try:
            if workers == 1 or len(blocks) < 2:
                self.slide.reserve_cache(self._band_cache_bytes())
                loaded: Iterator[np.ndarray] = _loaded_on_threads(
                    self.slide, self.spec, blocks, threads
                )
            else:
                loaded = self._parallel(blocks, min(workers, len(blocks)), start_method)
            for block, pixels in zip(blocks, loaded, strict=True):
                tiles = _split(self.spec, block, pixels)
                for arr in tiles:
                    yield next(infos), arr
                bar.update(len(tiles))
        finally:
            bar.close()

    def _parallel(
        self, blocks: list[_Block], workers: int, start_method: str | None
    ) -> Iterator[np.ndarray]:
        ctx = worker_context(start_method)
        window = 2 * workers + 2  # blocks in flight: bounded memory, workers never idle
        slot_bytes = max(_block_bytes(self.spec, b) for b in blocks)
        # Workers write blocks into shared slots instead of pickling them through a pipe, which
        # cost as much CPU as a fifth of the decoding; the parent copies each block out once.
        # OpenSlide's pixels travel as their 4 decoded bytes (two memcpys): cutting RGB out
        # of them in the worker is a strided gather that costs ~10 % of the decoding.
        shm = shared_memory.SharedMemory(create=True, size=slot_bytes * window)
        try:
            with ProcessPoolExecutor(
                workers,
                mp_context=ctx,
                initializer=_init_worker,
                initargs=(self.slide, self.spec, self._band_cache_bytes(), shm.name, slot_bytes),
            ) as pool:
                free = list(range(window))
                pending: collections.deque[tuple[int, Future[tuple[tuple[int, ...], bool]]]] = (
                    collections.deque()
                )
                todo = iter(blocks)

                def submit(block: _Block) -> None:
                    slot = free.pop()
                    pending.append((slot, pool.submit(_worker_load, block, slot)))

                for block in itertools.islice(todo, window):
                    submit(block)
                while pending:
                    slot, future = pending.popleft()
                    shape, packed = future.result()
                    offset = slot * slot_bytes
                    pixels = np.ndarray(shape, np.uint8, buffer=shm.buf, offset=offset).copy()
                    if packed:
                        pixels = unpacked_rgb(pixels)
                    free.append(slot)
                    nxt = next(todo, None)
                    if nxt is not None:
                        submit(nxt)
                    yield pixels
        finally:
            shm.close()
            shm.unlink()


def _loaded_on_threads(
    slide: Slide, spec: TileSpec, blocks: list[_Block], threads: int
) -> Iterator[np.ndarray]:
    """:func:`_load` of each block in order, ``threads`` at a time (1: here, one by one).
    Closing it early cancels the blocks not started and waits for those being read."""

    def load(block: _Block) -> np.ndarray:
        return _load(slide, spec, block)

    threads = threads if len(blocks) > 1 else 1  # one block: no thread to start
    # two blocks per thread in flight: bounded memory, threads never idle
    for _, pixels in ordered_on_threads(load, blocks, threads, 2 * threads + 1, "lnpath-read"):
        yield pixels


def default_readers(grid: TileGrid) -> int:
    """Reader processes for a pass over ``grid``: 2 when the machine has more than one CPU and
    the grid more than 8 tiles, so pixels are decoded while this process computes, else 1."""
    return 2 if available_cpus() > 1 and len(grid) > 8 else 1


def _block_bytes(spec: TileSpec, block: _Block) -> int:
    """Bytes of what :func:`_load` returns for ``block`` (4 per pixel as decoded by OpenSlide)."""
    if spec.scale == 1.0:
        return block.width * block.height * 4
    return len(block.origins) * spec.size * spec.size * 3


def _load(slide: Slide, spec: TileSpec, block: _Block) -> np.ndarray:
    """The pixels of one block: the level region itself, or (resampling) its tiles stacked.

    One contiguous array per block is also what crosses from a worker to the parent, so
    overlapping tiles are sent once.
    """
    src = slide.read_level(block.level, block.x, block.y, block.width, block.height)
    if spec.scale == 1.0:
        return src
    size, scale = spec.size, spec.scale
    image = rgb_image(src)
    out = np.empty((len(block.origins), size, size, 3), dtype=np.uint8)
    for i, (fx, fy) in enumerate(block.origins):
        bx, by = fx - block.x, fy - block.y
        out[i] = resample(image, (bx, by, bx + size * scale, by + size * scale), (size, size))
    return out


def _split(spec: TileSpec, block: _Block, pixels: np.ndarray) -> list[np.ndarray]:
    """Cut a loaded block into tiles: read-only views (copying costs as much as decoding, and
    overlapping tiles share pixels, so writing to one must not silently change another)."""
    pixels.flags.writeable = False
    if spec.scale != 1.0:
        return list(pixels)
    size = spec.size
    tiles = []
    for fx, fy in block.origins:
        x, y = round(fx) - block.x, round(fy) - block.y
        tiles.append(pixels[y : y + size, x : x + size])
    return tiles


@dataclass
class _WorkerState:
    slide: Slide
    spec: TileSpec
    shm: shared_memory.SharedMemory
    slot_bytes: int


_WORKER: _WorkerState | None = None


def _init_worker(
    slide: Slide, spec: TileSpec, cache_bytes: int, shm_name: str, slot_bytes: int
) -> None:
    global _WORKER
    quiet_worker()
    slide.reserve_cache(cache_bytes, exactly=True)
    _WORKER = _WorkerState(slide, spec, shared_memory.SharedMemory(name=shm_name), slot_bytes)


def _worker_load(block: _Block, slot: int) -> tuple[tuple[int, ...], bool]:
    """Load ``block`` in a worker into shared ``slot``; return the array's shape and whether it
    holds OpenSlide's packed 4-byte pixels (see :func:`lnpath.wsi.backends.packed_pixels`)."""
    assert _WORKER is not None, "worker not initialised"
    pixels = _load(_WORKER.slide, _WORKER.spec, block)
    packed = packed_pixels(pixels)
    src = pixels if packed is None else packed
    offset = slot * _WORKER.slot_bytes
    np.ndarray(src.shape, np.uint8, buffer=_WORKER.shm.buf, offset=offset)[...] = src
    return src.shape, packed is not None


DEFAULT_MIN_TISSUE = 0.1
"""Tiles with less tissue than this are glass or a torn edge (the API and ``lnpath tiles``)."""


def tile(
    slide: Slide,
    mpp: float,
    size: int = 512,
    overlap: int = 0,
    min_tissue: float = DEFAULT_MIN_TISSUE,
    tissue: TissueMask | None = None,
    *,
    upsample: bool = False,
) -> TileGrid:
    """Lay a grid of ``size``-px tiles at ``mpp`` µm/px over the slide.

    Args:
        slide: an open slide.
        mpp: µm/px of the tile pixels (snapped to a pyramid level within 5 %).
        size: tile width and height in pixels.
        overlap: pixels shared by neighbouring tiles (stride = size - overlap).
        min_tissue: keep tiles whose tissue fraction is at least this (default 0.1, as
            ``lnpath tiles``; 0 keeps every tile of the slide).
        tissue: a tissue mask to use; detected with :func:`lnpath.detect_tissue` when
            ``min_tissue > 0`` and none is given. Without either, ``tissue_fraction`` is NaN.
        upsample: allow ``mpp`` finer than the scan (pixels enlarged, no detail added): for a
            model that needs its own µm/px; a request for tiles is refused instead.

    Returns:
        The grid; a slide without tissue gives an empty grid and a logged warning.

    Raises:
        InputError: a size, overlap or ``min_tissue`` out of range, or ``mpp`` finer than the scan.
    """
    number = not isinstance(min_tissue, bool) and isinstance(min_tissue, int | float | np.number)
    if not (number and 0.0 <= min_tissue <= 1.0):
        raise InputError(f"min_tissue must be in [0, 1], got {min_tissue!r}")
    spec = make_spec(slide, mpp, size, overlap)
    if not check_flag(upsample, "tile: upsample"):
        refuse_upsampling(slide, spec)
    table = grid_table(slide, spec)
    if tissue is None and min_tissue > 0:
        tissue = detect_tissue(slide)
    if tissue is not None:
        if not isinstance(tissue, TissueMask):
            raise InputError(
                f"tissue: expected a TissueMask (lnpath.detect_tissue(slide)), "
                f"got {type(tissue).__name__}"
            )
        if not math.isclose(tissue.slide_mpp, slide.mpp, rel_tol=1e-6):
            raise InputError(
                f"{slide.path}: the tissue mask was made for a slide at {tissue.slide_mpp:g} "
                f"µm/px, this slide is {slide.mpp:g} µm/px"
            )
        table["tissue_fraction"] = tissue.fractions_in(
            table["x"].to_numpy(),
            table["y"].to_numpy(),
            table["width"].to_numpy(),
            table["height"].to_numpy(),
        )
        if min_tissue > 0:
            table = table[table["tissue_fraction"] >= min_tissue].reset_index(drop=True)
            if table.empty:
                log.warning(
                    "%s: no tile has >= %.0f%% tissue; the tile grid is empty",
                    slide.path,
                    100 * min_tissue,
                )
    log.info("%s: %d tiles of %d px at %.3g µm/px", slide.path.name, len(table), size, mpp)
    return TileGrid(slide, spec, table, min_tissue)
