"""The report in a real browser (headless Chromium): print to PDF, screenshots, axe-core.

Uses Debian's Chromium (``apt-get install chromium``) through Playwright, never a downloaded
browser. Screenshots and PDFs are kept under ``$LNPATH_ARTEFACTS`` (or the test's tmp_path) so a
person can look at what the pathologist will see. The accessibility check injects axe-core from
``tests/assets/axe-core`` (built by ``scripts/build_axe.py``); nothing downloads at test time.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import lnpath

CHROMIUM = Path(os.environ.get("LNPATH_CHROMIUM", "/usr/bin/chromium"))
AXE = Path(__file__).parent / "assets" / "axe-core" / "axe.min.js"
PATHOLOGIST = "Dr Ada Renal"
MAX_PAGES = 6
NOT_EVALUABLE = {
    "neutrophils_karyorrhexis": "PAS section only",
    "fibrinoid_necrosis": "needs trichrome and silver",
    "hyaline_deposits": "needs trichrome",
    "cellular_fibrocellular_crescents": "needs silver",
    "interstitial_inflammation": "cortex not measured",
    "interstitial_fibrosis": "needs trichrome",
    "fibrous_crescents": "needs silver",
    "tubular_atrophy": "cortex not measured",
}

pytestmark = pytest.mark.skipif(
    not CHROMIUM.is_file(),
    reason=f"no Chromium at {CHROMIUM} (apt-get install chromium, or set LNPATH_CHROMIUM)",
)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright not installed")
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-gpu"]
        )
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def artefacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = os.environ.get("LNPATH_ARTEFACTS")
    folder = Path(root) / "report-browser" if root else tmp_path_factory.mktemp("artefacts")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def reports(repo_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The demo's report as scored (provisional) and after review and sign-out (confirmed)."""
    examples = repo_dir / "examples"
    slide, outlines = examples / "demo_biopsy.tiff", examples / "demo_biopsy_glomeruli.geojson"
    if not slide.is_file():
        pytest.skip("demo biopsy not in the checkout")
    root = tmp_path_factory.mktemp("browser")
    provisional = lnpath.score_slide(slide, out=root / "provisional", glomeruli=outlines).folder
    confirmed = Path(shutil.copytree(provisional, root / "confirmed"))
    ids = sorted(int(g) for g in lnpath.SlideResult.load(confirmed).findings["glomerulus_id"])
    lnpath.review(
        confirmed,
        pathologist=PATHOLOGIST,
        biopsy={
            "membranous": {"present": True, "extent": "global"},
            "deposits": {"mesangial": True, "subendothelial": False, "subepithelial": True},
            "if_panel": {"IgG": "3+", "IgA": "1+", "IgM": "1+", "C3": "2+", "C1q": "2+"},
            "vessels": {"arteries_sampled": 2, "intimal_fibrosis": "mild", "tma": False},
            "not_evaluable": NOT_EVALUABLE,
        },
        comment="Membranous lupus nephritis; correlate with proteinuria.",
        exclusions={ids[0]: "ischemic"},
    )
    lnpath.confirm(confirmed, pathologist=PATHOLOGIST)
    return {"provisional": provisional / "report.html", "confirmed": confirmed / "report.html"}


@pytest.fixture(params=["provisional", "confirmed"])
def page(request: pytest.FixtureRequest, browser: Any, reports: dict[str, Path]) -> Iterator[Any]:
    tab = browser.new_page(viewport={"width": 1280, "height": 900})
    tab.goto(reports[request.param].as_uri())
    tab.wait_for_load_state("load")
    tab.report_kind = request.param
    yield tab
    tab.close()


def _pages(pdf: bytes) -> int:
    import io

    from pypdf import PdfReader  # a dev dependency, imported only by this test

    return len(PdfReader(io.BytesIO(pdf)).pages)


def test_report_prints_on_a4_and_letter_in_six_pages(page: Any, artefacts: Path) -> None:
    kind = page.report_kind
    page.screenshot(path=str(artefacts / f"{kind}-screen.png"), full_page=True)
    page.emulate_media(media="print")
    for paper in ("A4", "Letter"):
        pdf = page.pdf(format=paper, print_background=True)
        (artefacts / f"{kind}-{paper}.pdf").write_bytes(pdf)
        assert _pages(pdf) <= MAX_PAGES, f"{kind} report prints on {_pages(pdf)} {paper} pages"
    cards = page.eval_on_selector_all(
        ".card", "els => els.map(e => getComputedStyle(e).breakInside)"
    )
    assert cards and set(cards) == {"avoid"}, cards


def test_every_printed_page_keeps_the_status(page: Any, artefacts: Path) -> None:
    """A page of the printout read alone still says draft or signed (and by whom), and which
    page of how many it is."""
    import io

    from pypdf import PdfReader

    page.emulate_media(media="print")
    pdf = page.pdf(format="A4", print_background=True)
    texts = [p.extract_text() for p in PdfReader(io.BytesIO(pdf)).pages]
    status = (
        f"Electronically signed by {PATHOLOGIST}"
        if page.report_kind == "confirmed"
        else "PROVISIONAL: computer-assisted draft pending pathologist review"
    )
    for number, text in enumerate(texts, 1):
        flat = " ".join(text.split())
        assert status in flat, f"page {number} of the {page.report_kind} report lost its status"
        assert f"page {number} of {len(texts)}" in flat and "demo_biopsy" in flat
    (artefacts / f"{page.report_kind}-footer.pdf").write_bytes(pdf)


def test_report_has_no_serious_accessibility_violations(page: Any) -> None:
    if not AXE.is_file():
        pytest.fail(f"{AXE} missing: run python scripts/build_axe.py")
    page.add_script_tag(path=str(AXE))
    result = page.evaluate("axe.run(document, {resultTypes: ['violations']})")
    serious = [
        f"{v['id']} ({v['impact']}): {v['help']} at {v['nodes'][0]['target']}"
        for v in result["violations"]
        if v["impact"] in ("serious", "critical")
    ]
    assert not serious, serious


def test_overview_glomeruli_link_to_their_cards(page: Any) -> None:
    links = page.eval_on_selector_all(".overview a[href^='#g']", "els => els.map(e => e.hash)")
    assert len(links) >= 20
    for target in links:
        assert page.locator(target).count() == 1, target
    page.locator(f".overview a[href='{links[3]}']").click()
    assert page.evaluate("location.hash") == links[3]
    bar = page.locator(".scale-bar")
    assert bar.count() >= 1 and re.fullmatch(r"\d+ (µm|mm)", bar.first.inner_text().strip())


def test_signed_report_in_the_browser(page: Any, artefacts: Path) -> None:
    text = page.evaluate("document.body.textContent")
    if page.report_kind == "provisional":
        assert "PROVISIONAL" in text.upper() and "Electronically signed" not in text
        return
    assert f"Electronically signed by {PATHOLOGIST}" in text
    assert "propos" not in text.lower()
    appendix = page.locator("details.machine-details")
    assert appendix.count() == 1 and not appendix.evaluate("e => e.open")
    page.locator(".signature").screenshot(path=str(artefacts / "confirmed-signature.png"))
