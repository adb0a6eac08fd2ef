"""Sign-out (issue #14): biopsy-level inputs, stale exports, confirmation rules, the signed report.

Everything runs on the real demo slide through the public facade or the CLI in a subprocess; the
demo is scored once per module (outlines from the shipped GeoJSON, so no segmentation) and each test
works on its own copy.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import lnpath
from lnpath.core.errors import InputError, ResultError

PATHOLOGIST = "Dr Ada Renal"
#: The glomerular activity components the demo's morphometry leaves unassessed, plus the cortex.
NOT_EVALUABLE = {
    "neutrophils_karyorrhexis": "PAS section only; needs H&E at high power",
    "fibrinoid_necrosis": "needs trichrome and silver",
    "hyaline_deposits": "needs trichrome",
    "cellular_fibrocellular_crescents": "needs silver",
    "interstitial_inflammation": "cortex not measured on this section",
    "interstitial_fibrosis": "needs trichrome",
    "fibrous_crescents": "needs silver",
    "tubular_atrophy": "cortex not measured on this section",
}


def _cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lnpath", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=600,
    )


def _one_line_error(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode != 0, done.stdout
    assert "Traceback" not in done.stderr, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    return lines[0]


class _Text(HTMLParser):
    """All text of an HTML page (closed <details> included), without scripts and styles."""

    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: Any) -> None:
        self._skip += tag in ("script", "style")

    def handle_endtag(self, tag: str) -> None:
        self._skip -= tag in ("script", "style")

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.parts.append(data)


def _report_text(folder: Path) -> str:
    parser = _Text()
    parser.feed((folder / "report.html").read_text(encoding="utf-8"))
    return re.sub(r"\s+", " ", " ".join(parser.parts))


def _result(folder: Path) -> dict[str, Any]:
    return json.loads((folder / "result.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def demo(repo_dir: Path) -> tuple[Path, Path]:
    examples = repo_dir / "examples"
    slide, outlines = examples / "demo_biopsy.tiff", examples / "demo_biopsy_glomeruli.geojson"
    if not slide.is_file() or not outlines.is_file():
        pytest.skip("demo biopsy not in the checkout")
    return slide, outlines


@pytest.fixture(scope="module")
def scored(demo: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("signout") / "result"
    lnpath.score_slide(demo[0], out=out, glomeruli=demo[1], patient_id="DEMO-14")
    return out


@pytest.fixture
def result_dir(scored: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(scored, tmp_path / "result"))


def _ids(folder: Path) -> list[int]:
    return sorted(int(g) for g in pd.read_csv(folder / "findings.csv")["glomerulus_id"])


def _edited_findings(folder: Path, path: Path, **columns: dict[int, Any]) -> Path:
    """The result's findings.csv with some cells set, as a pathologist's spreadsheet would be."""
    table = pd.read_csv(folder / "findings.csv", dtype=str, keep_default_na=False)
    for column, values in columns.items():
        for gid, value in values.items():
            table.loc[table["glomerulus_id"] == str(gid), column] = value
    table.to_csv(path, index=False)
    return path


def _complete(folder: Path) -> lnpath.SlideResult:
    """Mark every component the machine left unassessed as not evaluable, with a reason."""
    return lnpath.review(
        folder, pathologist=PATHOLOGIST, biopsy={"not_evaluable": dict(NOT_EVALUABLE)}
    )


# --------------------------------------------------------------------------------------------
# Slide fingerprint


def test_slide_fingerprint_is_the_whole_file_sha256(scored: Path, demo: tuple[Path, Path]) -> None:
    digest = hashlib.sha256(demo[0].read_bytes()).hexdigest()
    assert _result(scored)["slide"]["fingerprint"]["sha256"] == digest
    assert digest in _report_text(scored)


# --------------------------------------------------------------------------------------------
# Biopsy-level inputs: IF/EM, class and compare


def _iv(folder: Path, tmp_path: Path) -> lnpath.SlideResult:
    """Endocapillary hypercellularity in 12 of 23 glomeruli: class IV by light microscopy."""
    ids = _ids(folder)
    calls = {gid: "True" if i < 12 else "False" for i, gid in enumerate(ids)}
    edited = _edited_findings(
        folder, tmp_path / f"{folder.name}-iv.csv", endocapillary_hypercellularity=calls
    )
    return lnpath.review(folder, pathologist=PATHOLOGIST, findings=edited)


def test_score_slide_takes_biopsy_inputs_from_yaml(demo: tuple[Path, Path], tmp_path: Path) -> None:
    biopsy = tmp_path / "ifem.yaml"
    biopsy.write_text(
        "membranous:\n  present: true\n  extent: global\n"
        "deposits:\n  subepithelial: true\n  mesangial: true\n"
        "if_panel:\n  IgG: 3+\n  C3: 2+\n  C1q: 2+\n"
        "vessels:\n  arteries_sampled: 3\n  intimal_fibrosis: mild\n  tma: false\n",
        encoding="utf-8",
    )
    out = tmp_path / "r"
    done = _cli(
        "score", str(demo[0]), "--glomeruli", str(demo[1]), "--biopsy", str(biopsy),
        "--out", str(out),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    data = _result(out)
    assert data["biopsy"]["membranous"]["present"] is True
    assert data["biopsy"]["if_panel"]["IgG"] == "3+"
    assert data["biopsy"]["vessels"]["arteries_sampled"] == 3
    assert "V" in (data["scores"]["isn_rps_class"]["proposal"] or "")
    text = _report_text(out)
    assert "IgG" in text and "3+" in text
    assert "Arteries sampled" in text or "arteries sampled" in text


def test_bad_biopsy_file_is_one_line_error(demo: tuple[Path, Path], tmp_path: Path) -> None:
    biopsy = tmp_path / "ifem.json"
    biopsy.write_text(json.dumps({"membranous": {"present": "maybe"}}), encoding="utf-8")
    done = _cli(
        "score", str(demo[0]), "--glomeruli", str(demo[1]), "--biopsy", str(biopsy),
        "--out", str(tmp_path / "r"),
    )  # fmt: skip
    assert "membranous" in _one_line_error(done)
    assert not (tmp_path / "r").exists()


@pytest.fixture(scope="module")
def pair(
    demo: tuple[Path, Path], demo_followup: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("pair")
    out = []
    for name, slide, day in (("bl", demo[0], "2023-01-10"), ("fu", demo_followup, "2024-01-10")):
        result = lnpath.score_slide(
            slide, out=root / name, glomeruli=demo[1], patient_id="DEMO-14", biopsy_date=day
        )
        out.append(result.folder)
    return out[0], out[1]


def _class_transition(bl: Path, fu: Path) -> str:
    done = _cli("compare", str(bl), str(fu), "--preset", "class_transition", "--format", "json")
    assert done.returncode == 0, done.stderr
    return str(json.loads(done.stdout)["panel"]["class_transition"]["value"])


def test_membranous_by_if_em_makes_iv_plus_v_and_changes_compare(
    pair: tuple[Path, Path], tmp_path: Path
) -> None:
    bl, fu = (Path(shutil.copytree(p, tmp_path / p.name)) for p in pair)
    assert _iv(bl, tmp_path).score.isn_rps_class.proposal == "IV"
    before = _class_transition(bl, fu)
    assert "IV" in before and "IV+V" not in before.replace(" ", "")

    ifem = tmp_path / "ifem.json"
    ifem.write_text(
        json.dumps(
            {
                "membranous": {"present": True, "extent": "global"},
                "deposits": {"subepithelial": True, "subendothelial": True},
            }
        ),
        encoding="utf-8",
    )
    done = _cli("review", str(bl), "--biopsy", str(ifem), "--pathologist", PATHOLOGIST)
    assert done.returncode == 0, done.stderr
    assert "IV+V" in done.stdout.replace(" ", "")
    data = _result(bl)
    assert data["scores"]["isn_rps_class"]["proposal"] == "IV+V"
    assert data["biopsy"]["membranous"]["present"] is True
    changed = [c for c in data["changes"] if c["revision"] == data["revision"]]
    assert any("membranous" in str(c["field"]).lower() for c in changed)
    after = _class_transition(bl, fu)
    assert after != before and "IV+V" in after.replace(" ", "")
    assert "IV + V" in _report_text(bl)


def test_class_override_needs_a_reason_and_is_what_compare_sees(
    pair: tuple[Path, Path], tmp_path: Path
) -> None:
    bl, fu = (Path(shutil.copytree(p, tmp_path / p.name)) for p in pair)
    _iv(bl, tmp_path)
    with pytest.raises(InputError, match="reason"):
        lnpath.review(bl, pathologist=PATHOLOGIST, class_override={"class": "III"})
    with pytest.raises(InputError, match="VII"):
        lnpath.review(bl, pathologist=PATHOLOGIST, class_override={"class": "VII", "reason": "x"})
    done = _cli(
        "review", str(bl), "--class", "III", "--class-reason",
        "endocapillary lesions segmental and in fewer glomeruli on levels", "--pathologist",
        PATHOLOGIST,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    data = _result(bl)
    assert data["class_override"] == {
        "class": "III",
        "reason": "endocapillary lesions segmental and in fewer glomeruli on levels",
    }
    assert data["scores"]["isn_rps_class"]["proposal"] == "IV"  # the machine's own call is kept
    text = _report_text(bl)
    assert "class III" in text and "fewer glomeruli on levels" in text
    assert "III" in _class_transition(bl, fu) and "IV" not in _class_transition(bl, fu)


# --------------------------------------------------------------------------------------------
# Revision-stamped exports and the stale QuPath export


def _qupath_export(folder: Path) -> dict[str, Any]:
    """The result's GeoJSON as QuPath 0.4+ re-exports it: id, objectType, classification and
    measurements survive; lnpath's own properties and top-level members do not."""
    data = json.loads((folder / "glomeruli.geojson").read_text(encoding="utf-8"))
    for feature in data["features"]:
        props = feature["properties"]
        feature["properties"] = {
            "objectType": props["objectType"],
            "classification": props["classification"],
            "measurements": props["measurements"],
        }
    return {"type": "FeatureCollection", "features": data["features"]}


