"""``lnpath compare``: result folders in, response.json + response.html out, one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from lnpath.cli import main
from lnpath.response.endpoint import PRESETS
from tests.conftest import DEMO_UNGRADED, sealed_result
from tests.test_response import result, score

UNGRADED = DEMO_UNGRADED


@pytest.fixture
def folder(demo_result_template: Path, tmp_path: Path) -> Callable[[str, dict[str, Any]], Path]:
    """A result folder as lnpath writes it, holding the given result.json's scores."""
    return lambda name, data: sealed_result(demo_result_template, tmp_path / name, data)


@pytest.fixture
def pair(folder: Callable[[str, dict[str, Any]], Path]) -> tuple[Path, Path]:
    """Baseline AI 10 / CI 1 (class IV) and follow-up AI 2 / CI 2 (class II) of one patient."""
    bl = folder("bl", result(score(10, 1), biopsy_date="2023-03-01"))
    fu = folder("fu", result(score(2, 2, proposal="II"), biopsy_date="2024-03-01"))
    return bl, fu


def test_compare_writes_json_and_html(pair: tuple[Path, Path], tmp_path: Path, capsys):
    out = tmp_path / "out"
    assert main(["compare", str(pair[0]), str(pair[1]), "--out", str(out)]) == 0
    data = json.loads((out / "response.json").read_text())
    assert data["status"] == "provisional"
    assert data["endpoint"]["name"] == "composite_histologic_responder"
    assert data["endpoint"]["value"] is True
    assert data["deltas"]["activity_index"]["delta"] == -8
    page = (out / "response.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and "composite_histologic_responder" in page
    assert sorted(p.name for p in out.iterdir()) == ["response.html", "response.json"]
    shown = capsys.readouterr().out
    assert "composite_histologic_responder = True [provisional]" in shown
    assert "wrote" in shown


def test_compare_refuses_to_overwrite_without_flag(pair, tmp_path: Path, capsys):
    out = tmp_path / "out"
    assert main(["compare", str(pair[0]), str(pair[1]), "--out", str(out)]) == 0
    assert main(["compare", str(pair[0]), str(pair[1]), "--out", str(out)]) != 0
    assert "already exists" in capsys.readouterr().err
    args = ["compare", str(pair[0]), str(pair[1]), "--out", str(out), "--overwrite"]
    assert main([*args, "--preset", "lufla_AI2"]) == 0
    assert json.loads((out / "response.json").read_text())["preset"]["name"] == "lufla_AI2"


def test_compare_refuses_to_write_into_a_result_folder(pair, capsys):
    """``--out`` a follow-up's own folder put response.json among its sealed files."""
    follow_up = pair[1]
    before = sorted(p.name for p in follow_up.iterdir())
    for overwrite in ([], ["--overwrite"]):
        argv = ["compare", str(pair[0]), str(follow_up), "--out", str(follow_up), *overwrite]
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "is a result folder" in err, err
    assert sorted(p.name for p in follow_up.iterdir()) == before


def test_compare_json_format_preset_and_overrides(pair, capsys):
    argv = ["compare", str(pair[0]), str(pair[1]), "--format", "json"]
    assert main([*argv, "--preset", "malvar_AI0"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert (data["endpoint"]["name"], data["endpoint"]["value"]) == ("histologic_remission", False)
    assert main([*argv, "--preset", "malvar_AI0", "--set", "remission_max_ai=2"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["endpoint"]["value"] is True and data["preset"]["params"]["remission_max_ai"] == 2
    assert main([*argv, "--preset", "class_transition"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["panel"]["class_transition"]["value"] == "IV → II"
    assert data["endpoint"]["value"] is True


def test_not_evaluable_is_reported_not_silent(folder, tmp_path: Path, capsys):
    bl = folder("bl", result(score(10), biopsy_date="2024-03-01"))
    fu = folder("fu", result(score(2), biopsy_date="2023-03-01"))
    assert main(["compare", str(bl), str(fu), "--out", str(tmp_path / "o")]) == 0
    out = capsys.readouterr().out
    assert "not_evaluable" in out and "swapped" in out
    data = json.loads((tmp_path / "o" / "response.json").read_text())
    assert data["status"] == "not_evaluable" and data["reasons"]


def test_list_presets_explains_each_preset(capsys):
    assert main(["compare", "--list-presets"]) == 0
    text = capsys.readouterr().out
    for name, preset in PRESETS.items():
        assert name in text
        assert preset.source.split(";")[0][:30] in text.replace("\n    ", " ")
    assert "NOT VALIDATED" in text
    assert main(["compare", "--list-presets", "--format", "json"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == len(PRESETS)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lnpath", "compare", *args], capture_output=True, text=True
    )


def test_bad_inputs_one_line_error(pair, tmp_path: Path):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "result.json").write_text("{truncated", encoding="utf-8")
    cases = [
        ((str(tmp_path / "nope"), str(pair[1])), "result folder not found"),
        ((str(bad), str(pair[1])), "unreadable result.json"),
        ((str(pair[0]), str(pair[1]), "--preset", "nope"), "unknown response preset 'nope'"),
        ((str(pair[0]), str(pair[1]), "--set", "nope=1"), "unknown response threshold 'nope'"),
        ((str(pair[0]), str(pair[1]), "--set", "remission_max_ai"), "expected KEY=VALUE"),
        ((str(pair[0]),), "needs BASELINE_DIR and FOLLOWUP_DIR"),
    ]
    for args, message in cases:
        proc = _cli(*args)
        assert proc.returncode != 0, args
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("lnpath: error:"), proc.stderr
        assert message in lines[0]
        assert "Traceback" not in proc.stderr


def test_an_unconfirmed_result_edited_by_hand_is_not_compared(pair, tmp_path: Path):
    """A provisional result has no confirmation to lose: an edit to its scores would pass
    unseen into the endpoint, so compare refuses it, as ``lnpath verify`` (exit 3) does."""
    data = json.loads((pair[1] / "result.json").read_text())
    necrosis = data["scores"]["activity_index"]["components"]["fibrinoid_necrosis"]
    necrosis["score"] = 0 if necrosis["score"] else 2  # the follow-up's AI changed by hand
    (pair[1] / "result.json").write_text(json.dumps(data))
    out = tmp_path / "out"
    proc = _cli(str(pair[0]), str(pair[1]), "--out", str(out))
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lnpath: error: follow-up not compared:"), lines
    assert str(pair[1]) in lines[0] and "only as lnpath wrote it" in lines[0]
    assert not out.exists()


# --------------------------------------------------------------------------- real result folders


@pytest.fixture(scope="module")
def real_pair(
    repo_dir: Path, demo_followup: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, Path]:
    """Two real result folders from score_slide on the demo biopsy and a second file of it."""
    import lnpath

    slide = repo_dir / "examples" / "demo_biopsy.tiff"
    outlines = repo_dir / "examples" / "demo_biopsy_glomeruli.geojson"
    if not slide.is_file() or not outlines.is_file():
        pytest.skip("demo biopsy not in the checkout")
    root = tmp_path_factory.mktemp("real")
    folders = []
    for name, path, day in (("bl", slide, "2023-01-10"), ("fu", demo_followup, "2024-01-10")):
        result = lnpath.score_slide(
            path,
            out=root / name,
            glomeruli=outlines,
            device="cpu",
            patient_id="DEMO-1",
            biopsy_date=day,
            # what the morphometry cannot grade, marked so the pathologist can sign it
            biopsy={"not_evaluable": dict.fromkeys(UNGRADED, "PAS section only")},
        )
        folders.append(result.folder)
    return folders[0], folders[1]


@pytest.mark.slow
def test_real_folders_incomplete_indices_are_not_evaluable(real_pair, tmp_path: Path):
    """The morphometry caller leaves activity lesions and cortex unassessed: no silent delta."""
    out = tmp_path / "o"
    assert main(["compare", str(real_pair[0]), str(real_pair[1]), "--out", str(out)]) == 0
    data = json.loads((out / "response.json").read_text())
    assert data["status"] == "not_evaluable"
    checks = {c["name"]: c["status"] for c in data["preconditions"]}
    assert checks["same_patient"] == checks["followup_after_baseline"] == "pass"
    assert checks["same_models"] == checks["comparable_stains"] == "pass"
    assert checks["different_biopsies"] == "pass"
    missing = data["baseline"]["activity_index"]["not_assessed"]
    assert "interstitial_inflammation" in missing
    assert data["deltas"]["activity_index"]["delta"] is None
    assert "interstitial_inflammation" in data["panel"]["histologic_remission"]["reason"]
    assert data["panel"]["chronic_progression"]["reason"].startswith("not evaluable for chronicity")
    assert "DEMO-1" in (out / "response.html").read_text()


@pytest.mark.slow
def test_real_response_page_shows_no_count_for_what_was_not_assessed(real_pair, tmp_path: Path):
    """The demo's morphometry leaves necrosis unassessed: its row shows a dash, not the 0/N of
    nothing counted, and the pathologist's not-evaluable reason; every printed page names the
    patient, the endpoint and its status."""
    import html
    import re

    out = tmp_path / "o"
    assert main(["compare", str(real_pair[0]), str(real_pair[1]), "--out", str(out)]) == 0
    data = json.loads((out / "response.json").read_text())
    necrosis = data["followup"]["activity_index"]["components"]["fibrinoid_necrosis"]
    assert necrosis["assessed"] is False and necrosis["n"] == 0  # what the page must not show
    page = (out / "response.html").read_text()
    row = re.search(r"<tr><td>fibrinoid necrosis</td>(.*?)</tr>", page)
    cells = re.findall(r"<td[^>]*>(.*?)</td>", row.group(1)) if row else []
    # both biopsies were signed with necrosis marked not evaluable: the reason, not a count
    marked = "not evaluable: PAS section only"
    assert cells == ["×2", "—", marked, "—", marked, "—"]
    assert "proliferative resolved: None" not in page
    assert "h2{font-size:1.1em;margin:1.2em 0 .4em;break-after:avoid}" in page  # kept with table
    assert ".lnr tr{break-inside:avoid}" in page  # a printed row is never cut in two
    footer = re.search(r'@bottom-left \{ content: "([^"]*)"', page)
    assert footer and re.fullmatch(r"[A-Za-z0-9 \\]*", footer.group(1))
    said = re.sub(r"\\([0-9a-f]{1,6}) ?", lambda m: chr(int(m.group(1), 16)), footer.group(1))
    assert said == "Patient DEMO-1 · composite_histologic_responder: not evaluable"
    assert html.escape("DEMO-1") in page


@pytest.mark.slow
def test_real_confirmed_folders_are_final_and_tampering_is_caught(real_pair, tmp_path: Path):
    import inspect
    import shutil

    import pandas as pd

    import lnpath
    from lnpath.core.findings import LESIONS

    bl, fu = (Path(shutil.copytree(p, tmp_path / p.name)) for p in real_pair)
    # the machine leaves most lesions unassessed, so the baseline class is not determinable and
    # the class response not evaluable (issue #17); a pathologist assesses the baseline first
    findings = pd.read_csv(bl / "findings.csv", dtype=str, keep_default_na=False)
    findings[list(LESIONS)] = "false"
    findings.to_csv(tmp_path / "assessed.csv", index=False)
    params = inspect.signature(lnpath.review).parameters  # reviewer today, pathologist in #14
    who = "pathologist" if "pathologist" in params else "reviewer"
    lnpath.review(bl, findings=tmp_path / "assessed.csv", **{who: "Dr Test"})
    provisional = lnpath.compare(bl, fu, preset="class_transition")
    assert provisional.status == "provisional"
    for folder in (bl, fu):
        lnpath.confirm(folder, pathologist="Dr Test")
    final = lnpath.compare(lnpath.SlideResult.load(bl), fu, preset="class_transition")
    assert final.status == "final", final.reasons
    sealed = {c.name: c.status for c in final.checks if c.name.endswith("_sealed")}
    assert sealed == {
        "baseline_confirmation_sealed": "pass",
        "followup_confirmation_sealed": "pass",
    }
    data = json.loads((fu / "result.json").read_text())
    data["scores"]["isn_rps_class"]["proposal"] = "II"  # edited after confirmation
    (fu / "result.json").write_text(json.dumps(data))
    tampered = lnpath.compare(bl, fu, preset="class_transition")
    assert tampered.status == "not_evaluable"
    assert any(r.startswith("followup_confirmation_sealed") for r in tampered.reasons)
