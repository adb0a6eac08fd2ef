"""Hand-edited tables and export stamps, as a spreadsheet or a text editor leaves them.

Each case once printed "internal error" (a stamp of ``null`` or ``Infinity``, a QuPath export whose
``features`` is no list), applied an edit as the wrong revision's (a stamp of ``1.7`` or ``"two"``
read as revision 1 or as no stamp), or misread every value of a row: one field too many in the
first row makes pandas take the first column as the index, so a manifest's ``slide_id`` became its
path and a status row was merged back as a slide called ``P1``.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from .conftest import assert_one_line_error, file_hashes, lnpath_cli

DEMO = Path(__file__).resolve().parents[1] / "examples"


def _edited_geojson(result: Path, target: Path, edit: Callable[[dict], None]) -> Path:
    data = json.loads((result / "glomeruli.geojson").read_text(encoding="utf-8"))
    edit(data)
    target.write_text(json.dumps(data), encoding="utf-8")  # json.dumps writes inf as Infinity
    return target


def _first_measurement(data: dict, value: object) -> None:
    data["features"][0]["properties"]["measurements"]["lnpath revision"] = value


@pytest.mark.parametrize(
    ("edit", "needle"),
    [
        (lambda d: d["lnpath"].update(revision=None), "stamp revision null"),
        (lambda d: d["lnpath"].update(revision="two"), 'stamp revision "two"'),
        (lambda d: d["lnpath"].update(revision=1.7), "stamp revision 1.7"),
        (lambda d: d["lnpath"].update(revision=[1]), "stamp revision [1]"),
        # QuPath re-exports drop the top-level stamp: what is left is each feature's measurement
        (lambda d: (d.pop("lnpath"), _first_measurement(d, float("inf"))), "feature 0"),
        (lambda d: (d.pop("lnpath"), d.update(features="G1")), "'features' must be a list"),
        (lambda d: (d.pop("lnpath"), d["features"].insert(0, 5)), "expected a GeoJSON Feature"),
        (lambda d: (d.pop("lnpath"), d["features"][0].update(properties=[1])), "'properties'"),
    ],
)
def test_review_of_an_export_with_a_hand_edited_stamp(
    edit: Callable[[dict], None],
    needle: str,
    demo_result_template: Path,
    copy_result: Callable[[Path], Path],
    tmp_path: Path,
) -> None:
    result = copy_result(demo_result_template)
    export = _edited_geojson(result, tmp_path / "export.geojson", edit)
    _review_refused(result, "--geojson", export, needle)


def _review_refused(result: Path, option: str, edited: Path, needle: str) -> None:
    """``review --geojson/--findings EDITED`` is one line naming the file; the result unchanged."""
    before = file_hashes(result)
    proc = lnpath_cli("review", result, option, edited, "--pathologist", "Dr A")
    assert proc.returncode == 2, proc.stderr
    assert_one_line_error(proc, str(edited), needle)
    assert file_hashes(result) == before


def _edited_findings(result: Path, target: Path, edit: Callable[[list[list[str]]], None]) -> Path:
    with (result / "findings.csv").open(newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    edit(rows)
    with target.open("w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows(rows)
    return target


def _set(rows: list[list[str]], column: str, value: str) -> None:
    rows[1][rows[0].index(column)] = value


@pytest.mark.parametrize(
    ("edit", "needle"),
    [
        (lambda rows: rows[1].append("x"), "line 2 has 30 fields but the header has 29"),
        (lambda rows: rows.__setitem__(1, rows[1][:3]), "line 2 has 3 field(s)"),
        (lambda rows: _set(rows, "lnpath_revision", "abc"), 'lnpath_revision "abc"'),
        (lambda rows: _set(rows, "lnpath_revision", "inf"), 'lnpath_revision "inf"'),
        # a spreadsheet set to a European locale: "missing required column(s)", file unnamed
        (lambda rows: rows.__setitem__(slice(None), [[";".join(r)] for r in rows]), "';'"),
        (lambda rows: _set(rows, "global_sclerosis", "maybe"), "'maybe' is not a boolean"),
    ],
)
def test_review_of_a_findings_table_with_a_malformed_row(
    edit: Callable[[list[list[str]]], None],
    needle: str,
    demo_result_template: Path,
    copy_result: Callable[[Path], Path],
    tmp_path: Path,
) -> None:
    result = copy_result(demo_result_template)
    table = _edited_findings(result, tmp_path / "edited.csv", edit)
    _review_refused(result, "--findings", table, needle)


def test_score_findings_of_a_row_with_one_field_too_many(
    demo_result_template: Path, tmp_path: Path
) -> None:
    """Read on, the glomerulus id would be the feature id and each call the next column's."""
    table = _edited_findings(demo_result_template, tmp_path / "t.csv", lambda r: r[1].append(""))
    proc = lnpath_cli("score-findings", table)
    assert_one_line_error(proc, str(table), "line 2 has 30 fields")


