"""The shipped U-Net in 8-bit integers for CPUs with VNNI: four flips for about the price of two.

With flips (the default) segmentation pays four forward passes; each pass is memory-bound, and
its convolutions in bfloat16 run about half as fast as the same ones in int8 on VNNI (and AMX)
cores. Here every activation is stored as uint8 and every convolution is a oneDNN int8 kernel
(``onednn::qconv2d_pointwise``, what PyTorch's own int8 compiler path emits), with

* per-output-channel symmetric int8 weights, rounded from the BatchNorm-folded network;
* one scale per activation, fixed from the float network on the *training* tiles
  (:func:`calibrate`: the 99.99th percentile of ``|activation|`` per tile, the largest over the
  tiles) and stored in the model card's ``int8`` section, so every machine uses the same;
* the RGB bytes themselves as the first layer's input (the normalisation folded into the
  first convolution: no float copy of the tiles at all);
* the 2x2 stride-2 up-convolution as a 1x1 convolution to four times the channels and a pixel
  shuffle (moving 8-byte words);
* the decoder's ``conv(cat(skip, up))`` as ``conv_b(up) + conv_a(skip)``, summed and ReLU'd
  inside the second kernel, as :mod:`lnpath.nn.fused` does in floating point.

The card's ``int8`` section records the validation and test Dice of this network with four
flips (``scripts/quantize_glomeruli.py``). :func:`lnpath.nn.fused.inference_network` uses it only
where the kernels exist, the CPU has VNNI and a self-check agrees with the float network;
segmentation only with the flips, the configuration the rule validated.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from lnpath.core.env import switched_off
from lnpath.nn.predict import CPU_BFLOAT16_ENV
from lnpath.nn.unet import UNet, max_pool_2x2, pad_to_multiple

CPU_INT8_ENV = "LNPATH_CPU_INT8"
"""Set to 0 to keep CPUs with VNNI on the floating-point network (:func:`int8_enabled`)."""

PERCENTILE = 0.9999
"""Activation range: this quantile of ``|activation|`` per calibration tile (the largest over the
tiles). Of five quantiles from 0.999 to the maximum, it gives the four-flip probabilities that
agree best with the float network's on the training tiles (``scripts/quantize_glomeruli.py``):
a few outlying values stretch the maximum's scale for every other one."""

INPUT_SCALE = 1 / 63.75
"""RGB bytes as the network's input: ``(rgb / 255 - 0.5) / 0.25 = (rgb - 127.5) / 63.75``."""
INPUT_ZERO_POINT = 128
"""The byte read as zero; the half-level offset from 127.5 is added to the first bias."""

_Weights = tuple[torch.Tensor, torch.Tensor | None]
_UP_KEYS = (("skip", ""), ("up", ""), ("merge", "a"), ("merge", "b"))
"""The ranges of each decoder level ``j``: ``skip{j}``, ``up{j}``, ``merge{j}a``, ``merge{j}b``."""


def int8_enabled() -> bool:
    """Whether the int8 network may run here: a CPU with VNNI (AVX512-VNNI, AVX-VNNI or AMX),
    neither ``LNPATH_CPU_INT8=0`` nor ``LNPATH_CPU_BFLOAT16=0`` (float32 everywhere) set."""
    if switched_off(CPU_INT8_ENV) or switched_off(CPU_BFLOAT16_ENV):
        return False
    check = getattr(torch.cpu, "_is_vnni_supported", None)
    return bool(check is not None and check() and hasattr(torch.ops.onednn, "qconv2d_pointwise"))


