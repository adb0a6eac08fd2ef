"""Lab calibration of the morphometry caller: fit, cross-validation, model card, caller, CLI.

The labelled set is built at test time in ``tmp_path`` from the licensed Bueno PAS ``train`` tiles
(:func:`tests.conftest.bueno_train_crops`: each glomerulus, a connected component of its tile's
mask, cropped with its mask) under *synthetic* classes: it tests the machinery, not accuracy, and
the model fitted on it is never shipped.
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from skimage import io

import lnpath
from lnpath.analysis.calibrated import KIND, CalibratedMorphometryCaller
from lnpath.analysis.glomeruli import Glomeruli
from lnpath.analysis.lesions import LesionCaller
from lnpath.cli import main
from lnpath.core.errors import InputError, ModelError
from lnpath.core.findings import LESIONS
from lnpath.training.calibration import (
    MeasuredGlomeruli,
    calibrate_morphometry,
    ellipse_mask,
    fit_logistic,
    measure_folder,
    require_counts,
)
from lnpath.workflow.pipeline import lesion_caller
from tests.conftest import BUENO_MPP, LabelledDemo, bueno_train_crops

torch.set_num_threads(1)

# a mapped positive class and two classes mapped to nothing (negatives)
CROP_MAP = ["--map", "pos=global_sclerosis", "--map", "neg=", "--map", "rare="]
MAPPING = {"pos": ("global_sclerosis",), "neg": (), "rare": ()}


@pytest.fixture(scope="module")
def glomerulus_crops(
    tmp_path_factory: pytest.TempPathFactory, bueno_dir: Path
) -> tuple[Path, Path]:
    """Crops (bounding box + 10 px) of the Bueno train glomeruli, their masks, and a CSV.

    Groups are tiles: two glomeruli of one tile must not be split between training and test folds.
    """
    out = tmp_path_factory.mktemp("bueno-glomeruli")
    rows = []
    for crop in bueno_train_crops(bueno_dir):
        io.imsave(out / f"{crop.name}.png", crop.rgb, check_contrast=False)
        mask = crop.mask.astype(np.uint8) * 255
        io.imsave(out / f"{crop.name}_mask.png", mask, check_contrast=False)
        rows.append(
            {
                "image": f"{crop.name}.png",
                "class": crop.cls,
                "group": crop.tile,
                "mask": f"{crop.name}_mask.png",
            }
        )
    table = out / "labels.csv"
    with table.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["image", "class", "group", "mask"])
        writer.writeheader()
        writer.writerows(rows)
    return out, table


def _classes(table: Path) -> Counter[str]:
    """How many glomeruli of each class the fixture's CSV lists (the expected counts)."""
    with table.open(newline="") as fh:
        return Counter(row["class"] for row in csv.DictReader(fh))


@pytest.fixture(scope="module")
def model(
    glomerulus_crops: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, str, Counter[str]]:
    """A morphometry-logistic model folder written by the CLI, what it printed, the classes."""
    import contextlib
    import io as _io

    folder, table = glomerulus_crops
    out = tmp_path_factory.mktemp("models") / "synthetic-gs-morphometry"
    args = ["train-lesions", "--method", "morphometry", "--crops", str(folder)]
    args += ["--labels", str(table), *CROP_MAP, "--crop-mpp", str(BUENO_MPP), "--out", str(out)]
    printed = _io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(args) == 0
    return out, printed.getvalue(), _classes(table)


def test_cli_prints_and_records_cross_validated_metrics(
    model: tuple[Path, str, Counter[str]],
) -> None:
    out, printed, classes = model
    assert "cross-validated metrics (5 folds grouped by slide/image" in printed
    assert "global_sclerosis" in printed and "Brier" in printed
    card = json.loads((out / "card.json").read_text())
    assert card["kind"] == KIND and card["labels"] == ["global_sclerosis"]
    assert card["intended_use"] == "proposal until a pathologist confirms"
    assert card["training"]["mask"] == "mask images"
    counts = card["counts"]["global_sclerosis"]
    assert counts["positive"] == classes["pos"]
    skipped = card["training"]["skipped_unmeasurable"]
    assert counts["positive"] + counts["negative"] + skipped == classes.total()
    metrics = card["cross_validation"]["metrics"]["global_sclerosis"]
    assert metrics["n"] == card["training"]["samples"]
    assert 0.0 <= metrics["auc"] <= 1.0 and 0.0 <= metrics["brier"] <= 1.0
    assert np.isfinite(metrics["kappa"])
    params = card["parameters"]
    assert params["features"] == card["features"] and params["threshold"] == 0.5
    assert set(params["coefficients"]["global_sclerosis"]) == set(card["features"])
    assert all(v > 0 for v in params["stds"].values())


