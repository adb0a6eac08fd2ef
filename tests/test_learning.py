"""Learning from a lab's own sign-outs: confirmed result folders -> a lesion model.

No open data labels the lupus lesions, so these tests exercise the mechanics only: four "biopsies"
are strips of the train-split demo slide (``train_demo``: the shipped demo holds test-split tiles,
never to be trained on; each strip its own slide file), scored on their annotated glomeruli, given
scripted calls with ``lnpath review --findings`` and confirmed with ``lnpath confirm``. The calls
are arbitrary (every other glomerulus "globally sclerosed", the others endocapillary: dense
enough for the 16 train-split glomeruli to train with a biopsy left out), so nothing here says
anything about accuracy.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import pytest
import tifffile
import torch
from shapely import affinity
from shapely.geometry import box

import lnpath
from lnpath.cli import main
from lnpath.core.errors import InputError, SlideError
from lnpath.io.qupath import read_qupath, write_qupath
from tests.conftest import DEMO_UNGRADED, TrainDemo, held_test_split_tiles

torch.set_num_threads(1)

STRIPS = 4
PATIENTS = ("P1", "P1", "P2", "P3")  # strips 0 and 1: two biopsies of one patient
NOT_ASSESSED_ENDO = 3  # glomeruli whose endocapillary call is set to not assessed


class Biopsies(NamedTuple):
    folders: list[Path]
    slides: list[Path]
    provisional: Path
    root: Path


def _write_slide(pixels: np.ndarray, path: Path, mpp: float) -> None:
    """A two-level tiled JPEG TIFF with its µm/px in the resolution tags (as the demo slide)."""
    with tifffile.TiffWriter(path) as tif:
        for level, arr in enumerate((pixels, pixels[::4, ::4])):
            px_per_cm = 1e4 / (mpp * 4**level)
            tif.write(
                np.ascontiguousarray(arr),
                photometric="rgb",
                tile=(256, 256),
                compression="jpeg",
                resolution=(px_per_cm, px_per_cm),
                resolutionunit="CENTIMETER",
                subfiletype=0 if level == 0 else 1,
                metadata=None,
            )


def _strip(demo: TrainDemo, k: int, out: Path) -> tuple[Path, Path]:
    """Strip ``k`` of the train-split demo slide and its glomeruli wholly inside it."""
    with lnpath.open_slide(demo.slide) as slide:
        width, height = slide.dimensions
        step = width // STRIPS
        x0 = k * step
        pixels = slide.read(x0, 0, step, height)
        mpp = slide.mpp
    tiff = out / f"biopsy{k}.tiff"
    _write_slide(pixels, tiff, mpp)
    inside = box(x0, 0, x0 + step, height)
    features = []
    for feature in read_qupath(demo.geojson):
        if inside.contains(feature.geometry):
            feature.geometry = affinity.translate(feature.geometry, xoff=-x0)
            feature.id = None
            features.append(feature)
    geojson = out / f"biopsy{k}.geojson"
    write_qupath(features, geojson)
    return tiff, geojson


def _scripted_calls(result: Path, k: int, out: Path) -> Path:
    """Arbitrary calls standing in for a pathologist's: they test label handling, not accuracy."""
    table = pd.read_csv(result / "findings.csv")
    table["global_sclerosis"] = [(i + k) % 2 == 1 for i in range(len(table))]
    table["segmental_sclerosis"] = False
    table["cellular_crescent"] = False
    table["endocapillary_hypercellularity"] = [(i + k) % 2 == 0 for i in range(len(table))]
    if k == 0:
        table.loc[0, "cellular_crescent"] = True  # one crescent in all: too few to learn
    if k == 1:
        table["endocapillary_hypercellularity"] = table["endocapillary_hypercellularity"].astype(
            object
        )
        table.loc[: NOT_ASSESSED_ENDO - 1, "endocapillary_hypercellularity"] = None
    if k == 2:
        table["ischemic"] = [i == 0 for i in range(len(table))]  # excluded from the labels
    path = out / f"calls{k}.csv"
    table.to_csv(path, index=False)
    return path