def _classify(export: dict[str, Any], index: int, name: str) -> None:
    feature = export["features"][index]
    feature["properties"]["classification"] = {"name": name}
    feature["properties"]["measurements"] = {
        k: v for k, v in feature["properties"]["measurements"].items() if not k.startswith("call:")
    }


def test_every_export_carries_its_revision_and_content_hash(
    result_dir: Path, tmp_path: Path
) -> None:
    def stamps(folder: Path) -> tuple[Any, ...]:
        geo = json.loads((folder / "glomeruli.geojson").read_text(encoding="utf-8"))
        csv = pd.read_csv(folder / "findings.csv", dtype=str)
        per_feature = {f["properties"]["measurements"]["lnpath revision"] for f in geo["features"]}
        return (
            geo["lnpath"]["revision"],
            geo["lnpath"]["content_sha256"],
            set(csv["lnpath_revision"]),
            set(csv["lnpath_content_sha256"]),
            per_feature,
        )

    rev, sha, csv_rev, csv_sha, per_feature = stamps(result_dir)
    assert (rev, csv_rev, per_feature) == (1, {"1"}, {1})
    assert csv_sha == {sha} and re.fullmatch(r"[0-9a-f]{64}", sha)
    ids = _ids(result_dir)
    edited = _edited_findings(result_dir, tmp_path / "e.csv", global_sclerosis={ids[0]: "True"})
    lnpath.review(result_dir, pathologist=PATHOLOGIST, findings=edited)
    rev2, sha2, csv_rev2, csv_sha2, per_feature2 = stamps(result_dir)
    assert (rev2, csv_rev2, per_feature2) == (2, {"2"}, {2})
    assert csv_sha2 == {sha2} and sha2 != sha


