"""Lab calibration of the morphometry caller: fit, cross-validation, model card, caller, CLI.

The labelled set is built at test time from the eval-only bupt PAS glomeruli (global sclerosis
``gs`` vs every other class), read in place and written only to ``tmp_path``: it tests the
machinery, and the model fitted on it is never shipped.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from shapely.geometry import Polygon
from skimage import io

import lnpath
from lnpath.analysis.calibrated import KIND, CalibratedMorphometryCaller
from lnpath.analysis.glomeruli import Glomeruli
from lnpath.analysis.lesions import LesionCaller
from lnpath.analysis.measure import rasterize
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
from tests.conftest import LabelledDemo

torch.set_num_threads(1)

BUPT_MAP = ["--map", "gs=global_sclerosis", "--map", "gn=", "--map", "gm=", "--map", "gl="]
MAPPING = {"gs": ("global_sclerosis",), "gn": (), "gm": (), "gl": ()}
BUPT_MPP = 0.4  # provenance estimate for the snapshots (0.3-0.5 µm/px)


@pytest.fixture(scope="module")
def bupt_pas(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> tuple[Path, Path]:
    """Crops (bounding box + 10 px) of the bupt PAS glomeruli, polygon masks, and a CSV.

    Groups are patients (the file-name prefix): one patient's snapshots, some of the same
    glomerulus at two magnifications, must not be split between training and test folds.
    """
    root = data_dir / "eval-only" / "bupt-multistain-glomeruli"
    if not root.exists():
        pytest.skip("eval-only bupt set not present")
    out = tmp_path_factory.mktemp("bupt-pas")
    rows = []
    for path in sorted((root / "labelme").glob("*-PAS*.json")):
        if "-PASM" in path.stem:
            continue
        doc = json.loads(path.read_text())
        image = io.imread(root / "images" / doc["imagePath"])[..., :3]
        for k, shape in enumerate(doc["shapes"]):
            pts = np.asarray(shape["points"], float)
            x0, y0 = np.maximum(np.floor(pts.min(0)).astype(int) - 10, 0)
            x1, y1 = np.ceil(pts.max(0)).astype(int) + 10
            crop = image[y0:y1, x0:x1]
            inside = rasterize(Polygon(pts), crop.shape[:2], origin=(x0, y0), scale=1.0)
            mask = inside.astype(np.uint8) * 255
            name = f"{path.stem}_{k}"
            io.imsave(out / f"{name}.png", crop, check_contrast=False)
            io.imsave(out / f"{name}_mask.png", mask, check_contrast=False)
            rows.append(
                {
                    "image": f"{name}.png",
                    "class": shape["label"],
                    "group": path.stem.split("-")[0],
                    "mask": f"{name}_mask.png",
                }
            )
    table = out / "labels.csv"
    with table.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["image", "class", "group", "mask"])
        writer.writeheader()
        writer.writerows(rows)
    return out, table


@pytest.fixture(scope="module")
def model(
    bupt_pas: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, str]:
    """A morphometry-logistic model folder written by the CLI, and what the CLI printed."""
    import contextlib
    import io as _io

    folder, table = bupt_pas
    out = tmp_path_factory.mktemp("models") / "bupt-gs-morphometry"
    args = ["train-lesions", "--method", "morphometry", "--crops", str(folder)]
    args += ["--labels", str(table), *BUPT_MAP, "--crop-mpp", str(BUPT_MPP), "--out", str(out)]
    printed = _io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(args) == 0
    return out, printed.getvalue()


def test_cli_prints_and_records_cross_validated_metrics(model: tuple[Path, str]) -> None:
    out, printed = model
    assert "cross-validated metrics (5 folds grouped by slide/image" in printed
    assert "global_sclerosis" in printed and "Brier" in printed
    card = json.loads((out / "card.json").read_text())
    assert card["kind"] == KIND and card["labels"] == ["global_sclerosis"]
    assert card["intended_use"] == "proposal until a pathologist confirms"
    assert card["training"]["mask"] == "mask images"
    counts = card["counts"]["global_sclerosis"]
    assert counts["positive"] == 9
    assert counts["positive"] + counts["negative"] + card["training"]["skipped_unmeasurable"] == 30
    metrics = card["cross_validation"]["metrics"]["global_sclerosis"]
    assert metrics["n"] == card["training"]["samples"]
    assert 0.0 <= metrics["auc"] <= 1.0 and 0.0 <= metrics["brier"] <= 1.0
    assert np.isfinite(metrics["kappa"])
    params = card["parameters"]
    assert params["features"] == card["features"] and params["threshold"] == 0.5
    assert set(params["coefficients"]["global_sclerosis"]) == set(card["features"])
    assert all(v > 0 for v in params["stds"].values())


def test_calibrated_caller_on_a_real_slide(model: tuple[Path, str], repo_dir: Path) -> None:
    out, _ = model
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
    assert (findings["source"] == "morphometry-model:bupt-gs-morphometry").all()
    assert findings["m_sclerosed_fraction"].notna().all()
    assert caller.describe()["sha256"] == caller.sha256
    # the same measurements on another stain: not assessed
    masson = CalibratedMorphometryCaller(out, stain="masson").call(glomeruli[:1], slide)
    assert masson["global_sclerosis"].isna().all()
    assert masson["p_global_sclerosis"].isna().all()


def test_tampered_card_is_refused(model: tuple[Path, str], tmp_path: Path) -> None:
    out, _ = model
    card = json.loads((out / "card.json").read_text())
    card["parameters"]["intercepts"]["global_sclerosis"] += 1.0
    (tmp_path / "tampered").mkdir()
    (tmp_path / "tampered" / "card.json").write_text(json.dumps(card))
    with pytest.raises(ModelError, match="does not match"):
        lesion_caller(str(tmp_path / "tampered"))
    with pytest.raises(ModelError, match="differ from the configured"):
        CalibratedMorphometryCaller(out, expected_labels=["segmental_sclerosis"])


def test_ellipse_masks_when_the_csv_has_none(bupt_pas: tuple[Path, Path], tmp_path: Path) -> None:
    folder, table = bupt_pas
    rows = list(csv.DictReader(table.open()))[:6]
    plain = tmp_path / "labels.csv"
    with plain.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["image", "class"])
        writer.writeheader()
        writer.writerows({"image": r["image"], "class": r["class"]} for r in rows)
    data = measure_folder(folder, plain, MAPPING, crop_mpp=BUPT_MPP)
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
    bupt_pas: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder, table = bupt_pas
    base = ["train-lesions", "--method", "morphometry", "--crops", str(folder)]
    base += ["--labels", str(table), "--out", str(tmp_path / "m")]
    assert main([*base, *BUPT_MAP]) == 2
    err = capsys.readouterr().err.strip()
    assert "needs --crop-mpp" in err and len(err.splitlines()) == 1
    for bad in ("--crop-mpp=-1", "--crop-mpp=nan", "--threads=0"):
        assert main([*base, *BUPT_MAP, bad]) == 2
        err = capsys.readouterr().err.strip()
        assert "outside the plausible range" in err or "--threads must be" in err, bad
    # only 2 'gn' glomeruli: too few negatives for segmental sclerosis
    assert (
        main([*base, "--map", "gn=segmental_sclerosis", "--map", "gs=", "--crop-mpp", "0.4"]) == 2
    )
    last = capsys.readouterr().err.strip().splitlines()[-1]  # after the progress bar
    assert last.startswith("lnpath: error:") and "segmental_sclerosis has 2 positive" in last
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
    """QuPath GeoJSON + slide, polygon masks; one slide only, so folds are per glomerulus."""
    geojson, slide = labelled_demo.geojson, labelled_demo.slide
    out = tmp_path / "model"
    args = ["train-lesions", "--method", "morphometry", "--qupath", str(geojson), str(slide)]
    assert main([*args, "--out", str(out), "--folds", "3"]) == 0
    assert "grouped by glomerulus (single slide)" in capsys.readouterr().out
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
