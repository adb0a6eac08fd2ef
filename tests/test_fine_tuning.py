"""The public fine-tuning API (notebook 04, ``lnpath train-glomeruli``): labelled tiles in, a
model folder with an honest card out, and one clear lnpath error for what cannot train."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import lnpath
from lnpath.core.errors import InputError, ModelError
from lnpath.models.store import SegmentationModel
from lnpath.nn.metrics import SegmentationScore
from lnpath.training.fine_tuning import fine_tune, fine_tune_config
from tests.conftest import TrainDemo, held_test_split_tiles

BUENO_MPP = 0.5
TWO_GLOMERULI = "10177"


@pytest.fixture(scope="module")
def base() -> SegmentationModel:
    return lnpath.load_model("glomeruli-unet-pas")


@pytest.fixture(scope="module")
def tiles(bueno_dir: Path) -> list[lnpath.LabelledImage]:
    """Two training-split tiles with glomeruli, cut to 512 px (256 px at the model's 1 µm/px)."""
    split = json.loads((bueno_dir / "split.json").read_text())
    out = []
    for t in lnpath.load_labelled_tiles(bueno_dir, split["train"][:4], BUENO_MPP):
        if not t.mask.any():
            continue
        y, x = (min(max(0, round(c) - 256), 512) for c in np.argwhere(t.mask).mean(axis=0))
        cut = np.s_[y : y + 512, x : x + 512]
        if t.mask[cut].any():
            out.append(lnpath.LabelledImage(t.name, t.image[cut], t.mask[cut], t.mpp))
    assert len(out) >= 2
    return out[:2]


def _tile_folder(folder: Path, image_size: tuple[int, int], mask_size: tuple[int, int]) -> Path:
    (folder / "images").mkdir(parents=True)
    (folder / "masks").mkdir()
    Image.new("RGB", image_size, "white").save(folder / "images" / "a.png")
    Image.new("RGB", mask_size, "red").save(folder / "masks" / "a.png")
    return folder


def test_load_labelled_tiles_reads_every_tile_of_a_folder(bueno_dir: Path) -> None:
    every = lnpath.load_labelled_tiles(bueno_dir, None, BUENO_MPP)
    names = sorted(p.stem for p in (bueno_dir / "images").glob("*.png"))
    assert [t.name for t in every] == names
    two = lnpath.load_labelled_tiles(bueno_dir, [names[1], names[0]], BUENO_MPP)
    assert [t.name for t in two] == [names[1], names[0]]
    assert all(t.mask.dtype == bool and t.mask.shape == t.image.shape[:2] for t in two)
    assert any(t.mask.any() for t in every)


@pytest.mark.parametrize(
    ("names", "mpp", "needle"),
    [
        ([], BUENO_MPP, "no tiles"),
        ("10177", BUENO_MPP, "list of tile names"),
        (["no-such-tile"], BUENO_MPP, r"no-such-tile\.png: no such file"),
        (None, 0, "mpp must be"),
        (None, math.nan, "mpp must be"),
        (None, "0.5", "mpp must be"),
    ],
)
def test_load_labelled_tiles_refuses_in_one_line(
    bueno_dir: Path, names: object, mpp: object, needle: str
) -> None:
    with pytest.raises(InputError, match=needle):
        lnpath.load_labelled_tiles(bueno_dir, names, mpp)  # type: ignore[arg-type]


def test_load_labelled_tiles_refuses_a_bad_folder(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="needs images/ and masks/"):
        lnpath.load_labelled_tiles(tmp_path / "nowhere", None, BUENO_MPP)
    folder = _tile_folder(tmp_path / "sizes", (64, 48), (32, 48))
    with pytest.raises(InputError, match="mask is 32x48 px but the image 64x48 px"):
        lnpath.load_labelled_tiles(folder, None, BUENO_MPP)
    (folder / "masks" / "a.png").write_bytes(b"not a png")
    with pytest.raises(InputError, match=r"a\.png: not a readable PNG"):
        lnpath.load_labelled_tiles(folder, ["a"], BUENO_MPP)


def test_a_labelled_image_from_arrays_is_checked() -> None:
    image = np.full((8, 6, 3), 255, np.uint8)
    assert lnpath.LabelledImage("ok", image, np.zeros((8, 6), np.uint8), 1.0).mask.dtype == bool
    with pytest.raises(InputError, match="mask is 5x8 px but the image 6x8 px"):
        lnpath.LabelledImage("x", image, np.zeros((8, 5), bool), 1.0)
    with pytest.raises(InputError, match="uint8 RGB"):
        lnpath.LabelledImage("x", image.astype(float), np.zeros((8, 6), bool), 1.0)
    with pytest.raises(InputError, match="mpp must be"):
        lnpath.LabelledImage("x", image, np.zeros((8, 6), bool), -1.0)


def test_fine_tune_glomeruli_refuses_what_cannot_train(
    tiles: list[lnpath.LabelledImage], tmp_path: Path
) -> None:
    empty = [lnpath.LabelledImage("e", t.image, np.zeros_like(t.mask), t.mpp) for t in tiles]
    lesion = tmp_path / "lesions"
    lesion.mkdir()
    (lesion / "card.json").write_text(json.dumps({"kind": "lesion-cnn"}))
    cases: list[tuple[dict[str, object], type[Exception], str]] = [
        ({"tiles": []}, InputError, "no training tiles"),
        ({"tiles": [tiles[0].image]}, InputError, "LabelledImage items, not ndarray"),
        ({"tiles": tiles[0]}, InputError, "must be a list"),
        ({"tiles": empty}, InputError, "no glomerulus in any training tile"),
        ({"validation": [None]}, InputError, "validation must be lnpath.LabelledImage"),
        ({"base": lesion}, ModelError, "not a glomerulus segmentation model"),
        ({"base": 3}, InputError, "expected a glomerulus segmentation model"),
        ({"steps": 0}, InputError, "steps must be"),
        ({"lr": math.nan}, InputError, "lr must be"),
        ({"time_limit_s": math.nan}, InputError, "time_limit_s must be"),
        ({"validate_every": 0}, InputError, "val_every must be"),
        ({"device": "tpu"}, ModelError, "unknown device"),
    ]
    for change, error, needle in cases:
        arguments: dict[str, object] = {"tiles": tiles, "steps": 1, **change}
        with pytest.raises(error, match=needle):
            lnpath.fine_tune_glomeruli(**arguments)  # type: ignore[arg-type]


def test_fine_tune_evaluate_save_and_load_by_name(
    tiles: list[lnpath.LabelledImage],
    base: SegmentationModel,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What notebook 04 does, on two small tiles: the card drops the base's figures, training
    record and int8 ranges (they hold for the base's weights only) and records its own."""
    tuned = lnpath.fine_tune_glomeruli(
        tiles[1:], tiles[:1], base=base, steps=2, validate_every=1, progress=False
    )
    assert isinstance(tuned, lnpath.FineTunedModel)
    assert [h["step"] for h in tuned.record.history] == [1, 2]
    assert tuned.images == {"train": 1, "validation": 1}
    assert repr(tuned).startswith("FineTunedModel(base='glomeruli-unet-pas', 2 steps")
    scores = {
        name: lnpath.evaluate_segmentation(model, tiles[:1], tta=False)
        for name, model in (("base", base), ("tuned", tuned))
    }
    assert all(isinstance(s, SegmentationScore) and 0 <= s.dice <= 1 for s in scores.values())
    by_name = lnpath.evaluate_segmentation("glomeruli-unet-pas", tiles[:1], tta=False)
    assert by_name.to_dict() == scores["base"].to_dict()

    saved = tuned.save(tmp_path / "models" / "mylab", "two Bueno tiles", {"test": scores["tuned"]})
    card = saved.card
    assert "int8" in base.card and "int8" not in card
    assert "speed" in base.card and "speed" not in card  # measured on the base, in int8
    assert card["metrics"] == {"iou_threshold": 0.5, "test": scores["tuned"].to_dict()}
    assert card["training"]["data"] == "two Bueno tiles"
    assert card["training"]["iterations_run"] == 2
    assert card["training"]["config"] == fine_tune_config(base, iterations=2).to_dict() | {
        "val_every": 1
    }
    assert card["base_model"] == {"name": base.name, "sha256": base.sha256}
    assert card["postprocess"] == base.card["postprocess"]
    monkeypatch.setenv("LNPATH_MODELS", str(tmp_path / "models"))
    assert lnpath.load_model("mylab").sha256 == saved.sha256
    with pytest.raises(InputError, match="mylab"):  # never over a model silently
        tuned.save(tmp_path / "models" / "mylab", "again")
    with pytest.raises(InputError, match="data must say"):
        tuned.save(tmp_path / "models" / "other", "")


def test_evaluate_segmentation_refuses_in_one_line(tiles: list[lnpath.LabelledImage]) -> None:
    with pytest.raises(InputError, match="no tiles to score"):
        lnpath.evaluate_segmentation("glomeruli-unet-pas", [])
    with pytest.raises(InputError, match="expected a glomerulus segmentation model"):
        lnpath.evaluate_segmentation(lnpath.MorphometryCaller(), tiles)  # type: ignore[arg-type]
    with pytest.raises(ModelError, match="unknown model"):
        lnpath.evaluate_segmentation("no-such-model", tiles)


def test_train_glomeruli_card_from_slides_and_outlines(
    train_demo: TrainDemo, tmp_path: Path
) -> None:
    """``lnpath train-glomeruli``'s Python twin writes the same kind of card as the notebook's.
    It trains on the train-split demo: windows around an outline reach into the next tile."""
    assert held_test_split_tiles(train_demo.slide, train_demo.tiles) == []
    slide = lnpath.open_slide(train_demo.slide)
    outlines = train_demo.geojson
    base = lnpath.load_model("glomeruli-unet-pas")
    config = fine_tune_config(base, iterations=2)
    out = fine_tune([slide], [outlines], tmp_path / "lab", config=config, progress=False)
    card = lnpath.load_model(out).card
    assert not {"int8"} & set(card)
    assert card["training"]["data"] == {"annotations": [str(outlines)], "slides": [str(slide.path)]}
    assert card["training"]["images"]["validation"] >= 1
    assert set(card["metrics"]) == {"iou_threshold", "validation"}


def test_load_labelled_tiles_names_a_folder_that_is_not_a_path() -> None:
    """None reached pathlib (``TypeError: expected str, bytes or os.PathLike``)."""
    with pytest.raises(InputError, match=r"^load_labelled_tiles: folder: expected a file"):
        lnpath.load_labelled_tiles(None, None, 0.5)  # type: ignore[arg-type]
