"""Training machinery for the lesion CNN: labels, folds, metrics, calibration, CLI end to end.

The end-to-end tests build a small labelled crop set at test time in a temporary folder from the
licensed Bueno PAS ``train`` tiles (:func:`tests.conftest.bueno_train_crops`: every glomerulus
plus glomerulus-free tissue windows) with *synthetic* classes: they test the machinery, not
accuracy. The models they train live only in ``tmp_path`` and are never shipped.
"""

from __future__ import annotations

import csv
import json
import logging
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from skimage import io

from lnpath.analysis.lesion_cnn import TrainedLesionCaller, calibrated
from lnpath.analysis.lesions import square_crop
from lnpath.cli import main
from lnpath.core.errors import InputError
from lnpath.training.lesion_data import (
    LabelledCrops,
    crops_from_folder,
    crops_from_qupath,
    parse_mapping,
    resolve_targets,
)
from lnpath.training.lesions import binary_metrics, fit_platt, group_folds
from tests.conftest import LabelledDemo, bueno_train_crops

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def crop_set(tmp_path_factory: pytest.TempPathFactory, bueno_dir: Path) -> tuple[Path, Path]:
    """64-px crops of the Bueno train glomeruli and tissue windows + a CSV (image, class, group).

    Groups are tiles, so the folds are grouped as a lab's slides would be.
    """
    out = tmp_path_factory.mktemp("bueno-crops")
    rows = []
    for crop in bueno_train_crops(bueno_dir, tissue_per_tile=2):
        io.imsave(out / f"{crop.name}.png", square_crop(crop.rgb, 64))
        rows.append({"image": f"{crop.name}.png", "class": crop.cls, "group": crop.tile})
    table = out / "labels.csv"
    with table.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["image", "class", "group"])
        writer.writeheader()
        writer.writerows(rows)
    return out, table


def _classes(table: Path) -> Counter[str]:
    """How many crops of each class the fixture's CSV lists (the expected counts)."""
    with table.open(newline="") as fh:
        return Counter(row["class"] for row in csv.DictReader(fh))


# a mapped positive class and three classes mapped to nothing (negatives)
CROP_MAP = ["--map", "pos=global_sclerosis", "--map", "neg=", "--map", "rare=", "--map", "tissue="]


