"""Lesion callers: morphometry rules, the trained caller's model checks, and the eval-only check."""

from __future__ import annotations

import importlib.util
import json
import logging
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from shapely.geometry import box

import lnpath
from lnpath.analysis.glomeruli import Glomeruli, Glomerulus
from lnpath.analysis.lesion_cnn import TrainedLesionCaller
from lnpath.analysis.lesions import (
    LesionCaller,
    MorphometryCaller,
    MorphometryThresholds,
    calls_from_measurements,
)
from lnpath.analysis.measure import MEASUREMENTS
from lnpath.core.errors import InputError, ModelError
from lnpath.core.findings import LESIONS
from lnpath.nn.lesion_net import LesionNet, LesionNetConfig
from lnpath.training.lesions import write_model_folder

torch.set_num_threads(1)


def _measurements(**columns: list[float]) -> pd.DataFrame:
    n = len(next(iter(columns.values())))
    base = {name: [0.2] * n for name in MEASUREMENTS}
    base.update(columns)
    return pd.DataFrame({"glomerulus_id": list(range(1, n + 1)), **base})


def test_morphometry_rules_follow_the_documented_thresholds() -> None:
    t = MorphometryThresholds()
    table = calls_from_measurements(
        _measurements(
            m_sclerosed_fraction=[0.9, 0.51, 0.5, 0.4, 0.1, 0.1, math.nan],
            m_nuclei_per_1000um2=[9.0, 2.0, 2.0, 2.0, 7.0, 7.0, 2.0],
            m_lumen_fraction=[0.0, 0.1, 0.1, 0.1, 0.05, 0.3, 0.2],
        )
    )
    assert t.global_sclerosis == 0.5  # ISN/RPS 2003: global = more than half of the tuft
    assert table["global_sclerosis"].tolist()[:6] == [True, True, False, False, False, False]
    assert table["segmental_sclerosis"].tolist()[:6] == [False, False, True, True, False, False]
    # hypercellular + narrowed lumina, but never on a globally sclerosed tuft
    assert table["endocapillary_hypercellularity"].tolist()[:6] == [False] * 4 + [True, False]
    assert table.iloc[6][["global_sclerosis", "segmental_sclerosis"]].isna().all()
    for name in LESIONS:
        assert str(table[name].dtype) == "boolean"
    called = {"global_sclerosis", "segmental_sclerosis", "endocapillary_hypercellularity"}
    for name in set(LESIONS) - called:
        assert table[name].isna().all(), f"{name} must be not assessed"
    assert not [c for c in table.columns if c.startswith("p_")]
    assert (table["source"] == "morphometry").all()


@pytest.fixture(scope="module")
def demo(repo_dir: Path) -> tuple[lnpath.Slide, Glomeruli]:
    slide = lnpath.open_slide(repo_dir / "examples" / "demo_biopsy.tiff")
    path = repo_dir / "examples" / "demo_biopsy_glomeruli.geojson"
    return slide, Glomeruli.from_geojson(path, slide.mpp)


def test_morphometry_caller_on_real_pas_glomeruli(demo: tuple[lnpath.Slide, Glomeruli]) -> None:
    slide, glomeruli = demo
    caller = MorphometryCaller()
    assert isinstance(caller, LesionCaller)
    findings = caller.call(glomeruli, slide)
    assert len(findings) == len(glomeruli)
    # the Bueno PAS glomeruli show open capillary loops: none globally sclerosed
    assert not findings["global_sclerosis"].any()
    assert findings["m_sclerosed_fraction"].between(0, 1).all()
    score = lnpath.score_findings(findings).to_dict()
    assert score["activity_index"]["complete"] is False
    assert "fibrinoid_necrosis" in score["activity_index"]["not_assessed"]
    assert score["chronicity_index"]["components"]["glomerulosclerosis"]["n"] == 0


def test_morphometry_calls_only_on_pas(demo: tuple[lnpath.Slide, Glomeruli]) -> None:
    slide, glomeruli = demo
    findings = MorphometryCaller(stain="masson").call(glomeruli[:2], slide)
    assert findings[list(LESIONS)].isna().all().all()
    assert findings["m_sclerosed_fraction"].notna().all()
    with pytest.raises(InputError, match="unknown stain"):
        MorphometryCaller(stain="giemsa")