def test_calibrated_caller_on_a_real_slide(
    model: tuple[Path, str, Counter[str]], repo_dir: Path
) -> None:
    out, _, _ = model
    slide = lnpath.open_slide(repo_dir / "examples" / "demo_biopsy.tiff")
    glomeruli = Glomeruli.from_geojson(
        repo_dir / "examples" / "demo_biopsy_glomeruli.geojson", slide.mpp
    )[:4]
    caller = lesion_caller(str(out), stain="PAS")
    assert isinstance(caller, CalibratedMorphometryCaller)
    assert isinstance(caller, LesionCaller)
    findings = caller.call(glomeruli, slide)
    assert len(findings) == len(glomeruli)
    assert findings["p_global_sclerosis"].between(0, 1).all()
    assert findings["global_sclerosis"].notna().all()
    assert (findings["global_sclerosis"] == (findings["p_global_sclerosis"] >= 0.5)).all()
    for name in set(LESIONS) - {"global_sclerosis"}:
        assert findings[name].isna().all()
    assert (findings["source"] == "morphometry-model:synthetic-gs-morphometry").all()
    assert findings["m_sclerosed_fraction"].notna().all()
    assert caller.describe()["sha256"] == caller.sha256
    # the same measurements on another stain: not assessed
    masson = CalibratedMorphometryCaller(out, stain="masson").call(glomeruli[:1], slide)
    assert masson["global_sclerosis"].isna().all()
    assert masson["p_global_sclerosis"].isna().all()


def test_tampered_card_is_refused(model: tuple[Path, str, Counter[str]], tmp_path: Path) -> None:
    out, _, _ = model
    card = json.loads((out / "card.json").read_text())
    card["parameters"]["intercepts"]["global_sclerosis"] += 1.0
    (tmp_path / "tampered").mkdir()
    (tmp_path / "tampered" / "card.json").write_text(json.dumps(card))
    with pytest.raises(ModelError, match="does not match"):
        lesion_caller(str(tmp_path / "tampered"))
    with pytest.raises(ModelError, match="differ from the configured"):
        CalibratedMorphometryCaller(out, expected_labels=["segmental_sclerosis"])


def test_ellipse_masks_when_the_csv_has_none(
    glomerulus_crops: tuple[Path, Path], tmp_path: Path
) -> None:
    folder, table = glomerulus_crops
    rows = list(csv.DictReader(table.open()))[:6]
    plain = tmp_path / "labels.csv"
    with plain.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["image", "class"])
        writer.writeheader()
        writer.writerows({"image": r["image"], "class": r["class"]} for r in rows)
    data = measure_folder(folder, plain, MAPPING, crop_mpp=BUENO_MPP)
    assert data.mask == "inscribed ellipse shrunk to 90%"
    assert len(data.targets) + data.skipped == 6
    mask = ellipse_mask((100, 60))
    assert mask[50, 30] and not mask[0, 0] and not mask[50, 1]