def test_batch_of_a_manifest_with_a_trailing_comma(tmp_path: Path) -> None:
    """It once said "empty timepoint on line(s) 2" of a row that has one: its values had shifted."""
    manifest = tmp_path / "manifest.csv"
    slide = DEMO / "demo_biopsy.tiff"
    manifest.write_text(f"slide_id,path,patient_id,timepoint\ns1,{slide},P1,baseline,\n")
    out = tmp_path / "batch"
    proc = lnpath_cli("batch", manifest, "--out", out)
    assert proc.returncode == 2, proc.stderr
    assert_one_line_error(proc, str(manifest), "line 2 has 5 fields but the header has 4")
    assert not out.exists()


def test_a_manifest_row_without_its_optional_trailing_cells_still_reads(tmp_path: Path) -> None:
    from lnpath.batch.manifest import read_manifest

    manifest = tmp_path / "manifest.csv"
    manifest.write_text("slide_id,path,patient_id,timepoint,mpp\ns1,a.svs,P1,baseline\n")
    table = read_manifest(manifest)
    assert table.loc[0, "timepoint"] == "baseline"
    assert table.loc[0, "mpp"] is None


STATUS_HEADER = "slide_id,patient_id,timepoint,biopsy_date,path,outcome,error,seconds,worker,result"


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (b"", "unreadable status table"),
        (b"\x00\xff\xfe", "unreadable status table"),
        ((STATUS_HEADER + "\ns0,P1,baseline,,a.svs,scored,,7.7,w,/x/s0,x\n").encode(), "line 2"),
        (b"slide,outcome\ns1,scored\n", "no column slide_id, patient_id"),
    ],
    ids=["empty", "not-utf8", "field-too-many", "other-columns"],
)
def test_a_batch_status_table_that_cannot_be_merged_into(
    content: bytes, needle: str, tmp_path: Path
) -> None:
    """Found only once the first slide was scored (an internal error), or merged back garbled."""
    out = tmp_path / "batch"
    out.mkdir()
    status = out / "batch_status.csv"
    status.write_bytes(content)
    manifest = tmp_path / "manifest.csv"
    slide = DEMO / "demo_biopsy.tiff"
    manifest.write_text(f"slide_id,path,patient_id,timepoint\ns1,{slide},P1,baseline\n")
    proc = lnpath_cli("batch", manifest, "--out", out)
    assert proc.returncode == 2, proc.stderr
    assert_one_line_error(proc, str(status), needle, "move it aside")
    assert status.read_bytes() == content
    assert sorted(p.name for p in out.iterdir()) == ["batch_status.csv"]
    assert_one_line_error(lnpath_cli("cohort", out), str(status), needle)


def test_cohort_of_a_status_table_cut_after_its_header(tmp_path: Path) -> None:
    out = tmp_path / "batch"
    out.mkdir()
    (out / "batch_status.csv").write_text(STATUS_HEADER + "\n")
    proc = lnpath_cli("cohort", out)
    assert proc.returncode == 2, proc.stderr
    assert_one_line_error(proc, "batch_status.csv", "no slides in it")


def test_cohort_of_a_folder_that_is_not_there(tmp_path: Path) -> None:
    proc = lnpath_cli("cohort", tmp_path / "typo")
    assert_one_line_error(proc, str(tmp_path / "typo"), "no such folder")


def test_cohort_names_a_tampered_folder_once(
    demo_result_template: Path, copy_result: Callable[..., Path], tmp_path: Path
) -> None:
    """The warning once read "/x/s1: /x/s1: content of revision 1 was modified ..."."""
    folder = copy_result(demo_result_template, "batch/s1")
    result = json.loads((folder / "result.json").read_text(encoding="utf-8"))
    row = f"s1,P1,baseline,,{result['slide']['path']},scored,,1.0,w,{folder}"
    (folder.parent / "batch_status.csv").write_text(f"{STATUS_HEADER}\n{row}\n")
    result["stain"] = "HE"
    (folder / "result.json").write_text(json.dumps(result), encoding="utf-8")
    proc = lnpath_cli("cohort", folder.parent)
    assert proc.returncode == 0, proc.stderr
    warning = [line for line in proc.stderr.splitlines() if "modified" in line]
    assert len(warning) == 1 and warning[0].count(str(folder.resolve())) == 1, proc.stderr
    assert "tampered" in (folder.parent / "cohort.csv").read_text(encoding="utf-8")


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ("image,class\n\xe9.png,Normal\n".encode("latin-1"), "cannot read label table ('utf-8'"),
        (b"image,class\na.png\n", "line 2 has 1 field(s)"),  # once read as class "None"
        (b"image,class\na.png,Normal,extra\n", "line 2 has 3 fields"),
    ],
    ids=["latin-1", "short-row", "long-row"],
)
def test_train_lesions_label_table_that_is_no_table(
    content: bytes, needle: str, tmp_path: Path
) -> None:
    """A Windows spreadsheet's Latin-1 export was an internal error (UnicodeDecodeError)."""
    labels = tmp_path / "labels.csv"
    labels.write_bytes(content)
    out = tmp_path / "model"
    mapping = "Normal=global_sclerosis"
    proc = lnpath_cli(
        "train-lesions", "--crops", tmp_path, "--labels", labels, "--map", mapping, "--out", out
    )
    assert proc.returncode == 2, proc.stderr
    assert_one_line_error(proc, str(labels), needle)
    assert not out.exists()
