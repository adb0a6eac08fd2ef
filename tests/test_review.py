"""Pathologist review, confirmation and tamper checks on a scored demo slide."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from shapely.geometry import MultiPolygon, Point, mapping, shape

import lnpath
from lnpath.cli import main
from lnpath.core.errors import InputError, ResultError
from lnpath.io.qupath import read_qupath
from lnpath.results.seal import verify
from lnpath.workflow.signoff import confirm, review
from tests.conftest import DEMO_UNGRADED

INJECTED = "<script>alert('x')</script>"
REVIEWER = "Dr R. Reviewer"
#: What the demo's morphometry leaves unassessed, marked not evaluable by the pathologist.
NOT_EVALUABLE = dict.fromkeys(
    DEMO_UNGRADED,
    "demo section: not graded",
)


@pytest.fixture(scope="module")
def scored(tmp_path_factory: pytest.TempPathFactory, repo_dir: Path) -> Path:
    examples = repo_dir / "examples"
    out = tmp_path_factory.mktemp("review") / "result"
    lnpath.score_slide(
        examples / "demo_biopsy.tiff",
        out=out,
        glomeruli=examples / "demo_biopsy_glomeruli.geojson",
        biopsy={"not_evaluable": NOT_EVALUABLE},  # so that revision 1 can be signed as it is
    )
    return out


@pytest.fixture
def result_dir(scored: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(scored, tmp_path / "result"))


def _qupath_export(result_dir: Path) -> dict[str, Any]:
    """The result's GeoJSON as QuPath 0.4+ re-exports it: id, objectType, classification,
    measurements survive; lnpath's own properties do not."""
    data = json.loads((result_dir / "glomeruli.geojson").read_text())
    for feature in data["features"]:
        props = feature["properties"]
        feature["properties"] = {
            "objectType": props["objectType"],
            "classification": props["classification"],
            "measurements": props["measurements"],
        }
    return data


def _write(data: Any, path: Path) -> Path:
    path.write_text(json.dumps(data))
    return path


def _changes(result: lnpath.SlideResult) -> list[tuple[Any, str, str, str]]:
    return [
        (c["glomerulus"], c["field"], c["before"], c["after"])
        for c in result.to_dict()["changes"]
        if c["revision"] == result.revision
    ]


def _tissue_circle(result_dir: Path) -> dict[str, Any]:
    """A hand-drawn glomerulus on dense tissue, away from every glomerulus the result has."""
    taken = [f.geometry for f in read_qupath(result_dir / "glomeruli.geojson")]
    radius = 90
    with lnpath.open_slide(
        json.loads((result_dir / "result.json").read_text())["slide"]["path"]
    ) as s:
        for y in range(700, 3000, 150):
            for x in range(800, 13000, 150):
                circle = Point(x, y).buffer(radius)
                if any(circle.distance(g) < 50 for g in taken):
                    continue
                patch = s.read(x - radius, y - radius, 2 * radius, 2 * radius, mpp=2.0)
                if (patch.mean(axis=-1) < 225).mean() > 0.7:
                    return {
                        "type": "Feature",
                        "id": "0b7f7a7e-1111-4222-8333-944455556666",
                        "geometry": mapping(circle),
                        "properties": {
                            "objectType": "annotation",
                            "classification": {"name": "Cellular crescent"},
                        },
                    }
    raise AssertionError("no free tissue on the demo slide")


