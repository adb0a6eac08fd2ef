"""The fused CPU U-Net scores the shipped model's test split as the eager network does, and falls
back to the eager network wherever its kernels are missing or disagree."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from lnpath.models.store import SegmentationModel, load_model
from lnpath.nn import fused
from lnpath.nn.fused import FusedUNet, inference_network
from lnpath.nn.predict import fast_autocast, precision, predict_batch, to_tensor
from lnpath.nn.unet import UNet, UNetConfig, fold_batch_norm
from lnpath.training.glomeruli import evaluate
from lnpath.training.glomeruli_data import load_labelled_tiles, resample

BUENO_MPP = 0.5
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def model() -> SegmentationModel:
    torch.set_num_threads(2)
    return load_model()


@pytest.fixture(scope="module")
def test_tiles(bueno_dir: Path) -> list:
    split = json.loads((bueno_dir / "split.json").read_text())
    return load_labelled_tiles(bueno_dir, split["test"], BUENO_MPP)


def test_float32_fused_scores_the_test_split_as_the_eager_network(
    model: SegmentationModel, test_tiles: list, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("lnpath.nn.predict.fast_autocast", lambda device: False)  # float32 both
    network = inference_network(model.network, CPU, torch.float32)
    assert isinstance(network, FusedUNet)
    threshold = model.postprocess["threshold"]
    eager = evaluate(model.network, test_tiles, model.mpp, CPU, threshold=threshold)
    got = evaluate(network, test_tiles, model.mpp, CPU, threshold=threshold)
    assert got.true_objects == eager.true_objects
    assert got.true_positives == eager.true_positives
    assert got.predicted_objects == eager.predicted_objects
    assert got.dice == pytest.approx(eager.dice, abs=1e-4)
    assert eager.dice > 0.85  # real glomeruli: a comparison that means something


def test_float32_fused_logits_equal_the_folded_network_at_any_size(
    model: SegmentationModel, test_tiles: list
) -> None:
    folded = fold_batch_norm(model.network)
    network = FusedUNet(folded, torch.float32)
    image = resample(test_tiles[0], model.mpp).image
    for height, width in [(512, 512), (301, 457), (40, 24)]:  # padded to 16 inside, cropped back
        x = to_tensor(np.ascontiguousarray(image[:height, :width])[None], CPU)
        with torch.inference_mode():
            expected, got = folded(x), network(x)
        assert got.shape == expected.shape == (1, 1, height, width)
        assert float((got - expected).abs().max()) < 1e-3


@pytest.mark.skipif(not fast_autocast(CPU), reason="this CPU has no AVX-512 BF16")
def test_bfloat16_fused_probabilities_match_eager_autocast(
    model: SegmentationModel, test_tiles: list
) -> None:
    network = inference_network(model.network, CPU, torch.bfloat16)
    assert isinstance(network, FusedUNet) and network.dtype == torch.bfloat16
    folded = fold_batch_norm(model.network)
    for tile in test_tiles[:3]:
        image = resample(tile, model.mpp).image[None]
        expected = predict_batch(folded, image, CPU)
        got = predict_batch(network, image, CPU)
        assert float(np.abs(got - expected).max()) < 0.05
        cut = model.postprocess["threshold"]
        agree = np.mean((got > cut) == (expected > cut))
        assert agree > 0.999


def test_instance_norm_and_cuda_keep_the_eager_network() -> None:
    instance = UNet(UNetConfig(width=4, depth=2, norm="instance")).eval()
    assert isinstance(inference_network(instance, CPU, torch.float32), UNet)
    batch = UNet(UNetConfig(width=4, depth=2)).eval()
    assert isinstance(inference_network(batch, torch.device("cuda"), torch.float16), UNet)
    with pytest.raises(ValueError, match="folded"):
        FusedUNet(batch)  # BatchNorm still in place: fusing would drop it


def test_missing_or_disagreeing_kernels_fall_back_to_the_eager_network(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    net = UNet(UNetConfig(width=4, depth=2)).eval()
    assert isinstance(inference_network(net, CPU, torch.float32), FusedUNet)
    real_conv = fused._conv

    def missing(*args: object, **kwargs: object) -> torch.Tensor:
        raise RuntimeError("mkldnn::_convolution_pointwise is not available")

    monkeypatch.setattr(fused, "_conv", missing)
    assert isinstance(inference_network(net, CPU, torch.float32), UNet)

    def off_by_one(*args: object, **kwargs: object) -> torch.Tensor:
        return real_conv(*args, **kwargs) + 1.0

    monkeypatch.setattr(fused, "_conv", off_by_one)
    with caplog.at_level(logging.WARNING, logger="lnpath.nn.fused"):
        assert isinstance(inference_network(net, CPU, torch.float32), UNet)
    assert "differs" in caplog.text


def test_cpu_bfloat16_can_be_turned_off_for_the_same_probabilities_on_every_machine(
    model: SegmentationModel, test_tiles: list, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LNPATH_CPU_BFLOAT16", "0")
    assert not fast_autocast(CPU) and precision(CPU) == "float32"
    assert precision(torch.device("cuda")) == "float16"  # CUDA keeps its float16
    image = resample(test_tiles[0], model.mpp).image[None]
    folded = fold_batch_norm(model.network)
    got = predict_batch(folded, image, CPU, tta=False)
    with torch.inference_mode():
        logits = folded(to_tensor(image, CPU))  # plain float32, no autocast anywhere
    assert np.array_equal(got, torch.sigmoid(logits)[:, 0].numpy())
    monkeypatch.setenv("LNPATH_CPU_BFLOAT16", "1")
    assert precision(CPU) == ("bfloat16" if fast_autocast(CPU) else "float32")
