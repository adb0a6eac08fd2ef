"""U-Net shapes, prediction helpers, post-processing and metrics (CPU, synthetic arrays)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lnpath.core.errors import ModelError
from lnpath.nn import UNet, UNetConfig
from lnpath.nn.metrics import SegmentationScore, matched_objects
from lnpath.nn.postprocess import label_glomeruli
from lnpath.nn.predict import predict_batch, resolve_device


@pytest.mark.parametrize("norm", ["batch", "instance"])
@pytest.mark.parametrize("shape", [(64, 64), (50, 77), (17, 33)])
def test_unet_output_matches_input_size(norm: str, shape: tuple[int, int]) -> None:
    torch.manual_seed(0)
    net = UNet(UNetConfig(width=4, depth=3, norm=norm)).eval()
    with torch.no_grad():
        out = net(torch.randn(2, 3, *shape))
    assert out.shape == (2, 1, *shape)
    assert torch.isfinite(out).all()


def test_unet_trains_one_step_and_config_round_trips() -> None:
    cfg = UNetConfig(width=4, depth=2, classes=2)
    assert UNetConfig.from_dict(cfg.to_dict()) == cfg
    net = UNet(cfg)
    out = net(torch.randn(2, 3, 32, 32))
    out.mean().backward()
    assert all(p.grad is not None for p in net.parameters())
    with pytest.raises(ValueError, match="norm"):
        UNetConfig(norm="group")


def test_predict_batch_gives_probabilities_for_uint8_tiles() -> None:
    net = UNet(UNetConfig(width=4, depth=2))
    tiles = np.random.default_rng(0).integers(0, 256, (3, 40, 48, 3), dtype=np.uint8)
    tiles.setflags(write=False)  # tiles from a reader may be read-only
    prob = predict_batch(net, tiles, torch.device("cpu"), tta=True)
    assert prob.shape == (3, 40, 48) and prob.dtype == np.float32
    assert (prob >= 0).all() and (prob <= 1).all()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_requested_without_cuda_is_a_clear_error() -> None:
    with pytest.raises(ModelError, match="CUDA requested but not available"):
        resolve_device("cuda")
    assert resolve_device("auto").type == "cpu"


def _disc(shape: tuple[int, int], cy: float, cx: float, r: float) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r**2


def test_postprocess_splits_touching_fills_holes_and_drops_specks() -> None:
    shape = (200, 300)
    prob = np.zeros(shape, np.float32)
    # two glomeruli (r = 50 µm at 1 µm/px) touching along a narrow neck
    prob[_disc(shape, 100, 80, 50) | _disc(shape, 100, 175, 50)] = 0.9
    prob[_disc(shape, 100, 80, 10)] = 0.1  # a hole (Bowman's space)
    prob[_disc(shape, 20, 280, 8)] = 0.9  # 200 µm² speck
    labels = label_glomeruli(prob, mpp=1.0)
    assert labels.max() == 2
    assert labels[100, 80] > 0  # hole filled
    assert labels[100, 80] != labels[100, 175]
    assert labels[20, 280] == 0
    assert label_glomeruli(prob, mpp=1.0, split_depth_um=None).max() == 1


def test_postprocess_keeps_one_elongated_glomerulus_whole() -> None:
    yy, xx = np.mgrid[:200, :300]
    ellipse = ((yy - 100) / 60.0) ** 2 + ((xx - 150) / 110.0) ** 2 <= 1
    assert label_glomeruli(ellipse.astype(np.float32), mpp=1.0).max() == 1


def test_object_matching_counts_iou_at_least_half() -> None:
    true = np.zeros((100, 100), np.int32)
    true[10:40, 10:40] = 1
    true[60:90, 60:90] = 2
    pred = np.zeros_like(true)
    pred[12:40, 10:40] = 1  # IoU 0.93
    pred[60:70, 60:90] = 2  # IoU 0.33
    assert matched_objects(pred, true, 0.5) == 1
    score = SegmentationScore()
    score.add(pred, true)
    assert score.recall == 0.5 and score.precision == 0.5
    assert 0 < score.dice < 1
