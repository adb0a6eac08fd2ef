"""The HTML report and overlay, on the demo slide scored from its ground-truth outlines."""

from __future__ import annotations

import base64
import html
import io
import re
import shutil
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import lnpath
from lnpath.core.findings import LESIONS
from lnpath.io.tables import findings_from_geojson
from lnpath.report import charts as report_charts
from lnpath.report.sections import band_text
from lnpath.report.slide import diagnosis_line, index_text

INJECTED = "<script>alert('x')</script>"
VOID = {"meta", "img", "br", "hr", "input", "link", "col"}


class _Checker(HTMLParser):
    """Collects tags, ids and sources, and checks that every element is closed in order."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.ids: list[str] = []
        self.sources: list[str] = []
        self.tags: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        values = dict(attrs)
        if values.get("id"):
            self.ids.append(str(values["id"]))
        if tag == "img":
            self.sources.append(str(values.get("src")))
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        assert self.stack and self.stack[-1] == tag, f"</{tag}> closes <{self.stack[-1:]}>"
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def _parse(text: str) -> _Checker:
    checker = _Checker()
    checker.feed(text)
    checker.close()
    assert not checker.stack, f"unclosed elements {checker.stack}"
    return checker


@pytest.fixture(scope="module")
def result(tmp_path_factory: pytest.TempPathFactory, repo_dir: Path) -> lnpath.SlideResult:
    examples = repo_dir / "examples"
    return lnpath.score_slide(
        examples / "demo_biopsy.tiff",
        out=tmp_path_factory.mktemp("report") / "result",
        glomeruli=examples / "demo_biopsy_glomeruli.geojson",
        patient_id=INJECTED,
        biopsy_date="2024-03-05",
    )


def test_report_is_valid_self_contained_html(result: lnpath.SlideResult) -> None:
    text = result.report_path.read_text(encoding="utf-8")
    page = _parse(text)
    assert "script" not in page.tags and "link" not in page.tags
    assert page.sources and all(s.startswith("data:image/") for s in page.sources)
    gallery = [i for i in page.ids if i[:1] == "g" and i[1:].isdigit()]
    assert len(gallery) == len(result.findings) == 23
    assert sorted(gallery) == sorted(f"g{g}" for g in result.findings["glomerulus_id"])


def test_report_leads_with_the_diagnosis_line(result: lnpath.SlideResult) -> None:
    line = result.diagnosis_line()
    klass = result.to_dict()["scores"]["isn_rps_class"]
    if klass["proposal"]:
        assert line.startswith(f"Lupus nephritis, ISN/RPS class {klass['proposal']}")
    elif not klass["determined"]:  # open on unassessed lesions, which IF/EM would not settle
        assert line.startswith("Lupus nephritis, ISN/RPS class not determinable: lesions not")
        assert "IF/EM needed" not in line.split(";")[0]
    else:
        assert line.startswith(
            "Lupus nephritis, ISN/RPS class not determined by light microscopy (IF/EM needed); "
        )
    assert "modified NIH (2018) activity index " in line and ", chronicity index " in line
    assert line.endswith("PROVISIONAL: computer-assisted draft pending pathologist review")
    # PAS cannot grade interstitial fibrosis: the totals are incomplete, shown as their range
    assert "components not assessed" in line and "≥" not in line
    assert re.search(r"activity index \d+–\d+/24", line)
    page = _parse(result.report_path.read_text(encoding="utf-8"))
    assert result.to_dict()["scores"] and line.split(" PROVISIONAL")[0] in html.unescape(
        " ".join(" ".join(page.text).split())
    )


def test_user_text_is_escaped(result: lnpath.SlideResult) -> None:
    text = result.report_path.read_text(encoding="utf-8")
    assert INJECTED not in text and "<script" not in text
    assert "&lt;script&gt;alert(" in text
    assert INJECTED in html.unescape(text)  # shown to the reader as typed
    assert "<script" not in result._repr_html_()


def test_not_assessed_items_say_what_the_pathologist_must_supply(
    result: lnpath.SlideResult,
) -> None:
    text = html.unescape(result.report_path.read_text(encoding="utf-8"))
    assert "PAS does not stain collagen selectively" in text
    assert "Tubular atrophy: not assessed" in text
    assert "Immunofluorescence" in text and "electron microscopy" in text
    # each missing lesion is listed once: under its index component, not again per lesion
    assert text.count("Fibrinoid necrosis: not assessed") == 1
    assert "Fibrinoid necrosis: not called by the machine" not in text


def test_component_tables_show_counts_and_whole_percentages(result: lnpath.SlideResult) -> None:
    text = html.unescape(result.report_path.read_text(encoding="utf-8"))
    ci = result.to_dict()["scores"]["chronicity_index"]["components"]["glomerulosclerosis"]
    assert f"{ci['n']}/{ci['N']}" in text
    assert f">{round(100 * ci['fraction'])}%<" in text
    assert "Total glomerulosclerosis (global + segmental)" in text


def test_overlay_outlines_glomeruli_in_their_call_colour(result: lnpath.SlideResult) -> None:
    overlay = np.asarray(Image.open(result.folder / "overlay.png").convert("RGB"))
    thumb = np.asarray(Image.open(result.folder / "assets" / "thumbnail.jpg"))
    assert overlay.shape == thumb.shape
    assert max(overlay.shape[:2]) == 1600
    colours = {tuple(c) for c in overlay.reshape(-1, 3)[::7]}
    assert (0, 170, 0) in colours or (230, 200, 0) in colours  # "No lesion" or "Not assessed"


def test_repr_html_is_self_contained(result: lnpath.SlideResult) -> None:
    """The Jupyter view names the report but links no file: file:// is dead in a served
    JupyterLab (issue #16); its overlay is inline."""
    block = result._repr_html_()
    _parse(block)
    assert html.escape(result.diagnosis_line()) in block
    assert "file://" not in block and "data:image/png;base64," in block
    assert result.report_path.name in block


def _complete_score(qupath_dir: Path) -> dict[str, object]:
    table = findings_from_geojson(qupath_dir / "TPATH065.geojson")
    for lesion in LESIONS:  # a pathologist's complete table: everything else looked at, absent
        table[lesion] = table[lesion].fillna(False).astype("boolean")
    cortex = {
        "interstitial_inflammation": 0.1,
        "interstitial_fibrosis": 0.3,
        "tubular_atrophy": 0.3,
    }
    return lnpath.score_findings(table, cortex=cortex).to_dict()


def test_diagnosis_line_for_a_complete_score(qupath_dir: Path) -> None:
    scores = _complete_score(qupath_dir)
    ai, ci = scores["activity_index"], scores["chronicity_index"]
    line = diagnosis_line({"scores": scores, "status": "provisional", "confirmation": None})
    proposal = scores["isn_rps_class"]["proposal"]
    assert proposal, "the complete QuPath-derived score has a class proposal"
    assert line == (
        f"Lupus nephritis, ISN/RPS class {proposal.replace('+', ' + ')}; modified NIH (2018) "
        f"activity index {ai['total']}/24, chronicity index {ci['total']}/12. "
        "PROVISIONAL: computer-assisted draft pending pathologist review"
    )
    assert index_text(ci) == f"{ci['total']}/12"
    confirmed = {
        "scores": scores,
        "status": "confirmed",
        "confirmation": {"pathologist": "Dr A", "confirmed_at": "2024-05-01T10:00:00+00:00"},
    }
    assert diagnosis_line(confirmed).endswith(
        "Electronically signed by Dr A on 2024-05-01 10:00 UTC"
    )


def test_findings_csv_matches_the_geojson(result: lnpath.SlideResult) -> None:
    table = pd.read_csv(result.folder / "findings.csv")
    assert list(table.columns[:3]) == ["glomerulus_id", "feature_id", "main_call"]
    assert set(LESIONS) <= set(table.columns)
    assert any(c.startswith("m_") for c in table.columns)
    png = (result.folder / "overlay.png").read_bytes()
    assert Image.open(io.BytesIO(png)).format == "PNG"


def test_inadequate_biopsy_says_index_not_computed(qupath_dir: Path) -> None:
    table = findings_from_geojson(qupath_dir / "TPATH065.geojson").head(5)
    for lesion in LESIONS:
        table[lesion] = table[lesion].fillna(False).astype("boolean")
    for cortex in (None, {"interstitial_fibrosis": 0.2}):
        scores = lnpath.score_findings(table, cortex=cortex).to_dict()
        line = diagnosis_line({"scores": scores, "status": "provisional", "confirmation": None})
        assert "activity index not computed (" in line and "inadequate" in line
        assert "≥" not in line


def test_incomplete_index_shows_its_range(qupath_dir: Path) -> None:
    # 31 glomeruli, crescents entered for one only (a review): the crescent component is then at
    # least band 1 (x2), so the activity index is at least 2 although the assessed parts give 0.
    table = findings_from_geojson(qupath_dir / "TPATH012.geojson")
    table["endocapillary_hypercellularity"] = pd.array([False] * len(table), dtype="boolean")
    table["cellular_crescent"] = pd.array([True] + [None] * (len(table) - 1), dtype="boolean")
    ai = lnpath.score_findings(table).to_dict()["activity_index"]
    assert ai["total"] == 0 and ai["total_range"][0] == 2
    text = index_text(ai)
    assert text == f"2–{ai['total_range'][1]}/24 (5 of 6 components not assessed)"
    marked = dict.fromkeys(ai["not_assessed"], "needs silver")
    assert index_text(ai, marked).startswith(f"not evaluable (range 2–{ai['total_range'][1]}/24")


@pytest.mark.parametrize(
    ("total", "maximum", "expected"),
    [
        (5, 24, "low (0–5)"),
        (6, 24, "moderate (6–11)"),
        (11, 24, "moderate (6–11)"),
        (12, 24, "high (12–24)"),
        (2, 12, "low (0–2)"),
        (3, 12, "moderate (3–5)"),
        (6, 12, "high (6–12)"),
    ],
)
def test_an_index_heading_gives_its_band_word(total: int, maximum: int, expected: str) -> None:
    """§1.7: low / moderate / high, AI 0–5 / 6–11 / 12–24 and CI 0–2 / 3–5 / 6–12."""
    index = {"max": maximum, "total": total, "complete": True}
    assert band_text(index) == expected
    # an incomplete index has a word only when every total it can still take shares it
    assert band_text({**index, "complete": False, "total_range": [total, total]}) == expected
    assert band_text({**index, "complete": False, "total_range": [total, maximum]}) in (
        None,
        expected if total >= maximum // 2 else None,
    )
    assert band_text({"max": maximum, "total": None, "complete": False}) is None


def test_the_report_heads_each_index_with_its_band(
    demo_result_template: Path, tmp_path: Path
) -> None:
    """A pathologist makes every call of the demo but one (none present but endocapillary
    hypercellularity in 12 of 23, over half: 3; one crescent open: 3-5; and 30 % fibrosis: 2): AI
    3-5, CI 2, both "low"."""
    folder = Path(shutil.copytree(demo_result_template, tmp_path / "r", symlinks=True))
    table = pd.read_csv(folder / "findings.csv", dtype=str, keep_default_na=False)
    for lesion in LESIONS:
        table[lesion] = "0"
    table.loc[table.index[:12], "endocapillary_hypercellularity"] = "1"
    table.loc[table.index[12], "cellular_crescent"] = ""  # one call left open: AI 3-5, still low
    table.to_csv(tmp_path / "calls.csv", index=False)
    cortex = {
        "interstitial_inflammation": 0.0,
        "interstitial_fibrosis": 0.3,
        "tubular_atrophy": 0.0,
    }
    result = lnpath.review(
        folder, pathologist="Dr R", findings=tmp_path / "calls.csv", cortex=cortex
    )
    scores = result.to_dict()["scores"]
    assert (scores["activity_index"]["total"], scores["chronicity_index"]["total"]) == (3, 2)
    report = html.unescape(result.report_path.read_text(encoding="utf-8"))
    for key, expected in (("activity", "low (0–5)"), ("chronicity", "low (0–2)")):
        heading = re.search(rf'<h2 id="{key}-title">(.*?)</h2>', report, re.S)
        assert heading and f"· {expected}</span>" in heading.group(1), key
    assert (
        "Glomeruli with active lesions: 52% (12/23); at least, as 1 more glomerulus has active "
        "lesions not assessed." in " ".join(report.split())
    )


def _charts(report: str) -> list[ET.Element]:
    """The evidence charts of a report, parsed as XML (they must be well-formed SVG)."""
    prefix = "data:image/svg+xml;base64,"
    sources = [s for s in _parse(report).sources if s.startswith(prefix)]
    return [ET.fromstring(base64.b64decode(s[len(prefix) :])) for s in sources]


def _marks(svg: ET.Element, cls: str) -> list[ET.Element]:
    return [e for e in svg.iter() if e.get("class") == cls]


def test_evidence_charts_show_every_measured_glomerulus_against_the_rules(
    result: lnpath.SlideResult, tmp_path: Path
) -> None:
    report = result.report_path.read_text(encoding="utf-8")
    assert "Measurements behind the calls" in report  # in the machine-details appendix
    sclerosis, endocapillary = _charts(report)
    measured = result.findings.dropna(subset=["m_sclerosed_fraction"])
    bars = _marks(sclerosis, "bar")
    assert len(bars) == len(measured) > 0
    heights = [float(b.get("height", "nan")) for b in bars]
    assert heights == sorted(heights)  # lowest fraction first
    # the two dashed rule lines sit at the recorded thresholds (0.5 and 0.35 of the plot height)
    ys = sorted(float(line.get("y1", "nan")) for line in _marks(sclerosis, "threshold"))
    plot_top, plot_h = (
        report_charts.TOP,
        report_charts.HEIGHT - report_charts.TOP - report_charts.BOTTOM,
    )
    assert ys == pytest.approx([plot_top + plot_h * 0.5, plot_top + plot_h * 0.65], abs=0.1)
    points = _marks(endocapillary, "point")
    assert {int(p.get("data-glomerulus", "-1")) for p in points} == set(
        measured["glomerulus_id"].astype(int)
    )
    assert len(_marks(endocapillary, "call-region")) == 1


def test_a_reviewed_call_is_coloured_against_its_measurement(result: lnpath.SlideResult) -> None:
    findings = result.findings.copy()
    low = int(findings.sort_values("m_sclerosed_fraction")["glomerulus_id"].iloc[0])
    findings.loc[findings["glomerulus_id"] == low, "global_sclerosis"] = True  # a reviewer's call
    svg = report_charts.sclerosis_chart(findings, None)
    assert svg is not None
    bars = {
        int(b.get("data-glomerulus", "-1")): b.get("fill")
        for b in _marks(ET.fromstring(svg), "bar")
    }
    assert bars[low] == "#787878"  # global sclerosis grey, on the lowest bar
    assert "threshold" not in svg  # no rule lines for calls that did not come from the rules
    outlines_only = findings.drop(columns=[c for c in findings if c.startswith("m_")])
    assert report_charts.evidence_charts(result.to_dict(), outlines_only) == []


def test_a_results_own_geojson_scores_as_written(result: lnpath.SlideResult) -> None:
    # lnpath's GeoJSON classes ("No lesion", ...) are not QuPath's Normal/Sclerotic: the calls
    # are read from the call: measurements instead, so no glomerulus is dropped
    table = findings_from_geojson(result.folder / "glomeruli.geojson")
    assert table.attrs["excluded"] == [] and len(table) == len(result.findings)
    for lesion in LESIONS:
        assert table[lesion].tolist() == result.findings[lesion].astype("boolean").tolist()


def _css_unescape(text: str) -> str:
    return re.sub(r"\\([0-9a-fA-F]{1,6}) ?", lambda m: chr(int(m.group(1), 16)), text)


def test_every_printed_page_says_whose_slide_and_that_it_is_a_draft(
    result: lnpath.SlideResult,
) -> None:
    """The status sits in the diagnosis block on page 1; each printed page's foot repeats it,
    with the patient, slide and revision, in a CSS string no typed name can break out of."""
    text = result.report_path.read_text(encoding="utf-8")
    footer = re.search(r'@bottom-left \{ content: "([^"]*)"', text)
    assert footer and re.fullmatch(r"[A-Za-z0-9 \\]*", footer.group(1))
    assert _css_unescape(footer.group(1)) == (
        f"Patient {INJECTED} · Slide demo_biopsy.tiff · revision 1 · "
        "PROVISIONAL: computer-assisted draft pending pathologist review"
    )
    assert 'counter(page) " of " counter(pages)' in text


def test_changes_name_the_class_the_findings_give_beside_the_pathologists(
    result: lnpath.SlideResult, tmp_path: Path
) -> None:
    """A review that sets the class and changes the findings: the re-scored class in the change
    list is the findings' class, not a second, different "ISN/RPS class" beside the diagnosis."""
    import shutil

    folder = Path(shutil.copytree(result.folder, tmp_path / "r"))
    table = pd.read_csv(folder / "findings.csv", dtype=str, keep_default_na=False)
    table[list(LESIONS)] = "false"
    table.loc[:2, "endocapillary_hypercellularity"] = "true"  # a focal proliferative lesion
    table.to_csv(tmp_path / "assessed.csv", index=False)
    after = lnpath.review(
        folder,
        pathologist="Dr B",
        findings=tmp_path / "assessed.csv",
        class_override={"class": "V", "reason": "IF/EM: subepithelial deposits"},
    )
    machine = after.to_dict()["scores"]["isn_rps_class"]["proposal"]
    assert machine and machine != "V"
    report = html.unescape((folder / "report.html").read_text(encoding="utf-8"))
    assert "Lupus nephritis, ISN/RPS class V;" in report
    assert f"<li>ISN/RPS class from the findings: none → {machine}</li>" in report
    assert "<li>ISN/RPS class:" not in report


def test_a_signed_report_calls_the_lesion_calls_confirmed_not_unreviewed(
    demo_result_template: Path, confirmed_template: Path
) -> None:
    """The signed report still said the machine's negative calls were unreviewed."""
    draft = (demo_result_template / "report.html").read_text(encoding="utf-8")
    signed = (confirmed_template / "report.html").read_text(encoding="utf-8")
    assert "negative calls are unreviewed" in draft
    assert "negative calls are unreviewed" not in signed
    assert "confirmed by the pathologist at sign-out" in signed
