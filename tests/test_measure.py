"""Per-glomerulus measurements on real PAS glomeruli (Bueno tiles and the demo slide)."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from shapely.geometry import Polygon, box
from skimage import io
from skimage.measure import label, regionprops

import lnpath
from lnpath.analysis.glomeruli import Glomeruli, Glomerulus
from lnpath.analysis.measure import MEASUREMENTS, measure_crop, measure_glomeruli, rasterize
from lnpath.core.errors import InputError
from lnpath.io.qupath import read_qupath

MPP = 0.5  # Bueno tiles, Aperio 20x


@pytest.fixture(scope="module")
def bueno_glomerulus(bueno_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """The whole glomerulus of train tile 10150 (not cut by the tile edge) with its mask."""
    rgb = io.imread(bueno_dir / "images" / "10150.png")[..., :3]
    mask = io.imread(bueno_dir / "masks" / "10150.png")[..., 0] > 0
    (region,) = regionprops(label(mask))
    y0, x0, y1, x1 = region.bbox
    return rgb[y0 - 10 : y1 + 10, x0 - 10 : x1 + 10], mask[y0 - 10 : y1 + 10, x0 - 10 : x1 + 10]


def test_measurements_of_a_normal_pas_glomerulus(
    bueno_glomerulus: tuple[np.ndarray, np.ndarray],
) -> None:
    rgb, mask = bueno_glomerulus
    m = measure_crop(rgb, mask, MPP)
    assert set(m) == set(MEASUREMENTS)
    assert m["m_area_um2"] == pytest.approx(mask.sum() * MPP**2)
    assert 150 < m["m_diameter_um"] < 260  # a human glomerulus
    assert 0 < m["m_tuft_area_um2"] < m["m_area_um2"]
    assert 40 <= m["m_nuclei"] <= 250
    assert 1.0 < m["m_nuclei_per_1000um2"] < 6.0
    for name in ("m_pas_matrix_fraction", "m_lumen_fraction", "m_bowman_space_fraction"):
        assert 0.0 < m[name] < 1.0
    assert m["m_sclerosed_fraction"] < 0.5  # open capillary loops: not globally sclerosed


def test_exposure_does_not_change_the_measurements(
    bueno_glomerulus: tuple[np.ndarray, np.ndarray],
) -> None:
    """An under-exposed camera image (glass at 60 %) measures like the scan (white point)."""
    rgb, mask = bueno_glomerulus
    dark = (rgb.astype(float) * 0.6).astype(np.uint8)
    a, b = measure_crop(rgb, mask, MPP), measure_crop(dark, mask, MPP)
    assert b["m_lumen_fraction"] == pytest.approx(a["m_lumen_fraction"], abs=0.05)
    assert b["m_sclerosed_fraction"] == pytest.approx(a["m_sclerosed_fraction"], abs=0.05)
    assert b["m_nuclei"] == pytest.approx(a["m_nuclei"], rel=0.2)


def test_a_crop_without_tissue_is_an_error_not_zeros(
    bueno_glomerulus: tuple[np.ndarray, np.ndarray],
) -> None:
    _, mask = bueno_glomerulus
    glass = np.full((*mask.shape, 3), 245, np.uint8)
    with pytest.raises(InputError, match="no tissue"):
        measure_crop(glass, mask, MPP)


def test_bad_masks_are_errors(bueno_glomerulus: tuple[np.ndarray, np.ndarray]) -> None:
    rgb, mask = bueno_glomerulus
    with pytest.raises(InputError, match="µm²"):
        measure_crop(rgb, np.zeros_like(mask), MPP)
    with pytest.raises(InputError, match="do not match"):
        measure_crop(rgb, mask[:-1], MPP)
    with pytest.raises(InputError, match="positive"):
        measure_crop(rgb, mask, 0.0)


def test_rasterize_respects_holes_and_scale() -> None:
    poly = Polygon(
        [(10, 10), (50, 10), (50, 50), (10, 50)], [[(20, 20), (40, 20), (40, 40), (20, 40)]]
    )
    mask = rasterize(poly, (40, 40), origin=(0.0, 0.0), scale=0.5)
    assert mask[7, 7] and not mask[15, 15] and not mask[2, 2]
    assert mask.sum() == pytest.approx((20 * 20 - 10 * 10), rel=0.15)


def test_rasterize_counts_the_polygon_area_on_real_outlines(qupath_dir: Path) -> None:
    """Pixel counts match the polygon area (pixel centres inside), at level 0 and downsampled."""
    features = read_qupath(qupath_dir / "TPATH012.geojson")
    polygons = [f.geometry for f in features if isinstance(f.geometry, Polygon)]
    assert len(polygons) >= 20
    for scale in (1.0, 0.25):
        errors = []
        for poly in polygons:
            minx, miny, maxx, maxy = poly.bounds
            shape = (math.ceil((maxy - miny) * scale) + 4, math.ceil((maxx - minx) * scale) + 4)
            mask = rasterize(poly, shape, origin=(minx - 2 / scale, miny - 2 / scale), scale=scale)
            errors.append(mask.sum() / (poly.area * scale**2) - 1)
            assert not mask[0].any() and not mask[:, 0].any()
        assert abs(float(np.mean(errors))) < 0.002
        assert max(abs(e) for e in errors) < 0.03


@pytest.fixture(scope="module")
def demo(repo_dir: Path) -> tuple[lnpath.Slide, Glomeruli]:
    slide = lnpath.open_slide(repo_dir / "examples" / "demo_biopsy.tiff")
    glomeruli = Glomeruli.from_geojson(
        repo_dir / "examples" / "demo_biopsy_glomeruli.geojson", slide.mpp
    )
    return slide, glomeruli


def test_measure_glomeruli_on_the_demo_slide(demo: tuple[lnpath.Slide, Glomeruli]) -> None:
    slide, glomeruli = demo
    table = measure_glomeruli(glomeruli[:6], slide)
    assert list(table["glomerulus_id"]) == [g.id for g in glomeruli[:6]]
    assert list(table.columns) == ["glomerulus_id", *MEASUREMENTS]
    assert not table[list(MEASUREMENTS)].isna().any().any()
    # the polygon area (from the GeoJSON) and the rasterised area agree
    areas = np.array([g.area_um2 for g in glomeruli[:6]])
    assert np.allclose(table["m_area_um2"], areas, rtol=0.05)


@pytest.mark.parametrize("workers", [1, 2])
def test_unmeasurable_glomeruli_get_nan_and_a_warning(
    demo: tuple[lnpath.Slide, Glomeruli], caplog: pytest.LogCaptureFixture, workers: int
) -> None:
    """Also with threads: every warning reaches the caller's log, in glomerulus order."""
    slide, glomeruli = demo
    width = slide.dimensions[0]
    bad = [
        glomeruli[0],
        glomeruli[1],  # five glomeruli make two tasks, so workers=2 really runs two threads
        Glomerulus.from_polygon(901, box(width + 100, 10, width + 400, 300), slide.mpp),
        Glomerulus.from_polygon(902, Polygon([(0, 0), (10, 10), (20, 20)]), slide.mpp),
        Glomerulus.from_polygon(903, box(5, 5, 400, 400), slide.mpp),  # glass corner
    ]
    with caplog.at_level(logging.WARNING):
        table = measure_glomeruli(Glomeruli(bad, slide.mpp, "test"), slide, workers=workers)
    assert list(table["glomerulus_id"]) == [g.id for g in bad]
    assert not table.iloc[:2][list(MEASUREMENTS)].isna().any().any()
    assert table.iloc[2:][list(MEASUREMENTS)].isna().all().all()
    assert "glomerulus 901 not measured" in caplog.text and "outside the slide" in caplog.text
    assert "glomerulus 902 not measured" in caplog.text and "degenerate" in caplog.text
    assert "glomerulus 903 not measured" in caplog.text and "no tissue" in caplog.text
    assert pd.api.types.is_float_dtype(table["m_nuclei"]) and math.isnan(table["m_nuclei"][2])


