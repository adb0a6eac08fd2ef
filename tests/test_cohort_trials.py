"""A cohort a trial statistician can analyse (issue #17; clinical-scoring.md §2.3, §3.3).

Real result folders: the shipped demo slide scored through ``lnpath.score_batch`` as a patient
with a baseline and two follow-up biopsies, a patient without follow-up and a slide that fails.
A pathologist then reviews the findings (``lnpath.review``) so the endpoints are evaluable, and
confirms one follow-up (``lnpath.confirm``).
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from scipy.stats import beta

import lnpath
from lnpath.cli import main

LESIONS = lnpath.LESIONS  # the package's one lesion list
PRESETS = {
    "lnhr_default",
    "lufla_AI2",
    "malvar_AI0",
    "parodis_rebiolup_AI3",
    "moroni2022",
    "pineiro_any_activity",
    "class_transition",
    "relative_AI50",
    "strict_chronicity_CI1",
}
CORTEX = {"interstitial_inflammation": 0.0, "interstitial_fibrosis": 0.0, "tubular_atrophy": 0.0}
PATHOLOGIST = "Dr A. Renal"


def _review(folder: Path, present: tuple[str, ...], tmp: Path) -> None:
    """Every lesion assessed: ``present`` in every glomerulus, the others absent; cortex 0 %."""
    findings = pd.read_csv(folder / "findings.csv", dtype=str, keep_default_na=False)
    for lesion in LESIONS:
        findings[lesion] = "true" if lesion in present else "false"
    edited = tmp / f"{folder.name}-findings.csv"
    findings.to_csv(edited, index=False)
    # review() names its pathologist ``reviewer`` today and ``pathologist`` in the sign-out
    # contract (coord/LAYOUT.md); accept either so this test survives that merge
    params = inspect.signature(lnpath.review).parameters
    who = "pathologist" if "pathologist" in params else "reviewer"
    lnpath.review(folder, findings=edited, cortex=CORTEX, **{who: PATHOLOGIST})


@pytest.fixture(scope="module")
def cohort(repo_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("cohort")
    slides = root / "slides"
    slides.mkdir()
    demo = (repo_dir / "examples" / "demo_biopsy.tiff").read_bytes()
    for k, name in enumerate(("demo.tiff", "demo_m6.tiff", "demo_m12.tiff")):
        (slides / name).write_bytes(demo + b"\0" * k)  # the same pixels, three slide files
    outlines = repo_dir / "examples" / "demo_biopsy_glomeruli.geojson"
    manifest = root / "manifest.csv"
    manifest.write_text(
        "slide_id,path,patient_id,timepoint,glomeruli,biopsy_date,clinical_response\n"
        f"p1_bl,slides/demo.tiff,P1,0,{outlines},2024-01-02,\n"
        f"p1_m6,slides/demo_m6.tiff,P1,1,{outlines},2024-07-01,complete\n"
        f"p1_m12,slides/demo_m12.tiff,P1,2,{outlines},2025-01-10,none\n"
        f"p2_bl,slides/demo.tiff,P2,0,{outlines},2024-03-01,\n"
        "p3_bl,slides/missing.svs,P3,0,,,\n",
        encoding="utf-8",
    )
    out = root / "out"
    lnpath.score_batch(manifest, out, device="cpu", workers=2)
    # baseline IV with AI 9 (endocapillary 3, cellular crescents 3 x2); m6 quiescent; m12 AI 3
    _review(out / "p1_bl", ("endocapillary_hypercellularity", "cellular_crescent"), root)
    _review(out / "p1_m6", (), root)
    _review(out / "p1_m12", ("endocapillary_hypercellularity",), root)
    lnpath.confirm(out / "p1_m6", pathologist=PATHOLOGIST)
    return {"out": out, "manifest": manifest}


def pairs_of(out: Path) -> pd.DataFrame:
    return pd.read_csv(out / "cohort_pairs.csv")


def test_pairs_are_anchored_on_the_baseline_with_every_preset(cohort: dict[str, Any]) -> None:
    """§3.3: a response compares a follow-up with the patient's baseline biopsy; every preset is
    evaluated in the same run, one row per pair and preset, with what a statistician needs."""
    out = cohort["out"]
    assert main(["cohort", str(out)]) == 0
    pairs = pairs_of(out)
    assert set(zip(pairs["baseline_slide_id"], pairs["followup_slide_id"], strict=True)) == {
        ("p1_bl", "p1_m6"),
        ("p1_bl", "p1_m12"),
    }
    assert set(pairs["pairing"]) == {"baseline"}
    for _, group in pairs.groupby("followup_slide_id"):
        assert set(group["preset"]) == PRESETS and len(group) == len(PRESETS)
    for column in (
        "days_between",
        "preset_label",
        "preset_nih_version",
        "preset_params",
        "primary",
        "endpoint_holds",
        "endpoint_probability",
        "ai_bl_min",
        "ai_bl_max",
        "ai_fu_min",
        "ai_fu_max",
        "ci_bl",
        "ci_fu",
        "n_glomeruli_bl",
        "n_glomeruli_fu",
        "adequacy_bl",
        "confirmed_bl",
        "confirmed_fu",
        "class_bl",
        "class_fu",
        "histologic_remission",
        "chronic_progression",
        "class_response",
    ):
        assert column in pairs.columns, column
    lufla = pairs[pairs["preset"] == "lufla_AI2"].set_index("followup_slide_id")
    n = lnpath.SlideResult.load(out / "p1_bl").to_dict()["scores"]["adequacy"]["n_glomeruli"]
    assert lufla.loc["p1_m6", "days_between"] == 181
    assert lufla.loc["p1_m12", "days_between"] == 374
    assert (lufla.loc["p1_m6", "ai_bl"], lufla.loc["p1_m6", "ai_fu"]) == (9, 0)
    assert (lufla.loc["p1_m12", "ai_fu_min"], lufla.loc["p1_m12", "ai_fu_max"]) == (3, 3)
    assert lufla.loc["p1_m6", "n_glomeruli_bl"] == n
    assert bool(lufla.loc["p1_m6", "endpoint_holds"]) and not bool(
        lufla.loc["p1_m12", "endpoint_holds"]
    )
    assert bool(lufla.loc["p1_m6", "confirmed_fu"]) and not bool(lufla.loc["p1_m6", "confirmed_bl"])
    assert json.loads(lufla.loc["p1_m6", "preset_params"])["remission_max_ai"] == 2
    assert (lufla.loc["p1_m6", "preset_label"], lufla.loc["p1_m6", "preset_nih_version"]) == (
        "validated",
        "austin1984",
    )
    primary = pairs[pairs["primary"].astype(bool)]
    assert set(primary["preset"]) == {"lnhr_default"}  # the configured response_preset
    expected = lnpath.compare(out / "p1_bl", out / "p1_m12", preset="lufla_AI2")
    assert lufla.loc["p1_m12", "status"] == expected.status


def test_consecutive_pairs_on_request(cohort: dict[str, Any]) -> None:
    """Some protocols compare each biopsy with the one before it."""
    out = cohort["out"]
    lnpath.cohort_table(out, consecutive=True)
    pairs = pairs_of(out)
    assert set(zip(pairs["baseline_slide_id"], pairs["followup_slide_id"], strict=True)) == {
        ("p1_bl", "p1_m6"),
        ("p1_m6", "p1_m12"),
    }
    assert set(pairs["pairing"]) == {"consecutive"}
    lnpath.cohort_table(out)  # back to the baseline-anchored pairs for the other tests


def test_patients_without_a_follow_up_are_listed(cohort: dict[str, Any]) -> None:
    """A trial's denominator must show who had no evaluable repeat biopsy, and why."""
    out = cohort["out"]
    lnpath.cohort_table(out)
    unpaired = pd.read_csv(out / "cohort_unpaired.csv").set_index("patient_id")
    assert set(unpaired.index) == {"P2", "P3"}
    assert "no follow-up" in unpaired.loc["P2", "reason"]
    assert "failed" in unpaired.loc["P3", "reason"]


