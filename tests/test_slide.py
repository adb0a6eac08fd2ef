"""Opening and reading real slides: formats, µm/px and its source, regions, pickling, errors."""

from __future__ import annotations

import multiprocessing as mp
import pickle
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

import lnpath
from lnpath.core.errors import InputError, SlideError
from lnpath.wsi.slide import MissingMppError, Slide


def _read_corner(slide: Slide) -> np.ndarray:
    return slide.read(100, 200, 300, 200)


@pytest.mark.parametrize(
    ("name", "mpp", "vendor", "source", "levels"),
    [
        ("cmu-1-small-region.svs", None, "aperio", "metadata", 1),
        ("tcga-cr-7395-01a-01-ts1.svs", 0.25, "aperio", "caller", 2),
        ("boxes.tiff", 1.0, "generic-tiff", "caller", 4),
        ("boxes_0.dcm", None, "dicom", "metadata", 1),
        ("small.svs", None, "aperio", "metadata", 1),
        ("boxes.png", 0.5, None, "caller", 1),
    ],
)
def test_open_read_thumbnail(
    slides_dir: Path, name: str, mpp: float | None, vendor: str | None, source: str, levels: int
) -> None:
    with lnpath.open_slide(slides_dir / name, mpp=mpp) as slide:
        assert slide.vendor == vendor
        assert slide.mpp_source == source
        assert slide.level_count == levels
        assert slide.level_mpp(0) == pytest.approx(slide.mpp)
        w, h = slide.dimensions
        region = slide.read(0, 0, w, h)
        assert region.dtype == np.uint8 and region.shape == (h, w, 3)
        assert region.min() < 250  # real content, not a white canvas
        thumb = slide.thumbnail(slide.mpp * 4)
        assert thumb.shape == (round(h / 4), round(w / 4), 3)


def test_metadata_of_the_cmu_slide(slides_dir: Path) -> None:
    slide = lnpath.open_slide(slides_dir / "cmu-1-small-region.svs")
    assert slide.mpp == pytest.approx(0.499)
    assert slide.dimensions == (2220, 2967)
    assert slide.bounds is None
    assert slide.associated_images == ["label", "macro", "thumbnail"]
    assert slide.native_tile_size(0) == (240, 240)
    fp = slide.fingerprint()
    assert fp["size"] == 1_938_955 and len(fp["sha256"]) == 64
    assert fp == lnpath.open_slide(slides_dir / "cmu-1-small-region.svs").fingerprint()


def test_tcga_without_mpp_is_refused_with_advice(slides_dir: Path) -> None:
    with pytest.raises(MissingMppError, match=r"no µm/px.*--mpp") as info:
        lnpath.open_slide(slides_dir / "tcga-cr-7395-01a-01-ts1.svs")
    clone = pickle.loads(pickle.dumps(info.value))  # crosses process boundaries intact
    assert str(clone) == str(info.value) and clone.reason == "no µm/px in the file"


def test_placeholder_tiff_resolution_is_refused(slides_dir: Path) -> None:
    # boxes.tiff says 72 dpi: 352.8 µm/px is a placeholder, not a scan resolution.
    with pytest.raises(SlideError, match=r"352\.8 from tiff-resolution is outside"):
        lnpath.open_slide(slides_dir / "boxes.tiff")


def test_tiff_resolution_tags_are_a_source(tmp_path: Path, bueno_dir: Path) -> None:
    """A tiled TIFF (OpenSlide) and a plain stripped TIFF (fallback reader) at 2 µm/px."""
    rgb = np.asarray(Image.open(next((bueno_dir / "images").glob("*.png"))).convert("RGB"))
    tiled, plain = tmp_path / "tiled.tif", tmp_path / "plain.tif"
    res = (1e4 / 2.0, 1e4 / 2.0)  # pixels per cm
    tifffile.imwrite(tiled, rgb, tile=(256, 256), resolution=res, resolutionunit="CENTIMETER")
    tifffile.imwrite(plain, rgb, resolution=res, resolutionunit="CENTIMETER")
    for path, vendor in ((tiled, "generic-tiff"), (plain, None)):
        slide = lnpath.open_slide(path)
        assert slide.vendor == vendor
        assert slide.mpp == pytest.approx(2.0)
        assert slide.mpp_source == "tiff-resolution"
        assert np.array_equal(slide.read(0, 0, 1024, 1024), rgb)