def _model_folder(tmp_path: Path, labels: tuple[str, ...], name: str = "m") -> Path:
    torch.manual_seed(0)
    net = LesionNet(LesionNetConfig(labels=labels, input_size=32)).eval()
    write_model_folder(net, {"mpp": 2.0, "threshold": 0.5}, tmp_path / name)
    return tmp_path / name


def test_trained_caller_calls_only_its_labels(
    tmp_path: Path, demo: tuple[lnpath.Slide, Glomeruli]
) -> None:
    slide, glomeruli = demo
    folder = _model_folder(tmp_path, ("global_sclerosis", "cellular_crescent"))
    caller = TrainedLesionCaller.from_name(folder)
    findings = caller.call(glomeruli[:4], slide)
    assert findings["p_global_sclerosis"].between(0, 1).all()
    assert findings["p_cellular_crescent"].between(0, 1).all()
    assert findings["global_sclerosis"].notna().all()
    assert findings["fibrinoid_necrosis"].isna().all()
    assert (findings["source"] == "lesion-model:m").all()


def test_trained_caller_leaves_unreadable_glomeruli_not_assessed(
    tmp_path: Path, demo: tuple[lnpath.Slide, Glomeruli], caplog: pytest.LogCaptureFixture
) -> None:
    slide, glomeruli = demo
    glass = Glomerulus.from_polygon(99, box(5, 5, 400, 400), slide.mpp)  # a corner of bare glass
    caller = TrainedLesionCaller(_model_folder(tmp_path, ("global_sclerosis",)))
    with caplog.at_level(logging.WARNING):
        findings = caller.call(Glomeruli([glomeruli[0], glass], slide.mpp, "test"), slide)
    assert findings["global_sclerosis"].isna().tolist() == [False, True]
    assert math.isnan(findings["p_global_sclerosis"][1])
    assert "glomerulus 99 not assessed" in caplog.text and "no tissue" in caplog.text


def test_lesion_model_errors(tmp_path: Path) -> None:
    folder = _model_folder(tmp_path, ("global_sclerosis",))
    with pytest.raises(ModelError, match="differ from the configured"):
        TrainedLesionCaller.from_name(
            folder, expected_labels=["global_sclerosis", "fibrous_crescent"]
        )
    with pytest.raises(ModelError, match="no lesion model"):
        TrainedLesionCaller.from_name(tmp_path / "absent")
    card = json.loads((folder / "card.json").read_text())
    card["labels"] = card["network"]["labels"] = ["sclerosis"]
    (folder / "card.json").write_text(json.dumps(card))
    with pytest.raises(ModelError, match="not lesion columns"):
        TrainedLesionCaller(folder)
    other = _model_folder(tmp_path, ("global_sclerosis",), name="tampered")
    with (other / "weights.pt").open("ab") as fh:
        fh.write(b"\0")
    with pytest.raises(ModelError, match="sha256"):
        TrainedLesionCaller(other)


def _swap_weights(folder: Path, state: object) -> None:
    """Replace a model folder's weights and give the card their sha256 (a foreign file that
    passes the hash check: only the loader stands between it and the network)."""
    from lnpath.io.hashing import file_sha256

    torch.save(state, folder / "weights.pt")
    card = json.loads((folder / "card.json").read_text())
    card["sha256"] = file_sha256(folder / "weights.pt")
    (folder / "card.json").write_text(json.dumps(card))


