"""The shipped U-Net for CPU inference, each convolution fused with what follows it in oneDNN.

A narrow U-Net is memory-bound on a CPU: in the eager network a quarter of the time went to ReLU
passes over full-resolution activations, a seventh to concatenating each decoder stage's skip
connection and a tenth to max pooling (which also computes indices nobody uses). Here

* every convolution runs with its ReLU as a oneDNN post-op (``mkldnn::_convolution_pointwise``,
  the kernel PyTorch's own compiler emits for the same pattern);
* a decoder convolution over ``cat(skip, up)`` is split by input channels into
  ``conv_a(skip) + conv_b(up)``, the sum and ReLU fused into the second, so nothing is
  concatenated;
* 2x2 max pooling is two elementwise maxima over channels-last views (the same values).

It is the same arithmetic reordered: float32 logits agree with the eager network to ~1e-5,
bfloat16 ones to bfloat16 rounding. On the demo it is 1.5x faster in bfloat16 and 1.2x in float32
(``scripts/bench_segment.py``). :func:`inference_network` checks the kernels on a small input once
and falls back to the eager network where they are missing or disagree.
"""

from __future__ import annotations

import logging
from typing import cast

import torch
from torch import nn

from lnpath.nn.int8 import Int8UNet, int8_enabled
from lnpath.nn.unet import UNet, fold_batch_norm, max_pool_2x2, pad_to_multiple

log = logging.getLogger(__name__)

_CHECK_ATOL = {torch.float32: 1e-3, torch.bfloat16: 0.25}
"""Largest logit difference from the eager network on the self-check input (bfloat16 keeps 8
bits of mantissa: logits of magnitude ~10 round by up to 0.06 per layer)."""

_INT8_CHECK_MEAN = 0.01
"""Largest mean probability difference from the float network on the self-check input (the
shipped calibration gives 5e-4; a kernel that misreads a scale or zero point gives > 0.1)."""

_Conv = tuple[torch.Tensor, torch.Tensor | None]


class FusedUNet(nn.Module):
    """Inference-only form of a BatchNorm-folded :class:`~lnpath.nn.unet.UNet` on the CPU.

    Args:
        folded: the output of :func:`~lnpath.nn.unet.fold_batch_norm` (batch norm only:
            instance norm depends on the input and cannot be folded).
        dtype: ``torch.bfloat16`` where the CPU has AVX-512 BF16, else ``torch.float32``.

    Takes and returns what the UNet does: normalised ``(N, 3, H, W)`` → logits ``(N, 1, H, W)``.
    """

    def __init__(self, folded: UNet, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        if not _is_folded(folded):
            raise ValueError("FusedUNet needs a UNet with its BatchNorm folded (batch norm only)")
        self.depth = folded.config.depth
        self.dtype = dtype
        self.down = [(_weights(b, 0, dtype), _weights(b, 3, dtype)) for b in folded.down]
        self.up = [_weights(u, None, dtype, channels_last=False) for u in folded.up]
        self.merge: list[tuple[_Conv, _Conv, _Conv]] = []
        for block in folded.merge:
            weight, bias = _weights(block, 0, dtype)
            half = weight.shape[1] // 2  # input channels: the skip first, then the upsampled
            skip = (_channels_last(weight[:, :half]), None)
            up = (_channels_last(weight[:, half:]), bias)
            self.merge.append((skip, up, _weights(block, 3, dtype)))
        self.head = _weights(folded.head, None, dtype)

    @torch.inference_mode()
    @torch.autocast("cpu", enabled=False)  # runs in its own dtype, whatever the caller's autocast
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        x = pad_to_multiple(x.to(self.dtype), 2**self.depth)
        x = x.contiguous(memory_format=torch.channels_last)
        skips = []
        for i, (first, second) in enumerate(self.down):
            x = _conv(_conv(x if i == 0 else max_pool_2x2(x), *first), *second)
            skips.append(x)
        x = skips.pop()
        for (weight, bias), (skip, up, second) in zip(self.up, self.merge, strict=True):
            upsampled = torch.nn.functional.conv_transpose2d(x, weight, bias, stride=2)
            partial = _conv(skips.pop(), *skip, relu=False)
            x = _conv(_conv_add_relu(upsampled, partial, *up), *second)
        return _conv(x, *self.head, relu=False)[..., :height, :width]


def inference_network(
    model: nn.Module,
    device: torch.device,
    dtype: torch.dtype,
    int8_ranges: dict[str, float] | None = None,
) -> nn.Module:
    """The fastest faithful form of ``model`` for inference on ``device``.

    BatchNorm is folded; on a CPU a UNet is further fused (:class:`FusedUNet`) once a check on
    a small input shows the oneDNN kernels present and in agreement with the eager network.
    Given its card's ``int8_ranges`` (:func:`lnpath.nn.int8.card_ranges`), a CPU with VNNI runs
    the int8 network instead, under the same kind of check. Anything else (CUDA, instance norm,
    a CPU build without oneDNN) gets the folded network.
    """
    folded = fold_batch_norm(model)
    if device.type != "cpu" or not isinstance(folded, UNet) or not _is_folded(folded):
        return folded
    if int8_ranges is not None and int8_enabled():
        quantised = _checked_int8(folded, int8_ranges)
        if quantised is not None:
            return quantised
    try:
        fused = FusedUNet(folded, dtype)
        probe = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
        with (
            torch.inference_mode(),
            torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16),
        ):
            expected = folded(probe).float()
            got = fused(probe).float()
    except (RuntimeError, AttributeError, NotImplementedError) as error:
        log.debug("fused U-Net unavailable (%s); using the eager network", error)
        return folded
    difference = float((got - expected).abs().max())
    if difference > _CHECK_ATOL.get(dtype, 1e-3):
        log.warning(
            "fused U-Net differs by %.3g from the eager one; using the eager one", difference
        )
        return folded
    return fused


