"""Running a segmentation network on RGB arrays: normalisation, devices, AMP and flip TTA.

Both training-time validation and whole-slide inference go through :func:`predict_batch`, so the
numbers in a model card are produced by the code that segments a user's slide (on a CPU through
the fused form of the network, :mod:`lnpath.nn.fused`: the same float32 logits to 1e-5).
"""

from __future__ import annotations

import re

import numpy as np
import torch
from torch import nn

from lnpath.core.env import switched_off
from lnpath.core.errors import ModelError

# Input normalisation stored in every model card: (rgb / 255 - MEAN) / STD.
MEAN = (0.5, 0.5, 0.5)
STD = (0.25, 0.25, 0.25)


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """Turn ``"auto" | "cpu" | "cuda[:n]"`` into a device, refusing CUDA where there is none.

    Raises:
        ModelError: ``cuda`` was requested but PyTorch sees no CUDA device, or the name is unknown.
    """
    name = str(device)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    # torch also names mps, xpu, meta, ...: they parse, then fail deep inside with no hint
    if not re.fullmatch(r"cpu|cuda(:\d+)?", name):
        raise ModelError(f"unknown device {name!r} (use auto, cpu or cuda)")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ModelError(
            "CUDA requested but not available (PyTorch sees no GPU); use --device cpu or auto"
        )
    dev = torch.device(name)
    if dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ModelError(
            f"device {name!r}: PyTorch sees {torch.cuda.device_count()} GPU(s), "
            f"numbered from 0; use --device cuda or cuda:0"
        )
    return dev


CPU_BFLOAT16_ENV = "LNPATH_CPU_BFLOAT16"
"""Set to 0 to keep CPUs in float32 (:func:`fast_autocast`)."""


def to_tensor(images: np.ndarray | torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 or [0, 1] float ``(N, H, W, 3)`` → normalised float ``(N, 3, H, W)`` on ``device``."""
    if isinstance(images, np.ndarray):
        images = np.require(images, requirements=["C", "W"])  # torch needs writable memory
    x = torch.as_tensor(images).to(device)
    x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
    x = x.permute(0, 3, 1, 2)
    mean = torch.tensor(MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(STD, device=device).view(1, 3, 1, 1)
    return ((x - mean) / std).contiguous(memory_format=torch.channels_last)


@torch.no_grad()
def predict_batch(
    model: nn.Module, images: np.ndarray | torch.Tensor, device: torch.device, tta: bool = True
) -> np.ndarray:
    """Foreground probability ``(N, H, W)`` float32 for uint8 RGB images ``(N, H, W, 3)``.

    Args:
        model: A network returning one logit channel; put in eval mode here.
        images: The batch, already at the model's µm/px.
        device: Where to run; CUDA runs under float16 autocast, CPUs with AVX-512 BF16 under
            bfloat16 autocast (about twice as fast; probabilities differ by < 1e-2).
        tta: Average the probabilities over the four flips (horizontal, vertical, both), which
            smooths the jagged borders a small network otherwise draws.
    """
    model.eval()
    bytes_in = getattr(model, "takes_bytes", False) and images.dtype in (np.uint8, torch.uint8)
    x = _rgb_bytes(images, device) if bytes_in else to_tensor(images, device)
    flips: list[tuple[int, ...]] = [(), (-1,), (-2,), (-2, -1)] if tta else [()]
    total = torch.zeros(x.shape[0], 1, *x.shape[-2:], device=device)
    dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
    with torch.autocast(device_type=device.type, dtype=dtype, enabled=fast_autocast(device)):
        for dims in flips:
            inp = torch.flip(x, dims) if dims else x
            prob = torch.sigmoid(model(inp).float())
            total += torch.flip(prob, dims) if dims else prob
    return (total / len(flips))[:, 0].cpu().numpy().astype(np.float32)


def _rgb_bytes(images: np.ndarray | torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 ``(N, H, W, 3)`` as ``(N, 3, H, W)`` channels-last bytes, for a network that
    normalises inside its first layer (:class:`lnpath.nn.int8.Int8UNet`): no float copy."""
    if isinstance(images, np.ndarray):
        images = np.require(images, requirements=["C", "W"])
    return torch.as_tensor(images).to(device).permute(0, 3, 1, 2)


def fast_autocast(device: torch.device) -> bool:
    """Whether reduced precision pays on ``device``: CUDA, or a CPU with AVX-512 BF16 (elsewhere
    bfloat16 is emulated and several times slower than float32).

    ``LNPATH_CPU_BFLOAT16=0`` keeps CPUs in float32, so that every machine gives the same
    probabilities to float32 rounding (bfloat16 moves them by up to 1e-2): a trial scoring at
    several sites, a result reproduced on a newer CPU. It takes about 1.5-2x the time.
    """
    if device.type == "cuda":
        return True
    if switched_off(CPU_BFLOAT16_ENV):
        return False
    check = getattr(torch.cpu, "_is_avx512_bf16_supported", None)
    return bool(device.type == "cpu" and check is not None and check())


def precision(device: torch.device) -> str:
    """The floating-point type the network computes in on ``device`` (recorded in results)."""
    if not fast_autocast(device):
        return "float32"
    return "float16" if device.type == "cuda" else "bfloat16"