#: The index components the scripted calls leave unassessed (endocapillary hypercellularity in part,
#: for biopsy 1), marked so that the results can be signed (confirm refuses an unexplained gap).
NOT_EVALUABLE = {
    "not_evaluable": dict.fromkeys(
        ("endocapillary_hypercellularity", *DEMO_UNGRADED),
        "not graded on this section",
    )
}


def _not_evaluable(k: int) -> dict[str, dict[str, str]]:
    """Biopsy 1 leaves endocapillary hypercellularity unassessed in some glomeruli, and says so."""
    if k != 1:
        return NOT_EVALUABLE
    reason = "3 glomeruli cut tangentially"
    return {
        "not_evaluable": {
            **NOT_EVALUABLE["not_evaluable"],
            "endocapillary_hypercellularity": reason,
        }
    }


def _score_and_confirm(tiff: Path, geojson: Path, out: Path, k: int, **kw: object) -> Path:
    folder = out / f"result{k}"
    lnpath.score_slide(
        tiff,
        out=folder,
        glomeruli=geojson,
        patient_id=PATIENTS[k % 4],
        biopsy=_not_evaluable(k),
        **kw,
    )
    calls = _scripted_calls(folder, k, out)
    assert main(["review", str(folder), "--findings", str(calls), "--reviewer", "Dr A"]) == 0
    assert main(["confirm", str(folder), "--pathologist", "Dr A"]) == 0
    return folder


@pytest.fixture(scope="module")
def biopsies(train_demo: TrainDemo, tmp_path_factory: pytest.TempPathFactory) -> Biopsies:
    root = tmp_path_factory.mktemp("signouts")
    folders, slides = [], []
    for k in range(STRIPS):
        tiff, geojson = _strip(train_demo, k, root)
        folders.append(_score_and_confirm(tiff, geojson, root, k))
        slides.append(tiff)
    # a fifth biopsy scored but never confirmed: the same strip under another fingerprint
    other = root / "biopsy0-rescan.tiff"
    other.write_bytes(slides[0].read_bytes() + b"\0")
    provisional = root / "provisional"
    lnpath.score_slide(other, out=provisional, glomeruli=root / "biopsy0.geojson")
    return Biopsies(folders, slides, provisional, root)


def test_the_strips_hold_no_test_split_pixel(biopsies: Biopsies, repo_dir: Path) -> None:
    """Every strip the models here learn from is cut from the train-split demo: glass wherever a
    test tile of the demo's tile map falls (strips of the shipped demo would hold all seven)."""
    tile_map = repo_dir / "examples" / "demo_biopsy_tiles.json"
    for k, slide in enumerate(biopsies.slides):
        width = tifffile.TiffFile(slide).pages[0].shape[1]
        assert held_test_split_tiles(slide, tile_map, origin=(k * width, 0)) == []


def _card(folder: Path) -> dict:
    return json.loads((folder / "card.json").read_text())


