"""Tile grids: arithmetic (property-tested), round trips against direct reads, workers."""

from __future__ import annotations

import functools
import logging
import multiprocessing as mp
from pathlib import Path

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import lnpath
from lnpath.core.errors import InputError
from lnpath.wsi.grid import grid_shape, grid_table, make_spec
from lnpath.wsi.slide import Slide
from lnpath.wsi.tiling import TileGrid
from tests.conftest import DATA

SLIDES = DATA / "slides"


@functools.cache
def _slide(name: str, mpp: float | None = None) -> Slide:
    if not (SLIDES / name).exists():
        pytest.skip(f"shared test data not found at {SLIDES}")
    return lnpath.open_slide(SLIDES / name, mpp=mpp)


def _assemble(grid: TileGrid) -> np.ndarray:
    """Paste non-overlapping tiles back into one image."""
    size = grid.spec.size
    rows, cols = grid.table["row"].max() + 1, grid.table["col"].max() + 1
    canvas = np.zeros((rows * size, cols * size, 3), dtype=np.uint8)
    for info, arr in grid:
        canvas[info.row * size : (info.row + 1) * size, info.col * size : (info.col + 1) * size] = (
            arr
        )
    return canvas


@given(
    extent=st.floats(min_value=0.5, max_value=50_000),
    size=st.integers(min_value=1, max_value=2048),
    data=st.data(),
)
def test_grid_shape_covers_with_the_fewest_tiles(extent: float, size: int, data) -> None:
    stride = data.draw(st.integers(min_value=1, max_value=size))
    n = grid_shape(extent, size, stride)
    assert n >= 1
    assert (n - 1) * stride + size >= extent - 1e-9  # the last tile reaches the edge
    if n > 1:
        assert (n - 2) * stride + size < extent  # one tile fewer would not


@settings(max_examples=60, deadline=None)
@given(
    name_mpp=st.sampled_from(
        [
            ("boxes.tiff", 1.0),
            ("cmu-1-small-region.svs", None),
            ("tcga-cr-7395-01a-01-ts1.svs", 0.25),
        ]
    ),
    zoom=st.floats(min_value=0.5, max_value=40.0),
    size=st.integers(min_value=1, max_value=700),
    overlap_fraction=st.floats(min_value=0.0, max_value=0.95),
)
def test_grid_arithmetic(name_mpp, zoom: float, size: int, overlap_fraction: float) -> None:
    slide = _slide(*name_mpp)
    mpp = min(slide.mpp * zoom, 20.0)
    overlap = min(int(size * overlap_fraction), size - 1)
    spec = make_spec(slide, mpp, size, overlap)
    w, h = slide.dimensions
    extent = (w / spec.downsample, h / spec.downsample)
    assume(
        grid_shape(extent[0], size, spec.stride) * grid_shape(extent[1], size, spec.stride) < 50_000
    )
    # level: snapped within 5 % (no resampling) or the next finer level, resampled down
    level_mpp = slide.level_mpp(spec.level)
    if spec.scale == 1.0:
        assert abs(level_mpp / mpp - 1) <= 0.05 + 1e-9
    else:
        finer = [slide.level_mpp(i) for i in range(slide.level_count) if slide.level_mpp(i) < mpp]
        assert level_mpp == (max(finer) if finer else slide.mpp)
        assert spec.downsample * slide.mpp == pytest.approx(mpp)
    assert spec.stride == size - overlap
    table = grid_table(slide, spec)
    rows, cols = table["row"].max() + 1, table["col"].max() + 1
    assert len(table) == rows * cols
    step = spec.stride * spec.downsample
    # every level-0 pixel is covered; the first tile starts at the origin
    assert table["x"].min() == 0 and table["y"].min() == 0
    assert (cols - 1) * step + size * spec.downsample >= w - 1
    assert (rows - 1) * step + size * spec.downsample >= h - 1
    # no superfluous column/row beyond the edge
    if cols > 1:
        assert (cols - 2) * step + size * spec.downsample < w
    if rows > 1:
        assert (rows - 2) * step + size * spec.downsample < h
    # regular spacing within rounding, constant extent
    xs = np.sort(table["x"].unique())
    assert np.all(np.abs(np.diff(xs) - step) <= 1.0)
    assert (table["width"] == round(size * spec.downsample)).all()