def test_summary_gives_each_preset_a_clopper_pearson_interval(cohort: dict[str, Any]) -> None:
    """Per preset: pairs, evaluable pairs, how many meet the endpoint and the exact (Clopper-
    Pearson) 95 % interval. LuFla: m6 in remission (AI 0), m12 not (AI 3): 1 of 2."""
    out = cohort["out"]
    lnpath.cohort_table(out)
    summary = pd.read_csv(out / "cohort_summary.csv").set_index("preset")
    assert set(summary.index) == PRESETS
    row = summary.loc["lufla_AI2"]
    assert (row["n_pairs"], row["n_evaluable"], row["n_endpoint_holds"]) == (2, 2, 1)
    assert row["proportion"] == 0.5
    assert row["ci95_low"] == pytest.approx(beta.ppf(0.025, 1, 2), abs=1e-9)
    assert row["ci95_high"] == pytest.approx(beta.ppf(0.975, 2, 1), abs=1e-9)
    assert row["endpoint"] == "histologic_remission" and row["label"] == "validated"


def test_clinical_response_is_cross_tabulated_against_the_endpoint(cohort: dict[str, Any]) -> None:
    """Trials judge histological against clinical response (e.g. by repeat biopsy): an optional
    ``clinical_response`` manifest column is carried per pair and cross-tabulated."""
    out, manifest = cohort["out"], cohort["manifest"]
    assert main(["cohort", str(out), "--manifest", str(manifest)]) == 0
    pairs = pairs_of(out)
    lufla = pairs[pairs["preset"] == "lufla_AI2"].set_index("followup_slide_id")
    assert lufla.loc["p1_m6", "clinical_response"] == "complete"
    assert lufla.loc["p1_m12", "clinical_response"] == "none"
    cross = pd.read_csv(out / "cohort_crosstab.csv")
    cross = cross[cross["preset"] == "lufla_AI2"]
    counts = {(r.clinical_response, str(r.endpoint_value)): r.n for r in cross.itertuples()}
    assert counts == {("complete", "True"): 1, ("none", "False"): 1}