def _checked_int8(folded: UNet, ranges: dict[str, float]) -> nn.Module | None:
    """The int8 network, if its kernels run here and give the float network's probabilities on
    a small input to within :data:`_INT8_CHECK_MEAN` on average."""
    probe = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    try:
        quantised = Int8UNet(folded, ranges)
        with torch.inference_mode():
            expected = torch.sigmoid(folded(probe))
            got = torch.sigmoid(quantised(probe))
    except (RuntimeError, AttributeError, NotImplementedError, ValueError, TypeError) as error:
        log.debug("int8 U-Net unavailable (%s); using the floating-point one", error)
        return None
    difference = float((got - expected).abs().mean())
    if not difference <= _INT8_CHECK_MEAN:  # NaN fails too
        log.warning(
            "int8 U-Net differs by %.3g on average from the float one; using the float one",
            difference,
        )
        return None
    return quantised


def _is_folded(model: UNet) -> bool:
    blocks = [cast(nn.Sequential, b) for b in [*model.down, *model.merge]]
    return all(isinstance(b[1], nn.Identity) and isinstance(b[4], nn.Identity) for b in blocks)


def _channels_last(weight: torch.Tensor) -> torch.Tensor:
    return weight.contiguous(memory_format=torch.channels_last)


def _weights(
    module: nn.Module, index: int | None, dtype: torch.dtype, channels_last: bool = True
) -> _Conv:
    """The weight and bias of ``module`` (or of its ``index``-th layer) in ``dtype``."""
    layer = module if index is None else cast(nn.Sequential, module)[index]
    if not isinstance(layer, nn.Conv2d | nn.ConvTranspose2d):
        raise ValueError(f"expected a convolution, found {type(layer).__name__}")
    weight = layer.weight.detach().to(dtype)
    bias = None if layer.bias is None else layer.bias.detach().to(dtype)
    return (_channels_last(weight) if channels_last else weight.contiguous()), bias


def _conv(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, relu: bool = True
) -> torch.Tensor:
    """Same-padded stride-1 convolution, with its ReLU fused when ``relu``."""
    pad = weight.shape[-1] // 2
    return torch.ops.mkldnn._convolution_pointwise(
        x, weight, bias, [pad, pad], [1, 1], [1, 1], 1, "relu" if relu else "none", [], ""
    )


def _conv_add_relu(
    x: torch.Tensor, other: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
) -> torch.Tensor:
    """``relu(conv(x) + other)`` in one oneDNN call."""
    pad = weight.shape[-1] // 2
    return torch.ops.mkldnn._convolution_pointwise.binary(
        x, other, weight, bias, [pad, pad], [1, 1], [1, 1], 1, "add", 1.0, "relu", [], ""
    )