@pytest.mark.parametrize("foreign", ["tensor", "unet"])
def test_foreign_weights_with_a_matching_hash_are_one_line(
    foreign: str, tmp_path: Path, repo_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A bare tensor was an internal error (``Expected state_dict to be dict-like``); the shipped
    U-Net's weights printed every missing key over several lines."""
    from lnpath.cli import main
    from lnpath.models.store import load_state_dict, resolve_model_path

    folder = _model_folder(tmp_path, ("global_sclerosis",))
    unet = resolve_model_path("glomeruli-unet-pas") / "weights.pt"
    _swap_weights(folder, torch.zeros(3) if foreign == "tensor" else load_state_dict(unet))
    out = tmp_path / "result"
    code = main(
        [
            "score",
            str(repo_dir / "examples" / "demo_biopsy.tiff"),
            "--glomeruli",
            str(repo_dir / "examples" / "demo_biopsy_glomeruli.geojson"),
            "--lesion-model",
            str(folder),
            "--out",
            str(out),
        ]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    needle = "not a plain state dict" if foreign == "tensor" else "do not fit the card's network"
    assert needle in err and "internal error" not in err
    assert not out.exists()


def test_sclerosed_fraction_ranks_globally_sclerotic_crops(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Eval-only (read in place): the continuous fraction separates the CMIL PAS crops.

    The 0.5 call itself is reported by scripts/eval_sclerosis.py; this guards the ranking.
    """
    root = data_dir / "eval-only" / "cmil-pas-sclerosis-crops"
    if not root.exists():
        pytest.skip("eval-only CMIL crops not present")
    scripts = Path(__file__).resolve().parents[1] / "scripts"
    monkeypatch.syspath_prepend(str(scripts))  # the script imports its sibling eval_sets
    script = scripts / "eval_sclerosis.py"
    spec = importlib.util.spec_from_file_location("eval_sclerosis", script)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    result = module.eval_cmil(root)["PAS"]
    assert result["n"] == 72 and result["not_assessed"] == 0
    assert result["auc_sclerosed_fraction"] >= 0.75
    assert result["specificity"] >= 0.9
    assert np.isfinite(result["kappa"])


def test_eval_only_sets_are_read_for_evaluation_only(repo_dir: Path) -> None:
    """The eval-only sets carry no licence to train or fit on (shared/data/README.md).

    The lesion tests fitted throwaway models on the bupt glomeruli and the sclerosis evaluation
    cross-validated a calibration on both sets; only this module's evaluation may name them, and
    the evaluation script imports nothing that fits.
    """
    import ast

    naming = sorted(
        p.name for p in (repo_dir / "tests").glob("test_*.py") if "eval-only" in p.read_text()
    )
    assert naming == ["test_lesions.py"]
    script = ast.parse((repo_dir / "scripts" / "eval_sclerosis.py").read_text())
    imported = {
        alias.name
        for node in ast.walk(script)
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
    }
    fitting = {"cross_validate_logistic", "fit_logistic", "calibrate_morphometry", "fit_platt"}
    assert not imported & fitting
    assert "select_threshold" not in imported and "train" not in imported


def _assert_refused_as_eval_only(code: int, capsys: pytest.CaptureFixture[str], out: Path) -> None:
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert "eval-only/" in err and "no licence to train or fit on" in err, err
    assert not out.exists()


@pytest.mark.parametrize("method", ["cnn", "morphometry"])
@pytest.mark.parametrize("where", ["folder", "crop", "qupath"])
def test_training_refuses_data_under_eval_only(
    method: str, where: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A fit on an eval-only set is one line, whether named directly or reached through ``..``.

    The rule held only as a repo scan: ``train-lesions --crops shared/data/eval-only/...`` fitted.
    """
    from skimage import io

    from lnpath.cli import main

    held = tmp_path / "eval-only" / "set"
    own = tmp_path / "own"
    for folder in (held, own):
        folder.mkdir(parents=True)
        rng = np.random.default_rng(0)
        io.imsave(folder / "a.png", rng.integers(0, 255, (48, 48, 3), dtype=np.uint8))
    (held / "labels.csv").write_text("image,class\na.png,Normal\n")
    (own / "labels.csv").write_text("image,class\na.png,Normal\n../eval-only/set/a.png,Scl\n")
    if where == "qupath":
        source = ["--qupath", held / "glomeruli.geojson", held / "slide.svs"]
    else:
        crops = held if where == "folder" else own
        source = ["--crops", crops, "--labels", crops / "labels.csv", "--crop-mpp", "0.5"]
        source = source if method == "morphometry" else source[:4]
    out = tmp_path / "model"
    argv = ["train-lesions", "--method", method, *source, "--out", out]
    argv += ["--map", "Normal=", "--map", "Scl=global_sclerosis"]
    code = main([str(a) for a in argv])
    _assert_refused_as_eval_only(code, capsys, out)


def test_glomerulus_fine_tuning_refuses_outlines_under_eval_only(
    tmp_path: Path, repo_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``train-glomeruli`` on outlines kept under an ``eval-only/`` folder is one line."""
    import shutil

    from lnpath.cli import main

    held = tmp_path / "eval-only" / "outlines.geojson"
    held.parent.mkdir()
    shutil.copy(repo_dir / "examples" / "demo_biopsy_glomeruli.geojson", held)
    out = tmp_path / "model"
    slide = repo_dir / "examples" / "demo_biopsy.tiff"
    code = main(
        ["train-glomeruli", "--slides", str(slide), "--annotations", str(held), "--out", str(out)]
    )
    _assert_refused_as_eval_only(code, capsys, out)


def test_learning_from_results_refuses_a_slide_under_eval_only(
    tmp_path: Path, repo_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A confirmed result whose slide is found under ``eval-only/`` does not train; the same
    result with its slide found elsewhere gets past the slide check (to the label counts)."""
    import shutil

    from lnpath.cli import main

    held = tmp_path / "eval-only"
    held.mkdir()
    shutil.copy(repo_dir / "examples" / "demo_biopsy.tiff", held)
    folder = repo_dir / "tests" / "fixtures" / "result-0.1.0-confirmed"
    out = tmp_path / "model"
    args = ["train-lesions", "--method", "morphometry", "--from-results", str(folder)]
    errors = []
    for root in (held, repo_dir / "examples"):
        assert main([*args, "--slide-root", str(root), "--out", str(out)]) == 2
        errors.append(capsys.readouterr().err.strip())
        assert len(errors[-1].splitlines()) == 1 and not out.exists(), errors[-1]
    assert "eval-only/" in errors[0] and "no licence to train or fit on" in errors[0]
    assert "no lesion has enough confirmed labels" in errors[1]


def _edited(folder: Path, **changes: object) -> Path:
    card = json.loads((folder / "card.json").read_text())
    card.update(changes)
    (folder / "card.json").write_text(json.dumps(card))
    return folder


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"kind": "segmentation"}, "kind 'segmentation', not a lesion model"),
        ({"calibration": "platt"}, "calibration must be"),
        ({"calibration": {"labels": {"global_sclerosis": {"a": "x"}}}}, "calibration a of"),
        ({"threshold": "high"}, "threshold must be a finite number"),
        ({"threshold": 1.5}, "threshold 1.5 is not a probability"),
        ({"cross_validation": "5 folds"}, "cross_validation must be a JSON object"),
        ({"cross_validation": {"metrics": {"global_sclerosis": {"kappa": "good"}}}}, "kappa"),
        ({"training_results": "ours"}, "training_results must be a JSON object"),
        ({"refused_labels": ["cellular_crescent"]}, "refused_labels must be a JSON object"),
        ({"sha256": None}, "records no sha256"),
    ],
)
def test_a_malformed_lesion_card_is_refused_at_load(
    tmp_path: Path, changes: dict, message: str
) -> None:
    """These once loaded, then failed as an internal error after the slide was scored."""
    folder = _edited(_model_folder(tmp_path, ("global_sclerosis",)), **changes)
    with pytest.raises(ModelError, match=message) as info:
        lnpath.load_lesion_model(folder)
    assert "\n" not in str(info.value) and "card.json" in str(info.value)


def test_models_of_the_other_task_are_named(tmp_path: Path) -> None:
    """The shipped U-Net as --lesion-model, a lesion model as the segmentation model."""
    with pytest.raises(ModelError, match="a glomerulus segmentation model, not a lesion model"):
        lnpath.load_lesion_model("glomeruli-unet-pas")
    folder = _model_folder(tmp_path, ("global_sclerosis",))
    with pytest.raises(ModelError, match="a lesion-classifier model, not a glomerulus segm"):
        lnpath.load_model(folder)


def test_a_well_formed_card_calls_with_its_own_threshold(
    tmp_path: Path, demo: tuple[lnpath.Slide, Glomeruli]
) -> None:
    slide, glomeruli = demo
    folder = _edited(_model_folder(tmp_path, ("global_sclerosis",)), threshold=0.01)
    caller = lnpath.load_lesion_model(folder)
    findings = caller.call(glomeruli[:2], slide)
    assert caller.threshold == 0.01 and findings["global_sclerosis"].all()