@dataclass(frozen=True)
class _Layout:
    """The folded network's weights in the order and shapes the int8 network computes them."""

    depth: int
    down: list[tuple[_Weights, _Weights]]
    up: list[_Weights]  # 1x1 convolutions to 4x the channels (before the pixel shuffle)
    merge: list[tuple[_Weights, _Weights, _Weights]]  # (skip half, upsampled half, second)
    head: _Weights

    @classmethod
    def of(cls, folded: UNet) -> _Layout:
        def conv(block: nn.Module, index: int | None) -> _Weights:
            layer = cast(nn.Conv2d, block if index is None else cast(nn.Sequential, block)[index])
            bias = None if layer.bias is None else layer.bias.detach().float()
            return layer.weight.detach().float(), bias

        def up_as_1x1(layer: nn.Module) -> _Weights:
            weight = cast(nn.ConvTranspose2d, layer).weight.detach().float()  # (in, out, 2, 2)
            bias = cast(nn.ConvTranspose2d, layer).bias
            channels_in, channels_out = weight.shape[:2]  # outputs ordered (row, column, channel)
            as_1x1 = weight.permute(2, 3, 1, 0).reshape(4 * channels_out, channels_in, 1, 1)
            return as_1x1, None if bias is None else bias.detach().float().repeat(4)

        merge: list[tuple[_Weights, _Weights, _Weights]] = []
        for block in folded.merge:
            weight, bias = conv(block, 0)
            half = weight.shape[1] // 2  # input channels: the skip first, then the upsampled
            merge.append(((weight[:, :half], None), (weight[:, half:], bias), conv(block, 3)))
        return cls(
            folded.config.depth,
            [(conv(b, 0), conv(b, 3)) for b in folded.down],
            [up_as_1x1(u) for u in folded.up],
            merge,
            conv(folded.head, None),
        )

    def forward(
        self,
        x: torch.Tensor,
        ranges: dict[str, float] | None = None,
        percentile: float = PERCENTILE,
    ) -> torch.Tensor:
        """The float network in this decomposition (the same logits to 1e-5); with ``ranges``,
        raises each activation's range there to this input's ``percentile``."""

        def record(key: str, y: torch.Tensor) -> None:
            if ranges is not None:
                ranges[key] = max(ranges.get(key, 0.0), _quantile_of_magnitude(y, percentile))

        def conv(x: torch.Tensor, weights: _Weights, relu: bool, key: str) -> torch.Tensor:
            y = F.conv2d(x, weights[0], weights[1], padding=weights[0].shape[-1] // 2)
            y = torch.relu(y) if relu else y
            record(key, y)
            return y

        height, width = x.shape[-2:]
        x = pad_to_multiple(x, 2**self.depth)
        skips = []
        for i, (first, second) in enumerate(self.down):
            x = conv(x if i == 0 else F.max_pool2d(x, 2), first, True, f"down{i}a")
            x = conv(x, second, True, f"down{i}b")
            skips.append(x)
        x = skips.pop()
        for j, (up, (skip, upsampled, second)) in enumerate(zip(self.up, self.merge, strict=True)):
            partial = conv(skips.pop(), skip, False, f"skip{j}")
            x = _pixel_shuffle(conv(x, up, False, f"up{j}"))
            summed = F.conv2d(x, upsampled[0], upsampled[1], padding=1) + partial
            x = torch.relu(summed)
            record(f"merge{j}a", x)
            x = conv(x, second, True, f"merge{j}b")
        return conv(x, self.head, False, "head")[..., :height, :width]


def _quantile_of_magnitude(y: torch.Tensor, percentile: float) -> float:
    flat = y.detach().abs().flatten()
    k = max(1, round(flat.numel() * (1 - percentile)))  # 1.0: the maximum
    return float(torch.topk(flat, k).values[-1])


@torch.inference_mode()
def calibrate(
    folded: UNet, batches: Iterable[torch.Tensor], percentile: float = PERCENTILE
) -> dict[str, float]:
    """Each activation's range over normalised float ``(N, 3, H, W)`` batches, for
    :class:`Int8UNet`; run on training tiles only (the card says which)."""
    layout = _Layout.of(folded)
    ranges: dict[str, float] = {}
    for x in batches:
        layout.forward(x.float(), ranges, percentile)
    return {key: round(value, 6) for key, value in ranges.items()}


@dataclass(frozen=True)
class _QConv:
    """One prepacked int8 convolution with the scales of its input and output."""

    packed: torch.Tensor
    weight_scales: torch.Tensor
    weight_zero_points: torch.Tensor
    bias: torch.Tensor | None
    padding: int
    input_scale: float
    input_zero_point: int
    output_scale: float
    output_zero_point: int

    @classmethod
    def pack(
        cls, weights: _Weights, input_q: tuple[float, int], output_q: tuple[float, int]
    ) -> _QConv:
        weight, bias = weights
        scales = weight.abs().amax(dim=(1, 2, 3)).clamp_min(1e-12) / 127.0
        quantised = torch.round(weight / scales.view(-1, 1, 1, 1)).clamp(-127, 127)
        padding = weight.shape[-1] // 2
        packed = torch.ops.onednn.qconv_prepack(
            quantised.to(torch.int8), scales, input_q[0], input_q[1],
            [1, 1], [padding, padding], [1, 1], 1, None,
        )  # fmt: skip
        zeros = torch.zeros(len(scales), dtype=torch.int64)
        return cls(packed, scales, zeros, bias, padding, *input_q, *output_q)

    def __call__(
        self, x: torch.Tensor, relu: bool = True, output_dtype: torch.dtype | None = None
    ) -> torch.Tensor:
        return torch.ops.onednn.qconv2d_pointwise(
            x, self.input_scale, self.input_zero_point, self.packed, self.weight_scales,
            self.weight_zero_points, self.bias, [1, 1], [self.padding] * 2, [1, 1], 1,
            self.output_scale, self.output_zero_point, output_dtype,
            "relu" if relu else "none", [], "",
        )  # fmt: skip

    def add_relu(self, x: torch.Tensor, accumulated: torch.Tensor, other: _QConv) -> torch.Tensor:
        """``relu(self(x) + accumulated)`` in one kernel, ``accumulated`` being ``other``'s
        output (overwritten in place)."""
        return torch.ops.onednn.qconv2d_pointwise.binary(
            x, self.input_scale, self.input_zero_point, self.packed, self.weight_scales,
            self.weight_zero_points, accumulated, self.bias, [1, 1], [self.padding] * 2, [1, 1],
            1, self.output_scale, self.output_zero_point, None, other.output_scale,
            other.output_zero_point, "sum", 1.0, "relu", [], "",
        )  # fmt: skip


class Int8UNet(nn.Module):
    """Inference-only int8 form of a BatchNorm-folded :class:`~lnpath.nn.unet.UNet`.

    Args:
        folded: the output of :func:`~lnpath.nn.unet.fold_batch_norm`.
        ranges: each activation's range, from :func:`calibrate` (the card's ``int8`` section).

    Takes RGB bytes ``(N, 3, H, W)`` uint8 (or, like the UNet, normalised floats) and returns
    float32 logits ``(N, 1, H, W)``.
    """

    takes_bytes = True
    """:func:`~lnpath.nn.predict.predict_batch` hands it the RGB bytes, not normalised floats."""
    precision = "int8"

    def __init__(self, folded: UNet, ranges: dict[str, float]) -> None:
        super().__init__()
        # results record it beside the weights' sha256: the ranges shape the output too
        canonical = json.dumps({k: float(v) for k, v in sorted(ranges.items())})
        self.ranges_sha256 = hashlib.sha256(canonical.encode()).hexdigest()
        layout = _Layout.of(folded)
        missing = activation_keys(layout.depth) - set(ranges)
        if missing:
            raise ValueError(f"int8 ranges lack {sorted(missing)}")
        unusable = sorted(k for k, v in ranges.items() if not (math.isfinite(v) and v > 0))
        if unusable:  # a scale of 0, NaN or below 0 misreads every byte after it
            raise ValueError(f"int8 ranges of {unusable} are not finite positive numbers")
        self.depth = layout.depth

        def relu_out(key: str) -> tuple[float, int]:
            return float(ranges[key]) / 255.0, 0

        def signed_out(key: str) -> tuple[float, int]:
            return float(ranges[key]) / 127.0, 128

        first_weight, first_bias = layout.down[0][0]
        offset = first_weight.sum(dim=(1, 2, 3)) * ((INPUT_ZERO_POINT - 127.5) * INPUT_SCALE)
        base = torch.zeros(len(offset)) if first_bias is None else first_bias
        source = (INPUT_SCALE, INPUT_ZERO_POINT)
        self.down: list[tuple[_QConv, _QConv]] = []
        for i, (first, second) in enumerate(layout.down):
            first = (first[0], base + offset) if i == 0 else first
            a = _QConv.pack(first, source, relu_out(f"down{i}a"))
            b = _QConv.pack(second, relu_out(f"down{i}a"), relu_out(f"down{i}b"))
            self.down.append((a, b))
            source = relu_out(f"down{i}b")
        self.up: list[_QConv] = []
        self.merge: list[tuple[_QConv, _QConv, _QConv]] = []
        for j, (up, (skip, upsampled, second)) in enumerate(
            zip(layout.up, layout.merge, strict=True)
        ):
            self.up.append(_QConv.pack(up, source, signed_out(f"up{j}")))
            skip_source = relu_out(f"down{layout.depth - 1 - j}b")
            self.merge.append(
                (
                    _QConv.pack(skip, skip_source, signed_out(f"skip{j}")),
                    _QConv.pack(upsampled, signed_out(f"up{j}"), relu_out(f"merge{j}a")),
                    _QConv.pack(second, relu_out(f"merge{j}a"), relu_out(f"merge{j}b")),
                )
            )
            source = relu_out(f"merge{j}b")
        self.head = _QConv.pack(layout.head, source, (1.0, 0))

    @torch.inference_mode()
    @torch.autocast("cpu", enabled=False)
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        x = _as_bytes(x, 2**self.depth).contiguous(memory_format=torch.channels_last)
        skips = []
        for i, (first, second) in enumerate(self.down):
            x = second(first(x if i == 0 else max_pool_2x2(x)))
            skips.append(x)
        x = skips.pop()
        for up, (skip, upsampled, second) in zip(self.up, self.merge, strict=True):
            partial = skip(skips.pop(), relu=False)
            x = upsampled.add_relu(_pixel_shuffle(up(x, relu=False)), partial, skip)
            x = second(x)
        return self.head(x, relu=False, output_dtype=torch.float32)[..., :height, :width]


def _as_bytes(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """RGB bytes padded to ``multiple`` as the UNet pads (normalised floats are turned back)."""
    height, width = x.shape[-2:]
    if x.dtype == torch.uint8 and height % multiple == 0 and width % multiple == 0:
        return x
    normalised = (x.float() - 127.5) * INPUT_SCALE if x.dtype == torch.uint8 else x.float()
    padded = pad_to_multiple(normalised, multiple)
    return torch.round(padded / INPUT_SCALE + 127.5).clamp(0, 255).to(torch.uint8)


def _pixel_shuffle(x: torch.Tensor) -> torch.Tensor:
    """``(N, 4C, H, W)`` with channels ordered (row, column, channel) of each 2x2 block →
    ``(N, C, 2H, 2W)``, channels-last (one copy).

    In that order each output pixel's channels are one contiguous run of the input, so bytes
    move as 8-byte words where the channel count allows (4x faster at 8 channels)."""
    n, channels4, height, width = x.shape
    pixels = x.permute(0, 2, 3, 1)
    words = x.dtype == torch.uint8 and channels4 % 32 == 0 and pixels.is_contiguous()
    if words:
        pixels = pixels.view(torch.int64)
    blocks = pixels.reshape(n, height, width, 2, 2, -1).permute(0, 1, 3, 2, 4, 5)
    shuffled = blocks.reshape(n, 2 * height, 2 * width, -1)
    return (shuffled.view(torch.uint8) if words else shuffled).permute(0, 3, 1, 2)


def activation_keys(depth: int) -> set[str]:
    """Every activation of a ``depth``-level U-Net's int8 form that needs a range."""
    down = {f"down{i}{half}" for i in range(depth + 1) for half in "ab"}
    up = {f"{name}{j}{half}" for j in range(depth) for name, half in _UP_KEYS}
    return down | up | {"head"}


def section_problem(card: dict[str, Any], depth: int) -> str | None:
    """What is malformed in a model card's ``int8`` section, in a few words (None: absent or
    sound), so a card edited by hand is refused at load as a bad ``mpp`` is, not mid-slide.

    The ranges are checked only where :func:`card_ranges` would use them: a lab's card copied
    from the shipped one may keep a section for other weights (or another depth) it never reads.
    """
    if "int8" not in card:
        return None
    section = card["int8"]
    if not isinstance(section, dict):
        return "its int8 section is not a JSON object"
    if not isinstance(section.get("adopted", False), bool):
        return f"int8.adopted must be true or false (got {section['adopted']!r})"
    if _section_in_use(card) is None:
        return None
    ranges = section.get("activation_ranges")
    if not isinstance(ranges, dict):
        return "int8.activation_ranges must be a JSON object of activation: range"
    missing = sorted(activation_keys(depth) - set(ranges))
    if missing:
        return f"int8.activation_ranges lacks {', '.join(missing)}"
    for key, value in ranges.items():
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if not (number and math.isfinite(value) and value > 0):
            return f"int8.activation_ranges.{key} must be a positive number (got {value!r})"
    return None


def card_ranges(card: dict[str, Any]) -> dict[str, float] | None:
    """The activation ranges a model card's ``int8`` section holds, if it passed its rule for
    these very weights: a card copied onto fine-tuned weights (a lab's model starts from the
    shipped card) names other weights, and their int8 form was never validated."""
    section = _section_in_use(card)
    ranges = None if section is None else section.get("activation_ranges")
    if not isinstance(ranges, dict):
        return None
    return {str(k): float(v) for k, v in ranges.items()}


def _section_in_use(card: dict[str, Any]) -> dict[str, Any] | None:
    """The card's ``int8`` section if it was adopted for these very weights, else None."""
    section = card.get("int8")
    if not isinstance(section, dict) or section.get("adopted") is not True:
        return None
    return section if section.get("weights_sha256") == card.get("sha256") else None
