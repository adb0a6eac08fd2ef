"""A small multi-label CNN that reads one glomerulus crop and scores several lesions at once.

Labs train it on their own labels (``lnpath train-lesions``), usually a few hundred glomeruli, so
the default is a compact four-stage convolutional network (≈0.1 M parameters) that trains in
minutes on a CPU and does not memorise a small set; a torchvision ResNet-18 (from scratch, no
downloaded weights) is available for larger label sets. The configuration is stored in the model
card so the network can always be rebuilt exactly.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

ARCHITECTURES = ("small", "resnet18")


@dataclass(frozen=True)
class LesionNetConfig:
    """Architecture of a :class:`LesionNet`.

    Attributes:
        labels: Lesion names, one sigmoid output each, in output order.
        arch: ``"small"`` (4 conv stages) or ``"resnet18"`` (torchvision, random init).
        width: Channels of the first stage of ``"small"`` (doubled at each stage).
        input_size: Side in pixels of the square input crop.
    """

    labels: tuple[str, ...]
    arch: str = "small"
    width: int = 16
    input_size: int = 64

    def __post_init__(self) -> None:
        if self.arch not in ARCHITECTURES:
            raise ValueError(f"arch must be one of {ARCHITECTURES}, not {self.arch!r}")
        if not self.labels:
            raise ValueError("a lesion network needs at least one label")
        if self.width < 1 or self.input_size < 16:
            raise ValueError("width must be positive and input_size at least 16")

    def to_dict(self) -> dict[str, Any]:
        """The configuration as plain JSON types (for the model card)."""
        data = asdict(self)
        data["labels"] = list(self.labels)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LesionNetConfig:
        """Rebuild from :meth:`to_dict` output."""
        return cls(
            labels=tuple(data["labels"]),
            arch=str(data.get("arch", "small")),
            width=int(data.get("width", 16)),
            input_size=int(data.get("input_size", 64)),
        )


def _stage(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
    )


class LesionNet(nn.Module):
    """Crop (N, 3, S, S) float in [0, 1] -> one logit per label (N, L)."""

    def __init__(self, config: LesionNetConfig) -> None:
        super().__init__()
        self.config = config
        n_out = len(config.labels)
        if config.arch == "resnet18":
            from torchvision.models import resnet18

            self.body: nn.Module = resnet18(weights=None, num_classes=n_out)
        else:
            w = config.width
            self.body = nn.Sequential(
                _stage(3, w),
                _stage(w, 2 * w),
                _stage(2 * w, 4 * w),
                _stage(4 * w, 8 * w),
                nn.AdaptiveAvgPool2d(1),
                nn.Flatten(),
                nn.Dropout(0.2),
                nn.Linear(8 * w, n_out),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # centre the [0, 1] input so that the first layer starts near a useful operating point
        return self.body(x * 2.0 - 1.0)
