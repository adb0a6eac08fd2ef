"""Shipped and lab-trained models: a folder with weights + ``card.json``, verified by sha256.

A model folder holds ``weights.pt`` (a ``torch.save``'d fp16 state_dict) and ``card.json``
(architecture, spatial contract, preprocessing, training data, metrics, sha256). Loading checks the
hash before unpickling anything and unpickles with ``weights_only=True``, so a tampered or foreign
file is refused instead of executed. Nothing is ever downloaded.

Named models are looked up along :func:`model_search_path`: ``$LNPATH_MODELS`` (a lab's own
models), the ``models/`` folder of a source checkout (editable installs and development), then the
copy of that folder a wheel carries as ``lnpath/_models`` (non-editable installs).
"""

from __future__ import annotations

import io
import json
import math
import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lnpath.core.errors import ModelError
from lnpath.io.atomic import atomic_dir, write_json
from lnpath.io.hashing import file_sha256
from lnpath.nn.int8 import section_problem
from lnpath.nn.unet import UNet, UNetConfig
from lnpath.wsi.slide import MPP_RANGE

DEFAULT_MODEL = "glomeruli-unet-pas"
WEIGHTS_FILE = "weights.pt"
CARD_FILE = "card.json"
ENV_VAR = "LNPATH_MODELS"
_CHECKOUT = Path(__file__).resolve().parents[2]
_BUNDLED = Path(__file__).resolve().parents[1] / "_models"


def model_search_path() -> list[Path]:
    """The folders a model *name* is looked up in, first match first.

    1. ``$LNPATH_MODELS``, when set: a lab's own models shadow the shipped ones.
    2. ``models/`` of the source checkout this package runs from (editable installs, tests); only
       when ``pyproject.toml`` sits beside it, so an installed package never reads a stray
       ``site-packages/models``.
    3. ``lnpath/_models`` of an installed wheel: the build maps the checkout's ``models/`` there
       (see ``pyproject.toml``), so the shipped models sit beside the code in every install scheme.
    """
    path: list[Path] = []
    env = os.environ.get(ENV_VAR)
    if env:
        path.append(Path(env))
    if (_CHECKOUT / "pyproject.toml").is_file():
        path.append(_CHECKOUT / "models")
    path.append(_BUNDLED)
    return path


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


def resolve_model_path(name: str | os.PathLike[str], kind: str = "model") -> Path:
    """A model folder from a path to one, or a name looked up along :func:`model_search_path`.

    Args:
        name: a folder holding ``card.json``, or the name of one in the search path.
        kind: what the caller calls the model (``"lesion model"``), for the error message.

    Raises:
        ModelError: ``name`` is not text or a path, or no folder with a ``card.json`` at that
            path or under that name anywhere in the search path; the message lists the folders
            searched and the models they hold.
    """
    if not isinstance(name, str | os.PathLike):  # None, a list: one line, not pathlib's TypeError
        raise ModelError(f"{kind}: expected a name or a folder path, got {type(name).__name__}")
    candidate = Path(name)
    if (candidate / CARD_FILE).is_file():
        return candidate
    searched = model_search_path()
    for folder in searched:
        if (folder / candidate / CARD_FILE).is_file():
            return folder / candidate
    known = sorted(
        {card.parent.name for folder in searched for card in folder.glob(f"*/{CARD_FILE}")}
    )
    raise ModelError(
        f"unknown {kind} {str(name)!r}: no {kind} folder with a {CARD_FILE} at that path or in "
        f"{', '.join(map(str, searched))} (known: {', '.join(known) or 'none'})"
    )


def read_card(folder: str | Path) -> dict[str, Any]:
    """The ``card.json`` of a model folder: the one reader of model cards.

    A card's ``mpp`` (the µm/px the model reads at), when given, must be a plausible number:
    0 or a negative value is refused instead of silently becoming a default.

    Raises:
        ModelError: the card is missing, not a JSON object, or its ``mpp`` is not plausible.
    """
    path = Path(folder) / CARD_FILE
    try:
        card = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(f"{path}: unreadable model card ({exc})") from None
    if not isinstance(card, dict):
        raise ModelError(f"{path}: model card is not a JSON object")
    mpp = card.get("mpp")
    if mpp is not None:
        if not isinstance(mpp, int | float) or isinstance(mpp, bool) or not math.isfinite(mpp):
            raise ModelError(f"{path}: mpp must be a number of µm/px (got {mpp!r})")
        if not MPP_RANGE[0] <= mpp <= MPP_RANGE[1]:
            raise ModelError(
                f"{path}: mpp {mpp:g} µm/px is outside {MPP_RANGE[0]:g}-{MPP_RANGE[1]:g}"
            )
    return card


