"""Tissue detection against histolab's named tiles and thumbnails, and on real slides."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage as ndi

import lnpath
from lnpath.wsi.tissue import pen_mask, tissue_mask

TISSUE = [
    "tissue-level0-4302-10273-4814-10785.png",
    "tissue-level0-7352-11762-7864-12274.png",
    "tissue-level2-1784-6289-5880-10386.png",
    "tissue-level2-3000-7666-7096-11763.png",
    "tissue-level2-4640-4649-8736-8746.png",
    "tissue-level2-4760-5241-8856-9338.png",
    "high-nuclei-score-level0.png",
    "medium-nuclei-score-level0.png",
    "medium-nuclei-score-level1.png",
    "medium-nuclei-score-level1-2.png",
    "medium-nuclei-score-level2.png",
    "very-low-nuclei-score-level0.png",
]
NO_TISSUE = [
    "no-tissue.png",
    "no-tissue2.png",
    "no-tissue-line.png",
    "no-tissue-green-pen.png",
    "no-tissue-red-pen.png",
    "almost-white-1.png",
    "almost-white-2.png",
]
TISSUE_WITH_PEN = [
    "high-nuclei-score-red-pen-level1.png",
    "medium-nuclei-score-green-pen-level1.png",
    "very-low-nuclei-score-red-pen-level1.png",
]


@pytest.fixture(scope="module")
def tiles_dir(data_dir: Path) -> Path:
    return data_dir / "tissue-detection-tiles"


def _rgb(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def _strokes(rgb: np.ndarray) -> np.ndarray:
    """Solid marker strokes: ink-coloured areas at least 5 px across (not stray pixels)."""
    return ndi.binary_opening(pen_mask(rgb), structure=np.ones((5, 5)))


def _mask(rgb: np.ndarray) -> np.ndarray:
    return tissue_mask(rgb, min_area_px=max(1, rgb.shape[0] * rgb.shape[1] // 500))


@pytest.mark.parametrize("name", TISSUE)
def test_tissue_tiles_have_tissue(tiles_dir: Path, name: str) -> None:
    assert _mask(_rgb(tiles_dir / name)).mean() > 0.3


@pytest.mark.parametrize("name", NO_TISSUE)
def test_no_tissue_tiles_have_none(tiles_dir: Path, name: str) -> None:
    """Glass, a scratch line, and out-of-focus marker ink on glass are not tissue."""
    assert _mask(_rgb(tiles_dir / name)).mean() < 0.01


@pytest.mark.parametrize("name", TISSUE_WITH_PEN)
def test_pen_marks_over_tissue_are_removed(tiles_dir: Path, name: str) -> None:
    rgb = _rgb(tiles_dir / name)
    mask, strokes = _mask(rgb), _strokes(rgb)
    assert strokes.mean() > 0.05  # the tile really carries ink
    assert mask.mean() > 0.05  # the tissue is still found
    # ink on glass is dropped; ink lying over tissue may be filled in as part of it
    assert (mask & strokes).sum() < 0.3 * strokes.sum()


@pytest.mark.parametrize(
    ("name", "min_pieces"),
    [
        ("slide-thumb-tcga-red-pen.png", 1),
        ("slide-thumb-tcga-green-pen.png", 1),
        ("slide-thumb-wsi-blue-pen.png", 3),  # several fragments, every one kept
        ("slide-thumb-diagnostic-rgb.png", 1),
    ],
)
def test_slide_thumbnails_keep_tissue_and_drop_ink(
    tiles_dir: Path, name: str, min_pieces: int
) -> None:
    slide = lnpath.open_slide(tiles_dir / name, mpp=4.0)
    tissue = lnpath.detect_tissue(slide, mpp=4.0)
    rgb = slide.read_level(0, 0, 0, *slide.dimensions)
    strokes = _strokes(rgb)
    assert tissue.n_components >= min_pieces
    assert tissue.mask.mean() > 0.1
    assert (tissue.mask & strokes).sum() < 0.2 * max(strokes.sum(), 1)


def test_every_core_is_kept_and_dust_dropped(tiles_dir: Path) -> None:
    """Three separate cores (real tissue) on glass with a dust speck: three pieces, no dust."""
    canvas = np.full((700, 1800, 3), 242, dtype=np.uint8)
    for i, name in enumerate(TISSUE[2:5]):
        core = np.asarray(Image.fromarray(_rgb(tiles_dir / name)).resize((200, 500)))
        canvas[100:600, 100 + i * 600 : 300 + i * 600] = core
    canvas[650:653, 900:903] = 60  # a dark speck, 3 x 3 px = 144 µm² at 4 µm/px
    tissue = tissue_mask(canvas, min_area_px=625)  # 0.01 mm² at 4 µm/px
    assert ndi.label(tissue)[1] == 3
    assert not tissue[650:653, 900:903].any()


def test_detect_tissue_on_the_cmu_slide(slides_dir: Path) -> None:
    slide = lnpath.open_slide(slides_dir / "cmu-1-small-region.svs")
    tissue = lnpath.detect_tissue(slide)
    assert tissue.mpp == 4.0
    w, h = slide.dimensions
    assert tissue.mask.shape == (round(h * slide.mpp / 4.0), round(w * slide.mpp / 4.0))
    slide_mm2 = w * h * (slide.mpp / 1000) ** 2
    assert 0.25 * slide_mm2 < tissue.area_mm2 < 0.6 * slide_mm2
    # fractions of rectangles agree with the mask; outside the slide there is no tissue
    assert tissue.fraction_in(0, 0, w, h) == pytest.approx(tissue.mask.mean(), abs=0.01)
    assert tissue.fraction_in(-5000, -5000, 1000, 1000) == 0.0
    assert tissue.fraction_in(1200, 2000, 400, 400) > 0.8  # dense tissue at the bottom
    assert tissue.fraction_in(0, 0, 400, 400) < 0.05  # glass in the top-left corner
    # outlines in level-0 pixels cover the same area
    polygons = tissue.polygons()
    assert len(polygons) == tissue.n_components
    area_px = sum(p.area for p in polygons)
    assert area_px * (slide.mpp / 1000) ** 2 == pytest.approx(tissue.area_mm2, rel=0.1)
    minx, miny, maxx, maxy = polygons[0].bounds
    assert 0 <= minx < maxx <= w + 8 and 0 <= miny < maxy <= h + 8


def test_no_tissue_is_an_empty_mask_and_a_warning(
    tiles_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    slide = lnpath.open_slide(tiles_dir / "no-tissue-green-pen.png", mpp=1.0)
    with caplog.at_level(logging.WARNING):
        tissue = lnpath.detect_tissue(slide)
    assert tissue.area_mm2 == 0 and tissue.n_components == 0 and tissue.polygons() == []
    assert "no tissue" in caplog.text