def test_a_stale_qupath_export_is_refused_unless_told_how_to_merge(
    result_dir: Path, tmp_path: Path
) -> None:
    stale = _qupath_export(result_dir)  # exported from revision 1
    ids = _ids(result_dir)
    sclerosed = {ids[2]: "True", ids[4]: "True"}
    edited = _edited_findings(result_dir, tmp_path / "gs.csv", global_sclerosis=sclerosed)
    rev2 = lnpath.review(result_dir, pathologist="Dr First", findings=edited)
    assert rev2.revision == 2

    # the QuPath user, working from revision 1, calls one glomerulus a cellular crescent and
    # deletes two: ids[2] (which revision 2 has since called globally sclerosed) and ids[9]
    _classify(stale, 7, "Cellular crescent")
    gone = {2, 9}
    stale["features"] = [f for i, f in enumerate(stale["features"]) if i not in gone]
    path = tmp_path / "stale.geojson"
    path.write_text(json.dumps(stale), encoding="utf-8")
    with pytest.raises(ResultError, match=r"revision 1.*revision 2|revision 2.*revision 1") as err:
        lnpath.review(result_dir, pathologist="Dr Second", geojson=path)
    assert "Dr First" in str(err.value)
    assert lnpath.SlideResult.load(result_dir).revision == 2  # nothing written

    done = _cli(
        "review", str(result_dir), "--geojson", str(path), "--merge", "keep-current",
        "--pathologist", "Dr Second",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    merged = lnpath.SlideResult.load(result_dir)
    assert merged.revision == 3
    table = merged.findings.set_index("glomerulus_id")
    assert bool(table.at[ids[2], "global_sclerosis"]) is True  # revision 2's call survives
    assert bool(table.at[ids[4], "global_sclerosis"]) is True
    assert bool(table.at[ids[7], "cellular_crescent"]) is True  # the export's own edit applies
    assert ids[9] not in table.index  # an unchanged glomerulus the export deleted is deleted
    merge = merged.to_dict()["merge"]
    assert merge["base_revision"] == 1
    assert any(r["glomerulus"] == ids[2] for r in merge["refused"])
    assert any(c["glomerulus"] == ids[7] for c in merge["applied"])
    assert "refused" in done.stdout.lower() and f"G{ids[2]}" in done.stdout


def test_a_stale_findings_csv_is_refused(result_dir: Path, tmp_path: Path) -> None:
    stale = tmp_path / "stale.csv"
    shutil.copy(result_dir / "findings.csv", stale)
    ids = _ids(result_dir)
    edited = _edited_findings(result_dir, tmp_path / "gs.csv", global_sclerosis={ids[1]: "True"})
    lnpath.review(result_dir, pathologist=PATHOLOGIST, findings=edited)
    with pytest.raises(ResultError, match="revision 1"):
        lnpath.review(result_dir, pathologist=PATHOLOGIST, findings=stale)
    with pytest.raises(ResultError, match="changed by"):
        lnpath.review(result_dir, pathologist=PATHOLOGIST, comment="late", base_revision=1)


# --------------------------------------------------------------------------------------------
# Sign-out rules


def test_pathologist_name_is_required_for_review_and_confirm(result_dir: Path) -> None:
    with pytest.raises(InputError, match="pathologist"):
        lnpath.review(result_dir, pathologist=" ", comment="x")
    with pytest.raises(InputError, match="pathologist"):
        lnpath.confirm(result_dir, pathologist="")
    assert "pathologist" in _one_line_error(_cli("review", str(result_dir), "--comment", "x"))
    assert lnpath.SlideResult.load(result_dir).revision == 1


def test_a_name_with_a_direction_override_or_control_character_is_refused(
    result_dir: Path,
) -> None:
    # U+202E shown before "at <time>" in the banner and the report displayed the time reversed
    for name in ("Dr \u202eX", "Dr A\x00"):
        with pytest.raises(InputError, match="text-direction"):
            lnpath.review(result_dir, pathologist=name, comment="x")
        with pytest.raises(InputError, match="text-direction"):
            lnpath.confirm(result_dir, pathologist=name)
    assert lnpath.SlideResult.load(result_dir).revision == 1
    # right-to-left names themselves are names
    hebrew = "\u05d3\u05f4\u05e8 \u05db\u05d4\u05df"
    lnpath.review(result_dir, pathologist=hebrew, comment="x")
    assert lnpath.SlideResult.load(result_dir).revision == 2


def test_free_text_with_a_control_character_or_over_length_is_refused(result_dir: Path) -> None:
    """A NUL or ESC in a comment, note or class reason is invisible in the report yet stored in
    the signed record; a line break, a tab and a direction mark are text."""
    before = (result_dir / "result.json").read_bytes()
    override = {"class": "IV", "reason": "crescents\x1b[2J"}
    attempts: list[tuple[Callable[[], object], str]] = [
        (lambda: lnpath.review(result_dir, pathologist="Dr A", comment="ok\x00"), "comment"),
        (lambda: lnpath.review(result_dir, pathologist="Dr A", comment="x", note="\x07"), "note"),
        (lambda: lnpath.review(result_dir, pathologist="Dr A", class_override=override), "reason"),
        (lambda: lnpath.review(result_dir, pathologist="Dr A", comment="x" * 20_001), "20000"),
        (lambda: lnpath.confirm(result_dir, pathologist="Dr A", note="signed\x00"), "note"),
    ]
    reason = {"not_evaluable": {"tubular_atrophy": "no\x00trichrome"}}
    attempts.append(
        (lambda: lnpath.review(result_dir, pathologist="Dr A", biopsy=reason), r"U\+0000")
    )
    for attempt, words in attempts:
        with pytest.raises(InputError, match=words):
            attempt()
    assert (result_dir / "result.json").read_bytes() == before
    lnpath.review(result_dir, pathologist="Dr A", comment="line one\n\tline two \u200fmark")
    assert _result(result_dir)["comment"] == "line one\n\tline two \u200fmark"


def test_confirm_refuses_an_incomplete_index_until_each_gap_is_not_evaluable(
    result_dir: Path,
) -> None:
    with pytest.raises(ResultError, match="neutrophils") as err:
        lnpath.confirm(result_dir, pathologist=PATHOLOGIST)
    assert "not evaluable" in str(err.value)
    done = _cli("confirm", str(result_dir), "--pathologist", PATHOLOGIST)
    assert done.returncode == 4  # refused by the sign-out rules, not 3 (tampered)
    assert "not evaluable" in _one_line_error(done)

    with pytest.raises(InputError, match="reason"):
        lnpath.review(
            result_dir, pathologist=PATHOLOGIST, biopsy={"not_evaluable": {"tubular_atrophy": ""}}
        )
    with pytest.raises(InputError, match="unknown"):
        lnpath.review(
            result_dir, pathologist=PATHOLOGIST, biopsy={"not_evaluable": {"tubules": "x"}}
        )
    partial = {k: v for k, v in NOT_EVALUABLE.items() if k != "fibrinoid_necrosis"}
    lnpath.review(result_dir, pathologist=PATHOLOGIST, biopsy={"not_evaluable": partial})
    with pytest.raises(ResultError, match="fibrinoid") as err:
        lnpath.confirm(result_dir, pathologist=PATHOLOGIST)
    assert "neutrophils" not in str(err.value)

    _complete(result_dir)
    confirmed = lnpath.confirm(result_dir, pathologist=PATHOLOGIST)
    assert confirmed.status == "confirmed"
    line = confirmed.diagnosis_line()
    assert "≥" not in line and "not evaluable" in line
    text = _report_text(result_dir)
    assert "needs trichrome and silver" in text


def test_review_after_confirmation_needs_supersede_and_records_whom(
    result_dir: Path,
) -> None:
    _complete(result_dir)
    confirmed = lnpath.confirm(result_dir, pathologist=PATHOLOGIST)
    at = confirmed.to_dict()["confirmation"]["confirmed_at"]
    with pytest.raises(ResultError, match="supersede") as err:
        lnpath.review(result_dir, pathologist="Dr Bea Second", comment="second look")
    assert PATHOLOGIST in str(err.value)
    done = _cli("review", str(result_dir), "--comment", "x", "--pathologist", "Dr Bea Second")
    assert done.returncode == 4
    assert "--supersede" in _one_line_error(done)
    assert lnpath.SlideResult.load(result_dir).status == "confirmed"

    done = _cli(
        "review", str(result_dir), "--comment", "second look", "--supersede",
        "--pathologist", "Dr Bea Second",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    data = _result(result_dir)
    assert data["status"] == "provisional" and data["confirmation"] is None
    assert data["comment"] == "second look"
    comment = [c for c in data["changes"] if c["field"] == "comment"]
    assert comment and comment[0]["before"] == "none", comment
    assert data["supersedes"] == {
        "revision": confirmed.revision,
        "pathologist": PATHOLOGIST,
        "confirmed_at": at,
    }
    events = [
        json.loads(line)
        for line in (result_dir / "revisions" / "audit.jsonl").read_text().splitlines()
    ]
    assert events[-1]["by"] == "Dr Bea Second"
    assert events[-1]["supersedes"]["pathologist"] == PATHOLOGIST
    assert all(e.get("by") for e in events)  # never "By: None"
    assert f"supersedes the confirmation by {PATHOLOGIST}" in _report_text(result_dir)


def test_exclusions_ischemic_and_not_a_glomerulus(result_dir: Path, tmp_path: Path) -> None:
    ids = _ids(result_dir)
    n = len(ids)
    with pytest.raises(InputError, match=r"ischaemic|ischemic"):
        lnpath.review(result_dir, pathologist=PATHOLOGIST, exclusions={ids[0]: "old"})
    with pytest.raises(InputError, match="9999"):
        lnpath.review(result_dir, pathologist=PATHOLOGIST, exclusions={9999: "ischemic"})
    done = _cli(
        "review", str(result_dir), "--exclude", f"{ids[0]}=ischemic",
        "--exclude", f"{ids[1]}=not_glomerulus", "--pathologist", PATHOLOGIST,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = lnpath.SlideResult.load(result_dir)
    table = result.findings.set_index("glomerulus_id")
    assert table.at[ids[0], "exclusion"] == "ischemic"
    assert table.at[ids[1], "exclusion"] == "not_glomerulus"
    assert str(table.at[ids[0], "exclusion_reason"]).strip()
    scores = result.to_dict()["scores"]
    assert scores["adequacy"]["n_glomeruli"] == n - 1  # not a glomerulus: out of N
    assert scores["activity_index"]["components"]["endocapillary_hypercellularity"]["N"] == n - 1
    isn = scores["isn_rps_class"]
    assert (isn["n_all"], isn["n_class"]) == (n - 1, n - 2)  # ischemic: out of the LN fraction
    text = _report_text(result_dir)
    assert "ischemic" in text.lower() or "ischaemic" in text.lower()
    assert "not a glomerulus" in text.lower()
    # a glomerulus not excluded before was "not assessed" in the change list, as a missing call
    logged = {c["field"]: c for c in result.to_dict()["changes"] if c["glomerulus"] == ids[0]}
    assert (logged["exclusion"]["before"], logged["exclusion"]["after"]) == ("none", "ischemic")

    # undoing an exclusion by the Python API brings the glomerulus back
    lnpath.review(result_dir, pathologist=PATHOLOGIST, exclusions={ids[1]: ""})
    assert lnpath.SlideResult.load(result_dir).to_dict()["scores"]["adequacy"]["n_glomeruli"] == n
    override = {"class": "IV", "reason": "active lesions on deeper levels"}
    changes = lnpath.review(result_dir, pathologist=PATHOLOGIST, class_override=override)
    (logged,) = [c for c in changes.to_dict()["changes"] if "class set" in c["field"]]
    assert logged["before"] == "none" and logged["after"].startswith("IV (")


def test_sclerosis_is_said_to_be_taken_as_lupus_related(result_dir: Path, tmp_path: Path) -> None:
    ids = _ids(result_dir)
    edited = _edited_findings(
        result_dir, tmp_path / "gs.csv", global_sclerosis={ids[0]: "True", ids[1]: "True"}
    )
    lnpath.review(result_dir, pathologist=PATHOLOGIST, findings=edited)
    text = _report_text(result_dir).lower()
    assert "2 globally sclerosed" in text
    assert "counted as lupus-related unless marked ischemic" in text


# --------------------------------------------------------------------------------------------
# The report a pathologist signs


def test_signed_report_has_no_proposal_wording(result_dir: Path) -> None:
    provisional = _report_text(result_dir)
    assert "provisional" in provisional.lower()
    assert "Electronically signed" not in provisional
    for code in ("interstitial_inflammation", "p_", "require_stain_panel", "≥0/24"):
        assert code not in provisional.split("Machine details")[0], code

    _complete(result_dir)
    lnpath.review(
        result_dir,
        pathologist=PATHOLOGIST,
        comment="Correlate with <b>serology</b>.",
        biopsy={
            "membranous": {"present": False},
            "deposits": {"mesangial": True, "subendothelial": True, "subepithelial": False},
            "if_panel": {"IgG": "2+", "C3": "2+", "C1q": "1+", "IgA": "trace"},
            "vessels": {"arteries_sampled": 2, "arteriolar_hyalinosis": False},
        },
    )
    confirmed = lnpath.confirm(result_dir, pathologist=PATHOLOGIST)
    date = confirmed.to_dict()["confirmation"]["confirmed_at"][:10]
    text = _report_text(result_dir)
    assert f"Electronically signed by {PATHOLOGIST} on {date}" in text
    assert "propos" not in text.lower()
    assert "Correlate with <b>serology</b>." in text  # shown as text, not markup
    assert "<b>serology" not in (result_dir / "report.html").read_text()
    assert re.search(
        r"Lupus nephritis, ISN/RPS class .*; modified NIH \(2018\) activity index", text
    )
    assert "IgG" in text and "2+" in text
    for denominator in ("of all glomeruli", "% of cortex"):
        assert denominator in text


def test_a_section_that_may_not_be_kidney_is_not_evaluable(scored: Path) -> None:
    from lnpath.report.slide import diagnosis_line, render_report
    from lnpath.results.folder import ResultContent

    data = _result(scored)
    warning = (
        "most glomerulus detections are weak (median probability 0.41; 9 of 11 below 0.5): is "
        "this a PAS-stained kidney section at the stated µm/px? Check every outline"
    )
    data["models"][0]["run"] = {"detection_quality": {"warning": warning}}
    line = diagnosis_line(data)
    assert line.startswith("Not evaluable: most glomerulus detections are weak")
    assert "Lupus nephritis" not in line
    content = ResultContent.load(scored)
    parser = _Text()
    parser.feed(render_report(data, content.findings, content.polygons, content.assets))
    text = " ".join(parser.parts)
    assert "Kidney biopsy: not evaluable" in text
    assert "Lupus nephritis" not in text and "(adequate)" not in text


def test_review_takes_a_findings_table_with_exclusion_columns(result_dir: Path) -> None:
    """The workstation's path: a DataFrame, and the revision it was edited on."""
    table = lnpath.SlideResult.load(result_dir).findings
    gid = int(table.iloc[0]["glomerulus_id"])
    table["exclusion"] = ""
    table["exclusion_reason"] = ""
    table.loc[0, ["exclusion", "exclusion_reason"]] = ["ischemic", "hilar, obsolescent"]
    after = lnpath.review(result_dir, pathologist=PATHOLOGIST, findings=table, base_revision=1)
    row = after.findings.set_index("glomerulus_id").loc[gid]
    assert (row["exclusion"], row["exclusion_reason"]) == ("ischemic", "hilar, obsolescent")
    isn = after.to_dict()["scores"]["isn_rps_class"]
    assert isn["n_class"] == isn["n_all"] - 1
    with pytest.raises(ResultError, match="revision 1"):
        lnpath.review(result_dir, pathologist=PATHOLOGIST, findings=table, base_revision=1)


def test_subepithelial_deposits_read_as_the_membranous_component_in_the_report(
    result_dir: Path,
) -> None:
    """The class rules take EM's subepithelial deposits for the membranous component when it is
    not stated; the report says the same instead of "not reported" (and asks for it no more)."""
    lnpath.review(result_dir, pathologist="Dr A", biopsy={"deposits": {"subepithelial": True}})
    text = _report_text(result_dir)
    assert "Membranous component: present (from subepithelial deposits)" in text
    assert "Membranous component (class V) by IF/EM" not in text
