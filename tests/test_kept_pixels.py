"""Tiles one pass keeps at a µm/px are cut out by the next: bit for bit what it would read."""

from __future__ import annotations

import weakref
from pathlib import Path

import numpy as np
import pytest

import lnpath
from lnpath.analysis.cortex import ANY_TISSUE, TILE_PX, measure_cortex
from lnpath.analysis.segment import MIN_TISSUE, segment_glomeruli
from lnpath.wsi.grid import TileInfo
from lnpath.wsi.kept_pixels import KeptPixels
from lnpath.wsi.tiling import tile
from lnpath.wsi.tissue import detect_tissue

DEMO = Path(__file__).resolve().parents[1] / "examples" / "demo_biopsy.tiff"


@pytest.fixture(scope="module")
def slide() -> lnpath.Slide:
    return lnpath.open_slide(DEMO)


def _kept_like_segmentation(slide: lnpath.Slide, mpp: float = 1.0) -> KeptPixels:
    """Keep the tiles of the segmentation's grid (512 px, 64 px overlap, tissue tiles only)."""
    kept = KeptPixels(slide, mpp)
    grid = tile(slide, mpp, size=512, overlap=64, min_tissue=MIN_TISSUE)
    for info, pixels in grid.iter(progress=False):
        assert kept.keep(info, pixels)
    return kept


@pytest.mark.parametrize("mpp", [1.0, 0.5])  # resampled from level 0; level 0 itself
def test_every_cortex_tile_is_what_the_cortex_grid_reads(slide: lnpath.Slide, mpp: float) -> None:
    kept = _kept_like_segmentation(slide, mpp)
    grid = tile(slide, mpp, size=TILE_PX, min_tissue=ANY_TISSUE)
    assert kept.accepts(grid.spec)
    for info, pixels in grid.iter(progress=False):
        cut = kept.read(info, grid.spec.size)
        assert np.array_equal(cut, pixels), info
        assert not cut.flags.writeable
    # most pixels came from the kept tiles; the rest (tissue edges, slide edges) were read
    served = kept.served
    assert served["kept_px"] > 2 * served["read_px"] > 0


def test_tiles_whose_pixels_do_not_line_up_are_not_used(slide: lnpath.Slide) -> None:
    """A tile one level-0 px off the grid (half an output px at 1 µm/px) holds other pixels."""
    kept = KeptPixels(slide, 1.0)
    x, y = 2049, 1024
    kept.keep(TileInfo(x, y, 1024, 1024, 0, 0, 1.0), slide.read(x, y, 1024, 1024, mpp=1.0))
    info = TileInfo(2048, 1024, 2048, 2048, 0, 1, 1.0)
    cut = kept.read(info, 1024)
    assert np.array_equal(cut, slide.read(2048, 1024, 2048, 2048, mpp=1.0))
    assert kept.served["kept_px"] == 0


def test_nothing_is_kept_beyond_the_budget_or_at_another_resolution(slide: lnpath.Slide) -> None:
    grid = tile(slide, 1.0, size=512, overlap=64, min_tissue=MIN_TISSUE)
    info, pixels = next(iter(grid.iter(progress=False)))
    small = KeptPixels(slide, 1.0, budget_bytes=pixels.nbytes)
    assert small.keep(info, pixels)
    assert not small.keep(info, pixels)
    assert len(small) == 1
    small.clear()
    assert len(small) == 0
    assert not KeptPixels(slide, 2.0).accepts(grid.spec)


def test_the_cortex_measured_from_segmentations_tiles_is_the_same(slide: lnpath.Slide) -> None:
    tissue = detect_tissue(slide)
    kept = KeptPixels(slide, 1.0)
    glomeruli = segment_glomeruli(slide, tissue=tissue, tta=False, progress=False, keep=kept)
    assert len(kept) == glomeruli.metadata["timings"]["tiles"]
    read = measure_cortex(slide, glomeruli, tissue=tissue, progress=False)
    cut = measure_cortex(slide, glomeruli, tissue=tissue, progress=False, kept=kept)
    assert cut.to_dict() == read.to_dict()
    assert kept.served["kept_px"] > 0


def test_a_kept_tile_is_a_copy_that_lets_the_readers_block_go(slide: lnpath.Slide) -> None:
    """Held in place, kept tiles pinned the reader's memory around them (peak RSS +0.5 GB)."""
    block = np.full((2, 512, 512, 3), 7, np.uint8)
    alive = weakref.ref(block)
    kept = KeptPixels(slide, 1.0)
    assert kept.keep(TileInfo(0, 0, 1024, 1024, 0, 0, 1.0), block[0])
    del block
    assert alive() is None
    cut = kept.read(TileInfo(0, 0, 1024, 1024, 0, 0, 1.0), 512)
    assert (cut == 7).all() and kept.served["read_px"] == 0