def test_plain_jpeg_needs_mpp_and_reads_like_the_source(tmp_path: Path, bueno_dir: Path) -> None:
    source = next((bueno_dir / "images").glob("*.png"))
    jpeg = tmp_path / "biopsy.jpg"
    Image.open(source).convert("RGB").save(jpeg, quality=95)
    with pytest.raises(MissingMppError, match=r"biopsy\.jpg: no µm/px"):
        lnpath.open_slide(jpeg)
    slide = lnpath.open_slide(jpeg, mpp=0.5)
    assert slide.dimensions == (1024, 1024) and slide.vendor is None
    original = np.asarray(Image.open(source).convert("RGB")).astype(int)
    assert np.abs(slide.read(0, 0, 1024, 1024).astype(int) - original).mean() < 3
    assert lnpath.detect_tissue(slide).area_mm2 > 0.05  # PAS kidney tissue


def test_snaps_to_a_level_within_5_percent(slides_dir: Path) -> None:
    slide = lnpath.open_slide(slides_dir / "tcga-cr-7395-01a-01-ts1.svs", mpp=0.25)
    choice = slide.best_level(0.5)  # level 1 is 2.0005x: within 5 %
    assert choice.level == 1 and not choice.resampled
    region = slide.read(1000, 1000, 512, 512, mpp=0.5)
    assert region.shape == (256, 256, 3)
    direct = slide.read_level(1, 500, 500, 256, 256)
    assert np.array_equal(region, direct)
    coarse = slide.best_level(2.0)  # no level near 8x: read level 1 and resample
    assert coarse.level == 1 and coarse.scale == pytest.approx(4.0, rel=1e-3)


def test_resampled_read_matches_an_antialiased_resize(slides_dir: Path) -> None:
    slide = lnpath.open_slide(slides_dir / "cmu-1-small-region.svs")
    full = slide.read(0, 0, 1000, 1000)
    small = slide.read(0, 0, 1000, 1000, mpp=slide.mpp * 4)
    assert small.shape == (250, 250, 3)
    reference = np.asarray(Image.fromarray(full).resize((250, 250), Image.Resampling.BOX))
    diff = np.abs(small.astype(int) - reference.astype(int))
    assert diff.mean() < 3.0


def test_outside_the_slide_is_white(slides_dir: Path) -> None:
    slide = lnpath.open_slide(slides_dir / "cmu-1-small-region.svs")
    region = slide.read(-100, 2967 - 100, 200, 200)
    assert (region[:, :100] == 255).all() and (region[100:] == 255).all()
    assert region[:100, 100:].min() < 255
    assert np.array_equal(region[:100, 100:], slide.read(0, 2867, 100, 100))