def test_review_with_qupath_edited_geojson(result_dir: Path, tmp_path: Path) -> None:
    before = lnpath.SlideResult.load(result_dir)
    ids = before.findings["glomerulus_id"].tolist()
    n_sclerosed = before.to_dict()["scores"]["chronicity_index"]["components"][
        "glomerulosclerosis"
    ]["n"]
    data = _qupath_export(result_dir)
    features = data["features"]
    features[0]["properties"]["classification"] = {"name": "Global sclerosis", "color": [1, 2, 3]}
    deleted = features.pop(1)
    del features[2]["id"]  # QuPath lost the id: matched by outline
    features[2]["properties"]["classification"] = {"name": "Segmental sclerosis"}
    features.append(_tissue_circle(result_dir))
    after = review(
        result_dir,
        pathologist="Dr B",
        geojson=_write(data, tmp_path / "edited.geojson"),
    )

    assert after.revision == 2 and after.status == "provisional"
    table = after.findings
    assert len(table) == len(ids)  # one deleted, one added
    changes = _changes(after)
    assert (ids[0], "Global sclerosis", "no", "yes") in changes
    assert (ids[3], "Segmental sclerosis", "no", "yes") in changes
    assert (ids[1], "glomerulus", "present", "deleted") in changes
    added = [c for c in changes if c[1] == "glomerulus" and c[3].startswith("added")]
    assert len(added) == 1 and "Cellular crescent" in added[0][3]
    new_id = added[0][0]
    row = table[table["glomerulus_id"] == new_id].iloc[0]
    assert bool(row["cellular_crescent"]) and row["main_call"] == "Cellular crescent"
    assert not pd.isna(row["global_sclerosis"])  # the machine called what the class did not say
    assert deleted["id"] not in set(table["feature_id"])
    ci = after.to_dict()["scores"]["chronicity_index"]["components"]["glomerulosclerosis"]
    assert ci["n"] == n_sclerosed + 2
    assert any(c[0] is None and c[1] == "chronicity index" for c in changes)
    assert (result_dir / "revisions" / "r001" / "result.json").is_file()
    assert (
        json.loads((result_dir / "revisions" / "r001" / "result.json").read_text())["revision"] == 1
    )
    report = (result_dir / "report.html").read_text()
    assert "Changes in review" in report and f'id="g{new_id}"' in report
    verify(result_dir)


def test_review_with_edited_findings_and_cortex(result_dir: Path, tmp_path: Path) -> None:
    table = pd.read_csv(result_dir / "findings.csv", dtype=str, keep_default_na=False)
    first = int(table.loc[0, "glomerulus_id"])
    table.loc[0, "fibrinoid_necrosis"] = "yes"
    last = int(table["glomerulus_id"].iloc[-1])
    table.iloc[:-1].to_csv(tmp_path / "edited.csv", index=False)  # last row left out: deleted
    after = review(
        result_dir,
        pathologist=REVIEWER,
        findings=tmp_path / "edited.csv",
        cortex={"interstitial_fibrosis": 0.3},
    )
    changes = _changes(after)
    assert (first, "Fibrinoid necrosis", "not assessed", "yes") in changes
    assert (last, "glomerulus", "present", "deleted") in changes
    assert last not in set(after.findings["glomerulus_id"])
    assert (None, "interstitial fibrosis (fraction of cortex)", "not assessed", "0.3") in changes
    fibrosis = after.to_dict()["scores"]["chronicity_index"]["components"]["interstitial_fibrosis"]
    assert fibrosis["assessed"] and fibrosis["score"] == 2
    verify(result_dir)
    report = result_dir / "report.html"  # a provisional report is sealed by the audit trail too
    report.write_text(report.read_text().replace("PROVISIONAL", "CONFIRMED", 1))
    with pytest.raises(ResultError, match=r"report\.html: modified"):
        verify(result_dir)


def test_unchanged_export_writes_nothing(result_dir: Path, tmp_path: Path) -> None:
    same = review(
        result_dir,
        pathologist=REVIEWER,
        geojson=_write(_qupath_export(result_dir), tmp_path / "same.geojson"),
    )
    assert same.revision == 1
    assert not (result_dir / "revisions" / "r002").exists()