def test_too_few_positives_is_a_clear_error(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    data = MeasuredGlomeruli(
        features=rng.normal(size=(20, 3)),
        feature_names=("m_area_um2", "m_lumen_fraction", "m_sclerosed_fraction"),
        targets=np.r_[np.ones(4), np.zeros(16)][:, None],
        labels=("global_sclerosis",),
        groups=np.arange(20).astype(object),
        classes=["gs"] * 4 + ["gn"] * 16,
        mapping={"gs": ("global_sclerosis",), "gn": ()},
        source="synthetic",
        mask="none",
    )
    with pytest.raises(InputError, match="4 positive and 16 negative"):
        calibrate_morphometry(data, tmp_path / "m")
    assert not (tmp_path / "m").exists()
    require_counts({"global_sclerosis": {"positive": 5, "negative": 5}}, "x")


def test_cli_bad_inputs_give_one_line(
    glomerulus_crops: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder, table = glomerulus_crops
    base = ["train-lesions", "--method", "morphometry", "--crops", str(folder)]
    base += ["--labels", str(table), "--out", str(tmp_path / "m")]
    assert main([*base, *CROP_MAP]) == 2
    err = capsys.readouterr().err.strip()
    assert "needs --crop-mpp" in err and len(err.splitlines()) == 1
    for bad in ("--crop-mpp=-1", "--crop-mpp=nan", "--threads=0"):
        assert main([*base, *CROP_MAP, bad]) == 2
        err = capsys.readouterr().err.strip()
        assert "outside the plausible range" in err or "--threads must be" in err, bad
    # the few 'rare' glomeruli: too few positives for segmental sclerosis
    rare = _classes(table)["rare"]
    assert 0 < rare < 5
    crop_mpp = f"--crop-mpp={BUENO_MPP}"
    assert main([*base, "--map", "rare=segmental_sclerosis", "--map", "pos=", crop_mpp]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]  # after the progress bar
    assert last.startswith("lnpath: error:") and f"segmental_sclerosis has {rare} positive" in last
    assert not (tmp_path / "m").exists()


def test_logistic_fit_recovers_known_coefficients() -> None:
    rng = np.random.default_rng(1)
    z = rng.normal(size=(4000, 2))
    y = rng.random(4000) < 1 / (1 + np.exp(-(1.5 * z[:, 0] - 0.5 * z[:, 1] - 1.0)))
    w, b = fit_logistic(z, y.astype(float), l2=1.0)
    assert w == pytest.approx([1.5, -0.5], abs=0.15) and b == pytest.approx(-1.0, abs=0.15)
    # separable data stay finite under the L2 prior
    w, b = fit_logistic(np.r_[-np.ones(5), np.ones(5)][:, None], np.r_[np.zeros(5), np.ones(5)])
    assert np.all(np.isfinite(w)) and abs(w[0]) < 10


def test_qupath_route_measures_polygons_on_the_slide(
    labelled_demo: LabelledDemo, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """QuPath GeoJSON + slide, polygon masks; one slide only, so folds are per glomerulus.
    Off a terminal (a log, as here) the command draws no progress bar."""
    geojson, slide = labelled_demo.geojson, labelled_demo.slide
    out = tmp_path / "model"
    args = ["train-lesions", "--method", "morphometry", "--qupath", str(geojson), str(slide)]
    assert main([*args, "--out", str(out), "--folds", "3"]) == 0
    printed = capsys.readouterr()
    assert "grouped by glomerulus (single slide)" in printed.out
    assert "measuring glomeruli" not in printed.err
    card = json.loads((out / "card.json").read_text())
    assert card["training"]["mask"] == "QuPath polygon"
    assert card["labels"] == ["global_sclerosis"]  # Partially_sclerotic is absent from the file
    n = labelled_demo.glomeruli
    counts = card["counts"]["global_sclerosis"]
    assert counts["positive"] + counts["negative"] + card["training"]["skipped_unmeasurable"] == n
    assert main([*args, "--out", str(tmp_path / "m2"), "--mpp", "1"]) == 2
    assert "--mpp is for --method cnn" in capsys.readouterr().err


def test_a_cnn_folder_still_loads_the_cnn_caller(tmp_path: Path) -> None:
    from lnpath.analysis.lesion_cnn import TrainedLesionCaller
    from lnpath.nn.lesion_net import LesionNet, LesionNetConfig
    from lnpath.training.lesions import write_model_folder

    net = LesionNet(LesionNetConfig(labels=("global_sclerosis",), input_size=32)).eval()
    write_model_folder(net, {"mpp": 2.0, "threshold": 0.5}, tmp_path / "cnn")
    assert isinstance(lesion_caller(str(tmp_path / "cnn"), device="cpu"), TrainedLesionCaller)
    with pytest.raises(ModelError, match="no lesion model"):
        lesion_caller(str(tmp_path / "absent"))


def test_a_calibrated_caller_names_a_folder_that_is_not_a_path() -> None:
    """None reached pathlib (``TypeError: expected str, bytes or os.PathLike``)."""
    with pytest.raises(InputError, match=r"^CalibratedMorphometryCaller: folder: expected a file"):
        CalibratedMorphometryCaller(None)  # type: ignore[arg-type]
