"""Shipped glomerulus model: test-split quality vs its card, whole-slide inference, bad input."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image
from scipy import ndimage
from shapely.geometry import Polygon

from lnpath.analysis.glomeruli import Glomeruli
from lnpath.analysis.measure import normalise_white, slide_white
from lnpath.analysis.segment import _outline
from lnpath.cli import main
from lnpath.core.errors import ModelError, SlideError
from lnpath.models.store import DEFAULT_MODEL, SegmentationModel, load_model
from lnpath.nn.int8 import int8_enabled
from lnpath.nn.postprocess import label_glomeruli
from lnpath.nn.predict import precision, predict_batch
from lnpath.training.glomeruli import evaluate
from lnpath.training.glomeruli_data import load_labelled_tiles

BUENO_MPP = 0.5
TOLERANCE = 0.02


@pytest.fixture(scope="module")
def model() -> SegmentationModel:
    torch.set_num_threads(2)
    return load_model()


def test_test_split_quality_is_no_worse_than_the_card(
    model: SegmentationModel, bueno_dir: Path
) -> None:
    split = json.loads((bueno_dir / "split.json").read_text())
    tiles = load_labelled_tiles(bueno_dir, split["test"], BUENO_MPP)
    score = evaluate(
        model.network,
        tiles,
        model.mpp,
        torch.device("cpu"),
        threshold=model.postprocess["threshold"],
    )
    card = model.card["metrics"]["test"]
    assert score.dice >= card["dice"] - TOLERANCE
    assert score.recall >= card["recall"] - TOLERANCE
    assert score.true_objects == card["true_objects"]


def _write_tiff(path: Path, image: np.ndarray, mpp: float | None) -> Path:
    """A generic pyramidal TIFF (tiled JPEG, levels 1x and 4x), µm/px in the resolution tags."""
    levels = [image, np.asarray(Image.fromarray(image).reduce(4))]
    with tifffile.TiffWriter(path) as tif:
        for i, level in enumerate(levels):
            extra = {}
            if mpp is not None:
                px_per_cm = 1e4 / (mpp * 4**i)
                extra = {"resolution": (px_per_cm, px_per_cm), "resolutionunit": "CENTIMETER"}
            tif.write(
                level,
                photometric="rgb",
                tile=(256, 256),
                compression="jpeg",
                subfiletype=0 if i == 0 else 1,
                metadata=None,
                **extra,
            )
    return path


@pytest.fixture(scope="module")
def seam_slide(
    model: SegmentationModel, bueno_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, list[Polygon], list[float]]:
    """Two test tiles on white glass, each glomerulus centred on an inference tile seam."""
    stride = (model.patch - model.overlap) * model.mpp / BUENO_MPP  # level-0 px
    overlap = model.overlap * model.mpp / BUENO_MPP
    canvas = np.full((1280, 3 * 1024, 3), 255, np.uint8)
    truths, seams = [], []
    for k, name in enumerate(["10103", "10172"], start=1):
        image = np.asarray(Image.open(bueno_dir / "images" / f"{name}.png").convert("RGB"))
        mask = np.asarray(Image.open(bueno_dir / "masks" / f"{name}.png"))[..., 0] > 127
        assert ndimage.label(mask)[1] == 1
        cx = ndimage.center_of_mass(mask)[1]
        seam = k * stride + overlap / 2  # middle of the overlap between tiles k-1 and k
        x0, y0 = round(seam - cx), 128
        x0 = min(max(x0, (k - 1) * 1024), canvas.shape[1] - 1024)
        canvas[y0 : y0 + 1024, x0 : x0 + 1024] = image
        xs = np.nonzero(mask)[1]
        assert xs.min() + x0 < seam < xs.max() + x0, "glomerulus must straddle the seam"
        outline = _outline(mask)
        assert outline is not None
        shift = np.array([x0 + 0.5, y0 + 0.5])
        truths.append(Polygon(np.asarray(outline.exterior.coords) + shift))
        seams.append(seam)
    path = _write_tiff(tmp_path_factory.mktemp("seam") / "seam.tiff", canvas, BUENO_MPP)
    return path, truths, seams


def test_glomeruli_across_tile_seams_are_one_object_each(
    model: SegmentationModel, seam_slide: tuple[Path, list[Polygon], list[float]]
) -> None:
    """Tiled inference must give the objects that one pass over the whole image gives."""
    from lnpath.analysis.segment import segment_glomeruli
    from lnpath.wsi.slide import open_slide

    path, truths, seams = seam_slide
    with open_slide(path) as slide:
        gloms = segment_glomeruli(slide, model=model, device="cpu", workers=1)
        whole = normalise_white(
            slide.read(0, 0, *slide.dimensions, mpp=model.mpp), slide_white(slide)
        )
    assert gloms.mpp == pytest.approx(BUENO_MPP) and gloms.source == DEFAULT_MODEL
    assert gloms.metadata["sha256"] == model.sha256
    expected = "int8" if int8_enabled() else precision(torch.device("cpu"))  # with flips
    assert gloms.metadata["precision"] == expected
    post = model.postprocess
    prob = predict_batch(model.network, whole[None], torch.device("cpu"))[0]
    labels = label_glomeruli(prob, model.mpp, threshold=post["threshold"])
    scale = model.mpp / BUENO_MPP
    reference = []
    for index, box in enumerate(ndimage.find_objects(labels), start=1):
        outline = _outline(labels[box] == index)
        assert outline is not None and box is not None
        offset = np.array([box[1].start + 0.5, box[0].start + 0.5])
        reference.append(Polygon((np.asarray(outline.exterior.coords) + offset) * scale))
    for truth, seam in zip(truths, seams, strict=True):
        ref = max(reference, key=lambda p: p.intersection(truth).area)
        assert ref.intersection(truth).area > 0.3 * truth.area, "the model misses this glomerulus"
        assert ref.bounds[0] < seam < ref.bounds[2], "the glomerulus must straddle the seam"
        hits = [g for g in gloms if g.polygon.intersection(ref).area > 0.1 * ref.area]
        assert len(hits) == 1, "a glomerulus on a seam must come out as one object"
        (g,) = hits
        assert g.polygon.intersection(ref).area / g.polygon.union(ref).area >= 0.8
        assert g.area_um2 == pytest.approx(g.polygon.area * BUENO_MPP**2)
        assert 0.5 <= g.probability <= 1.0


def test_under_exposed_snapshot_is_white_balanced_to_the_scanner_result(
    model: SegmentationModel, bueno_dir: Path, tmp_path: Path
) -> None:
    """A camera snapshot with grey glass (60 % exposure) gives the glomeruli of the scanned tile."""
    from lnpath.analysis.segment import segment_glomeruli
    from lnpath.wsi.slide import open_slide

    tile = np.asarray(Image.open(bueno_dir / "images" / "10177.png").convert("RGB"))
    dark = (tile.astype(np.float32) * 0.6).astype(np.uint8)
    found = {}
    for name, image in (("scanned", tile), ("dark", dark)):
        with open_slide(_write_tiff(tmp_path / f"{name}.tiff", image, BUENO_MPP)) as slide:
            found[name] = segment_glomeruli(slide, model=model, device="cpu", workers=1)
    white = found["dark"].metadata["white_point"]
    assert all(140 <= v <= 160 for v in white), white  # glass at 0.6 x ~250
    assert len(found["dark"]) == len(found["scanned"]) == 2
    for g in found["scanned"]:
        twin = max(found["dark"], key=lambda d: d.polygon.intersection(g.polygon).area)
        assert twin.polygon.intersection(g.polygon).area / twin.polygon.union(g.polygon).area > 0.8


def test_cli_segment_writes_qupath_geojson(
    model: SegmentationModel, seam_slide: tuple[Path, list[Polygon], list[float]], tmp_path: Path
) -> None:
    path, truths, _ = seam_slide
    out = tmp_path / "g.geojson"
    assert main(["segment", str(path), "--out", str(out), "--device", "cpu"]) == 0
    gloms = Glomeruli.from_geojson(out, mpp=BUENO_MPP)
    assert len(gloms) >= len(truths)
    assert gloms.source == DEFAULT_MODEL


def test_slide_without_tissue_gives_zero_glomeruli_and_a_warning(
    model: SegmentationModel, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from lnpath.analysis.segment import segment_glomeruli
    from lnpath.wsi.slide import open_slide

    path = _write_tiff(tmp_path / "glass.tiff", np.full((768, 1024, 3), 250, np.uint8), 0.5)
    with caplog.at_level(logging.WARNING), open_slide(path) as slide:
        gloms = segment_glomeruli(slide, model=model, device="cpu")
    assert len(gloms) == 0
    assert "no tissue" in caplog.text


def test_bad_requests_are_one_line_errors(
    model: SegmentationModel,
    seam_slide: tuple[Path, list[Polygon], list[float]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from lnpath.analysis.segment import segment_glomeruli
    from lnpath.wsi.slide import open_slide

    path, _, _ = seam_slide
    with open_slide(path) as slide:
        if not torch.cuda.is_available():
            with pytest.raises(ModelError, match="CUDA requested but not available"):
                segment_glomeruli(slide, model=model, device="cuda")
        with pytest.raises(ModelError, match="unknown model"):
            segment_glomeruli(slide, model="no-such-model")
    no_mpp = _write_tiff(tmp_path / "nompp.tiff", np.full((256, 256, 3), 200, np.uint8), None)
    with pytest.raises(SlideError, match="µm/px"):
        open_slide(no_mpp)
    code = main(["segment", str(no_mpp), "--out", str(tmp_path / "x.geojson")])
    err = capsys.readouterr().err
    assert code != 0 and err.startswith("lnpath: error:") and err.count("\n") == 1
    assert not (tmp_path / "x.geojson").exists()


def test_detection_quality_warns_only_when_most_detections_are_weak() -> None:
    from shapely.geometry import box

    from lnpath.analysis.glomeruli import Glomerulus
    from lnpath.analysis.segment import WEAK_DETECTION, detection_quality

    def detections(*probs: float) -> list[Glomerulus]:
        return [
            Glomerulus.from_polygon(i + 1, box(0, 0, 10, 10), mpp=0.5, probability=p)
            for i, p in enumerate(probs)
        ]

    strong = detection_quality(detections(0.95, 0.9, 0.6, float("nan")))
    assert strong == {"n": 3, "median_probability": 0.9, "weak": 1, "warning": None}
    weak = detection_quality(detections(0.65, 0.75, 0.95))
    assert weak["weak"] == 1 and weak["median_probability"] == 0.75
    assert f"1 of 3 below {WEAK_DETECTION}" in weak["warning"]
    assert detection_quality([])["warning"] is None


def test_reader_processes_only_where_the_network_leaves_a_core(repo_dir: Path) -> None:
    """On 2 cores with 2 torch threads, readers slowed the demo 1.17x (bench_segment.py)."""
    from lnpath.analysis.segment import _readers
    from lnpath.wsi.slide import open_slide
    from lnpath.wsi.tiling import tile
    from lnpath.wsi.workers import available_cpus

    slide = open_slide(repo_dir / "examples" / "demo_biopsy.tiff")
    grid = tile(slide, 1.0, size=512, overlap=64)
    assert len(grid) > 8
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(available_cpus())
        assert _readers(grid, torch.device("cpu")) == 1
        assert _readers(grid, torch.device("cuda")) == (2 if available_cpus() > 1 else 1)
        if available_cpus() > 1:
            torch.set_num_threads(available_cpus() - 1)
            assert _readers(grid, torch.device("cpu")) == 2
    finally:
        torch.set_num_threads(threads)


def test_lanes_keep_the_order_run_with_their_share_of_threads_and_stop_on_errors() -> None:
    """Two lanes: results in input order, each lane on half of torch's threads, the caller's
    own setting untouched, and an error raised where its item would have come."""
    from lnpath.analysis.segment import _compute_lanes, _in_lanes

    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert _compute_lanes(torch.device("cpu")) == 2
        assert _compute_lanes(torch.device("cuda")) == 1

        def work(i: int) -> tuple[int, int]:
            time.sleep(0.02 * (i % 3))  # later items may finish first
            return i * i, torch.get_num_threads()

        results = list(_in_lanes(iter(range(9)), work, lanes=2))
        assert [item for item, _ in results] == list(range(9))
        assert [square for _, (square, _) in results] == [i * i for i in range(9)]
        assert {lane_threads for _, (_, lane_threads) in results} == {1}
        assert torch.get_num_threads() == 2

        started: list[int] = []

        def failing(i: int) -> int:
            started.append(i)
            if i == 3:
                raise ValueError("tile 3 is broken")
            return i

        got = []
        with pytest.raises(ValueError, match="tile 3"):
            for item, _ in _in_lanes(iter(range(100)), failing, lanes=2):
                got.append(item)
        assert got == [0, 1, 2] and max(started) < 10  # stopped soon after, not at the end
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads)
