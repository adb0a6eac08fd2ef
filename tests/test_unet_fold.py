"""Folding BatchNorm into the convolutions gives the shipped model's logits, on a real tile."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from lnpath.models.store import load_model
from lnpath.nn.predict import to_tensor
from lnpath.nn.unet import fold_batch_norm


def test_folded_model_gives_the_same_logits_and_leaves_the_original(bueno_dir: Path) -> None:
    model = load_model("glomeruli-unet-pas")
    name = json.loads((bueno_dir / "split.json").read_text())["train"][0]
    image = np.asarray(Image.open(bueno_dir / "images" / f"{name}.png").convert("RGB"))
    image = np.asarray(Image.fromarray(image).resize((512, 512)))
    x = to_tensor(image[None], torch.device("cpu"))
    before = {k: v.clone() for k, v in model.network.state_dict().items()}
    folded = fold_batch_norm(model.network)
    with torch.no_grad():
        expected, got = model.network(x), folded(x)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    assert torch.allclose(got, expected, atol=1e-3)
    assert float((got > 0).float().mean()) > 0.01  # the tile has glomeruli: a real comparison
    after = model.network.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
