"""Batch resume identifies the lesion model by its weights' sha256, not by its name.

A lab that retrains a model and saves it under the same name must not get the old model's results
silently reused; the same weights reached by another name or path are the same model.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch

import lnpath
from lnpath.nn.lesion_net import LesionNet, LesionNetConfig
from lnpath.training.lesions import write_model_folder


def _lesion_model(models: Path, seed: int) -> str:
    torch.manual_seed(seed)
    net = LesionNet(LesionNetConfig(labels=("global_sclerosis",), input_size=32)).eval()
    card = write_model_folder(net, {"mpp": 2.0, "threshold": 0.5}, models / "lab", overwrite=True)
    return str(card["sha256"])


@pytest.fixture
def manifest(repo_dir: Path) -> pd.DataFrame:
    """The demo slide with its own outlines: one slide, scored in-process in seconds."""
    examples = repo_dir / "examples"
    row = {
        "slide_id": "demo",
        "path": str(examples / "demo_biopsy.tiff"),
        "patient_id": "P1",
        "timepoint": "0",
        "glomeruli": str(examples / "demo_biopsy_glomeruli.geojson"),
    }
    return pd.DataFrame([row])


def test_lesion_model_retrained_under_the_same_name_is_not_reused(
    manifest: pd.DataFrame, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    models, out = tmp_path / "models", tmp_path / "out"
    monkeypatch.setenv("LNPATH_MODELS", str(models))  # a lab's own models, found by name
    first = _lesion_model(models, seed=0)
    assert lnpath.score_batch(manifest, out, lesion_model="lab").loc[0, "outcome"] == "scored"
    result = out / "demo" / "result.json"
    assert json.loads(result.read_text())["models"][1]["sha256"] == first
    assert lnpath.score_batch(manifest, out, lesion_model="lab").loc[0, "outcome"] == "skipped"

    second = _lesion_model(models, seed=1)  # retrained, saved under the same name
    assert second != first
    before = result.stat().st_mtime_ns
    status = lnpath.score_batch(manifest, out, lesion_model="lab")
    assert status.loc[0, "outcome"] == "failed"
    assert "lesion_model changed" in status.loc[0, "error"]
    assert "--overwrite" in status.loc[0, "error"]
    assert result.stat().st_mtime_ns == before  # the old result stays until a re-score is asked
    status = lnpath.score_batch(manifest, out, lesion_model="lab", overwrite=True)
    assert status.loc[0, "outcome"] == "scored"
    assert json.loads(result.read_text())["models"][1]["sha256"] == second

    by_path = lnpath.score_batch(manifest, out, lesion_model=str(models / "lab"))
    assert by_path.loc[0, "outcome"] == "skipped"  # same weights by path: the same model
    rules = lnpath.score_batch(manifest, out)
    assert rules.loc[0, "outcome"] == "failed" and "lesion_model changed" in rules.loc[0, "error"]


def test_missing_lesion_model_fails_the_slide_in_one_line(
    manifest: pd.DataFrame, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LNPATH_MODELS", str(tmp_path / "models"))
    out = tmp_path / "out"
    lnpath.score_batch(manifest, out)  # a result scored with the rules
    status = lnpath.score_batch(manifest, out, lesion_model="absent")
    error = status.loc[0, "error"]
    assert status.loc[0, "outcome"] == "failed" and "\n" not in error
    assert "unknown lesion model 'absent'" in error and str(tmp_path / "models") in error
