"""Findings tables from CSV/Parquet/rows and from the real QuPath glomerulus exports."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd
import pytest

import lnpath
from lnpath.core.errors import InputError
from lnpath.core.findings import LESIONS
from lnpath.io.tables import findings_from_geojson, read_findings

HEADER = "glomerulus_id," + ",".join(LESIONS)


def write_csv(path: Path, *rows: str, header: str = HEADER) -> Path:
    path.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    return path


def test_csv_booleans_in_any_spelling_and_empty_is_not_assessed(tmp_path: Path) -> None:
    csv = write_csv(
        tmp_path / "g.csv",
        "1,true,FALSE,,Yes,no,1,0,No,YES",
        "2, True ,0,,NO,yes,0,1,false,TRUE",
    )
    table = read_findings(csv)
    assert table["glomerulus_id"].tolist() == [1, 2]
    for lesion in LESIONS:
        assert str(table[lesion].dtype) == "boolean"
    assert table["endocapillary_hypercellularity"].tolist() == [True, True]
    assert table["neutrophils_karyorrhexis"].tolist() == [False, False]
    assert table["fibrinoid_necrosis"].isna().all()
    assert table["segmental_sclerosis"].tolist() == [True, True]


def test_rows_dataframe_and_parquet_give_the_same_table(tmp_path: Path) -> None:
    rows = [{"glomerulus_id": i, **{lesion: i % 2 == 0 for lesion in LESIONS}} for i in range(4)]
    from_rows = read_findings(rows)
    frame = pd.DataFrame(rows)
    frame.to_parquet(tmp_path / "g.parquet")
    pd.testing.assert_frame_equal(from_rows, read_findings(frame))
    pd.testing.assert_frame_equal(from_rows, read_findings(tmp_path / "g.parquet"))


def test_optional_columns_probabilities_measurements_and_source(tmp_path: Path) -> None:
    csv = write_csv(
        tmp_path / "g.csv",
        "a,1,0,,0,0,0,0,0,0,0.9,,12.5,model,yes",
        "b,0,0,,0,0,0,0,1,0,0.1,0.3,x,model,",
        header=HEADER + ",p_endocapillary_hypercellularity,p_fibrinoid_necrosis,m_area,source,"
        "ischemic",
    )
    table = read_findings(csv)
    assert table["glomerulus_id"].tolist() == ["a", "b"]
    assert table["p_endocapillary_hypercellularity"].tolist() == [0.9, 0.1]
    assert pd.isna(table["p_fibrinoid_necrosis"].iloc[0])
    assert table["m_area"].iloc[0] == 12.5 and pd.isna(table["m_area"].iloc[1])
    assert table["ischemic"].tolist()[0] is True and pd.isna(table["ischemic"].iloc[1])
    assert table["source"].tolist() == ["model", "model"]


@pytest.mark.parametrize(
    ("rows", "header", "message"),
    [
        (["1,0,0,0,0,0,0,0,0"], "glomerulus_id," + ",".join(LESIONS[:-1]), "segmental_sclerosis"),
        (["1,maybe,0,0,0,0,0,0,0,0"], HEADER, "'maybe' is not a boolean"),
        (["1,2,0,0,0,0,0,0,0,0"], HEADER, "'2' is not a boolean"),
        (["1,0,0,0,0,0,0,0,0,0", "1,0,0,0,0,0,0,0,0,0"], HEADER, "duplicate glomerulus_id 1"),
        ([",0,0,0,0,0,0,0,0,0"], HEADER, "glomerulus_id is empty"),
        (["1,0,0,0,0,0,0,0,0,0,1.5"], HEADER + ",p_fibrous_crescent", "outside [0, 1]"),
        (["1,0,0,0,0,0,0,0,0,0,-0.1"], HEADER + ",p_fibrous_crescent", "outside [0, 1]"),
        (["1,0,0,0,0,0,0,0,0,0,high"], HEADER + ",p_fibrous_crescent", "not a number"),
    ],
)
def test_bad_tables_raise_one_line_naming_the_file(
    tmp_path: Path, rows: list[str], header: str, message: str
) -> None:
    csv = write_csv(tmp_path / "bad.csv", *rows, header=header)
    with pytest.raises(InputError) as info:
        read_findings(csv)
    text = str(info.value)
    assert str(csv) in text and message in text and "\n" not in text


def test_unknown_columns_warn_but_measurements_do_not(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    csv = write_csv(
        tmp_path / "g.csv", "1,0,0,0,0,0,0,0,0,0,1,3.0", header=HEADER + ",endocap_typo,m_x"
    )
    with caplog.at_level(logging.WARNING, logger="lnpath.core.findings"):
        table = read_findings(csv)
    assert "endocap_typo" in caplog.text and "m_x" not in caplog.text
    assert "m_x" in table
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="lnpath.core.findings"):
        read_findings(table)  # scoring reads the table again: warned once is enough
    assert caplog.text == ""


def test_missing_file_and_unsupported_format(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such findings file"):
        read_findings(tmp_path / "absent.csv")
    (tmp_path / "g.xlsx").write_text("x")
    with pytest.raises(InputError, match=r"must be \.csv"):
        read_findings(tmp_path / "g.xlsx")


def test_header_only_csv_is_an_empty_table(tmp_path: Path) -> None:
    table = read_findings(write_csv(tmp_path / "g.csv"))
    assert len(table) == 0 and list(table.columns[:1]) == ["glomerulus_id"]


def test_an_empty_list_of_rows_is_an_empty_table_scored_inadequate() -> None:
    """Spec §2.3 (< 8 glomeruli: counts only): no rows is 0 glomeruli, as a header-only file
    is, not "missing required column(s)" for every lesion column."""
    score = lnpath.score_findings([])
    assert (score.adequacy.n_glomeruli, score.adequacy.status) == (0, "inadequate")
    assert score.activity_index.total is None and score.isn_rps_class.proposal is None


# file -> (glomeruli kept, unclassified excluded, any sclerosis, glomerulosclerosis score)
QUPATH = {
    "TPATH012": (32, 0, 1, 1),
    "TPATH065": (77, 0, 65, 3),
    "TPATH066": (77, 0, 62, 3),
    "TPATH081": (10, 10, 2, 1),
    "TPATH085": (24, 0, 0, 0),
    "TPATH087": (106, 0, 20, 1),
    "TPATH088": (17, 0, 1, 1),
    "TPATH089": (18, 0, 1, 1),
    "TPATH129": (81, 0, 35, 2),
}


@pytest.mark.parametrize("name", sorted(QUPATH))
def test_real_qupath_exports(qupath_dir: Path, name: str) -> None:
    kept, excluded, sclerosed, score = QUPATH[name]
    table = findings_from_geojson(qupath_dir / f"{name}.geojson")
    assert len(table) == kept
    assert len(table.attrs["excluded"]) == excluded
    assert all(e["classification"] is None for e in table.attrs["excluded"])
    assert (table["source"] == f"qupath:{name}.geojson").all()
    assert (table["m_area_px"] > 0).all()
    # QuPath classes say nothing about activity lesions: those stay not assessed
    for lesion in LESIONS[:7]:
        assert table[lesion].isna().all()
    component = lnpath.score_findings(table).chronicity_index.components["glomerulosclerosis"]
    assert (component.n, component.N, component.score) == (sclerosed, kept, score)


def test_qupath_classes_map_to_global_and_segmental(qupath_dir: Path) -> None:
    table = findings_from_geojson(qupath_dir / "TPATH012.geojson")
    partial = table[table["segmental_sclerosis"].fillna(False)]
    assert len(partial) == 1 and not partial["global_sclerosis"].iloc[0]
    raw = json.loads((qupath_dir / "TPATH012.geojson").read_text())
    position = int(partial["glomerulus_id"].iloc[0])
    assert raw["features"][position]["properties"]["classification"]["name"] == (
        "Partially_sclerotic"
    )


def test_unclassified_features_are_reported_not_guessed(
    qupath_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="lnpath.core.findings"):
        table = findings_from_geojson(qupath_dir / "TPATH081.geojson")
    assert "10 of 20 feature(s) excluded" in caplog.text and "unclassified" in caplog.text
    kept = set(table["glomerulus_id"])
    assert kept.isdisjoint(e["feature"] for e in table.attrs["excluded"])


def test_custom_class_map(qupath_dir: Path) -> None:
    table = findings_from_geojson(
        qupath_dir / "TPATH088.geojson",
        class_map={"Sclerotic": {"global_sclerosis": True}, "Normal": {"global_sclerosis": False}},
    )
    assert table["global_sclerosis"].sum() == 1 and table["segmental_sclerosis"].isna().all()
    with pytest.raises(InputError, match="unknown lesion"):
        findings_from_geojson(qupath_dir / "TPATH088.geojson", class_map={"Normal": {"x": True}})


def test_malformed_geojson(tmp_path: Path) -> None:
    bad = tmp_path / "bad.geojson"
    bad.write_text("{not json")
    with pytest.raises(InputError, match="not valid JSON"):
        findings_from_geojson(bad)
    bad.write_text(json.dumps({"type": "FeatureCollection", "features": [{"type": "Point"}]}))
    with pytest.raises(InputError, match=str(bad)):
        findings_from_geojson(bad)


def test_outlines_lnpath_segment_writes_score_as_glomeruli_not_assessed(tmp_path: Path) -> None:
    """``lnpath segment`` writes class ``Glomerulus``: scored, they were all excluded and the
    biopsy read "0 glomeruli, inadequate"; each counts, with every lesion not assessed."""
    demo = Path(__file__).resolve().parents[1] / "examples" / "demo_biopsy_glomeruli.geojson"
    outlines = lnpath.Glomeruli.from_geojson(demo, mpp=0.5)
    written = outlines.write_geojson(tmp_path / "segmented.geojson")
    assert {
        f["properties"]["classification"]["name"]
        for f in json.loads(written.read_text())["features"]
    } == {"Glomerulus"}
    table = findings_from_geojson(written)
    assert len(table) == len(outlines) and table.attrs["excluded"] == []
    assert table[list(LESIONS)].isna().all().all()
    score = lnpath.score_findings(table)
    assert score.adequacy.n_glomeruli == len(outlines)