def test_train_lesions_cli_end_to_end(
    crop_set: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder, table = crop_set
    classes = _classes(table)
    out = tmp_path / "synthetic-gs-model"
    args = ["train-lesions", "--crops", str(folder), "--labels", str(table), *CROP_MAP]
    args += ["--out", str(out), "--folds", "3", "--epochs", "2", "--size", "32", "--threads", "1"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "cross-validated metrics (3 folds" in printed
    assert "global_sclerosis" in printed
    card = json.loads((out / "card.json").read_text())
    assert card["labels"] == ["global_sclerosis"]
    assert card["intended_use"] == "proposal until a pathologist confirms"
    assert card["counts"]["global_sclerosis"] == {
        "positive": classes["pos"],
        "negative": classes.total() - classes["pos"],
        "not_assessed": 0,
    }
    metrics = card["cross_validation"]["metrics"]["global_sclerosis"]
    assert metrics["n"] == classes.total() and 0.0 <= metrics["auc"] <= 1.0
    assert (out / "weights.pt.sha256").read_text().split()[0] == card["sha256"]
    caller = TrainedLesionCaller.from_name(out)
    probs = caller.probabilities(np.stack([io.imread(p) for p in sorted(folder.glob("*.png"))[:8]]))
    assert probs.shape == (8, 1) and np.all((probs >= 0) & (probs <= 1))
    # an existing model folder is refused unless --overwrite
    assert main(args) == 2
    assert "already exists" in capsys.readouterr().err


def test_class_names_that_map_to_nothing_are_an_error(
    crop_set: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder, table = crop_set
    args = ["train-lesions", "--crops", str(folder), "--labels", str(table)]
    args += ["--map", "Sclerotic=global_sclerosis", "--out", str(tmp_path / "m")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "none of the class names" in err and "labels.csv" in err
    assert not (tmp_path / "m").exists()


def test_unmapped_classes_are_dropped_with_a_warning(
    crop_set: tuple[Path, Path], caplog: pytest.LogCaptureFixture
) -> None:
    folder, table = crop_set
    classes = _classes(table)
    with caplog.at_level(logging.WARNING):
        data = crops_from_folder(folder, table, {"pos": ("global_sclerosis",), "neg": ()}, size=32)
    dropped = classes["rare"] + classes["tissue"]
    assert f"{dropped} samples of unmapped classes ['rare', 'tissue'] ignored" in caplog.text
    assert data.images.shape == (classes["pos"] + classes["neg"], 32, 32, 3)
    assert data.counts() == {
        "global_sclerosis": {"positive": classes["pos"], "negative": classes["neg"]}
    }


def test_parse_mapping() -> None:
    assert parse_mapping(["Sclerotic=global_sclerosis", "Normal="]) == {
        "Sclerotic": ("global_sclerosis",),
        "Normal": (),
    }
    with pytest.raises(InputError, match="unknown lesion"):
        parse_mapping(["Sclerotic=sclerosis"])
    with pytest.raises(InputError, match="expected CLASS=lesion"):
        parse_mapping(["Sclerotic"])


def test_a_label_without_negatives_is_an_error() -> None:
    with pytest.raises(InputError, match="global_sclerosis has 2/2 positives"):
        resolve_targets(["a", "a"], {"a": ("global_sclerosis",)}, "labels.csv")


def test_missing_label_columns_are_an_error(tmp_path: Path) -> None:
    table = tmp_path / "labels.csv"
    table.write_text("file,label\nx.png,gs\n")
    with pytest.raises(InputError, match="columns 'image' and 'class'"):
        crops_from_folder(tmp_path, table, {"gs": ("global_sclerosis",)})


def test_group_folds_keep_groups_together() -> None:
    groups = np.array(["a", "a", "b", "c", "c", "c", "d", "e"], dtype=object)
    folds = group_folds(groups, 3, seed=1)
    for g in np.unique(groups):
        assert len(set(folds[groups == g])) == 1
    assert set(folds) == {0, 1, 2}
    with pytest.raises(InputError, match="at least two"):
        group_folds(np.array(["a", "a"], dtype=object), 3, seed=0)


def test_binary_metrics_known_values() -> None:
    y = np.array([1, 1, 1, 0, 0, 0, 0, 0])
    p = np.array([0.9, 0.8, 0.3, 0.6, 0.2, 0.1, 0.1, 0.05])
    m = binary_metrics(y, p)
    assert m["sensitivity"] == pytest.approx(2 / 3)
    assert m["specificity"] == pytest.approx(4 / 5)
    # observed 6/8; expected (3*3 + 5*5)/64
    assert m["kappa"] == pytest.approx((6 / 8 - 34 / 64) / (1 - 34 / 64))
    assert m["auc"] == pytest.approx(14 / 15)


def test_platt_scaling_recovers_a_known_calibration() -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 2, 4000)
    y = rng.random(4000) < 1 / (1 + np.exp(-(0.5 * logits - 1.0)))
    a, b = fit_platt(logits, y.astype(float))
    assert a == pytest.approx(0.5, abs=0.08) and b == pytest.approx(-1.0, abs=0.15)


def test_platt_scaling_stays_finite_on_separable_logits() -> None:
    logits = np.r_[np.linspace(-9, -1, 50), np.linspace(1, 9, 8)]
    y = np.r_[np.zeros(50), np.ones(8)]
    a, b = fit_platt(logits, y)
    assert 0 < a < 10 and abs(b) < 10
    p = calibrated(logits, a, b)
    assert np.all(np.isfinite(p)) and p[:50].max() < p[50:].min()
    assert p[:50].mean() < 0.1 and p[50:].mean() > 0.7


def test_crops_from_qupath_annotations_and_slide(labelled_demo: LabelledDemo) -> None:
    """QuPath classes map to lesions; the crops come from the (real PAS) train-split demo slide."""
    data = crops_from_qupath(
        [(labelled_demo.geojson, labelled_demo.slide)],
        parse_mapping(["Sclerotic=global_sclerosis", "Normal="]),
        mpp=2.0,
        size=32,
    )
    assert isinstance(data, LabelledCrops)
    assert data.labels == ("global_sclerosis",)
    assert len(data.targets) == labelled_demo.glomeruli
    assert int(data.targets.sum()) == labelled_demo.sclerotic
    assert data.mpp == 2.0 and set(data.groups) == {labelled_demo.slide.name}


def test_train_lesions_cli_from_qupath_and_a_slide(
    labelled_demo: LabelledDemo, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The QuPath route end to end; one slide only, so folds are per glomerulus (and say so)."""
    out = tmp_path / "model"
    geojson, slide = labelled_demo.geojson, labelled_demo.slide
    args = ["train-lesions", "--qupath", str(geojson), str(slide), "--out", str(out)]
    args += ["--folds", "2", "--epochs", "1", "--size", "32", "--mpp", "2", "--threads", "1"]
    assert main(args) == 0
    assert "grouped by glomerulus (single slide)" in capsys.readouterr().out
    card = json.loads((out / "card.json").read_text())
    assert card["class_mapping"]["Sclerotic"] == ["global_sclerosis"]
    assert card["mpp"] == 2.0
    assert card["counts"]["global_sclerosis"]["positive"] == labelled_demo.sclerotic


def test_crops_without_labels_is_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["train-lesions", "--crops", str(tmp_path), "--out", str(tmp_path / "m")]) == 2
    assert "--crops needs --labels" in capsys.readouterr().err