def test_public_read_region_fallback_gives_the_same_pixels(
    slides_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """lnpath reads OpenSlide's ARGB buffer directly; without that private entry point it falls
    back to the public read_region, with identical pixels (inside and outside the slide)."""
    slide = lnpath.open_slide(slides_dir / "cmu-1-small-region.svs")
    fast = slide.read(2000, 2800, 400, 300)
    monkeypatch.setattr(lnpath.wsi.backends, "_RAW_READ", None)
    assert np.array_equal(slide.read(2000, 2800, 400, 300), fast)


def test_pixels_are_a_view_of_the_decoded_buffer_and_composite_onto_white(
    slides_dir: Path,
) -> None:
    """Regions come back as RGB views into OpenSlide's ARGB buffer (no channel copy), equal to
    the public read_region's RGB; partly transparent premultiplied pixels land on white."""
    slide = lnpath.open_slide(slides_dir / "cmu-1-small-region.svs")
    region = slide.read(100, 200, 64, 48)
    assert region.shape == (48, 64, 3) and region.base is not None  # a view, not a copy
    public = slide._b._osr.read_region((100, 200), 0, (64, 48))
    assert np.array_equal(region, np.asarray(public.convert("RGB")))
    rgb = np.array([[10, 200, 30], [90, 40, 250], [0, 0, 0]], dtype=np.uint32)
    alpha = np.array([255, 128, 0], dtype=np.uint32)
    premultiplied = rgb * alpha[:, None] // 255
    argb = alpha << 24 | premultiplied[:, 0] << 16 | premultiplied[:, 1] << 8 | premultiplied[:, 2]
    out = lnpath.wsi.backends._argb_to_rgb(argb.reshape(1, 3))[0]
    on_white = np.asarray(
        Image.alpha_composite(
            Image.new("RGBA", (3, 1), "white"),
            Image.fromarray(np.column_stack([rgb, alpha]).astype(np.uint8)[None], "RGBA"),
        ).convert("RGB")
    )[0]
    assert np.abs(out.astype(int) - on_white.astype(int)).max() <= 1  # premultiply rounding
    assert out[0].tolist() == [10, 200, 30] and out[2].tolist() == [255, 255, 255]


def test_resampling_reads_openslide_pixels_without_a_copy_and_sees_the_same_image(
    slides_dir: Path,
) -> None:
    """The image handed to the resampler comes straight from OpenSlide's 4-byte pixels, with the
    RGB of the view (inside the slide and where it is padded with white)."""
    from lnpath.wsi.backends import packed_pixels, rgb_image

    slide = lnpath.open_slide(slides_dir / "cmu-1-small-region.svs")
    for x, y in ((100, 200), (-40, 2967 - 50)):  # inside; over the bottom-left corner
        region = slide.read(x, y, 96, 80)
        assert packed_pixels(region) is not None
        assert np.array_equal(np.asarray(rgb_image(region)), region)
    plain = np.ascontiguousarray(region)
    assert packed_pixels(plain) is None
    assert np.array_equal(np.asarray(rgb_image(plain)), plain)


def test_plain_image_pads_and_resamples(slides_dir: Path) -> None:
    slide = lnpath.open_slide(slides_dir / "boxes.png", mpp=0.5)
    region = slide.read(-10, -10, 20, 20)
    assert (region[:10] == 255).all()
    assert slide.read(0, 0, 100, 100, mpp=1.0).shape == (50, 50, 3)


def test_pickles_as_path_and_reopens_lazily(slides_dir: Path) -> None:
    slide = lnpath.open_slide(slides_dir / "tcga-cr-7395-01a-01-ts1.svs", mpp=0.25)
    data = pickle.dumps(slide)
    assert len(data) < 500  # a path and a number, no handle or pixels
    clone = pickle.loads(data)
    assert clone._backend is None
    assert clone.mpp == 0.25 and clone.mpp_source == "caller"
    assert np.array_equal(_read_corner(clone), _read_corner(slide))


def test_reads_in_spawned_workers(slides_dir: Path) -> None:
    slide = lnpath.open_slide(slides_dir / "cmu-1-small-region.svs")
    with mp.get_context("spawn").Pool(1) as pool:
        (remote,) = pool.map(_read_corner, [slide])
    assert np.array_equal(remote, _read_corner(slide))


def test_close_and_reopen(slides_dir: Path) -> None:
    with lnpath.open_slide(slides_dir / "small.svs") as slide:
        before = slide.read(0, 0, 16, 16)
    assert slide._backend is None
    assert np.array_equal(slide.read(0, 0, 16, 16), before)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("missing.svs", "no such file"),
        ("broken.svs", "not a slide format"),
        ("unopenable.tiff", "Unsupported TIFF compression"),
    ],
)
def test_unopenable_files(slides_dir: Path, name: str, message: str) -> None:
    with pytest.raises(SlideError, match=message) as info:
        lnpath.open_slide(slides_dir / name, mpp=0.5)
    assert str(slides_dir / name) in str(info.value)
    assert "\n" not in str(info.value)


def test_directory_and_renamed_text_file(tmp_path: Path) -> None:
    with pytest.raises(SlideError, match="is a directory"):
        lnpath.open_slide(tmp_path)
    fake = tmp_path / "notes.svs"
    fake.write_text("not a slide\n")
    with pytest.raises(SlideError, match="not a slide format"):
        lnpath.open_slide(fake, mpp=0.5)


def test_corrupt_tile_names_the_region(slides_dir: Path) -> None:
    slide = lnpath.open_slide(slides_dir / "unreadable.svs")
    with pytest.raises(SlideError, match=r"unreadable\.svs: cannot read region x=0 y=0 width=16"):
        slide.read(0, 0, 16, 16)


@pytest.mark.parametrize("mpp", [0.0, -1.0, 0.01, 25.0, float("nan")])
def test_absurd_mpp_is_refused(slides_dir: Path, mpp: float) -> None:
    with pytest.raises(InputError, match="outside the plausible range"):
        lnpath.open_slide(slides_dir / "cmu-1-small-region.svs", mpp=mpp)
    slide = lnpath.open_slide(slides_dir / "cmu-1-small-region.svs")
    with pytest.raises(InputError):
        slide.read(0, 0, 10, 10, mpp=mpp)
