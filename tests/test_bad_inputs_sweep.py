"""What a sweep of every command and public function with bad inputs found (issue #20).

Each case once printed "internal error", raised a non-lnpath exception or, worse, did something
with a value that means nothing (a model "fine-tuned" for -1 steps). Now each is one line that
names the file or the field.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
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
        ("--seed", "-1", "seed"),  # an internal ValueError from numpy, after the slide was read
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


# --------------------------------------------------------------------------------------------
# The public API: the wrong kind of value is an lnpath error naming the argument


@pytest.mark.parametrize(
    ("arguments", "needle"),
    [
        ({"cortex": {"interstitial_fibrosis": "abc"}}, "interstitial_fibrosis"),
        ({"cortex": [0.3]}, "cortex"),
        ({"exclusions": [1]}, "exclusions"),
        ({"comment": 5}, "comment"),
        ({"comment": "c", "note": 5}, "note"),
        ({"comment": "c", "base_revision": "x"}, "base_revision"),
        ({"comment": "c", "merge": "banana"}, "merge"),
        ({"findings": 5}, "findings"),
        ({"geojson": 5}, "geojson"),
    ],
    ids=lambda v: next(iter(v)) if isinstance(v, dict) else None,
)
def test_review_arguments_of_the_wrong_kind(
    arguments: dict[str, object],
    needle: str,
    demo_result_template: Path,
    copy_result: Callable[..., Path],
) -> None:
    import lnpath

    folder = copy_result(demo_result_template)
    before = (folder / "result.json").read_bytes()
    with pytest.raises(lnpath.InputError, match=needle):
        lnpath.review(folder, pathologist="Dr R", **arguments)
    assert (folder / "result.json").read_bytes() == before


def test_confirm_note_that_is_not_text(
    demo_result_template: Path, copy_result: Callable[..., Path]
) -> None:
    import lnpath

    folder = copy_result(demo_result_template)
    with pytest.raises(lnpath.InputError, match="note"):
        lnpath.confirm(folder, pathologist="Dr A", note=5)  # type: ignore[arg-type]
    assert lnpath.SlideResult.load(folder).status != "confirmed"


@pytest.mark.parametrize(
    ("findings", "reviewed"), [(None, ["a"]), (None, 5), (5, ())], ids=["text", "int", "table"]
)
def test_review_order_with_the_wrong_kind(findings: object, reviewed: object) -> None:
    import pandas as pd

    import lnpath

    table = pd.DataFrame({"glomerulus_id": [1, 2]}) if findings is None else findings
    with pytest.raises(lnpath.InputError, match="review_order"):
        lnpath.review_order(table, reviewed)  # type: ignore[arg-type]


@pytest.mark.parametrize("shard", ["1/2", (1,), (0.5, 2)])
def test_score_batch_shard_that_is_not_a_pair(shard: object, tmp_path: Path) -> None:
    import lnpath

    manifest = tmp_path / "m.csv"
    slide = DEMO / "demo_biopsy.tiff"
    manifest.write_text(f"slide_id,path,patient_id,timepoint\ns1,{slide},P1,0\n")
    with pytest.raises(lnpath.InputError, match="shard"):
        lnpath.score_batch(manifest, tmp_path / "out", shard=shard)  # type: ignore[arg-type]


@pytest.mark.parametrize("source", [[1], 5])
def test_a_configuration_that_is_neither_a_file_nor_a_mapping(source: object) -> None:
    import lnpath

    with pytest.raises(lnpath.InputError, match="configuration"):
        lnpath.load_config(source)  # type: ignore[arg-type]


def test_a_class_map_that_is_not_a_mapping() -> None:
    import lnpath

    geojson = DEMO / "demo_biopsy_glomeruli.geojson"
    with pytest.raises(lnpath.InputError, match="class_map"):
        lnpath.findings_from_geojson(geojson, class_map=[1])  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "call",
    [
        lambda lnpath, path: lnpath.detect_tissue(path),
        lambda lnpath, path: lnpath.tile(path, mpp=8),
        lambda lnpath, path: lnpath.measure_cortex(path, []),
        lambda lnpath, path: lnpath.measure_glomeruli([], path),
        lambda lnpath, path: lnpath.segment_glomeruli(path),
    ],
    ids=["detect_tissue", "tile", "measure_cortex", "measure_glomeruli", "segment_glomeruli"],
)
def test_a_path_where_an_open_slide_belongs(call: Callable[..., object]) -> None:
    """``AttributeError: 'str' object has no attribute 'mpp'`` told nobody to open the slide."""
    import lnpath

    with pytest.raises(lnpath.InputError, match="open_slide"):
        call(lnpath, str(DEMO / "demo_biopsy.tiff"))


def test_open_slide_of_a_number() -> None:
    import lnpath

    with pytest.raises(lnpath.SlideError, match="file path"):
        lnpath.open_slide(5)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("mpp", "abc"),
        ("mpp", 0),
        ("mpp", float("inf")),
        ("min_area_mm2", -1),
        ("min_area_mm2", float("nan")),
        ("min_area_mm2", "x"),
    ],
)
def test_detect_tissue_with_a_value_that_means_nothing(name: str, value: object) -> None:
    """A negative or NaN dust limit once kept every speck; text failed as a TypeError."""
    import lnpath

    slide = lnpath.open_slide(DEMO / "demo_biopsy.tiff")
    with pytest.raises(lnpath.InputError, match=name):
        lnpath.detect_tissue(slide, **{name: value})  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------
# Outputs into a folder the user cannot write


def _as_user(*args: object) -> subprocess.CompletedProcess[str]:
    """``python -m lnpath ARGS`` with permission bits honoured even for root."""
    prefix: list[str] = []
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("root without setpriv (util-linux): permission bits are not honoured")
        prefix = [setpriv, "--bounding-set", "-dac_override,-dac_read_search,-fowner", "--"]
    return subprocess.run(
        [*prefix, sys.executable, "-m", "lnpath", *map(str, args)],
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.mark.parametrize("command", ["cohort", "compare"])
def test_outputs_into_a_read_only_folder(
    command: str, demo_result_template: Path, tmp_path: Path
) -> None:
    """cohort.csv and response.html were written without a check: "internal error"."""
    batch = tmp_path / "batch"
    shutil.copytree(demo_result_template, batch / "s1")
    status = "slide_id,outcome,patient_id,timepoint\ns1,scored,P1,0\n"
    (batch / "batch_status.csv").write_text(status)
    args = ["cohort", batch] if command == "cohort" else ["compare", batch / "s1", batch / "s1"]
    if command == "compare":
        args += ["--out", batch / "response"]
    paths = [batch, *batch.rglob("*")]
    try:
        for path in paths:
            path.chmod(0o555 if path.is_dir() else 0o444)
        assert_one_line_error(_as_user(*args), "permission denied")
    finally:
        for path in paths:
            path.chmod(0o755)
    assert sorted(p.name for p in batch.iterdir()) == ["batch_status.csv", "s1"]


@pytest.mark.parametrize(
    "args",
    [
        ("score-findings", "{dir}"),
        ("score-findings", DEMO / "demo_biopsy_glomeruli.geojson", "--config", "{dir}"),
        ("score-findings", DEMO / "demo_biopsy_glomeruli.geojson", "--biopsy", "{dir}"),
        ("review", "{result}", "--geojson", "{dir}", "--pathologist", "Dr R"),
    ],
    ids=["findings", "config", "biopsy", "geojson"],
)
def test_a_folder_where_a_file_belongs(
    args: tuple[object, ...], demo_result_template: Path, tmp_path: Path
) -> None:
    """A folder was reported as "no such file", which sends the user looking for a typo."""
    folder = tmp_path / "a-folder.csv"
    folder.mkdir()
    values = {"{dir}": folder, "{result}": demo_result_template}
    proc = lnpath_cli(*(values.get(str(a), a) for a in args))
    assert_one_line_error(proc, str(folder), "is a folder")


def test_keygen_under_a_file(tmp_path: Path) -> None:
    """It said "cannot write the key pair (File exists)" of a path that exists as no key."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    assert_one_line_error(lnpath_cli("keygen", "--out", blocker / "lab"), "is a file, not a folder")
