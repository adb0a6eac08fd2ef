"""What a sweep of every command and public function with bad inputs found (issue #20).

Each case once printed "internal error", raised a non-lnpath exception or, worse, did something
with a value that means nothing (a model "fine-tuned" for -1 steps). Now each is one line that
names the file or the field.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from .conftest import assert_one_line_error, lnpath_cli

DEMO = Path(__file__).resolve().parents[1] / "examples"


def _geojson_with_class(tmp_path: Path, classification: object) -> Path:
    path = tmp_path / "classified.geojson"
    square = [[[100, 100], [400, 100], [400, 400], [100, 400], [100, 100]]]
    feature = {
        "type": "Feature",
        "geometry": {"type": "Polygon", "coordinates": square},
        "properties": {"objectType": "annotation", "classification": classification},
    }
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [feature]}))
    return path


@pytest.mark.parametrize("name", [["Sclerotic"], {"a": 1}, 5])
def test_a_classification_name_that_is_not_text(name: object, tmp_path: Path) -> None:
    path = _geojson_with_class(tmp_path, {"name": name})
    line = assert_one_line_error(lnpath_cli("score-findings", path), "classification name")
    assert line.count(str(path)) == 1, line  # named once, not "PATH: PATH feature 0: ..."


@pytest.mark.parametrize("value", ["[lnhr_default]", "{a: 1}", "5"])
def test_a_response_preset_that_is_not_a_name(value: str, tmp_path: Path) -> None:
    config = tmp_path / "cfg.yaml"
    config.write_text(f"response_preset: {value}\n")
    proc = lnpath_cli("score-findings", DEMO / "demo_biopsy_glomeruli.geojson", "--config", config)
    assert_one_line_error(proc, str(config), "response_preset")


@pytest.mark.parametrize("port", ["-1", "65536", "99999"])
def test_workstation_port_out_of_range(port: str, demo_result_template: Path) -> None:
    proc = lnpath_cli("workstation", demo_result_template, "--port", port)
    assert_one_line_error(proc, "port", port)


@pytest.mark.parametrize(
    ("option", "value", "field"),
    [
        ("--iterations", "-1", "iterations"),
        ("--iterations", "0", "iterations"),
        ("--lr", "nan", "lr"),
        ("--lr", "-0.1", "lr"),
        ("--lr", "inf", "lr"),
        ("--val-fraction", "2", "val_fraction"),
        ("--val-fraction", "nan", "val_fraction"),
    ],
)
def test_train_glomeruli_with_a_recipe_that_cannot_train(
    option: str, value: str, field: str, tmp_path: Path
) -> None:
    """``--iterations -1`` once exited 0 and wrote the base model back as a "fine-tuned" one."""
    out = tmp_path / "model"
    proc = lnpath_cli(
        "train-glomeruli",
        "--slides",
        DEMO / "demo_biopsy.tiff",
        "--annotations",
        DEMO / "demo_biopsy_glomeruli.geojson",
        "--out",
        out,
        option,
        value,
    )
    assert_one_line_error(proc, field)
    assert not out.exists()
