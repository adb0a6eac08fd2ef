"""Model folders: sha256 verification, weights_only loading, clear refusals."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import pytest
import torch

from lnpath.core.errors import ModelError
from lnpath.io.hashing import file_sha256
from lnpath.models.store import (
    CARD_FILE,
    DEFAULT_MODEL,
    WEIGHTS_FILE,
    load_model,
    resolve_model_path,
    save_model,
)
from lnpath.nn import UNet, UNetConfig

CARD = {"mpp": 1.0, "inference": {"patch": 64, "overlap": 8}, "postprocess": {"threshold": 0.5}}


@pytest.fixture
def small_model(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    return save_model(tmp_path / "tiny", UNet(UNetConfig(width=4, depth=2)), CARD)


def test_shipped_model_loads_and_matches_its_card() -> None:
    folder = resolve_model_path(DEFAULT_MODEL)  # ships in the repository: absent is a failure
    model = load_model()
    assert model.name == DEFAULT_MODEL
    assert model.sha256 == model.card["sha256"] == file_sha256(folder / WEIGHTS_FILE)
    assert (folder / WEIGHTS_FILE).stat().st_size < 10 * 2**20  # ships in the repository
    assert model.mpp == model.card["mpp"] and 0 <= model.overlap < model.patch
    for key in ("test", "iou_threshold"):
        assert key in model.card["metrics"]
    assert "CC BY 4.0" in model.card["data_licence"]


def test_save_and_load_round_trip(small_model: Path) -> None:
    model = load_model(small_model)
    assert model.name == "tiny" and model.patch == 64
    card = json.loads((small_model / CARD_FILE).read_text())
    assert card["architecture"]["config"] == UNetConfig(width=4, depth=2).to_dict()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert model.network(x).shape == (1, 1, 32, 32)


def test_tampered_weights_are_refused(small_model: Path) -> None:
    weights = small_model / WEIGHTS_FILE
    data = bytearray(weights.read_bytes())
    data[-10] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ModelError, match=r"sha256 .* does not match") as info:
        load_model(small_model)
    assert "\n" not in str(info.value) and str(weights) in str(info.value)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_foreign_pickle_is_refused_even_with_a_matching_hash(small_model: Path) -> None:
    weights = small_model / WEIGHTS_FILE
    weights.write_bytes(pickle.dumps(shutil.rmtree))  # would be callable on unpickling
    card = json.loads((small_model / CARD_FILE).read_text())
    card["sha256"] = file_sha256(weights)
    (small_model / CARD_FILE).write_text(json.dumps(card))
    with pytest.raises(ModelError, match="not a plain state dict"):
        load_model(small_model)


def test_weights_of_another_network_are_one_line(small_model: Path) -> None:
    """torch's load_state_dict message lists every key, over several lines."""
    weights = small_model / WEIGHTS_FILE
    other = UNet(UNetConfig(width=8, depth=2)).state_dict()
    torch.save(other, weights)
    card = json.loads((small_model / CARD_FILE).read_text())
    card["sha256"] = file_sha256(weights)
    (small_model / CARD_FILE).write_text(json.dumps(card))
    with pytest.raises(ModelError, match="not valid weights for this model card") as info:
        load_model(small_model)
    assert "\n" not in str(info.value) and "tensors of another shape" in str(info.value)
    torch.save([torch.zeros(2)], weights)  # weights_only loads it, but it is no state dict
    card["sha256"] = file_sha256(weights)
    (small_model / CARD_FILE).write_text(json.dumps(card))
    with pytest.raises(ModelError, match="not a plain state dict"):
        load_model(small_model)


def test_unknown_model_and_broken_card(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="unknown model 'no-such-model'"):
        load_model("no-such-model")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / CARD_FILE).write_text("{not json")
    with pytest.raises(ModelError, match="unreadable model card"):
        load_model(tmp_path / "bad")


def test_existing_folder_is_not_overwritten_silently(small_model: Path) -> None:
    from lnpath.core.errors import InputError

    with pytest.raises(InputError, match="already exists"):
        save_model(small_model, UNet(UNetConfig(width=4, depth=2)), CARD)


@pytest.mark.parametrize("name", [None, 5, ["glomeruli-unet-pas"]])
def test_a_model_that_is_not_a_name_is_one_line(name: object) -> None:
    """None or a list reached pathlib (``TypeError: expected str, bytes or os.PathLike``)."""
    from lnpath.analysis.lesion_models import load_lesion_model

    with pytest.raises(ModelError, match=r"^model: expected a name or a folder path"):
        load_model(name)  # type: ignore[arg-type]
    with pytest.raises(ModelError, match=r"^lesion model: expected a name or a folder path"):
        load_lesion_model(name)  # type: ignore[arg-type]
