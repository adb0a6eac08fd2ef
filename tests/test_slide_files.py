"""Slide files as a lab's scanners and copies deliver them: cut short, empty, unreadable, with
non-square pixels, asked for finer than scanned; every one a single clear line, nothing written.

Every file here is made from real slides (the CMU Aperio SVS, the demo biopsy's PAS pixels).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import openslide
import pytest
import tifffile

import lnpath
from lnpath.core.errors import InputError, LnpathError, SlideError
from lnpath.wsi.slide import MissingMppError
from tests.conftest import assert_one_line_error, lnpath_cli

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "examples" / "demo_biopsy.tiff"


@pytest.fixture(scope="module")
def demo_crop() -> np.ndarray:
    """2048 x 1536 px of the demo biopsy's level 0 (0.5 µm/px, PAS tissue)."""
    with openslide.OpenSlide(str(DEMO)) as osr:
        return np.asarray(osr.read_region((6000, 1000), 0, (2048, 1536)).convert("RGB"))


def _pyramid(path: Path, rgb: np.ndarray, res_x: float, res_y: float) -> Path:
    """A tiled JPEG pyramid (2 levels) with resolution tags in pixels per centimetre."""
    with tifffile.TiffWriter(path) as tw:
        for i, img in enumerate((rgb, rgb[::4, ::4])):
            tw.write(
                np.ascontiguousarray(img),
                tile=(256, 256),
                compression="jpeg",
                subfiletype=1 if i else 0,
                resolution=(res_x, res_y),
                resolutionunit="CENTIMETER",
            )
    return path


@pytest.mark.parametrize(
    ("source", "keep"),
    [("cmu-1-small-region.svs", 0.5), ("cmu-1-small-region.svs", 0.9), ("demo", 0.5)],
)
def test_a_copy_cut_short_says_so(
    slides_dir: Path, tmp_path: Path, source: str, keep: float
) -> None:
    """A half-copied SVS was "not a slide format OpenSlide recognises" and a half-copied TIFF
    "cannot open image (...; Empty input file)": neither says copy it again."""
    whole = DEMO if source == "demo" else slides_dir / source
    data = whole.read_bytes()
    cut = tmp_path / f"copy of {whole.name}"
    cut.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(SlideError, match="the file is truncated: it ends at byte") as info:
        lnpath.open_slide(cut)
    assert str(cut) in str(info.value) and "copy it again" in str(info.value)
    proc = lnpath_cli("tiles", cut, "--mpp", "2", "--out", tmp_path / "out")
    assert_one_line_error(proc, "truncated")
    assert not (tmp_path / "out").exists()


def test_the_whole_files_are_not_called_truncated(slides_dir: Path) -> None:
    from lnpath.wsi.tiff_check import tiff_truncation

    for path in [DEMO, *sorted(slides_dir.iterdir())]:
        assert tiff_truncation(path) is None, path


@pytest.mark.parametrize("name", ["empty.svs", "empty.tiff", "empty.ndpi"])
def test_a_zero_byte_file_is_called_empty(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.touch()
    with pytest.raises(SlideError, match=r"the file is empty \(0 bytes\)"):
        lnpath.open_slide(path, mpp=0.5)
    proc = lnpath_cli("score", path, "--mpp", "0.5", "--out", tmp_path / "out")
    assert_one_line_error(proc, "empty (0 bytes)")
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]  # no folder, no lock file


def test_a_pipe_or_device_is_refused_without_waiting(tmp_path: Path) -> None:
    """A named pipe given as the slide made open() wait for a writer that never comes."""
    fifo = tmp_path / "slide.svs"
    os.mkfifo(fifo)
    for path in (fifo, Path("/dev/null")):
        with pytest.raises(SlideError, match="not a regular file"):
            lnpath.open_slide(path, mpp=0.5)
    assert_one_line_error(lnpath_cli("info", fifo, "--mpp", "0.5"), "not a regular file")


