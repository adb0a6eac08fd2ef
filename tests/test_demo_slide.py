"""The shipped demo slide: a real pyramidal TIFF that OpenSlide reads, with its ground truth."""

from __future__ import annotations

import json
from pathlib import Path

import openslide
import pytest
import tifffile
from shapely.geometry import box
from shapely.ops import unary_union

import lnpath
from lnpath.io.qupath import read_qupath
from tests.conftest import TrainDemo, demo_script, held_test_split_tiles

N_GLOMERULI = 23  # 27 mask polygons, 4 glomeruli reassembled across tile seams


@pytest.fixture(scope="module")
def demo(repo_dir: Path) -> Path:
    return repo_dir / "examples" / "demo_biopsy.tiff"


def test_openslide_reads_it_as_generic_tiff_with_mpp(demo: Path) -> None:
    slide = openslide.OpenSlide(demo)
    assert slide.properties["openslide.vendor"] == "generic-tiff"
    assert float(slide.properties["openslide.mpp-x"]) == pytest.approx(0.5)
    assert float(slide.properties["openslide.mpp-y"]) == pytest.approx(0.5)
    assert slide.level_count == 3
    assert slide.level_downsamples == pytest.approx((1, 4, 16))
    assert 1_000_000 < demo.stat().st_size < 8_000_000


def test_tiff_is_tiled_jpeg_pyramid(demo: Path) -> None:
    with tifffile.TiffFile(demo) as tif:
        pages = list(tif.pages)
        assert len(pages) == 3
        for page in pages:
            assert page.is_tiled and page.tilewidth == 256
            assert page.compression == tifffile.COMPRESSION.JPEG
            assert page.tags["ResolutionUnit"].value == tifffile.RESUNIT.CENTIMETER
        assert pages[0].tags["XResolution"].value == (20000, 1)


def test_lnpath_takes_mpp_from_the_tiff_tags(demo: Path) -> None:
    with lnpath.open_slide(demo) as slide:
        assert slide.mpp == pytest.approx(0.5)
        assert slide.mpp_source in ("tiff-resolution", "metadata")
        assert slide.dimensions == (13696, 3584)
        region = slide.read(7000, 1000, 512, 512, mpp=1.0)
        assert region.shape == (256, 256, 3)
        assert region.std() > 10  # real tissue, not glass


def test_ground_truth_lies_on_tissue_inside_the_slide(demo: Path, repo_dir: Path) -> None:
    features = read_qupath(repo_dir / "examples" / "demo_biopsy_glomeruli.geojson")
    assert len(features) == N_GLOMERULI
    splits = [f.properties["split"] for f in features]
    assert splits.count("test") == 6 and splits.count("mixed") == 2
    assert len({f.id for f in features}) == N_GLOMERULI
    with lnpath.open_slide(demo) as slide:
        width, height = slide.dimensions
        for f in features:
            x0, y0, x1, y1 = f.geometry.bounds
            assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height
            assert f.geometry.is_valid and f.geometry.geom_type == "Polygon"
            patch = slide.read(int(x0), int(y0), int(x1 - x0), int(y1 - y0), mpp=2.0)
            tissue = (patch.mean(axis=-1) < 220).mean()
            assert tissue > 0.3, f"{f.name}: glomerulus outline on glass"


def test_script_is_deterministic(bueno_dir: Path, repo_dir: Path, tmp_path: Path) -> None:
    script = demo_script(repo_dir)
    summary = script.build(bueno_dir, tmp_path / "demo.tiff", tmp_path / "demo_glomeruli.geojson")
    assert summary["glomeruli"] == N_GLOMERULI
    for shipped_name, rebuilt_name in (
        ("demo_biopsy_glomeruli.geojson", "demo_glomeruli.geojson"),
        ("demo_biopsy_tiles.json", "demo_tiles.json"),
    ):
        shipped = json.loads((repo_dir / "examples" / shipped_name).read_text())
        assert json.loads((tmp_path / rebuilt_name).read_text()) == shipped
    # pixels, not bytes: another JPEG encoder version may code the same image differently
    for level in (0, 2):
        rebuilt_px = tifffile.imread(tmp_path / "demo.tiff", key=level).astype(float)
        shipped_px = tifffile.imread(repo_dir / "examples" / "demo_biopsy.tiff", key=level)
        assert rebuilt_px.shape == shipped_px.shape
        assert abs(rebuilt_px - shipped_px).mean() < 1.0


def test_the_train_split_slide_holds_no_test_split_pixel(
    train_demo: TrainDemo, demo: Path, repo_dir: Path
) -> None:
    """What tests train on (``build(split="train")``): the demo's frame and tile map, glass over
    every test tile (the guard finds all seven on the shipped demo, so it can fail), and outlines
    of train tiles only, each inside them."""
    tile_map = repo_dir / "examples" / "demo_biopsy_tiles.json"
    tiles = json.loads(tile_map.read_text())
    assert json.loads(train_demo.tiles.read_text()) == tiles
    test_tiles = sorted(t["tile"] for t in tiles if t["split"] == "test")
    assert len(test_tiles) == 7 and len(tiles) == 24
    assert held_test_split_tiles(demo, tile_map) == test_tiles
    assert held_test_split_tiles(train_demo.slide, tile_map) == []
    with lnpath.open_slide(train_demo.slide) as slide:
        assert slide.dimensions == (13696, 3584) and slide.mpp == pytest.approx(0.5)
    train_area = unary_union(
        [
            box(t["x"], t["y"], t["x"] + t["size"], t["y"] + t["size"])
            for t in tiles
            if t["split"] == "train"
        ]
    )
    outlines = read_qupath(train_demo.geojson)
    assert len(outlines) >= 15  # the 15 train glomeruli and the train halves of the 2 mixed
    for feature in outlines:
        assert feature.properties["split"] == "train"
        assert train_area.buffer(1).contains(feature.geometry), feature.name
