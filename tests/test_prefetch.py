"""Reading ahead in a thread: the same items in order, errors where they happen, no thread left."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import lnpath
from lnpath.core.errors import SlideError
from lnpath.wsi.prefetch import prefetched


def _readers() -> list[threading.Thread]:
    """lnpath's own threads still alive: the prefetch reader, reading, lane, cortex and
    measuring pools (each named ``lnpath-...``)."""
    return [t for t in threading.enumerate() if t.name.startswith("lnpath-")]


def test_prefetched_tiles_are_the_tiles_in_order(slides_dir: Path) -> None:
    slide = lnpath.open_slide(slides_dir / "cmu-1-small-region.svs")
    grid = lnpath.tile(slide, slide.mpp * 2, size=256, min_tissue=0)
    plain = [(info, np.array(arr)) for info, arr in grid.iter()]
    ahead = [(info, np.array(arr)) for info, arr in prefetched(grid.iter(), depth=3)]
    assert [(i.x, i.y) for i, _ in ahead] == [(i.x, i.y) for i, _ in plain] and len(plain) > 3
    assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(ahead, plain, strict=True))
    assert not _readers()


def test_an_error_while_reading_is_raised_where_its_item_would_come() -> None:
    def items() -> Iterator[int]:
        yield 1
        yield 2
        raise SlideError("slide.svs: cannot read region x=0 y=0 (level 0): corrupt JPEG")

    got = []
    with pytest.raises(SlideError, match="corrupt JPEG"):
        for value in prefetched(items(), depth=8):
            got.append(value)
    assert got == [1, 2]
    assert not _readers()


def test_stopping_early_stops_the_reader_and_closes_the_source() -> None:
    closed = threading.Event()

    def endless() -> Iterator[int]:
        try:
            n = 0
            while True:
                yield n
                n += 1
        finally:
            closed.set()

    ahead = prefetched(endless(), depth=2)
    assert [next(ahead) for _ in range(5)] == [0, 1, 2, 3, 4]
    ahead.close()
    assert closed.is_set()
    assert not _readers()


def test_depth_must_be_positive() -> None:
    with pytest.raises(ValueError, match="depth must be >= 1"):
        next(prefetched(iter([1]), depth=0))


@pytest.fixture
def damaged_slide(repo_dir: Path, tmp_path: Path) -> Path:
    """The demo biopsy with the JPEG tiles of its lower half zeroed: it opens, then fails."""
    import tifffile

    source = repo_dir / "examples" / "demo_biopsy.tiff"
    with tifffile.TiffFile(source) as tif:
        page = tif.pages[0]
        offsets, counts = page.dataoffsets, page.databytecounts
    data = bytearray(source.read_bytes())
    half = len(offsets) // 2
    for offset, count in zip(offsets[half:], counts[half:], strict=True):
        data[offset : offset + count] = bytes(count)
    damaged = tmp_path / "damaged.tiff"
    damaged.write_bytes(bytes(data))
    return damaged


def test_a_slide_damaged_halfway_fails_segmentation_in_one_error_and_frees_the_reader(
    damaged_slide: Path,
) -> None:
    """The reader thread meets the bad tiles; segmentation raises the slide's error, not a
    thread's traceback, and leaves no reader running."""
    from lnpath.analysis.segment import segment_glomeruli

    with lnpath.open_slide(damaged_slide) as slide, pytest.raises(SlideError, match="cannot read"):
        segment_glomeruli(slide, device="cpu", tta=False, workers=1, progress=False)
    assert not _readers()


def test_a_slide_damaged_halfway_fails_the_cortex_in_one_error_and_frees_the_reader(
    damaged_slide: Path,
) -> None:
    from lnpath.analysis.cortex import measure_cortex

    with lnpath.open_slide(damaged_slide) as slide, pytest.raises(SlideError, match="cannot read"):
        measure_cortex(slide, [], progress=False)
    assert not _readers()