@pytest.mark.parametrize(
    ("name", "mpp", "tile_mpp", "size"),
    [
        ("cmu-1-small-region.svs", None, 0.499, 256),  # level 0 as is, 240-px file tiles
        ("cmu-1-small-region.svs", None, 0.499, 333),  # odd size
        ("boxes.tiff", 1.0, 2.0, 7),  # level 1 (2x), tiny odd tiles at the image edge
    ],
)
def test_round_trip_exact_when_snapped(name: str, mpp, tile_mpp: float, size: int) -> None:
    slide = _slide(name, mpp)
    grid = lnpath.tile(slide, tile_mpp, size, min_tissue=0)
    assert grid.spec.scale == 1.0
    canvas = _assemble(grid)
    ds = slide.level_downsamples[grid.spec.level]
    direct = slide.read_level(grid.spec.level, 0, 0, canvas.shape[1], canvas.shape[0])
    assert np.array_equal(canvas, direct)
    # and through the public read: same pixels for the region of the first tile
    first = grid.table.iloc[0]
    assert np.array_equal(
        slide.read(first.x, first.y, size * ds, size * ds, mpp=slide.level_mpp(grid.spec.level)),
        canvas[:size, :size],
    )


def test_round_trip_on_a_non_integer_level(slides_dir: Path) -> None:
    """Level 1 of the TCGA slide is 2.0005x: OpenSlide interpolates sub-pixel level origins, so
    tiles match a direct read closely but not bit for bit (same for any read_region user)."""
    slide = lnpath.open_slide(slides_dir / "tcga-cr-7395-01a-01-ts1.svs", mpp=0.25)
    grid = lnpath.tile(slide, 0.5, 256, min_tissue=0)
    assert grid.spec.level == 1 and grid.spec.scale == 1.0
    canvas = _assemble(grid)
    direct = slide.read_level(1, 0, 0, canvas.shape[1], canvas.shape[0])
    a, b = canvas.astype(np.int16), direct.astype(np.int16)
    err = {dy: np.abs(a[8:-8] - b[8 + dy : len(b) - 8 + dy]).mean() for dy in (-1, 0, 1)}
    assert err[0] < 2.0 and err[0] < min(err[-1], err[1]) / 2  # no shifted row, only blur
    assert np.array_equal(canvas[:256], direct[:256])  # the first row starts on the level grid


def test_resampled_tiles_equal_reads_of_their_table_rows(slides_dir: Path) -> None:
    slide = lnpath.open_slide(slides_dir / "cmu-1-small-region.svs")
    grid = lnpath.tile(slide, 2.0, 200, overlap=10, min_tissue=0)
    assert grid.spec.scale > 1
    for info, arr in grid:
        direct = slide.read(info.x, info.y, info.width, info.height, mpp=2.0)
        assert direct.shape == arr.shape == (200, 200, 3)
        assert np.abs(arr.astype(int) - direct.astype(int)).max() <= 1


def test_round_trip_when_resampled(slides_dir: Path) -> None:
    """Tile corners sit on whole level-0 pixels, so re-assembled tiles match a direct read up to
    that rounding (<= half a level-0 pixel): no misplaced row or column, only resampling noise."""
    slide = lnpath.open_slide(slides_dir / "cmu-1-small-region.svs")
    grid = lnpath.tile(slide, 2.0, 200, min_tissue=0)
    canvas = _assemble(grid)
    d = grid.spec.downsample
    direct = slide.read(0, 0, canvas.shape[1] * d, canvas.shape[0] * d, mpp=2.0)
    assert direct.shape == canvas.shape
    a, b = canvas.astype(np.int16), direct.astype(np.int16)
    err = {dy: np.abs(a[8:-8] - b[8 + dy : len(b) - 8 + dy]).mean() for dy in (-1, 0, 1)}
    assert err[0] < 2.0 and err[0] < min(err[-1], err[1]) / 2


