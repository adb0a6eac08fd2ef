"""The explicit ``legacy_2003`` mode: ISN/RPS 2003 labels (A, A/C, C; IV-S / IV-G) beside 2018."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import lnpath
from lnpath.core.errors import InputError
from lnpath.core.findings import LESIONS
from lnpath.io.tables import findings_from_geojson, read_findings
from lnpath.report.slide import diagnosis_line
from lnpath.workflow.compare import compare

LEGACY = {"preset": "legacy_2003"}


def table(n: int, extent: list[Any] | None = None, **positives: Any) -> pd.DataFrame:
    """``n`` glomeruli, every lesion assessed and absent; ``lesion=k`` marks the first k rows."""
    frame = pd.DataFrame({"glomerulus_id": range(n)})
    for lesion in LESIONS:
        frame[lesion] = False
    for name, rows in positives.items():
        frame.loc[list(range(rows) if isinstance(rows, int) else rows), name] = True
    if extent is not None:
        frame["lesion_extent"] = extent + [None] * (n - len(extent))
    return frame


def legacy(frame: pd.DataFrame, **biopsy: Any) -> dict[str, Any]:
    isn = lnpath.score_findings(frame, config=LEGACY, biopsy=biopsy or None).isn_rps_class
    assert isn.legacy_2003 is not None
    return isn.legacy_2003


@pytest.mark.parametrize(
    ("positives", "label"),
    [
        ({"endocapillary_hypercellularity": 3}, "III (A)"),
        ({"cellular_crescent": 2, "segmental_sclerosis": [5]}, "III (A/C)"),
        ({"segmental_sclerosis": 3}, "III (C)"),
        ({"fibrous_crescent": 2, "hyaline_deposits": [7]}, "III (A/C)"),
    ],
)
def test_class_iii_activity_suffix(positives: dict[str, Any], label: str) -> None:
    result = legacy(table(20, **positives))
    assert result["label"] == label and result["determined"]
    assert result["suffix"] == label[5:-1] and result["subclass"] is None


def test_class_iv_segmental_or_global_by_the_involved_glomeruli() -> None:
    # 12 of 20 involved (IV); the split counts the involved glomeruli only
    segmental = table(20, ["segmental"] * 7 + ["global"] * 5, endocapillary_hypercellularity=12)
    assert legacy(segmental)["label"] == "IV-S (A)"
    global_ = table(20, ["segmental"] * 5 + ["global"] * 7, endocapillary_hypercellularity=12)
    result = legacy(global_)
    assert result["label"] == "IV-G (A)" and result["subclass"] == "G"
    assert "of 12 involved glomeruli 5 segmental, 7 global" in result["rationale"]


def test_global_sclerosis_is_global_and_lone_segmental_sclerosis_is_segmental() -> None:
    # no lesion_extent column: extent comes from the sclerosis calls alone
    frame = table(10, global_sclerosis=[0, 1, 2], segmental_sclerosis=[3, 4, 5, 6, 7])
    frame.loc[8, "endocapillary_hypercellularity"] = True  # extent unknown
    result = legacy(frame)
    assert result["label"] == "IV-S (A/C)", result
    assert "3 global, 1 without a recorded extent" in result["rationale"]


def test_exactly_half_segmental_is_both_and_left_to_the_pathologist() -> None:
    frame = table(10, ["segmental"] * 3 + ["global"] * 3, endocapillary_hypercellularity=6)
    result = legacy(frame)
    assert result["label"] == "IV-S or IV-G (A)"
    assert not result["determined"] and result["subclass"] is None
    assert "both IV-S and IV-G apply" in result["rationale"]


def test_unrecorded_extent_that_decides_is_not_guessed() -> None:
    frame = table(10, ["segmental"] * 2 + ["global"] * 2, endocapillary_hypercellularity=8)
    result = legacy(frame)
    assert result["label"] == "IV-S or IV-G (A)" and not result["determined"]
    assert "4 without a recorded extent" in result["rationale"]


def test_unassessed_lesions_list_every_suffix_they_allow() -> None:
    frame = table(20, endocapillary_hypercellularity=4)
    for chronic in ("global_sclerosis", "segmental_sclerosis", "fibrous_crescent"):
        frame[chronic] = pd.array([None] * 20, dtype="boolean")
    result = legacy(frame)
    assert result["label"] == "III (A or A/C)" and result["suffix"] is None
    assert "chronic lesions undetermined (some not assessed)" in result["rationale"]


def test_membranous_and_other_classes() -> None:
    membranous = legacy(table(20, cellular_crescent=3), membranous=True)
    assert membranous["label"] == "III (A) + V"
    sclerosed = legacy(table(20, global_sclerosis=19))
    assert sclerosed["label"] == "VI" and sclerosed["determined"]
    assert legacy(table(20))["label"] is None


def test_default_mode_adds_no_legacy_label() -> None:
    score = lnpath.score_findings(table(20, endocapillary_hypercellularity=12)).to_dict()
    assert "legacy_2003" not in score["isn_rps_class"]
    assert score["config"]["class_nomenclature"] == "isn_rps_2018"
    with pytest.raises(InputError, match="class_nomenclature must be one of"):
        lnpath.score_findings(table(20), config={"class_nomenclature": "isn_rps_2003"})


def test_bad_extents_are_one_line_errors() -> None:
    with pytest.raises(InputError, match="lesion_extent: 'partial' is not segmental or global"):
        read_findings(table(5, ["partial"]))
    contradictory = table(20, ["segmental"], global_sclerosis=12)
    with pytest.raises(InputError, match="glomerulus 0: lesion_extent 'segmental' contradicts"):
        lnpath.score_findings(contradictory, config=LEGACY)


def test_real_qupath_annotations_in_legacy_mode(qupath_dir: Path) -> None:
    # TPATH065: 65 of 77 glomeruli annotated Sclerotic; QuPath classes say nothing about activity
    frame = findings_from_geojson(qupath_dir / "TPATH065.geojson")
    scores = lnpath.score_findings(frame, config=LEGACY).to_dict()
    isn = scores["isn_rps_class"]
    assert isn["proposal"] == "IV" and isn["globally_sclerosed"] == 65
    assert isn["legacy_2003"]["label"] == "IV-G (A/C or C)"
    line = diagnosis_line({"scores": scores, "status": "provisional", "confirmation": None})
    assert line.startswith("Lupus nephritis, ISN/RPS class proposal IV (ISN/RPS 2003: IV-G (A/C")
    # the same biopsy scored without the legacy labels compares as the same scoring rules
    plain = lnpath.score_findings(frame).to_dict()
    checks = {c.name: c.status for c in compare(plain, scores).checks}
    assert checks["same_scoring_config"] == "pass"


def test_score_slide_and_review_in_legacy_mode(repo_dir: Path, tmp_path: Path) -> None:
    slide = repo_dir / "examples" / "demo_biopsy.tiff"
    outlines = repo_dir / "examples" / "demo_biopsy_glomeruli.geojson"
    folder = tmp_path / "legacy"
    lnpath.score_slide(slide, out=folder, glomeruli=outlines, config=LEGACY, device="cpu")
    table = pd.read_csv(folder / "findings.csv", dtype=str, keep_default_na=False)
    lesions = list(LESIONS)
    table[lesions] = table[lesions].replace("", "no")  # the pathologist completes every call
    table.loc[:1, "cellular_crescent"] = "yes"
    table.to_csv(tmp_path / "reviewed.csv", index=False)
    reviewed = lnpath.review(folder, findings=tmp_path / "reviewed.csv")
    isn = reviewed.to_dict()["scores"]["isn_rps_class"]
    assert isn["proposal"] == "III" and isn["legacy_2003"]["label"].startswith("III (A")
    assert "(ISN/RPS 2003: III (A" in reviewed.diagnosis_line()
    report = (folder / "report.html").read_text(encoding="utf-8")
    assert 'id="legacy-2003"' in report and "legacy nomenclature" in report