def test_parallel_measurement_equals_serial(demo: tuple[lnpath.Slide, Glomeruli]) -> None:
    slide, glomeruli = demo
    subset = glomeruli[:10]
    serial = measure_glomeruli(subset, slide, workers=1)
    parallel = measure_glomeruli(subset, slide, workers=2)
    pd.testing.assert_frame_equal(serial, parallel)


def test_measuring_threads_follow_the_cpus_and_omp_num_threads(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A Dask worker (OMP_NUM_THREADS=1) measures on one thread: the cluster is the parallelism."""
    from lnpath.analysis import measure

    monkeypatch.setattr(measure, "available_cpus", lambda: 16)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert measure.measure_threads() == measure.MAX_THREADS
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert measure.measure_threads() == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "not a number")
    assert measure.measure_threads() == measure.MAX_THREADS
    monkeypatch.setattr(measure, "available_cpus", lambda: 1)
    assert measure.measure_threads() == 1


@pytest.mark.parametrize("white", [(231.5, 228.0, 240.2), (10.0, 300.0, 255.0), (255.0,) * 3])
def test_white_normalisation_by_table_gives_the_formulas_bytes(white: tuple[float, ...]) -> None:
    """Each channel scaled so that white becomes 255, rounded, clipped: the same bytes as the
    per-pixel float32 formula, for every input value (white points outside 32-255 are clipped)."""
    from lnpath.analysis.measure import normalise_white

    every_value = np.arange(256 * 3, dtype=np.uint16).reshape(16, 16, 3) % 256
    rgb = np.stack([every_value.astype(np.uint8)] * 2)  # a batch, as segmentation passes it
    gain = 255.0 / np.clip(np.array(white, np.float32), 32.0, 255.0)
    expected = np.clip(rgb.astype(np.float32) * gain + 0.5, 0, 255).astype(np.uint8)
    assert np.array_equal(normalise_white(rgb, np.array(white)), expected)
    assert np.array_equal(normalise_white(rgb.astype(np.float32), np.array(white)), expected)


def test_threads_measuring_a_closed_slide_reopen_it_once(
    repo_dir: Path, demo: tuple[lnpath.Slide, Glomeruli], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A closed (or unpickled) slide reopens on its next read; four threads reading at once
    must not each open a handle (three would leak)."""
    import time

    from lnpath.wsi import slide as slide_module

    _, glomeruli = demo
    slide = lnpath.open_slide(repo_dir / "examples" / "demo_biopsy.tiff")
    slide.close()
    opened = []
    real_open = slide_module._open_backend

    def slow_open(path: Path) -> object:
        opened.append(path)
        time.sleep(0.2)  # a wide window for the other threads
        return real_open(path)

    monkeypatch.setattr(slide_module, "_open_backend", slow_open)
    table = measure_glomeruli(glomeruli[:16], slide, workers=4)
    assert len(opened) == 1
    assert not table[list(MEASUREMENTS)].isna().any().any()
    slide.close()