def test_overlapping_tiles_match_the_direct_read(slides_dir: Path) -> None:
    slide = lnpath.open_slide(slides_dir / "cmu-1-small-region.svs")
    grid = lnpath.tile(slide, slide.mpp, 300, overlap=45, min_tissue=0)
    whole = slide.read_level(0, 0, 0, 2220 + 300, 2967 + 300)
    for info, arr in grid:
        assert np.array_equal(arr, whole[info.y : info.y + 300, info.x : info.x + 300])
        assert not arr.flags.writeable  # overlapping tiles share pixels


@pytest.mark.parametrize("start_method", ["spawn", "forkserver"])
def test_workers_give_the_same_tiles_in_order(
    slides_dir: Path, start_method: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(lnpath.wsi.tiling, "_MIN_PARALLEL_BYTES", 0)  # these test grids are small
    slide = lnpath.open_slide(slides_dir / "tcga-cr-7395-01a-01-ts1.svs", mpp=0.25)
    grid = lnpath.tile(slide, 1.0, 256, overlap=16, min_tissue=0)
    serial = list(grid)
    parallel = list(grid.iter(workers=2, start_method=start_method))
    assert [i[:6] for i, _ in parallel] == [i[:6] for i, _ in serial]
    assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(serial, parallel, strict=True))