def test_a_qupath_02_and_04_reexport_with_a_ruler_is_applied(
    result_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """QuPath 0.2 names the object type in ``id`` and has no objectType; 0.4 writes a class as
    ``names``; both add isLocked/plane; a pathologist's ruler line and point are no glomeruli."""
    ids = lnpath.SlideResult.load(result_dir).findings["glomerulus_id"].tolist()
    data = _qupath_export(result_dir)
    for feature in data["features"]:
        feature["id"] = "PathAnnotationObject"
        feature["properties"].pop("objectType")
        feature["properties"].update(isLocked=False, plane={"c": -1, "z": 0, "t": 0})
    data["features"][0]["properties"]["classification"] = {
        "names": ["Global sclerosis"],
        "color": [120, 120, 120],
    }
    line = {"type": "LineString", "coordinates": [[100, 100], [400, 100]]}
    data["features"] += [
        {"type": "Feature", "geometry": line, "properties": {"objectType": "annotation"}},
        {"type": "Feature", "geometry": {"type": "Point", "coordinates": [50, 50]}},
    ]
    after = review(
        result_dir, pathologist=REVIEWER, geojson=_write(data, tmp_path / "qupath02.geojson")
    )
    assert _changes(after)[0] == (ids[0], "Global sclerosis", "no", "yes")
    assert not [c for c in _changes(after) if c[1] == "glomerulus"]  # none deleted or added
    assert after.findings["glomerulus_id"].tolist() == ids
    assert "skipped 2 of 25 feature(s) that are not glomerulus outlines" in caplog.text


def test_confirm_seals_and_verify_detects_tampering(result_dir: Path) -> None:
    confirmed = confirm(result_dir, pathologist="Dr A. Pathologist", note="agree")
    data = confirmed.to_dict()
    assert confirmed.status == "confirmed"
    assert data["confirmation"]["pathologist"] == "Dr A. Pathologist"
    assert len(data["confirmation"]["sha256"]) == 64
    assert verify(result_dir).checked == [
        "content",
        "audit chain",
        "report.html",
        "overlay.png",
        "2 snapshot(s)",
    ]
    signed = "Electronically signed by Dr A. Pathologist on "
    shown = re.sub(r"<[^>]+>", "", (result_dir / "report.html").read_text())  # text, not tags
    assert signed in shown
    assert main(["verify", str(result_dir)]) == 0

    csv = result_dir / "findings.csv"
    original = csv.read_text()
    csv.write_text(original.replace("No lesion", "Global sclerosis", 1))
    with pytest.raises(ResultError, match="modified"):
        verify(result_dir)
    assert main(["verify", str(result_dir)]) == 3
    csv.write_text(original)
    verify(result_dir)

    report = result_dir / "report.html"
    original = report.read_text()
    report.write_text(original.replace("Electronically signed", "Signed"))
    with pytest.raises(ResultError, match=r"report\.html"):
        verify(result_dir)
    report.write_text(original)

    unconfirmed = json.loads((result_dir / "result.json").read_text())
    unconfirmed.update(status="provisional", confirmation=None)
    (result_dir / "result.json").write_text(json.dumps(unconfirmed))
    with pytest.raises(ResultError, match="was confirmed but reads 'provisional'"):
        verify(result_dir)


def test_confirm_twice_is_refused(result_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    confirm(result_dir, pathologist="Dr A")
    with pytest.raises(ResultError, match="already confirmed"):
        confirm(result_dir, pathologist="Dr B")
    assert main(["confirm", str(result_dir), "--pathologist", "Dr B"]) == 4  # SignOutRefused
    assert "already confirmed" in capsys.readouterr().err


def test_review_after_confirm_starts_a_new_provisional_revision(
    result_dir: Path, tmp_path: Path
) -> None:
    confirm(result_dir, pathologist="Dr A")
    after = review(
        result_dir, pathologist=REVIEWER, cortex={"tubular_atrophy": 0.6}, supersede=True
    )
    assert after.revision == 2 and after.status == "provisional"
    assert after.to_dict()["confirmation"] is None
    scored = json.loads((result_dir / "revisions" / "r001" / "result.json").read_text())
    assert scored["status"] == "provisional"  # each event's snapshot is written once
    sealed = (result_dir / "revisions" / "r001-confirmed" / "result.json").read_text()
    sealed = json.loads(sealed)
    assert sealed["status"] == "confirmed" and sealed["confirmation"]["pathologist"] == "Dr A"
    events = [json.loads(x)["event"] for x in (result_dir / "revisions" / "audit.jsonl").open()]
    assert events == ["scored", "confirmed", "reviewed"]
    verify(result_dir)
    sealed_csv = result_dir / "revisions" / "r001" / "findings.csv"
    sealed_csv.write_text(sealed_csv.read_text().replace("No lesion", "Global sclerosis", 1))
    with pytest.raises(ResultError, match="snapshot of revision 1 was modified"):
        verify(result_dir)


def test_injected_script_in_name_and_note_is_escaped(result_dir: Path) -> None:
    confirm(result_dir, pathologist=INJECTED, note=f"note {INJECTED}")
    text = (result_dir / "report.html").read_text()
    assert "<script" not in text
    assert text.count("&lt;script&gt;") >= 2


def test_geojson_from_another_slide_is_refused(
    result_dir: Path, qupath_dir: Path, tmp_path: Path
) -> None:
    with pytest.raises(InputError, match=r"outside this slide|another slide"):
        review(result_dir, pathologist=REVIEWER, geojson=qupath_dir / "TPATH081.geojson")
    foreign = json.loads((result_dir / "glomeruli.geojson").read_text())
    foreign["features"][0]["properties"]["lnpath_slide"] = "0123456789abcdef"
    with pytest.raises(InputError, match="another slide"):
        review(
            result_dir, pathologist=REVIEWER, geojson=_write(foreign, tmp_path / "foreign.geojson")
        )
    shifted = _qupath_export(result_dir)  # same shapes, none where this slide has glomeruli
    for feature in shifted["features"]:
        del feature["id"]
        ring = feature["geometry"]["coordinates"][0]
        feature["geometry"]["coordinates"] = [[[x + 1, y % 50 + 1] for x, y in ring]]
    with pytest.raises(InputError, match="another slide"):
        review(
            result_dir, pathologist=REVIEWER, geojson=_write(shifted, tmp_path / "shifted.geojson")
        )
    table = pd.read_csv(result_dir / "findings.csv", dtype=str, keep_default_na=False)
    table.loc[0, "feature_id"] = "5a97e5b2-0000-5971-a6af-fafc25d0b67b"
    table.to_csv(tmp_path / "foreign.csv", index=False)
    with pytest.raises(InputError, match="another slide"):
        review(result_dir, pathologist=REVIEWER, findings=tmp_path / "foreign.csv")
    assert lnpath.SlideResult.load(result_dir).revision == 1


def test_unknown_class_is_refused_with_the_known_ones(result_dir: Path, tmp_path: Path) -> None:
    data = _qupath_export(result_dir)
    data["features"][0]["properties"]["classification"] = {"name": "Sclerosed-ish"}
    with pytest.raises(
        InputError, match=r"unknown glomerulus class 'Sclerosed-ish'.*Global sclerosis"
    ):
        review(result_dir, pathologist=REVIEWER, geojson=_write(data, tmp_path / "bad.geojson"))


def test_cli_review_lists_changes(
    result_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        ["review", str(result_dir), "--cortex", "interstitial_fibrosis=30%", "--note", "x",
         "--pathologist", REVIEWER]
    )  # fmt: skip
    assert code == 0
    out = capsys.readouterr().out
    assert "Changes in revision 2" in out and "fibrosis" in out and "0.3" in out
    assert main(["review", str(result_dir), "--cortex", "fibrosis=0.3", "--pathologist", "X"]) == 2
    assert "unknown field 'fibrosis'" in capsys.readouterr().err


def test_redrawn_outline_is_remeasured(result_dir: Path, tmp_path: Path) -> None:
    data = _qupath_export(result_dir)
    feature = data["features"][0]
    outline = shape(feature["geometry"])
    x0, y0, _, _ = outline.bounds
    stray = Point(x0 + 5, y0 + 5).buffer(3)  # QuPath brush leftovers make a MultiPolygon
    feature["geometry"] = mapping(MultiPolygon([outline.buffer(20), stray]))
    before = lnpath.SlideResult.load(result_dir).findings.iloc[0]
    after = review(
        result_dir, pathologist=REVIEWER, geojson=_write(data, tmp_path / "redrawn.geojson")
    )
    gid = int(before["glomerulus_id"])
    assert any(c[0] == gid and c[1] == "outline area µm²" for c in _changes(after))
    row = after.findings.set_index("glomerulus_id").loc[gid]
    assert row["area_um2"] > before["area_um2"]
    assert not pd.isna(row["m_area_um2"]) and row["m_area_um2"] != before["m_area_um2"]
    saved = {f.name: f.geometry for f in read_qupath(result_dir / "glomeruli.geojson")}
    assert saved[f"G{gid}"].geom_type == "Polygon"


def test_a_second_writer_is_refused_while_one_holds_the_folder(result_dir: Path) -> None:
    fcntl = pytest.importorskip("fcntl")
    with open(result_dir.parent / f".{result_dir.name}.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        with pytest.raises(ResultError, match="another lnpath process is writing"):
            confirm(result_dir, pathologist="Dr A")
    assert confirm(result_dir, pathologist="Dr A").status == "confirmed"


def test_a_tissue_annotation_in_the_export_is_not_taken_for_a_glomerulus(
    result_dir: Path, tmp_path: Path
) -> None:
    data = _qupath_export(result_dir)
    data["features"].append(
        {
            "type": "Feature",
            "geometry": mapping(Point(4000, 1000).buffer(600)),
            "properties": {"objectType": "annotation"},
        }
    )
    with pytest.raises(InputError, match=r"too large for a glomerulus"):
        review(
            result_dir, pathologist=REVIEWER, geojson=_write(data, tmp_path / "with-tissue.geojson")
        )


def test_review_records_lesion_extent_for_the_2003_labels(result_dir: Path, tmp_path: Path) -> None:
    table = pd.read_csv(result_dir / "findings.csv", dtype=str, keep_default_na=False)
    first = int(table.loc[0, "glomerulus_id"])
    table["lesion_extent"] = ""
    table.loc[0, "lesion_extent"] = "Segmental"
    table.to_csv(tmp_path / "extent.csv", index=False)
    after = review(result_dir, pathologist=REVIEWER, findings=tmp_path / "extent.csv")
    assert _changes(after) == [(first, "lesion extent", "not recorded", "segmental")]
    saved = pd.read_csv(result_dir / "findings.csv")
    assert saved.loc[saved["glomerulus_id"] == first, "lesion_extent"].item() == "segmental"
    table = pd.read_csv(result_dir / "findings.csv", dtype=str, keep_default_na=False)  # revision 2
    table.loc[1, "lesion_extent"] = "most of it"
    table.to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(InputError, match="'most of it' is not segmental or global"):
        review(result_dir, pathologist=REVIEWER, findings=tmp_path / "bad.csv")


def test_an_empty_edit_does_not_delete_every_glomerulus(result_dir: Path, tmp_path: Path) -> None:
    header = (result_dir / "findings.csv").read_text().splitlines()[0]
    (tmp_path / "empty.csv").write_text(header + "\n")
    before = (result_dir / "result.json").read_text()
    with pytest.raises(InputError, match="the edit deletes all 23 glomeruli"):
        review(result_dir, pathologist=REVIEWER, findings=tmp_path / "empty.csv")
    empty = _write({"type": "FeatureCollection", "features": []}, tmp_path / "empty.geojson")
    with pytest.raises(InputError, match="deletes all"):
        review(result_dir, pathologist=REVIEWER, geojson=empty)
    assert (result_dir / "result.json").read_text() == before


def test_spreadsheet_ids_and_shifted_rows(result_dir: Path, tmp_path: Path) -> None:
    table = pd.read_csv(result_dir / "findings.csv", dtype=str, keep_default_na=False)
    first = int(table.loc[0, "glomerulus_id"])
    excel = table.copy()
    excel["glomerulus_id"] = [f"{g}.0" for g in excel["glomerulus_id"]]  # as Excel saves them
    excel.loc[0, "fibrinoid_necrosis"] = "yes"
    excel.to_csv(tmp_path / "excel.csv", index=False)
    assert (first, "Fibrinoid necrosis", "not assessed", "yes") in _changes(
        review(result_dir, pathologist=REVIEWER, findings=tmp_path / "excel.csv")
    )
    table = pd.read_csv(result_dir / "findings.csv", dtype=str, keep_default_na=False)  # revision 2
    shifted = table.copy()
    shifted.loc[[0, 1], "glomerulus_id"] = shifted.loc[[1, 0], "glomerulus_id"].to_numpy()
    shifted.to_csv(tmp_path / "shifted.csv", index=False)
    with pytest.raises(InputError, match=r"line 2: feature_id .* is glomerulus"):
        review(result_dir, pathologist=REVIEWER, findings=tmp_path / "shifted.csv")
    table.loc[0, "glomerulus_id"] = "abc"
    table.to_csv(tmp_path / "abc.csv", index=False)
    with pytest.raises(InputError, match="line 2: glomerulus_id 'abc' is not a whole number"):
        review(result_dir, pathologist=REVIEWER, findings=tmp_path / "abc.csv")


@pytest.mark.parametrize(
    "tamper",
    [
        lambda d: (d / "revisions" / "audit.jsonl").open("a").write("{garbage\n"),
        lambda d: (d / "revisions" / "audit.jsonl").open("ab").write(b"\xff\n"),
        lambda d: (d / "overlay.png").unlink(),
        lambda d: _write(
            {**json.loads((d / "result.json").read_text()), "revision": "abc"}, d / "result.json"
        ),
    ],
    ids=["garbage-audit-line", "binary-audit", "missing-overlay", "revision-not-a-number"],
)
def test_any_tampering_is_exit_3_not_a_crash(
    result_dir: Path, tamper: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    tamper(result_dir)
    assert main(["verify", str(result_dir)]) == 3
    err = capsys.readouterr().err.strip()
    assert err.startswith("lnpath: error:") and "\n" not in err and "internal error" not in err
    assert main(["confirm", str(result_dir), "--pathologist", "Dr A"]) == 3


def test_a_pathologist_name_is_one_line(result_dir: Path) -> None:
    with pytest.raises(InputError, match="must be one line"):
        confirm(result_dir, pathologist="Dr A\nCONFIRMED by Dr B")