def test_a_file_without_read_permission(
    slides_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """OpenSlide answers EACCES on an SVS with "unsupported format". Root reads any file, so
    where the tests run as root the denial is simulated at the one place lnpath asks."""
    path = tmp_path / "locked.svs"
    shutil.copy(slides_dir / "cmu-1-small-region.svs", path)
    path.chmod(0)
    if os.geteuid() == 0:
        real_open = Path.open

        def denied(self: Path, *args: object, **kwargs: object) -> object:
            if self == path:
                raise PermissionError(13, "Permission denied", str(self))
            return real_open(self, *args, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(Path, "open", denied)
    with pytest.raises(SlideError, match="permission denied: this user may not read the file"):
        lnpath.open_slide(path)


def test_non_square_pixels_are_refused(tmp_path: Path, demo_crop: np.ndarray) -> None:
    """0.5 µm across and 1 µm down was used as 0.5 µm/px with a warning: every area half."""
    pyramid = _pyramid(tmp_path / "aniso.tiff", demo_crop, 20000, 10000)
    flat = tmp_path / "aniso_flat.tiff"  # plain strips: read by tifffile, not OpenSlide
    tifffile.imwrite(flat, demo_crop, resolution=(20000, 10000), resolutionunit="CENTIMETER")
    for path in (pyramid, flat):
        with pytest.raises(MissingMppError, match=r"non-square pixels .*0\.5 µm/px across, 1 down"):
            lnpath.open_slide(path)
        proc = lnpath_cli("tiles", path, "--mpp", "2", "--out", tmp_path / "out")
        line = assert_one_line_error(proc, "non-square pixels", "--slide-mpp")
        assert "mpp=" not in line
        assert not (tmp_path / "out").exists()
        assert lnpath.open_slide(path, mpp=0.5).mpp_source == "caller"  # the caller may know


def test_nearly_square_pixels_open_at_the_across_value(
    tmp_path: Path, demo_crop: np.ndarray
) -> None:
    path = _pyramid(tmp_path / "near.tiff", demo_crop, 20000, 20100)  # 0.5 % apart
    with lnpath.open_slide(path) as slide:
        assert slide.mpp == pytest.approx(0.5)
        assert slide.mpp_source == "tiff-resolution"


def test_tiles_finer_than_the_scan_are_refused(tmp_path: Path) -> None:
    """--mpp 0.25 on a 0.5 µm/px scan wrote 4x as many tiles of enlarged pixels, exit 0."""
    slide = lnpath.open_slide(DEMO)
    with pytest.raises(InputError, match=r"0\.25 µm/px is finer than the scan \(0\.5 µm/px"):
        lnpath.tile(slide, mpp=0.25)
    assert lnpath.tile(slide, mpp=0.48, min_tissue=0).spec.level == 0  # within 5 %: level 0
    proc = lnpath_cli("tiles", DEMO, "--mpp", "0.25", "--out", tmp_path / "out")
    assert_one_line_error(proc, "finer than the scan", "0.5 µm/px or coarser")
    assert not (tmp_path / "out").exists()


def test_a_coarse_scan_is_enlarged_for_the_models(tmp_path: Path, demo_crop: np.ndarray) -> None:
    """A 2 µm/px scan still reaches the 1 µm/px models (segmentation asks for it)."""
    coarse = tmp_path / "coarse.tiff"
    tifffile.imwrite(
        coarse, demo_crop[::4, ::4], resolution=(5000, 5000), resolutionunit="CENTIMETER"
    )
    slide = lnpath.open_slide(coarse)
    assert slide.mpp == pytest.approx(2.0)
    with pytest.raises(InputError, match="finer than the scan"):
        lnpath.tile(slide, mpp=1.0)
    grid = lnpath.tile(slide, mpp=1.0, size=256, min_tissue=0, upsample=True)
    assert grid.spec.scale == pytest.approx(0.5)
    (info, pixels), *_ = list(grid.iter(progress=False))
    assert pixels.shape == (256, 256, 3) and info.width == 128
    result = lnpath.score_slide(slide, out=tmp_path / "result", device="cpu", progress=False)
    warned = result.to_dict()["warnings"]
    assert any("scanned at 2 µm/px, coarser than the 1 µm/px" in w for w in warned)


def _outlines(slide: lnpath.Slide) -> lnpath.Glomeruli:
    return lnpath.Glomeruli.from_geojson(DEMO.with_name("demo_biopsy_glomeruli.geojson"), slide.mpp)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda s: lnpath.tile(s, mpp=2, size=True), "tile size must be a positive integer"),
        (lambda s: lnpath.tile(s, mpp=2, min_tissue="0.1"), "min_tissue must be in"),
        (lambda s: lnpath.tile(s, mpp=8).save("never", workers="2"), "workers must be >= 1"),
        (lambda s: lnpath.tile(s, mpp=8).save(None), "out: expected a folder path"),
        (lambda s: next(lnpath.tile(s, mpp=8).iter(workers="2")), "workers must be >= 1"),
        (lambda s: next(lnpath.tile(s, mpp=8).iter(threads=float("nan"))), "threads must be"),
        (lambda s: s.best_level(None), "best_level: mpp: None is not a number"),
        (lambda s: s.best_level(-1), "best_level: mpp: -1 µm/px is outside"),
        (lambda s: lnpath.measure_glomeruli(_outlines(s), s, workers=2.5), "workers must be"),
        (lambda s: lnpath.measure_cortex(s, None), "measure_cortex: expected Glomeruli"),
        (lambda s: lnpath.measure_cortex(s, _outlines(s), kept="x"), "kept: expected KeptPixels"),
        (lambda s: lnpath.measure_cortex(s, _outlines(s), workers="2"), "workers must be >= 1"),
        (lambda s: lnpath.segment_glomeruli(s, keep=s), "keep: expected KeptPixels"),
        (lambda s: lnpath.segment_glomeruli(s, workers=float("nan")), "workers must be >= 1"),
        (lambda s: lnpath.segment_glomeruli(s, model=5), "expected a name or a folder"),
        (lambda s: lnpath.KeptPixels(s, "x"), "KeptPixels: mpp: 'x' is not a number"),
        (lambda s: s.read_level(99, 0, 0, 8, 8), r"level 99 does not exist \(levels 0–2\)"),
        (lambda s: s.read_level(0, 0, 0, -8, 8), "region size must be positive"),
        (lambda s: s.read(float("nan"), 0, 8, 8), "region must be finite numbers"),
        (lambda s: s.read(0, 0, "8", 8), "region must be finite numbers"),
        (lambda s: s.level_mpp(3), r"level 3 does not exist"),
        (lambda s: s.level_mpp(1.5), "level must be an integer"),
    ],
)
def test_api_arguments_of_the_wrong_kind_are_input_errors(call: object, message: str) -> None:
    """A bool tile size made a grid of 1 px tiles; a level out of range an IndexError; text
    workers a TypeError (NaN workers made measure_glomeruli wait forever); None outlines, a
    KeptPixels that is not one, or a model that is not a name failed deep inside."""
    with lnpath.open_slide(DEMO) as slide, pytest.raises(LnpathError, match=message):
        call(slide)  # type: ignore[operator]
    assert not Path("never").exists()


