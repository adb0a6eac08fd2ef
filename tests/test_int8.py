"""The int8 U-Net: its decomposition is the float network's, its card's calibration is what the
training tiles give, and where it runs (a CPU with VNNI, four flips) it finds the float network's
glomeruli on the demo biopsy and falls back wherever it cannot be trusted."""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lnpath.analysis.segment import segment_glomeruli
from lnpath.core.errors import ModelError
from lnpath.models.store import SegmentationModel, load_model
from lnpath.nn.fused import FusedUNet, inference_network
from lnpath.nn.int8 import Int8UNet, _Layout, _pixel_shuffle, calibrate, card_ranges, int8_enabled
from lnpath.nn.predict import predict_batch, to_tensor
from lnpath.nn.unet import UNet, fold_batch_norm
from lnpath.training.glomeruli_data import load_labelled_tiles, resample
from lnpath.wsi.slide import open_slide

from .conftest import assert_one_line_error, lnpath_cli

CPU = torch.device("cpu")
needs_vnni = pytest.mark.skipif(not int8_enabled(), reason="this CPU has no VNNI (int8 kernels)")


@pytest.fixture(scope="module")
def model() -> SegmentationModel:
    torch.set_num_threads(2)
    return load_model()


@pytest.fixture(scope="module")
def folded(model: SegmentationModel) -> UNet:
    network = fold_batch_norm(model.network)
    assert isinstance(network, UNet)
    return network