def load_model(name: str | os.PathLike[str] = DEFAULT_MODEL) -> SegmentationModel:
    """Load a model by name (see :func:`model_search_path`) or folder path, verifying its sha256.

    Raises:
        ModelError: Unknown name, unreadable card (a malformed ``int8`` section included), a
            weights file whose sha256 differs from the card's, or weights that do not fit the
            card's architecture.
    """
    folder = resolve_model_path(name)
    card = read_card(folder)
    if card.get("kind") is not None and "architecture" not in card:  # lesion models have a kind
        raise ModelError(
            f"{folder / CARD_FILE}: a {card['kind']} model, not a glomerulus segmentation model "
            "(a lesion model is given as --lesion-model, lesion_model= in Python)"
        )
    try:
        weights = folder / card.get("weights", WEIGHTS_FILE)
        expected = str(card["sha256"])
        config = UNetConfig.from_dict(card["architecture"]["config"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelError(f"{folder / CARD_FILE}: unreadable model card ({exc})") from exc
    problem = section_problem(card, config.depth)
    if problem is not None:  # refused like a bad mpp: a hand edit never surfaces mid-slide
        raise ModelError(f"{folder / CARD_FILE}: {problem}")
    if not weights.is_file():
        raise ModelError(f"{weights}: weights file missing")
    actual = file_sha256(weights)
    if actual != expected:
        raise ModelError(
            f"{weights}: sha256 {actual[:12]}… does not match the card's {expected[:12]}… "
            "(tampered or foreign file; refusing to load)"
        )
    state = load_state_dict(weights)
    try:
        network = UNet(config)
        network.load_state_dict(
            {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
        )
    except Exception as exc:  # any unpickling / shape error means the file is not this model
        raise ModelError(
            f"{weights}: not valid weights for this model card ({misfit(UNet(config), state)})"
        ) from exc
    network.eval()
    return SegmentationModel(folder.name, folder, card, actual, network)


def load_state_dict(weights: Path) -> Any:
    """Unpickle a weights file as plain tensors only (``weights_only``), nothing else.

    Raises:
        ModelError: the file is not a plain state dict (e.g. a pickled object); the message never
            suggests loading it another way, since that could run code from the file.
    """
    refusal = ModelError(
        f"{weights}: not a plain state dict of tensors; lnpath loads nothing else from a "
        "weights file (it could run code)"
    )
    try:
        with (
            warnings.catch_warnings()
        ):  # torch's warnings about foreign pickles advise unsafe loads
            warnings.simplefilter("ignore")
            state = torch.load(weights, map_location="cpu", weights_only=True)
    except Exception:  # any unpickling error: torch's own message advises the unsafe way
        raise refusal from None
    # weights_only also admits a bare tensor or a list: not a state dict either
    if not isinstance(state, Mapping) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise refusal
    return state


def misfit(network: torch.nn.Module, state: Mapping[str, Any]) -> str:
    """Why ``state`` does not fit ``network``, in a few words: torch's own message lists every
    key over many lines."""
    expected = network.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [
        k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)
    ]
    parts = [
        f"{len(keys)} {what} (first {keys[0]})"
        for keys, what in (
            (missing, "missing keys"),
            (unexpected, "unexpected keys"),
            (shapes, "tensors of another shape"),
        )
        if keys
    ]
    return "; ".join(parts) or "incompatible tensors"


def write_weights(state: dict[str, Any], path: Path) -> None:
    """``torch.save`` ``state`` to ``path`` through memory, so a disk-full write is an OSError.

    Saving straight to a path fails in torch's zip writer as a RuntimeError that names no file;
    a plain write of the bytes fails as the system says (ENOSPC, EFBIG), which the atomic writer
    turns into one line. Weights are a few MB.
    """
    buffer = io.BytesIO()
    torch.save(state, buffer)
    path.write_bytes(buffer.getvalue())


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
    with atomic_dir(folder, overwrite=overwrite, marker="card.json") as tmp:
        state = {
            k: (v.half() if v.is_floating_point() else v) for k, v in network.state_dict().items()
        }
        write_weights(state, tmp / WEIGHTS_FILE)
        full = dict(card)
        full["name"] = folder.name
        full["architecture"] = {"type": "UNet", "config": network.config.to_dict()}
        full["weights"] = WEIGHTS_FILE
        full["weights_dtype"] = "float16"
        full["sha256"] = file_sha256(tmp / WEIGHTS_FILE)
        write_json(tmp / CARD_FILE, full)
    return folder