def test_score_names_the_commands_own_option(slides_dir: Path, tmp_path: Path) -> None:
    tcga = slides_dir / "tcga-cr-7395-01a-01-ts1.svs"
    line = assert_one_line_error(lnpath_cli("score", tcga, "--out", tmp_path / "o"), "--mpp")
    assert "mpp=" not in line
    bad = lnpath_cli("segment", tcga, "--mpp", "0", "--out", tmp_path / "o.geojson")
    assert assert_one_line_error(bad).startswith("lnpath: error: --mpp: 0.0 µm/px")
    assert list(tmp_path.iterdir()) == []


def test_cuda_without_a_gpu_is_refused_before_the_lock(tmp_path: Path) -> None:
    """The refusal came after the slide opened, leaving ``.out.lock`` beside the result."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    out = tmp_path / "new" / "out"
    proc = lnpath_cli("score", DEMO, "--device", "cuda", "--out", out)
    assert_one_line_error(proc, "CUDA requested but not available")
    assert not (tmp_path / "new").exists()
    with pytest.raises(lnpath.ModelError):
        lnpath.score_slide(DEMO, out=out, device="cuda")
    assert not (tmp_path / "new").exists()


def test_a_link_to_a_slide_under_a_spaced_non_ascii_path(tmp_path: Path) -> None:
    folder = tmp_path / "Niño Pérez 2024" / "biópsia 1"
    folder.mkdir(parents=True)
    link = folder / "démo biopsy.tiff"
    link.symlink_to(DEMO)
    out = folder / "tiles at 8 µm"
    proc = lnpath_cli("tiles", link, "--mpp", "8", "--tile-size", "128", "--out", out)
    assert proc.returncode == 0, proc.stderr
    record = json.loads((out / "tiles.json").read_text(encoding="utf-8"))
    assert record["slide"]["path"] == str(link)
    assert (
        record["slide"]["fingerprint"]["sha256"] == lnpath.open_slide(DEMO).fingerprint()["sha256"]
    )
    assert record["n_tiles"] == len(list((out / "tiles").glob("*.png"))) > 0
    gone = folder / "moved.svs"
    gone.symlink_to(tmp_path / "archive" / "moved.svs")
    with pytest.raises(SlideError, match=r"moved\.svs: a link to .*archive/moved\.svs, which does"):
        lnpath.open_slide(gone)


def test_a_slide_folder_is_told_which_file_to_give(slides_dir: Path, tmp_path: Path) -> None:
    dicom = tmp_path / "dicom slide"
    dicom.mkdir()
    for name in ("boxes_0.dcm", "boxes_1.dcm"):
        shutil.copy(slides_dir / name, dicom / name)
    with pytest.raises(SlideError, match="a DICOM slide opens from any one of its files"):
        lnpath.open_slide(dicom)
    assert lnpath.open_slide(dicom / "boxes_0.dcm").dimensions == (16, 16)
    mirax = tmp_path / "CMU-1"  # MIRAX: CMU-1.mrxs beside its data folder CMU-1/
    mirax.mkdir()
    (tmp_path / "CMU-1.mrxs").write_text("[GENERAL]\n")
    proc = lnpath_cli("info", mirax)
    assert_one_line_error(proc, "is a directory", "opens from its .mrxs file")


def test_a_flat_image_too_big_for_memory_is_refused_with_the_way_out(
    tmp_path: Path, demo_crop: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A flat image is decoded whole; one larger than free memory was a MemoryError."""
    import lnpath.wsi.backends as backends

    flat = tmp_path / "flat.tiff"
    tifffile.imwrite(flat, demo_crop, resolution=(20000, 20000), resolutionunit="CENTIMETER")
    assert lnpath.open_slide(flat).dimensions == (2048, 1536)
    free_pages = {"SC_AVPHYS_PAGES": 1024, "SC_PAGE_SIZE": 4096}  # 4 MiB free
    monkeypatch.setattr(backends.os, "sysconf", free_pages.__getitem__)
    with pytest.raises(SlideError, match=r"a flat \(not tiled\) image of 0\.0 GiB.*vips tiffsave"):
        lnpath.open_slide(flat)


def test_a_large_plain_jpeg_opens_without_pil_s_bomb_warning(
    tmp_path: Path, demo_crop: np.ndarray
) -> None:
    """PIL warns from 89 Mpx and refuses from 179 Mpx: a biopsy exported as one JPEG is that."""
    import warnings

    from PIL import Image

    big = np.tile(demo_crop[:1000, :1000], (10, 10, 1))  # 10,000 x 10,000 px of PAS tissue
    path = tmp_path / "export.jpg"
    Image.fromarray(big).save(path, quality=80)
    del big
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        slide = lnpath.open_slide(path, mpp=0.5)
    assert slide.dimensions == (10_000, 10_000)
    assert Image.MAX_IMAGE_PIXELS is not None  # PIL's own limit is left as it was