def test_the_decomposition_computes_the_float_networks_logits(folded: UNet) -> None:
    x = torch.randn(2, 3, 48, 80, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        assert float((_Layout.of(folded).forward(x) - folded(x)).abs().max()) < 1e-4


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_pixel_shuffle_is_torchs_for_blocks_ordered_row_column_channel(
    dtype: torch.dtype,
) -> None:
    channels = 8  # 8-byte words for bytes; element by element otherwise
    x = torch.randint(0, 255, (2, 4 * channels, 5, 7)).to(dtype)
    x = x.contiguous(memory_format=torch.channels_last)
    # torch orders each block's channels (channel, row, column)
    torch_order = x.view(2, 2, 2, channels, 5, 7).permute(0, 3, 1, 2, 4, 5).reshape(2, -1, 5, 7)
    expected = F.pixel_shuffle(torch_order.float(), 2)
    got = _pixel_shuffle(x)
    assert got.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(got.float(), expected)


def test_the_cards_ranges_are_what_the_training_tiles_give(
    model: SegmentationModel, folded: UNet, bueno_dir: Path
) -> None:
    section = model.card["int8"]
    assert section["adopted"] is True
    assert round(section["validation"]["tta"]["dice"], 3) >= 0.839  # the rule it passed
    assert section["test"]["tta"]["dice"] >= 0.90
    tiles = load_labelled_tiles(bueno_dir, model.card["training"]["train_tiles"], 0.5)
    batches = (to_tensor(resample(item, model.mpp).image[None], CPU) for item in tiles)
    ranges = calibrate(folded, batches)
    assert ranges.keys() == section["activation_ranges"].keys()
    for key, value in ranges.items():
        assert value == pytest.approx(section["activation_ranges"][key], rel=1e-3), key


def test_a_card_without_an_adopted_section_gives_no_ranges(model: SegmentationModel) -> None:
    assert card_ranges({}) is None
    assert card_ranges({"int8": {**model.card["int8"], "adopted": False}}) is None
    assert card_ranges({"int8": {"adopted": True}}) is None
    assert card_ranges(model.card) is not None
    other_weights = {**model.card, "sha256": "0" * 64}  # the card copied onto fine-tuned weights
    assert card_ranges(other_weights) is None


@needs_vnni
def test_int8_probabilities_follow_the_float_network_on_real_glomeruli(
    model: SegmentationModel, folded: UNet, bueno_dir: Path
) -> None:
    split = json.loads((bueno_dir / "split.json").read_text())
    network = inference_network(model.network, CPU, torch.float32, card_ranges(model.card))
    assert isinstance(network, Int8UNet)
    cut = model.postprocess["threshold"]
    for item in load_labelled_tiles(bueno_dir, split["test"][:3], 0.5):
        image = resample(item, model.mpp).image[None]  # odd sizes: padded inside
        expected = predict_batch(folded, image, CPU)
        got = predict_batch(network, image, CPU)
        assert float(np.abs(got - expected).mean()) < 0.01
        assert np.mean((got > cut) == (expected > cut)) > 0.995


@needs_vnni
def test_demo_segmentation_with_flips_runs_in_int8_and_finds_the_float_glomeruli(
    model: SegmentationModel, repo_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    slide = open_slide(repo_dir / "examples" / "demo_biopsy.tiff")
    got = segment_glomeruli(slide, model=model, device="cpu", tta=True)
    assert got.metadata["precision"] == "int8"
    assert len(got.metadata["int8_ranges_sha256"]) == 64  # the calibration, beside the weights
    monkeypatch.setenv("LNPATH_CPU_INT8", "0")
    floating = segment_glomeruli(slide, model=model, device="cpu", tta=True)
    assert floating.metadata["precision"] != "int8"
    assert len(got) == len(floating) > 15
    for a in got:  # each int8 outline is one of the float outlines, drawn nearly the same
        best = max(
            a.polygon.intersection(b.polygon).area / a.polygon.union(b.polygon).area
            for b in floating
        )
        assert best > 0.85, a.id


@needs_vnni
def test_one_pass_stays_in_floating_point(model: SegmentationModel, repo_dir: Path) -> None:
    slide = open_slide(repo_dir / "examples" / "demo_biopsy.tiff")
    single = segment_glomeruli(slide, model=model, device="cpu", tta=False)
    assert single.metadata["precision"] != "int8"  # int8 was validated with the four flips


@needs_vnni
def test_ranges_that_misread_the_activations_fall_back_to_the_float_network(
    model: SegmentationModel, caplog: pytest.LogCaptureFixture
) -> None:
    ranges = card_ranges(model.card)
    assert ranges is not None
    wrong = {key: value / 50 for key, value in ranges.items()}  # every activation saturates
    with caplog.at_level(logging.WARNING, logger="lnpath.nn.fused"):
        network = inference_network(model.network, CPU, torch.float32, wrong)
    assert isinstance(network, FusedUNet)
    assert "int8 U-Net differs" in caplog.text
    missing = {k: v for k, v in ranges.items() if k != "down0a"}
    assert isinstance(inference_network(model.network, CPU, torch.float32, missing), FusedUNet)


@pytest.mark.parametrize("variable", ["LNPATH_CPU_INT8", "LNPATH_CPU_BFLOAT16"])
def test_either_switch_keeps_the_float_network(
    variable: str, model: SegmentationModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(variable, "0")  # float32 everywhere implies no int8 either
    assert not int8_enabled()
    network = inference_network(model.network, CPU, torch.float32, card_ranges(model.card))
    assert not isinstance(network, Int8UNet)


def _edited_model(folder: Path, edit: Callable[[dict[str, Any]], None]) -> Path:
    """A copy of the shipped model whose card's ``int8`` section was edited by hand."""
    shutil.copytree(load_model().path, folder)
    card = json.loads((folder / "card.json").read_text())
    edit(card)
    (folder / "card.json").write_text(json.dumps(card))
    return folder


def _set_range(key: str, value: object) -> Callable[[dict[str, Any]], None]:
    return lambda card: card["int8"]["activation_ranges"].__setitem__(key, value)


@pytest.mark.parametrize(
    ("edit", "named"),
    [
        (_set_range("down1a", "abc"), "down1a"),
        (_set_range("down1a", "1.5"), "down1a"),  # JSON has numbers: text is not one
        (_set_range("merge2b", -3.0), "merge2b"),
        (_set_range("down0b", 0), "down0b"),
        (_set_range("head", float("nan")), "head"),  # json.dumps writes NaN, json.loads reads it
        (_set_range("up1", None), "up1"),
        (_set_range("skip0", True), "skip0"),
        (lambda card: card["int8"]["activation_ranges"].pop("up0"), "up0"),
        (lambda card: card["int8"].__setitem__("adopted", "yes"), "adopted"),
        (lambda card: card["int8"].__setitem__("activation_ranges", [1.0]), "activation_ranges"),
        (lambda card: card.__setitem__("int8", ["adopted"]), "int8"),
    ],
)
def test_a_hand_edited_int8_section_is_refused_at_load_in_one_line(
    edit: Callable[[dict[str, Any]], None], named: str, tmp_path: Path
) -> None:
    folder = _edited_model(tmp_path / "lab", edit)
    with pytest.raises(ModelError, match=named) as refused:
        load_model(folder)
    assert "\n" not in str(refused.value)


def test_segment_refuses_a_lab_models_broken_int8_section_without_a_traceback(
    repo_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _edited_model(tmp_path / "models" / "lab-unet", _set_range("down2a", "wide"))
    monkeypatch.setenv("LNPATH_MODELS", str(tmp_path / "models"))
    slide = repo_dir / "examples" / "demo_biopsy.tiff"
    proc = lnpath_cli("segment", slide, "--model", "lab-unet", "--out", tmp_path / "g.geojson")
    assert_one_line_error(proc, "card.json", "down2a")


def test_an_int8_section_for_other_weights_is_ignored_however_it_reads(tmp_path: Path) -> None:
    def other_weights(card: dict[str, Any]) -> None:  # a lab card copied from the shipped one
        card["int8"]["weights_sha256"] = "0" * 64
        card["int8"]["activation_ranges"] = {"down0a": "of another depth"}

    model = load_model(_edited_model(tmp_path / "lab", other_weights))
    assert card_ranges(model.card) is None


@needs_vnni
@pytest.mark.parametrize("value", [float("nan"), 0.0, -1.0])
def test_ranges_that_cannot_be_scales_fall_back_to_the_float_network(
    value: float, model: SegmentationModel
) -> None:
    ranges = card_ranges(model.card)
    assert ranges is not None
    broken = dict.fromkeys(ranges, value)  # NaN probabilities once passed the check
    assert isinstance(inference_network(model.network, CPU, torch.float32, broken), FusedUNet)
    partial = {k: v for k, v in ranges.items() if k != "up0"}  # once a KeyError, not a fallback
    assert isinstance(inference_network(model.network, CPU, torch.float32, partial), FusedUNet)