@pytest.fixture(scope="module")
def lab_model(biopsies: Biopsies, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """``train-lesions --method morphometry --from-results`` on the four biopsies + a provisional
    one; the model folder and what the command printed."""
    import contextlib
    import io

    model = tmp_path_factory.mktemp("models") / "lab-model"
    dirs = [str(f) for f in biopsies.folders] + [str(biopsies.provisional)]
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = main(
            [
                "train-lesions",
                "--method",
                "morphometry",
                "--from-results",
                *dirs,
                "--out",
                str(model),
            ]
        )
    assert code == 0, printed.getvalue()
    return model, printed.getvalue()


def test_morphometry_model_from_confirmed_results(
    biopsies: Biopsies, lab_model: tuple[Path, str], tmp_path: Path
) -> None:
    model, printed = lab_model
    assert "1 provisional (provisional)" in printed and "4 confirmed biopsies" in printed
    assert "cellular_crescent: refused" in printed
    card = _card(model)
    assert set(card["labels"]) == {"endocapillary_hypercellularity", "global_sclerosis"}
    assert "cellular_crescent" in card["refused_labels"]
    assert "segmental_sclerosis" in card["refused_labels"]  # no positives at all
    info = card["training_results"]
    assert info["biopsies"] == 4 and info["groups"] == 3
    assert info["ignored"]["provisional"] == [str(biopsies.provisional)]
    for entry, folder in zip(info["results"], biopsies.folders, strict=True):
        assert entry["content_sha256"] == lnpath.verify(folder).content_sha256
        record = json.loads((folder / "result.json").read_text())
        assert entry["slide_sha256"] == record["slide"]["fingerprint"]["sha256"]
        assert entry["confirmed_by"] == "Dr A" and entry["edits"] > 0
        assert entry["audit_head"] == record["seal"]["audit_head"] is not None  # which sign-out
    assert card["lnpath_version"] == lnpath.__version__
    n = sum(len(pd.read_csv(f / "findings.csv")) for f in biopsies.folders) - 1
    assert info["skipped_glomeruli"] == {"excluded": 1, "unreadable": 0}
    endo = card["counts"]["endocapillary_hypercellularity"]
    assert endo["not_assessed"] == NOT_ASSESSED_ENDO  # not assessed is missing, not negative
    assert endo["positive"] + endo["negative"] == n - NOT_ASSESSED_ENDO
    metrics = card["cross_validation"]["metrics"]["global_sclerosis"]
    assert card["cross_validation"]["grouped_by"].startswith("patient")
    assert metrics["n"] == n and metrics["groups"] == 3
    for key in ("kappa_ci", "auc_ci", "sensitivity_ci", "specificity_ci"):
        assert key in metrics
    assert metrics["reliability"] and sum(r["n"] for r in metrics["reliability"]) == n

    # the model calls a new biopsy, and its report names it with its validation figures
    again = tmp_path / "rescored"
    result = lnpath.score_slide(
        biopsies.slides[2],
        out=again,
        glomeruli=biopsies.root / "biopsy2.geojson",
        lesion_model=str(model),
    )
    entry = result.to_dict()["models"][-1]
    assert entry["validation"]["lesions"]["global_sclerosis"]["n"] == n
    assert "cellular_crescent" in entry["validation"]["refused"]
    report = result.report_path.read_text()
    assert "Lesion calls by model lab-model" in report and "κ" in report
    assert "Not called (too few labels to learn): Cellular crescent" in report
    order = lnpath.review_order(result.findings)
    assert sorted(order) == sorted(result.findings["glomerulus_id"])


def test_cnn_from_confirmed_results_python_api(biopsies: Biopsies, tmp_path: Path) -> None:
    card = lnpath.train_lesions_from_results(
        biopsies.folders, tmp_path / "cnn", size=32, epochs=1, folds=2, mpp=2.0
    )
    assert card["kind"] == "lesion-classifier" and card["mpp"] == 2.0
    assert "global_sclerosis" in card["labels"]
    assert card["training_results"]["biopsies"] == 4
    caller = lnpath.load_lesion_model(tmp_path / "cnn")
    assert caller.mpp == 2.0


def test_the_default_rules_say_their_negatives_are_unreviewed(biopsies: Biopsies) -> None:
    report = (biopsies.provisional / "report.html").read_text()
    assert "negative calls are unreviewed" in report


def test_two_results_of_one_slide_count_once(biopsies: Biopsies, tmp_path: Path) -> None:
    copy = Path(shutil.copytree(biopsies.folders[3], tmp_path / "copy-of-3"))
    from lnpath.training.learning import confirmed_results

    results, ignored = confirmed_results([*biopsies.folders, copy])
    assert len(results) == 4 and len(ignored["duplicate_slide"]) == 1


def test_tampered_results_are_ignored_and_counted(biopsies: Biopsies, tmp_path: Path) -> None:
    from lnpath.training.learning import confirmed_results

    tampered = Path(shutil.copytree(biopsies.folders[0], tmp_path / "tampered"))
    table = pd.read_csv(tampered / "findings.csv")
    table["global_sclerosis"] = True
    table.to_csv(tampered / "findings.csv", index=False)
    results, ignored = confirmed_results([tampered, *biopsies.folders[1:]])
    assert ignored["unverified"] == [str(tampered)] and len(results) == 3


def test_a_superseded_confirmation_does_not_train(
    biopsies: Biopsies, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``score_slide --overwrite --supersede`` moves the confirmed folder aside, intact and still
    confirmed; it trained as the biopsy's labels although the lab had replaced them."""
    from lnpath.training.learning import confirmed_results

    lab = tmp_path / "batch"
    lab.mkdir()
    current = Path(shutil.copytree(biopsies.folders[3], lab / "result3"))
    lnpath.score_slide(
        biopsies.slides[3],
        out=current,
        glomeruli=biopsies.root / "biopsy3.geojson",
        overwrite=True,
        supersede=True,
    )
    aside = next(lab.glob("result3.superseded-*"))
    assert lnpath.verify(aside).status == "confirmed"  # intact, and not a label any more
    results, ignored = confirmed_results([*biopsies.folders[:3], lab])
    assert len(results) == 3 and str(aside) not in [str(r.folder) for r in results]
    assert ignored["superseded"] == [str(aside)] and ignored["provisional"] == [str(current)]
    # renamed, it is still known by the seal its successor recorded
    renamed = aside.rename(lab / "old-result3")
    _, ignored = confirmed_results([*biopsies.folders[:3], lab])
    assert ignored["superseded"] == [str(renamed)]
    # alone, the command says what it left out and why, in one line, and writes nothing
    renamed.rename(aside)
    out = tmp_path / "m"
    code = main(["train-lesions", "--from-results", str(aside), "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and not out.exists()
    assert "none of the 1 result folders is confirmed" in err[-1] and "1 superseded" in err[-1]


def test_a_folder_confirmed_by_nobody_is_refused(biopsies: Biopsies, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="none of the 1 result folders is confirmed"):
        lnpath.train_lesions_from_results([biopsies.provisional], tmp_path / "m")
    assert not (tmp_path / "m").exists()


def test_too_few_labels_write_nothing(
    biopsies: Biopsies, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "m"
    # one biopsy: 1-2 positives per lesion, nothing can be estimated
    args = ["train-lesions", "--method", "morphometry", "--out", str(out)]
    code = main([*args, "--from-results", str(biopsies.folders[0])])
    err = capsys.readouterr().err
    assert code == 2 and "no lesion has enough confirmed labels" in err
    assert "nothing written" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_a_moved_slide_is_named_with_the_way_to_find_it(
    biopsies: Biopsies, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    moved_to = tmp_path / "archive"
    moved_to.mkdir()
    slide = biopsies.slides[3]
    shutil.move(slide, moved_to / slide.name)
    try:
        args = ["train-lesions", "--method", "morphometry", "--out", str(tmp_path / "m")]
        code = main([*args, "--from-results", *map(str, biopsies.folders)])
        err = capsys.readouterr().err
        assert code == 2 and str(slide) in err and "--slide-root" in err
        assert len(err.strip().splitlines()) == 1
        from lnpath.training.from_results import locate_slide
        from lnpath.training.learning import confirmed_results

        results, _ = confirmed_results(biopsies.folders[3:])
        assert locate_slide(results[0], moved_to) == moved_to / slide.name
        with pytest.raises(SlideError, match="not there"):
            locate_slide(results[0], tmp_path)
    finally:
        shutil.move(moved_to / slide.name, slide)


def test_results_of_different_models_are_allowed_and_recorded(
    biopsies: Biopsies,
    lab_model: tuple[Path, str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A biopsy scored with a lab model joins biopsies scored with the default rules."""
    first = lab_model[0]
    rescan = tmp_path / "biopsy1-rescan.tiff"
    rescan.write_bytes(biopsies.slides[1].read_bytes() + b"\0")
    folder = _score_and_confirm(
        rescan, biopsies.root / "biopsy1.geojson", tmp_path, 5, lesion_model=str(first)
    )
    out = tmp_path / "second"
    dirs = [*map(str, biopsies.folders), str(folder)]
    code = main(
        ["train-lesions", "--method", "morphometry", "--from-results", *dirs, "--out", str(out)]
    )
    printed = capsys.readouterr().out
    assert code == 0
    models = _card(out)["training_results"]["lesion_models"]
    assert models == sorted(["MorphometryCaller", "lab-model"])
    assert "recorded in the card" in printed


def test_bench_learning_prints_cost_and_curve(biopsies: Biopsies, repo_dir: Path) -> None:
    import subprocess
    import sys

    run = subprocess.run(
        [
            sys.executable,
            str(repo_dir / "scripts" / "bench_learning.py"),
            *map(str, biopsies.folders),
            "--curve",
            "--folds",
            "2",
            "--threads",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=repo_dir,
    )
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout)
    assert out["confirmed_results"] == 4 and out["assemble_s"] > 0 and out["train_s"] > 0
    curve = out["learning_curve"]
    assert [row["biopsy_groups"] for row in curve] == [1, 2]  # 3 patients, one held out
    assert "kappa" in curve[-1]["global_sclerosis"]


def test_a_mixed_folder_trains_on_the_confirmed_originals_only(
    biopsies: Biopsies, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Confirmed, provisional, tampered and copied results in one folder, one of them also named
    on its own: four biopsies train, and the command says why each other folder did not."""
    lab = tmp_path / "lab"
    lab.mkdir()
    originals = [Path(shutil.copytree(f, lab / f.name)) for f in biopsies.folders]
    shutil.copytree(biopsies.provisional, lab / "provisional")
    shutil.copytree(biopsies.folders[3], lab / "result3-copy")  # same slide, confirmed as at once
    tampered = Path(shutil.copytree(biopsies.folders[2], lab / "tampered"))
    table = pd.read_csv(tampered / "findings.csv")
    table["global_sclerosis"] = ~table["global_sclerosis"].astype(bool)
    table.to_csv(tampered / "findings.csv", index=False)
    out = tmp_path / "model"
    args = ["train-lesions", "--method", "morphometry", "--out", str(out), "--folds", "3"]
    assert main([*args, "--from-results", str(lab), str(originals[1])]) == 0
    printed = capsys.readouterr().out
    assert "labels from 4 confirmed biopsies (3 patients/slides)" in printed
    assert "1 provisional (provisional)" in printed and "1 failing their seal (tampered)" in printed
    assert "1 second results of one slide (result3-copy)" in printed  # the original stays
    info = _card(out)["training_results"]
    assert [r["result"] for r in info["results"]] == [f.name for f in originals]
    assert [r["content_sha256"] for r in info["results"]] == [
        lnpath.verify(f).content_sha256 for f in originals
    ]
    # training again over it: only with --overwrite, and the command names what it replaced
    old = _card(out)["sha256"]
    assert main([*args, "--from-results", str(lab)]) == 2
    assert "already exists" in capsys.readouterr().err and _card(out)["sha256"] == old
    assert main([*args, "--from-results", *map(str, originals[:3]), "--overwrite"]) == 0
    assert f"it replaces the model that was there (sha256 {old})" in capsys.readouterr().out


def test_biopsies_of_one_patient_do_not_validate_on_themselves(
    biopsies: Biopsies, tmp_path: Path
) -> None:
    """Four biopsies of one patient were cross-validated per glomerulus, so validation tested on
    the biopsies it trained on, and the card said "glomerulus (single slide)"."""
    from lnpath.training.from_results import measure_results
    from lnpath.training.learning import confirmed_results

    results, ignored = confirmed_results(biopsies.folders)
    for result, patient in zip(results, ("P1", " p1", "P1 ", "p1"), strict=True):
        result.record["patient_id"] = patient  # one patient, typed four ways
    assert len({r.group for r in results}) == 1
    with pytest.raises(InputError, match="all of one patient: validation would test on") as info:
        measure_results(results, ignored)
    assert "nothing written" in str(info.value)


def test_calibration_never_sees_the_labels_it_is_scored_on() -> None:
    """Platt scaling fitted on every out-of-fold logit set the threshold on the validation labels;
    each fold is now scaled on the other folds, so its own labels cannot move its probabilities."""
    from lnpath.training.lesions import out_of_fold_calibrated

    rng = np.random.default_rng(0)
    fold = np.repeat(np.arange(4), 25)
    logits = rng.normal(size=100)
    targets = (logits + rng.normal(size=100) > 0).astype(float)
    targets[::7] = np.nan  # not assessed
    prob = out_of_fold_calibrated(logits, targets, fold)
    flipped = targets.copy()
    flipped[fold == 2] = 1.0 - flipped[fold == 2]
    again = out_of_fold_calibrated(logits, flipped, fold)
    assert np.allclose(prob[fold == 2], again[fold == 2])
    assert not np.allclose(prob[fold != 2], again[fold != 2])
    # a fold whose other folds hold no positive keeps the uncalibrated sigmoid
    only = np.where(fold == 0, 1.0, 0.0)
    lone = out_of_fold_calibrated(logits, only, fold)
    assert np.allclose(lone[fold == 0], 1 / (1 + np.exp(-logits[fold == 0])))


def test_ctrl_c_while_training_keeps_the_model_that_was_there(
    biopsies: Biopsies, tmp_path: Path
) -> None:
    import os
    import signal
    import subprocess
    import sys
    import time

    from tests.conftest import file_hashes

    out = tmp_path / "lab-cnn"
    lnpath.train_lesions_from_results(biopsies.folders, out, size=16, epochs=1, folds=2)
    before = file_hashes(tmp_path)
    args = ["--size", "16", "--epochs", "100000", "--folds", "2", "--threads", "1", "--overwrite"]
    folders = ["--from-results", *map(str, biopsies.folders)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "lnpath", "train-lesions", "--out", str(out), *args, *folders],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # as on a terminal
    )
    time.sleep(8)  # imported, assembled, training
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and err.strip().splitlines()[-1] == "lnpath: interrupted"
    assert file_hashes(tmp_path) == before  # the old model whole, nothing half-written beside it


@contextlib.contextmanager
def _slides_gone(slides: list[Path], away: Path, put: dict[Path, Path] | None = None) -> Iterator:
    """Move ``slides`` out of place (as archived or deleted), optionally leaving another real file
    at a path (``put``: path -> file copied there); every slide is put back afterwards."""
    away.mkdir(exist_ok=True)
    moved = [(slide, Path(shutil.move(slide, away / slide.name))) for slide in slides]
    try:
        for path, source in (put or {}).items():
            shutil.copyfile(source, path)
        yield
    finally:
        for slide, there in moved:
            shutil.move(there, slide)


def test_one_deleted_slide_is_left_out_on_request(
    biopsies: Biopsies, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A confirmed result whose slide was archived away stopped the whole run; with
    ``--skip-missing-slides`` the other three train and the card says which one is missing."""
    four = biopsies.folders
    gone = biopsies.slides[2]
    out = tmp_path / "m"
    args = ["train-lesions", "--method", "morphometry", "--out", str(out), "--folds", "2"]
    args += ["--from-results", *map(str, four)]
    with _slides_gone([gone], tmp_path / "archive"):
        assert main(args) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and str(gone) in err[0] and "not there" in err[0]
        assert "--slide-root" in err[0] and "--skip-missing-slides" in err[0]
        assert not out.exists()
        assert main([*args, "--skip-missing-slides"]) == 0
    printed = capsys.readouterr().out
    assert "labels from 3 confirmed biopsies (2 patients/slides)" in printed
    assert "1 with their slide missing (result2)" in printed
    assert "0 whose slide file is another" in printed
    info = _card(out)["training_results"]
    assert [r["result"] for r in info["results"]] == ["result0", "result1", "result3"]
    assert info["ignored"]["missing_slide"] == [str(four[2])]
    assert info["ignored"]["changed_slide"] == []
    record = json.loads((four[2] / "result.json").read_text())
    assert info["slides_left_out"] == [
        {
            "result": "result2",
            "slide": str(gone),
            "slide_sha256": record["slide"]["fingerprint"]["sha256"],
            "reason": "missing_slide",
        }
    ]
    # every glomerulus of the three (the one the pathologist excluded was on the missing slide)
    n = sum(len(pd.read_csv(f / "findings.csv")) for f in (four[0], four[1], four[3]))
    assert _card(out)["cross_validation"]["metrics"]["global_sclerosis"]["n"] == n


def test_another_file_at_a_slides_path_is_never_trained_on(
    biopsies: Biopsies, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Biopsy 3's slide replaced by another real slide (strip 1) at the same path: its outlines
    would cut the wrong tissue under biopsy 3's calls. It is refused, or left out on request, and
    the original under ``--slide-root`` is found although the recorded path holds a file."""
    four = biopsies.folders
    replaced = biopsies.slides[3]
    archive = tmp_path / "archive"
    with _slides_gone([replaced], archive, put={replaced: biopsies.slides[1]}):
        assert replaced.is_file()
        out = tmp_path / "m"
        args = ["train-lesions", "--method", "morphometry", "--out", str(out), "--folds", "2"]
        assert main([*args, "--from-results", *map(str, four)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"{replaced} is not the slide it was scored on" in err[0]
        assert "--skip-missing-slides" in err[0] and not out.exists()
        card = lnpath.train_lesions_from_results(
            four, out, method="morphometry", folds=2, skip_missing_slides=True
        )
        info = card["training_results"]
        assert [r["result"] for r in info["results"]] == ["result0", "result1", "result2"]
        assert info["ignored"]["changed_slide"] == [str(biopsies.folders[3])]
        assert info["ignored"]["missing_slide"] == []
        assert [s["reason"] for s in info["slides_left_out"]] == ["changed_slide"]
        n = sum(len(pd.read_csv(f / "findings.csv")) for f in four[:3]) - 1  # 1 excluded
        assert card["cross_validation"]["metrics"]["global_sclerosis"]["n"] == n
        # the original, archived under --slide-root, is found although the path holds a file
        again = tmp_path / "again"
        args[args.index(str(out))] = str(again)
        assert main([*args, "--from-results", *map(str, four), "--slide-root", str(archive)]) == 0
    assert "labels from 4 confirmed biopsies" in capsys.readouterr().out
    info = _card(again)["training_results"]
    assert [r["result"] for r in info["results"]] == ["result0", "result1", "result2", "result3"]
    assert info["ignored"]["changed_slide"] == [] and info["slides_left_out"] == []


def test_nothing_left_when_every_slide_is_missing(
    biopsies: Biopsies, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "m"
    args = ["train-lesions", "--method", "morphometry", "--out", str(out), "--skip-missing-slides"]
    with _slides_gone(biopsies.slides, tmp_path / "archive"):
        assert main([*args, "--from-results", *map(str, biopsies.folders)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "none of the 4 confirmed results has its slide" in err[0]
    assert "4 missing, 0 another file" in err[0] and "nothing written" in err[0]
    assert not out.exists()
    crops = tmp_path / "crops"
    crops.mkdir()
    code = main([*args[:-1], "--crops", str(crops), "--labels", "x.csv", "--skip-missing-slides"])
    assert code == 2 and "are for --from-results" in capsys.readouterr().err


def test_a_slide_signed_before_whole_file_hashes_is_still_found(repo_dir: Path) -> None:
    """A 0.1.0 result fingerprints its slide by size and first and last MiB: the slide it was
    signed on is recognised under --slide-root, and another file is not."""
    from lnpath.training.from_results import ConfirmedResult, SlideUnavailable, locate_slide

    folder = repo_dir / "tests" / "fixtures" / "result-0.1.0-confirmed"
    record = json.loads((folder / "result.json").read_text())
    assert "scheme" not in record["slide"]["fingerprint"]
    result = ConfirmedResult(folder, record, "", pd.DataFrame())
    examples = repo_dir / "examples"
    assert locate_slide(result, slide_root=examples) == examples / "demo_biopsy.tiff"
    record["slide"]["name"] = "demo_biopsy_glomeruli.geojson"  # another file under that name
    with pytest.raises(SlideUnavailable, match="not the slide it was scored on"):
        locate_slide(result, slide_root=examples)


def test_train_lesions_names_a_folder_given_alone_and_a_bad_folds(tmp_path: Path) -> None:
    """A single folder (text) was read character by character ("/: not a result folder"); None
    failed in ``for d in None`` and text folds in a comparison."""
    missing = tmp_path / "no-results-here"
    with pytest.raises(InputError, match=f"^{re.escape(str(missing))}: not a result folder"):
        lnpath.train_lesions_from_results(str(missing), tmp_path / "m")  # type: ignore[arg-type]
    with pytest.raises(InputError, match=r"^dirs: expected result folders, got NoneType"):
        lnpath.train_lesions_from_results(None, tmp_path / "m")  # type: ignore[arg-type]
    with pytest.raises(InputError, match=r"^folds must be a whole number >= 2, got '3'"):
        lnpath.train_lesions_from_results([missing], tmp_path / "m", folds="3")  # type: ignore[arg-type]
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize(
    ("setting", "needle"),
    [
        ({"epochs": 0}, "epochs must be >= 1"),  # wrote an untrained network with its metrics
        ({"epochs": -1}, "epochs must be >= 1"),
        ({"epochs": 1.5}, "epochs must be >= 1"),  # torch's "positive integer total_steps"
        ({"size": 8}, "size must be a whole number of px from 16"),
        ({"size": 100_000}, "size must be a whole number of px from 16"),  # MemoryError
        ({"mpp": float("nan")}, "mpp: nan"),  # every glomerulus read, then "could not be read"
        ({"arch": "big"}, "arch 'big'"),
        ({"seed": -1}, "seed must be a whole number from 0"),  # numpy's ValueError
        ({"slide_root": 123}, "slide_root: expected a file or folder path"),
    ],
)
def test_cnn_settings_that_cannot_train_write_nothing(
    biopsies: Biopsies, tmp_path: Path, setting: dict, needle: str
) -> None:
    """Each is refused in one line before a slide is read, and no model folder appears."""
    out = tmp_path / "model"
    settings = {"epochs": 1, "size": 16, "folds": 2, "progress": False, **setting}
    with pytest.raises(InputError, match=f"^{re.escape(needle)}"):
        lnpath.train_lesions_from_results(biopsies.folders, out, **settings)
    assert not out.exists()


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--seed", "-1"], "--seed must be a whole number from 0"),
        (["--method", "morphometry", "--seed", "-1"], "--seed must be a whole number from 0"),
        (["--size", "100000"], "--size must be at most 1024 px"),
    ],
)
def test_train_lesions_refuses_a_seed_or_size_it_cannot_use(
    biopsies: Biopsies, tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list, needle: str
) -> None:
    """``--seed -1`` was "internal error: ValueError: expected non-negative integer" (exit 1)."""
    out = tmp_path / "model"
    dirs = [str(f) for f in biopsies.folders]
    code = main(["train-lesions", "--from-results", *dirs, "--out", str(out), *argv])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith(f"lnpath: error: {needle}") and err.count("\n") == 1
    assert not out.exists()