def test_cli_restricts_presets_and_refuses_unknown_ones(cohort: dict[str, Any]) -> None:
    """``lnpath cohort DIR --preset NAME`` (repeatable) limits the presets; a typo is refused."""
    out = cohort["out"]
    assert main(["cohort", str(out), "--preset", "lufla_AI2", "--preset", "moroni2022"]) == 0
    assert set(pairs_of(out)["preset"]) == {"lufla_AI2", "moroni2022"}
    before = (out / "cohort_pairs.csv").read_text()
    assert main(["cohort", str(out), "--preset", "lufla"]) == 2
    assert (out / "cohort_pairs.csv").read_text() == before
    lnpath.cohort_table(out)


@pytest.mark.parametrize(
    ("rows", "needle"),
    [
        ("slide_id,clinical_response\np1_m6,complete\np1_m6,none\n", "duplicate slide_id 'p1_m6'"),
        ("slide_id,clinical_response\np1_m6,complete\np9_m6,none\n", "'p9_m6' is not in this"),
        (
            "slide_id,patient_id,clinical_response\np1_m6,P2,complete\n",
            "has patient_id 'P2' here but 'P1' in the batch",
        ),
        (
            "slide_id,biopsy_date,clinical_response\np1_m6,2024-13-45,complete\n",
            "biopsy_date '2024-13-45' is not a date",
        ),
        ("patient_id,clinical_response\nP1,complete\n", "no slide_id column"),
        ("slide_id,clinical_response\n,complete\n", "line 2: empty slide_id"),
    ],
)
def test_a_manifest_that_does_not_match_the_batch_is_one_line(
    cohort: dict[str, Any],
    rows: str,
    needle: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A duplicate, unknown or mis-patiented slide in --manifest dropped or misplaced its clinical
    response in the cross-tab without a word; a date that does not parse was not noticed."""
    out = cohort["out"]
    manifest = tmp_path / "clinical.csv"
    manifest.write_text(rows, encoding="utf-8")
    before = (out / "cohort_pairs.csv").read_bytes()
    assert main(["cohort", str(out), "--manifest", str(manifest)]) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1, err
    assert (out / "cohort_pairs.csv").read_bytes() == before  # nothing rewritten


def test_a_result_folder_gone_since_scoring_is_named(
    cohort: dict[str, Any], tmp_path: Path
) -> None:
    """A scored slide whose folder was deleted read as "failed: None"."""
    import shutil

    copy = Path(shutil.copytree(cohort["out"], tmp_path / "out"))
    shutil.rmtree(copy / "p2_bl")
    table = lnpath.cohort_table(copy).set_index("slide_id")
    assert table.loc["p2_bl", "status"] == "failed"
    assert "p2_bl is missing" in table.loc["p2_bl", "error"]
    unpaired = pd.read_csv(copy / "cohort_unpaired.csv").set_index("patient_id")
    assert "p2_bl is missing" in unpaired.loc["P2", "reason"]
