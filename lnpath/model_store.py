"""Shipped and lab-trained models: a folder with weights + ``card.json``, verified by sha256.

A model folder holds ``weights.pt`` (a ``torch.save``'d fp16 state_dict) and ``card.json``
(architecture, spatial contract, preprocessing, training data, metrics, sha256). Loading checks the
hash before unpickling anything and unpickles with ``weights_only=True``, so a tampered or foreign
file is refused instead of executed. Nothing is ever downloaded.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ._io import atomic_dir, write_json
from .errors import ModelError
from .nn.unet import UNet, UNetConfig

DEFAULT_MODEL = "glomeruli-unet-pas"
WEIGHTS_FILE = "weights.pt"
CARD_FILE = "card.json"


def models_dir() -> Path:
    """Where named models live: ``$LNPATH_MODELS`` or the ``models/`` folder of the checkout."""
    env = os.environ.get("LNPATH_MODELS")
    return Path(env) if env else Path(__file__).resolve().parents[1] / "models"


@dataclass
class SegmentationModel:
    """A loaded network with its card.

    Attributes:
        name: Folder name (e.g. ``glomeruli-unet-pas``).
        path: Model folder.
        card: The parsed ``card.json``.
        sha256: Verified hash of the weights file.
        network: The U-Net in eval mode on CPU.
    """

    name: str
    path: Path
    card: dict[str, Any]
    sha256: str
    network: UNet

    @property
    def mpp(self) -> float:
        """Working resolution (µm/px) the network was trained at."""
        return float(self.card["mpp"])

    @property
    def patch(self) -> int:
        """Inference tile size in px at :attr:`mpp`."""
        return int(self.card["inference"]["patch"])

    @property
    def overlap(self) -> int:
        """Overlap between neighbouring inference tiles in px at :attr:`mpp`."""
        return int(self.card["inference"]["overlap"])

    @property
    def postprocess(self) -> dict[str, float]:
        """Post-processing parameters (threshold, min_area_um2, split_depth_um)."""
        return dict(self.card["postprocess"])


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def resolve_model_path(name: str | os.PathLike[str]) -> Path:
    """A model folder from a name in :func:`models_dir` or a path to a folder.

    Raises:
        ModelError: Neither exists.
    """
    candidate = Path(name)
    if (candidate / CARD_FILE).is_file():
        return candidate
    named = models_dir() / str(name)
    if (named / CARD_FILE).is_file():
        return named
    known = sorted(p.name for p in models_dir().glob(f"*/{CARD_FILE}") for p in [p.parent])
    raise ModelError(
        f"unknown model {str(name)!r}: no {CARD_FILE} there or in {models_dir()} "
        f"(known: {', '.join(known) or 'none'})"
    )


def load_model(name: str | os.PathLike[str] = DEFAULT_MODEL) -> SegmentationModel:
    """Load a model by name (``models/NAME``) or folder path, verifying its weights' sha256.

    Raises:
        ModelError: Unknown name, unreadable card, a weights file whose sha256 differs from the
            card's, or weights that do not fit the card's architecture.
    """
    folder = resolve_model_path(name)
    try:
        card = json.loads((folder / CARD_FILE).read_text(encoding="utf-8"))
        weights = folder / card.get("weights", WEIGHTS_FILE)
        expected = str(card["sha256"])
        config = UNetConfig.from_dict(card["architecture"]["config"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelError(f"{folder / CARD_FILE}: unreadable model card ({exc})") from exc
    if not weights.is_file():
        raise ModelError(f"{weights}: weights file missing")
    actual = sha256_file(weights)
    if actual != expected:
        raise ModelError(
            f"{weights}: sha256 {actual[:12]}… does not match the card's {expected[:12]}… "
            "(tampered or foreign file; refusing to load)"
        )
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
        network = UNet(config)
        network.load_state_dict(
            {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
        )
    except Exception as exc:  # any unpickling / shape error means the file is not this model
        raise ModelError(f"{weights}: not valid weights for this model card ({exc})") from exc
    network.eval()
    return SegmentationModel(folder.name, folder, card, actual, network)


def save_model(
    folder: str | os.PathLike[str],
    network: UNet,
    card: dict[str, Any],
    overwrite: bool = False,
) -> Path:
    """Write ``weights.pt`` (fp16 state_dict) and ``card.json`` (with architecture and sha256).

    The folder appears atomically: a crash mid-write leaves any previous model untouched.
    """
    folder = Path(folder)
    with atomic_dir(folder, overwrite=overwrite) as tmp:
        state = {
            k: (v.half() if v.is_floating_point() else v) for k, v in network.state_dict().items()
        }
        torch.save(state, tmp / WEIGHTS_FILE)
        full = dict(card)
        full["name"] = folder.name
        full["architecture"] = {"type": "UNet", "config": network.config.to_dict()}
        full["weights"] = WEIGHTS_FILE
        full["weights_dtype"] = "float16"
        full["sha256"] = sha256_file(tmp / WEIGHTS_FILE)
        write_json(tmp / CARD_FILE, full)
    return folder
