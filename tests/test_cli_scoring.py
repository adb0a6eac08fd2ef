"""``lnpath score-findings``: output formats, empty tables and bad input exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lnpath.cli import main
from lnpath.core.findings import LESIONS

HEADER = "glomerulus_id," + ",".join(LESIONS)


@pytest.fixture
def findings_csv(tmp_path: Path) -> Path:
    rows = [f"{i},{'yes' if i < 3 else 'no'},no,,no,no,no,no,{'1' if i == 9 else '0'},0"
            for i in range(12)]  # fmt: skip
    path = tmp_path / "glomeruli.csv"
    path.write_text("\n".join([HEADER, *rows]) + "\n")
    return path


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_json_output(
    findings_csv: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cortex = tmp_path / "cortex.json"
    cortex.write_text(json.dumps({"interstitial_inflammation": 0.1, "tubular_atrophy": 0.3}))
    code, out, _ = run(["score-findings", str(findings_csv), "--cortex", str(cortex)], capsys)
    assert code == 0
    d = json.loads(out)
    endo = d["activity_index"]["components"]["endocapillary_hypercellularity"]
    assert (endo["n"], endo["N"], endo["score"]) == (3, 12, 2)
    assert d["activity_index"]["not_assessed"] == ["fibrinoid_necrosis"]
    assert d["chronicity_index"]["components"]["tubular_atrophy"]["score"] == 2
    assert d["isn_rps_class"]["proposal"] == "III"


def test_table_output_config_and_preset(
    findings_csv: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("adequacy: {adequate: 15, limited: 12}\n")
    argv = ["score-findings", str(findings_csv), "--config", str(config), "--format", "table"]
    code, out, _ = run(argv, capsys)
    assert code == 0
    assert "endocapillary_hypercellularity" in out and "3/12" in out
    assert "Adequacy: limited" in out and "fibrinoid_necrosis" in out
    code, out, _ = run([*argv[:-2], "--preset", "oxford_8"], capsys)
    assert code == 0 and json.loads(out)["adequacy"]["status"] == "adequate"


def test_table_gives_each_complete_index_its_band_word(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """§1.7: 3/12 endocapillary (score 2) and nothing else is AI 2, "low"; 40 % fibrosis and
    30 % atrophy are CI 2 + 2 = 4, "moderate"."""
    rows = [f"{i},{'1' if i < 3 else '0'},0,0,0,0,0,0,0,0" for i in range(12)]
    path = tmp_path / "complete.csv"
    path.write_text("\n".join([HEADER, *rows]) + "\n")
    cortex = tmp_path / "cortex.json"
    cortex.write_text(
        json.dumps(
            {"interstitial_inflammation": 0, "interstitial_fibrosis": 0.4, "tubular_atrophy": 0.3}
        )
    )
    argv = ["score-findings", str(path), "--cortex", str(cortex)]
    code, out, _ = run([*argv, "--format", "table"], capsys)
    assert code == 0
    flat = " ".join(out.split())
    assert "2/24 low" in flat and "4/12 moderate" in flat
    code, out, _ = run(argv, capsys)
    bands = {k: json.loads(out)[k]["band"] for k in ("activity_index", "chronicity_index")}
    assert bands == {"activity_index": "low", "chronicity_index": "moderate"}


def test_qupath_geojson_input(qupath_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["score-findings", str(qupath_dir / "TPATH065.geojson")], capsys)
    assert code == 0
    sclerosis = json.loads(out)["chronicity_index"]["components"]["glomerulosclerosis"]
    assert (sclerosis["n"], sclerosis["N"], sclerosis["score"]) == (65, 77, 3)


def test_empty_table_reports_inadequate_with_exit_zero(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "empty.csv"
    empty.write_text(HEADER + "\n")
    code, out, _ = run(["score-findings", str(empty)], capsys)
    d = json.loads(out)
    assert code == 0 and d["adequacy"]["status"] == "inadequate"
    assert d["activity_index"]["total"] is None
    code, out, _ = run(["score-findings", str(empty), "--format", "table"], capsys)
    assert code == 0 and "not computable" in out


def test_bad_inputs_exit_nonzero_with_one_line(
    findings_csv: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing_column = tmp_path / "missing.csv"
    missing_column.write_text("glomerulus_id,global_sclerosis\n1,0\n")
    bad_value = tmp_path / "value.csv"
    bad_value.write_text(HEADER + "\n1,perhaps,0,0,0,0,0,0,0,0\n")
    bad_cortex = tmp_path / "cortex.json"
    bad_cortex.write_text("{broken")
    out_of_range = tmp_path / "range.json"
    out_of_range.write_text(json.dumps({"interstitial_fibrosis": 2}))
    bad_geojson = tmp_path / "bad.geojson"
    bad_geojson.write_text(json.dumps({"type": "Polygon"}))
    bad_config = tmp_path / "bad.yaml"
    bad_config.write_text("class_vi_treshold: 0.9\n")
    cut_short = tmp_path / "short.csv"  # a truncated copy: the last row stops mid-line
    cut_short.write_text(findings_csv.read_text().rstrip("\n")[:-6] + "\n")
    cases = [
        ([str(tmp_path / "absent.csv")], "absent.csv"),
        ([str(missing_column)], "missing required column"),
        ([str(bad_value)], "'perhaps' is not a boolean"),
        ([str(findings_csv), "--cortex", str(bad_cortex)], "cortex.json: not valid JSON"),
        ([str(findings_csv), "--cortex", str(out_of_range)], "range.json: cortex"),
        ([str(bad_geojson)], "bad.geojson"),
        ([str(findings_csv), "--config", str(bad_config)], "class_vi_threshold"),
        ([str(cut_short)], "short.csv: line 13 has 8 field(s) but the header has 10"),
    ]
    for argv, message in cases:
        code, out, err = run(["score-findings", *argv], capsys)
        assert code == 2, argv
        assert out == ""
        assert err.startswith("lnpath: error: ") and message in err and err.count("\n") == 1


def test_table_percentages_read_in_the_band_they_score(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Spec §1.3 and §6 (whole percentages, scores from exact counts): 49/197 is 24.87% and
    scores 1 (4n = 196 < 197), 99/197 is 50.25% and scores 3 (2n = 198 > 197); fibrosis 0.5001
    scores 3. The table printed them "25%" and "50%" beside scores 1 and 3."""
    rows = [f"{i},{int(i < 49)},{int(i < 99)},0,0,0,0,0,0,0" for i in range(197)]
    path = tmp_path / "edge.csv"
    path.write_text("\n".join([HEADER, *rows]) + "\n")
    cortex = tmp_path / "cortex.json"
    cortex.write_text(json.dumps({"interstitial_fibrosis": 0.5001}))
    code, out, _ = run(
        ["score-findings", str(path), "--cortex", str(cortex), "--format", "table"], capsys
    )
    lines = {line.split("│")[2].strip(): line for line in out.splitlines() if line.count("│") > 8}
    assert code == 0
    assert "49/197 │ 24.9%" in lines["endocapillary_hypercellularity"]
    assert "99/197 │ 50.3%" in lines["neutrophils_karyorrhexis"]
    assert "│ 50.01% │ 3 " in lines["interstitial_fibrosis"]