def test_forkserver_workers_run_the_lnpath_a_script_put_on_its_path(
    repo_dir: Path, tmp_path: Path
) -> None:
    """A script beside a checkout (``sys.path.insert``, as scripts/bench_*.py do) gets workers
    forked from a server that preloaded *that* lnpath: Python 3.11's forkserver ignored the path,
    so it preloaded another install's lnpath, or none (0.5 s of imports in every worker)."""
    import os
    import shutil
    import subprocess
    import sys

    src = tmp_path / "checkout"
    shutil.copytree(
        repo_dir / "lnpath", src / "lnpath", ignore=shutil.ignore_patterns("__pycache__")
    )
    probe = "getattr(__import__('sys').modules.get('lnpath.analysis.measure'), '__file__', None)"
    script = tmp_path / "beside_a_checkout.py"
    script.write_text(
        "import sys\n"
        f"sys.path.insert(0, {str(src)!r})\n"
        "from concurrent.futures import ProcessPoolExecutor\n"
        "from lnpath.wsi.workers import worker_context\n"
        "if __name__ == '__main__':\n"
        "    with ProcessPoolExecutor(1, mp_context=worker_context('forkserver')) as pool:\n"
        f"        print(pool.submit(eval, {probe!r}).result())\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, env=env, cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    preloaded = proc.stdout.strip()
    assert preloaded != "None", "the forkserver preloaded nothing"
    assert Path(preloaded).resolve() == (src / "lnpath" / "analysis" / "measure.py").resolve()


@pytest.mark.parametrize("mpp", [None, 2.0])  # the level as it is; resampled
def test_threads_give_the_same_tiles_in_order_and_stop_when_closed(
    slides_dir: Path, mpp: float | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    slide = lnpath.open_slide(slides_dir / "cmu-1-small-region.svs")
    grid = lnpath.tile(slide, mpp or slide.mpp, 128, overlap=16, min_tissue=0)
    serial = list(grid)
    threaded = list(grid.iter(threads=3))
    assert len(grid._blocks()) > 3  # more blocks than threads: the window moves
    assert [i[:6] for i, _ in threaded] == [i[:6] for i, _ in serial]
    assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(serial, threaded, strict=True))

    loads = []
    real_load = lnpath.wsi.tiling._load

    def counted(*args: object) -> np.ndarray:
        loads.append(1)
        return real_load(*args)

    monkeypatch.setattr(lnpath.wsi.tiling, "_load", counted)
    tiles = grid.iter(threads=2)
    next(tiles)
    tiles.close()  # waits for the reads in flight and starts no more
    started = len(loads)
    assert started <= 5 < len(grid._blocks())
    assert len(loads) == started
    with pytest.raises(InputError, match="threads must be >= 1"):
        next(grid.iter(threads=0))


def test_workers_ship_openslide_pixels_as_decoded_and_give_the_same_tiles(
    slides_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At a level's own resolution workers send OpenSlide's 4-byte pixels; the parent's tiles
    are RGB (views) equal to the in-process ones, edge padding included."""
    monkeypatch.setattr(lnpath.wsi.tiling, "_MIN_PARALLEL_BYTES", 0)
    slide = lnpath.open_slide(slides_dir / "cmu-1-small-region.svs")
    grid = lnpath.tile(slide, slide.mpp, 512, overlap=32, min_tissue=0)
    assert grid.spec.scale == 1.0
    serial = list(grid)
    parallel = list(grid.iter(workers=2))
    assert [i[:6] for i, _ in parallel] == [i[:6] for i, _ in serial]
    assert all(a.shape == (512, 512, 3) for _, a in parallel)
    assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(serial, parallel, strict=True))


def _count_tiles_with_workers(path: str, queue: mp.Queue) -> None:
    grid = lnpath.tile(lnpath.open_slide(path), 1.0, 256, min_tissue=0)
    queue.put(sum(1 for _ in grid.iter(workers=2)))


def test_small_grids_are_read_in_process(
    slides_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    grid = lnpath.tile(lnpath.open_slide(slides_dir / "small.svs"), 0.499, 8, min_tissue=0)
    with caplog.at_level(logging.INFO, logger="lnpath.wsi.tiling"):
        assert len(list(grid.iter(workers=2))) == 4
    assert "small grid, reading in this process" in caplog.text


def test_workers_inside_a_daemon_process_read_in_process(slides_dir: Path) -> None:
    """Dask and Pool workers are daemons and may not have children: no crash, same tiles."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    path = str(slides_dir / "cmu-1-small-region.svs")
    proc = ctx.Process(target=_count_tiles_with_workers, args=(path, queue), daemon=True)
    proc.start()
    count = queue.get(timeout=60)
    proc.join(timeout=10)
    assert proc.exitcode == 0
    assert count == len(lnpath.tile(lnpath.open_slide(path), 1.0, 256, min_tissue=0))


@pytest.mark.skipif(not Path("/dev/shm").is_dir(), reason="POSIX shared memory listing")
def test_workers_leave_no_shared_memory_behind(
    slides_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(lnpath.wsi.tiling, "_MIN_PARALLEL_BYTES", 0)
    before = set(Path("/dev/shm").iterdir())
    slide = lnpath.open_slide(slides_dir / "cmu-1-small-region.svs")
    tiles = lnpath.tile(slide, slide.mpp, 128, min_tissue=0).iter(workers=2)
    info, first = next(tiles)  # stop early: the consumer walks away mid-grid
    tiles.close()
    assert first.shape == (128, 128, 3) and (info.row, info.col) == (0, 0)
    assert set(Path("/dev/shm").iterdir()) <= before


def test_grid_covers_the_bounds_in_uncropped_coordinates(
    slides_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """MRXS-style slides declare a non-empty region (openslide.bounds-*): the grid covers just
    that region, in level-0 pixels of the uncropped image (peers.md #6)."""
    monkeypatch.setattr(Slide, "bounds", property(lambda self: (101, 50, 1000, 700)))
    slide = lnpath.open_slide(slides_dir / "cmu-1-small-region.svs")
    grid = lnpath.tile(slide, slide.mpp, 256, min_tissue=0)
    assert (grid.table["x"].min(), grid.table["y"].min()) == (101, 50)
    assert grid.table["col"].max() == 3 and grid.table["row"].max() == 2  # 4 x 3 tiles
    info, arr = next(iter(grid))
    assert (info.x, info.y) == (101, 50)
    assert np.array_equal(arr, slide.read(101, 50, 256, 256))


def test_min_tissue_keeps_tissue_tiles(slides_dir: Path) -> None:
    slide = lnpath.open_slide(slides_dir / "cmu-1-small-region.svs")
    everything = lnpath.tile(slide, 1.0, 256, min_tissue=0)
    assert everything.table["tissue_fraction"].isna().all()
    mask = lnpath.detect_tissue(slide)
    kept = lnpath.tile(slide, 1.0, 256, min_tissue=0.5, tissue=mask)
    assert 0 < len(kept) < len(everything)
    assert (kept.table["tissue_fraction"] >= 0.5).all()
    for _, arr in kept:
        assert arr.shape == (256, 256, 3)
        assert (arr.min(axis=-1) < 200).mean() > 0.2  # stained pixels, not glass


def test_a_tissue_mask_from_another_slide_is_refused(slides_dir: Path) -> None:
    cmu = lnpath.open_slide(slides_dir / "cmu-1-small-region.svs")
    tcga = lnpath.open_slide(slides_dir / "tcga-cr-7395-01a-01-ts1.svs", mpp=0.25)
    with pytest.raises(InputError, match=r"tissue mask was made for a slide at 0\.499"):
        lnpath.tile(tcga, 2.0, 256, tissue=lnpath.detect_tissue(cmu))


def test_no_tissue_gives_an_empty_grid_and_a_warning(
    data_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    slide = lnpath.open_slide(data_dir / "tissue-detection-tiles" / "no-tissue.png", mpp=0.5)
    with caplog.at_level(logging.WARNING):
        grid = lnpath.tile(slide, 0.5, 128, min_tissue=0.1)
    assert len(grid) == 0 and list(grid) == []
    assert "no tissue" in caplog.text


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"size": 0}, "tile size"),
        ({"size": 10_000_000, "min_tissue": 0.0}, "at most 16384 px"),
        ({"size": 64, "overlap": 64}, "overlap"),
        ({"size": 64, "overlap": -1}, "overlap"),
        ({"size": 64, "min_tissue": 1.5}, "min_tissue"),
        ({"size": 64, "mpp": 50.0}, "plausible range"),
    ],
)
def test_bad_parameters(slides_dir: Path, kwargs: dict, message: str) -> None:
    slide = lnpath.open_slide(slides_dir / "small.svs")
    kwargs = {"mpp": 1.0, **kwargs}
    with pytest.raises(InputError, match=message):
        lnpath.tile(slide, **kwargs)


def test_saving_tiles_keeps_its_bar_out_of_a_log_unless_asked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``TileGrid.save`` forced its bar on (``progress=True``), into a CI log and past
    ``LNPATH_PROGRESS=0``; it follows the library's rule now, and ``LNPATH_PROGRESS=1`` or
    ``progress=True`` still show it."""
    demo = Path(__file__).resolve().parents[1] / "examples" / "demo_biopsy.tiff"
    grid = lnpath.tile(lnpath.open_slide(demo), mpp=8.0, size=128)
    monkeypatch.delenv("LNPATH_PROGRESS", raising=False)
    grid.save(tmp_path / "quiet")
    assert "demo_biopsy.tiff" not in capsys.readouterr().err  # stderr is a pipe here
    monkeypatch.setenv("LNPATH_PROGRESS", "1")
    grid.save(tmp_path / "forced")
    assert "demo_biopsy.tiff" in capsys.readouterr().err
    monkeypatch.setenv("LNPATH_PROGRESS", "0")
    grid.save(tmp_path / "asked", progress=True)
    assert "demo_biopsy.tiff" in capsys.readouterr().err
