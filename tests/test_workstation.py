"""The review workstation in a real browser: Debian's Chromium driven by Playwright.

The server is the real ``lnpath workstation`` command in a subprocess on 127.0.0.1; every write
the page makes must show up in the result folder as an lnpath revision. Install what it needs with
``apt-get install -y chromium`` and ``pip install playwright`` (never ``playwright install``: the
tests drive the system Chromium).
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import lnpath

from .conftest import lnpath_cli

CHROMIUM = Path("/usr/bin/chromium")
HOSTILE = "<script>window.__lnpath_pwned = 1</script><img src=x onerror='window.__lnpath_pwned=2'>"

sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
if not CHROMIUM.is_file():
    pytest.skip(
        "Debian's chromium is not installed (apt-get install -y chromium)", allow_module_level=True
    )


# --------------------------------------------------------------------------------------------
# fixtures


@pytest.fixture(scope="session")
def scored_demo(repo_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo biopsy scored once (outlines given: no segmentation), from a copy of the slide so
    that a test may move it; its patient id is hostile HTML."""
    root = tmp_path_factory.mktemp("ws-demo")
    slide = root / "slide" / "demo_biopsy.tiff"
    slide.parent.mkdir()
    shutil.copy(repo_dir / "examples" / "demo_biopsy.tiff", slide)
    out = root / "result"
    # what the demo's morphometry cannot grade, marked so that the result can be signed out
    marks = root / "not-evaluable.json"
    ungraded = (
        "neutrophils_karyorrhexis", "fibrinoid_necrosis", "hyaline_deposits",
        "cellular_fibrocellular_crescents", "interstitial_inflammation", "fibrous_crescents",
        "tubular_atrophy", "interstitial_fibrosis",
    )  # fmt: skip
    marks.write_text(json.dumps({"not_evaluable": dict.fromkeys(ungraded, "demo section")}))
    subprocess.run(
        [
            sys.executable,
            "-m",
            "lnpath",
            "score",
            str(slide),
            "--biopsy",
            str(marks),
            "--glomeruli",
            str(repo_dir / "examples" / "demo_biopsy_glomeruli.geojson"),
            "--patient-id",
            HOSTILE,
            "--out",
            str(out),
        ],
        check=True,
        capture_output=True,
    )
    return out


@pytest.fixture
def result(scored_demo: Path, tmp_path: Path) -> Path:
    """A fresh copy of the scored demo for one test."""
    target = tmp_path / "demo-result"
    shutil.copytree(scored_demo, target)
    return target


class Server:
    """``lnpath workstation`` in a subprocess; ``url`` carries the token."""

    def __init__(self, *args: str | Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "lnpath", "workstation", *map(str, args)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))
            found = re.search(r"(http://\S+)", line)
            if found:
                self.url = found.group(1)
                break
        else:
            raise AssertionError(f"the workstation did not start: {self.lines}")
        self.base = self.url.split("?")[0]
        self.token = self.url.split("token=")[1]

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=20)


@pytest.fixture
def serve() -> Iterator[Any]:
    servers: list[Server] = []

    def start(*args: str | Path) -> Server:
        servers.append(Server(*args))
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        yield browser
        browser.close()


@pytest.fixture
def context(browser: Any) -> Iterator[Any]:
    # the page's Content-Security-Policy is bypassed so that the waits below can evaluate
    # expressions, and so that the escaping test shows the page escapes without CSP's help
    context = browser.new_context(viewport={"width": 1400, "height": 900}, bypass_csp=True)
    context.set_default_timeout(120_000)  # two shared cores can be very busy; nothing here is timed
    yield context
    context.close()


def open_page(context: Any, server: Server, name: str | None = "Dr Test") -> Any:
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.errors = errors
    page.goto(server.url)
    page.wait_for_selector("body[data-ready=true]")
    page.wait_for_selector("#overlay path")
    if name is not None:
        page.fill("#pathologist", name)
    return page


def click_glomerulus(page: Any, gid: int) -> None:
    """Click the middle of the glomerulus's outline on the slide (as a pathologist would)."""
    outline = page.locator(f'#overlay path[data-gid="{gid}"]')
    # a preview answering in between redraws the overlay: the outline found is then detached
    # (no box), and the redrawn one is the one to measure
    box = None
    for _ in range(20):
        box = outline.bounding_box()
        if box is not None:
            break
        outline.wait_for(state="attached")
    assert box is not None, f"G{gid} has no outline on the slide"
    page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.wait_for_selector(f"#glomerulus-title:text-matches('^G{gid}:')")


def ai_low(page: Any) -> int:
    return int(page.locator("#ai-value").get_attribute("data-low"))


def save(page: Any) -> str:
    """Click Save and return the page's answer. Generous: the first save that measures a drawn
    glomerulus loads the lesion caller (torch) into the server."""
    page.click("#save")
    page.wait_for_function(
        "!['', 'saving…'].includes(document.getElementById('message').textContent)",
        timeout=180_000,
    )
    return page.locator("#message").text_content()


def findings(folder: Path) -> Any:
    return lnpath.SlideResult.load(folder).findings.set_index("glomerulus_id")


# --------------------------------------------------------------------------------------------
# review flows


def test_crescent_on_glomerulus_3_saves_a_revision_and_raises_the_ai(
    result: Path, serve: Any, context: Any
) -> None:
    server = serve(result)
    page = open_page(context, server)
    before = ai_low(page)
    click_glomerulus(page, 3)
    page.click('[data-lesion="cellular_crescent"] button[data-value="present"]')
    page.wait_for_selector("#unsaved")
    # the server's own scoring of the same table gives the rise: 1 of 23 glomeruli with a
    # cellular crescent is band 1, weight 2 in the 2018 activity index
    table = findings(result).reset_index()
    table.loc[table["glomerulus_id"] == 3, "cellular_crescent"] = True
    expected = lnpath.score_findings(table).activity_index.to_dict()["total_range"][0]
    assert expected == before + 2
    page.wait_for_function(f"document.getElementById('ai-value').dataset.low === '{expected}'")
    assert save(page) == "saved revision 2"
    on_disk = lnpath.SlideResult.load(result)
    assert on_disk.revision == 2 and on_disk.status == "provisional"
    assert bool(on_disk.findings.set_index("glomerulus_id").loc[3, "cellular_crescent"]) is True
    audit = [json.loads(line) for line in (result / "revisions" / "audit.jsonl").open()]
    assert audit[-1]["event"] == "reviewed" and audit[-1]["by"] == "Dr Test"
    lnpath.verify(result)
    assert ai_low(page) == expected and page.locator("#unsaved").count() == 0
    assert "revision 2" in page.locator("#banner").text_content()
    assert not page.errors


def test_five_glomeruli_scored_with_the_keyboard_only(
    result: Path, serve: Any, context: Any
) -> None:
    server = serve(result)
    page = open_page(context, server)
    page.locator("#pathologist").blur()
    queue = lnpath.review_order(lnpath.SlideResult.load(result).findings)
    chosen = []
    for i in range(5):
        page.keyboard.press("u")  # next undecided
        title = page.locator("#glomerulus-title").text_content()
        gid = int(re.match(r"G(\d+):", title).group(1))
        chosen.append(gid)
        if i % 2 == 0:
            page.keyboard.press("Digit1")  # endocapillary hypercellularity present
        page.keyboard.press("n")  # every other lesion absent
    page.keyboard.press("Control+s")
    page.wait_for_function("document.getElementById('message').textContent === 'saved revision 2'")
    table = findings(result)
    assert len(set(chosen)) == 5
    assert chosen[0] == queue[0]  # the page follows the library's review queue
    for i, gid in enumerate(chosen):
        row = table.loc[gid]
        assert row[list(lnpath.LESIONS)].notna().all(), gid
        assert bool(row["endocapillary_hypercellularity"]) is (i % 2 == 0)
    assert not page.errors


def test_drawing_a_missed_glomerulus_changes_n(result: Path, serve: Any, context: Any) -> None:
    server = serve(result)
    page = open_page(context, server)
    n = int(page.locator("#n-glomeruli").get_attribute("data-n"))
    page.locator("#pathologist").blur()
    # a small square in the middle of the first tissue piece, away from every outline
    box = page.locator("#viewer").bounding_box()
    page.keyboard.press("d")
    x, y = box["x"] + 130, box["y"] + box["height"] / 2 + 20
    for dx, dy in ((0, 0), (14, 0), (14, 14), (0, 14)):
        page.mouse.click(x + dx, y + dy)
    page.keyboard.press("Enter")
    page.wait_for_function(f"document.getElementById('n-glomeruli').dataset.n === '{n + 1}'")
    assert save(page) == "saved revision 2"
    assert len(findings(result)) == n + 1
    page.wait_for_selector(f'#overlay path[data-gid="{n + 1}"]')


def test_keyboard_focus_stays_on_a_call_and_esc_closes_the_sign_out_question(
    result: Path, serve: Any, context: Any
) -> None:
    """A call pressed from the keyboard rebuilt the panel and dropped focus to the page, so Tab
    started over; Esc did not close the sign-out question."""
    server = serve(result)
    page = open_page(context, server)
    # a component no glomerulus was called for read "0/23" in the summary, as if counted
    row = page.locator("#summary tr", has_text="Neutrophils").first.text_content()
    assert re.search(r"0/\d+ \(\d+ not assessed\)", row), row
    click_glomerulus(page, 3)
    button = '[data-lesion="fibrinoid_necrosis"] [data-value="present"]'
    page.focus(button)
    page.keyboard.press("Enter")
    page.wait_for_selector(f"{button}.on")
    assert page.evaluate(f"document.activeElement === document.querySelector('{button}')")
    page.keyboard.press("Tab")  # on to "absent" of the same lesion, not back to the top
    assert page.evaluate("document.activeElement.dataset.value") == "absent"
    page.keyboard.press("Control+s")
    page.wait_for_function("document.getElementById('message').textContent === 'saved revision 2'")
    page.click("#signout")
    assert page.locator("#signout-panel").is_visible()
    page.keyboard.press("Escape")
    assert page.locator("#signout-panel").is_hidden()
    assert page.evaluate("document.activeElement.id") == "signout"
    assert lnpath.SlideResult.load(result).status == "provisional"  # nothing signed
    assert not page.errors


def test_sign_out_confirms_the_saved_revision(result: Path, serve: Any, context: Any) -> None:
    server = serve(result)
    page = open_page(context, server, name="Dr Sign")
    page.click("#signout")
    page.click("#signout-confirm")
    page.wait_for_function("document.getElementById('message').textContent.includes('confirmed')")
    on_disk = lnpath.SlideResult.load(result)
    assert on_disk.status == "confirmed"
    assert on_disk.to_dict()["confirmation"]["pathologist"] == "Dr Sign"
    lnpath.verify(result)
    assert page.locator("#signout").is_disabled()
    assert "CONFIRMED by Dr Sign" in page.locator("#banner").text_content()


def test_a_stale_save_is_refused(result: Path, serve: Any, context: Any) -> None:
    server = serve(result)
    page = open_page(context, server)
    ci_before = int(page.locator("#ci-value").get_attribute("data-low"))
    lnpath.review(result, cortex={"interstitial_fibrosis": 0.3}, pathologist="Dr Elsewhere")
    theirs = lnpath.SlideResult.load(result).to_dict()["scores"]["chronicity_index"]
    assert (theirs["total"] if theirs["complete"] else theirs["total_range"][0]) > ci_before
    click_glomerulus(page, 3)
    page.keyboard.press("n")
    # the next edit says so: its summary was scored on Dr Elsewhere's revision, a mix of both
    page.wait_for_selector("#summary-stale")
    assert "changed by Dr Elsewhere" in page.locator("#summary-stale").text_content()
    assert int(page.locator("#ci-value").get_attribute("data-low")) == ci_before  # not theirs
    message = save(page)
    assert "changed by Dr Elsewhere" in message and "reload" in message
    assert lnpath.SlideResult.load(result).revision == 2  # nothing merged
    assert findings(result).loc[3, list(lnpath.LESIONS)].isna().any()


def test_two_tabs_saving_at_once_one_gets_409(result: Path, serve: Any, context: Any) -> None:
    server = serve(result)
    first, second = open_page(context, server), open_page(context, server, name="Dr Two")
    for page, gid in ((first, 3), (second, 4)):
        click_glomerulus(page, gid)
        page.keyboard.press("n")
        page.wait_for_selector("#unsaved")
    # both requests leave before either answers
    statuses = first.evaluate(
        """async ([token, body1, body2]) => {
            const post = (b) => fetch('/api/r/0/save', {method: 'POST', body: JSON.stringify(b),
                headers: {'X-Lnpath-Token': token, 'Content-Type': 'application/json'}});
            const answers = await Promise.all([post(body1), post(body2)]);
            return answers.map((r) => r.status);
        }""",
        [
            server.token,
            first.evaluate("payload()"),
            second.evaluate("payload()"),
        ],
    )
    assert sorted(statuses) == [200, 409]
    assert lnpath.SlideResult.load(result).revision == 2
    # and through the page: the tab that lost is told to reload
    assert "changed by" in save(second)


def test_edits_refused_as_stale_are_kept_over_the_reload_it_asks_for(
    result: Path, serve: Any, context: Any
) -> None:
    """A save refused because another tab saved says "reload"; the reload dropped this tab's
    edits without a trace (the browser's leave-the-page question was all). They are shown, in a
    box that scrolls (it took a third of the screen) and that × dismisses (it had no way out)."""
    server = serve(result)
    mine, theirs = open_page(context, server), open_page(context, server, name="Dr Two")
    mine.on("dialog", lambda dialog: dialog.accept())  # "leave the page with unsaved edits?"
    click_glomerulus(theirs, 4)
    theirs.keyboard.press("n")
    theirs.wait_for_selector("#unsaved")
    assert save(theirs) == "saved revision 2"
    click_glomerulus(mine, 3)
    mine.click('[data-lesion="cellular_crescent"] button[data-value="present"]')
    mine.keyboard.press("n")  # every other lesion absent: a dozen lines to redo
    assert "changed by Dr Two" in save(mine)
    mine.reload()
    mine.wait_for_selector("body[data-ready=true]")
    kept = mine.locator("#kept")
    kept.wait_for(state="visible")
    said = kept.text_content()
    assert "kept when this tab could not save them" in said and "now at revision 2" in said
    assert '"cellular_crescent": true' in mine.locator("#kept-edits").text_content()
    assert mine.evaluate("dirty()") is False  # shown to redo, not put on Dr Two's revision
    height = mine.evaluate("window.innerHeight")
    assert kept.bounding_box()["height"] <= height / 5
    body = mine.locator("#kept-body").evaluate("(n) => [n.scrollHeight, n.clientHeight]")
    assert body[0] > body[1]  # all of it there, scrolled
    mine.focus("#help-button")  # the header's last control, then the box (Tab, not a mouse)
    for _ in range(3):
        mine.keyboard.press("Tab")
        if mine.evaluate("document.activeElement.id") == "kept-dismiss":
            break
    assert mine.evaluate("document.activeElement.id") == "kept-dismiss"
    mine.keyboard.press("Enter")
    kept.wait_for(state="hidden")
    on_disk = findings(result)
    assert pd.isna(on_disk.loc[3, "cellular_crescent"])
    assert on_disk.loc[4, list(lnpath.LESIONS)].notna().all()  # Dr Two's calls stand
    assert not mine.errors and not theirs.errors


def test_a_folder_scored_anew_while_the_page_is_open_takes_none_of_its_edits(
    result: Path, serve: Any, context: Any, repo_dir: Path
) -> None:
    """Scored anew (``--overwrite``) the folder is at revision 1 again: the page's save on
    revision 1 went through, its call for the old scoring's G3 put on the new scoring's G3."""
    server = serve(result)
    page = open_page(context, server)
    click_glomerulus(page, 3)
    page.click('[data-lesion="cellular_crescent"] button[data-value="present"]')
    page.wait_for_selector("#unsaved")
    slide = json.loads((result / "result.json").read_text())["slide"]["path"]
    outlines = repo_dir / "examples" / "demo_biopsy_glomeruli.geojson"
    time.sleep(1.1)  # created_at counts seconds
    rescored = lnpath_cli("score", slide, "--glomeruli", outlines, "--overwrite", "--out", result)
    assert rescored.returncode == 0, rescored.stderr
    message = save(page)
    assert "was scored anew" in message and "another result" in message, message
    for route in ("confirm", "addendum"):  # a sign-out of the old scoring neither
        answer = page.evaluate(
            """async ([route, token, body]) => {
                const r = await fetch(`/api/r/0/${route}`, {method: 'POST',
                    body: JSON.stringify(body), headers: {'X-Lnpath-Token': token}});
                return [r.status, (await r.json()).error];
            }""",
            [route, server.token, {**page.evaluate("payload()"), "text": "late"}],
        )
        assert answer[0] == 409 and "scored anew" in answer[1], (route, answer)
    on_disk = lnpath.SlideResult.load(result)
    assert on_disk.revision == 1 and on_disk.status == "provisional"
    assert pd.isna(findings(result).loc[3, "cellular_crescent"])
    assert not page.errors


#: holds each save request 3 s in the page before it leaves, as a slow save (a drawn glomerulus
#: measured, a busy disk) does
SLOW_SAVES = """(() => { const f = window.fetch; window.fetch = async (url, options) => {
    if (String(url).endsWith('/save')) await new Promise((r) => setTimeout(r, 3000));
    return f(url, options); }; })()"""


def test_ctrl_s_in_a_field_saves_what_is_typed_there(
    result: Path, serve: Any, context: Any
) -> None:
    """A field reports its value when left; Ctrl+S typed in it did not leave it, so the comment
    on the screen was "nothing to save" (and lost on closing the tab) or saved without it."""
    server = serve(result)
    name = "Dr Zoë Ærøskøbing-李"
    page = open_page(context, server, name=name)
    comment = f"Crescents in G3 — see deeper levels; {HOSTILE}"
    page.click("#comment")
    page.keyboard.type(comment)
    page.keyboard.press("Control+s")
    page.wait_for_function("document.getElementById('message').textContent.startsWith('saved')")
    assert page.locator("#message").text_content() == "saved revision 2"
    saved = lnpath.SlideResult.load(result).to_dict()
    assert saved["comment"] == comment
    page.click("#cortex-interstitial_fibrosis")
    page.keyboard.type("25")
    page.keyboard.press("Control+s")
    page.wait_for_function("document.getElementById('message').textContent === 'saved revision 3'")
    assert (
        lnpath.SlideResult.load(result).to_dict()["cortex_fractions"]["interstitial_fibrosis"]
        == 0.25
    )
    audit = [json.loads(line) for line in (result / "revisions" / "audit.jsonl").open()]
    assert [e["by"] for e in audit[-2:]] == [name, name]
    assert page.evaluate("dirty()") is False and page.locator("#unsaved").count() == 0
    assert page.locator("#comment").input_value() == comment
    assert page.evaluate("window.__lnpath_pwned") is None
    lnpath.verify(result)
    assert not page.errors


def test_edits_made_while_a_save_is_on_its_way_are_kept(
    result: Path, serve: Any, context: Any
) -> None:
    """The answer to a save used to clear every edit, also those made while it was on its way;
    and a second Ctrl+S sent the same revision again, to be refused as stale by the first."""
    server = serve(result)
    page = open_page(context, server)
    statuses: list[int] = []
    page.on("response", lambda r: statuses.append(r.status) if r.url.endswith("/save") else None)
    page.evaluate(SLOW_SAVES)
    click_glomerulus(page, 3)
    page.keyboard.press("n")
    page.wait_for_selector("#unsaved")
    page.click("#save")
    # while it saves (from the list: the message shown moves the slide down under the mouse)
    page.click('#glomeruli-list tr[data-gid="4"]')
    page.wait_for_selector("#glomerulus-title:text-matches('^G4:')")
    page.click('[data-lesion="cellular_crescent"] button[data-value="present"]')
    page.keyboard.press("Control+s")  # again, impatient: one save at a time
    page.wait_for_function("document.getElementById('message').textContent.startsWith('saved')")
    assert "edits made while it saved are not saved yet" in page.locator("#message").text_content()
    table = findings(result)
    assert table.loc[3, list(lnpath.LESIONS)].notna().all()
    assert pd.isna(table.loc[4, "cellular_crescent"])
    page.wait_for_selector("#unsaved")  # G4's call is still an edit of the page
    assert save(page) == "saved revision 3"
    assert bool(findings(result).loc[4, "cellular_crescent"]) is True
    assert sorted(statuses) == [200, 200]  # no save refused as stale
    lnpath.verify(result)
    assert not page.errors


def test_a_stopped_server_is_said_in_words(result: Path, serve: Any, context: Any) -> None:
    """The browser's own words for no answer are "Failed to fetch"."""
    server = serve(result)
    page = open_page(context, server)
    click_glomerulus(page, 3)
    server.stop()
    page.keyboard.press("n")
    page.wait_for_selector("#summary-stale")
    stale = page.locator("#summary-stale").text_content()
    assert "no answer from the workstation" in stale and "cannot be scored" not in stale
    message = save(page)
    assert message.startswith("no answer from the workstation") and "may not be saved" in message
    assert "Failed to fetch" not in message
    assert page.evaluate("dirty()") is True  # the edits stay on the page
    assert lnpath.SlideResult.load(result).revision == 1


def test_saving_again_after_an_exclusion_and_including_it_again(
    result: Path, serve: Any, context: Any
) -> None:
    server = serve(result)
    page = open_page(context, server)
    n = int(page.locator("#n-glomeruli").get_attribute("data-n"))
    click_glomerulus(page, 5)
    page.click("#exclude-not")
    click_glomerulus(page, 4)
    page.click("#exclude-ischemic")
    # an ischemic glomerulus stays in the indices' N, so its lesions still need calls
    assert "undecided" in page.locator('#glomeruli-list tr[data-gid="4"]').text_content()
    assert save(page) == "saved revision 2"
    # the saved findings.csv scored alone counts what the page shows: G5 is no glomerulus
    alone = lnpath.score_findings(str(result / "findings.csv")).to_dict()
    shown = page.locator("#summary").inner_text()
    for component in alone["activity_index"]["components"].values():
        if component["N"] is not None:
            assert f"{component['n']}/{component['N']}" in shown
    assert alone["adequacy"]["n_glomeruli"] == n - 1
    assert int(page.locator("#n-glomeruli").get_attribute("data-n")) == n - 1
    assert "1 ischemic excluded" in alone["isn_rps_class"]["rationale"]
    # the saved table's empty exclusion cells were read back as exclusions named "nan"
    click_glomerulus(page, 3)
    page.keyboard.press("n")
    # every lesion has a call now, the machine's or a person's: "all called", not "decided"
    assert "all called" in page.locator('#glomeruli-list tr[data-gid="3"]').text_content()
    assert save(page) == "saved revision 3"
    # and including again was dropped as "the edits change nothing"
    click_glomerulus(page, 5)
    page.click("#exclude-not")
    assert save(page) == "saved revision 4"
    table = findings(result)
    assert (
        table["exclusion"].fillna("").to_dict()[5] == "" and table.loc[4, "exclusion"] == "ischemic"
    )
    assert int(page.locator("#n-glomeruli").get_attribute("data-n")) == n
    lnpath.verify(result)
    # a typed comment, unsaved, holds the page as a lesion call does
    page.fill("#comment", "not saved yet")
    page.locator("#comment").blur()
    with page.expect_event("dialog") as asked:
        page.close(run_before_unload=True)
    assert asked.value.type == "beforeunload"
    asked.value.dismiss()
    assert not page.errors


def test_a_signed_out_result_takes_addenda_not_edits(
    result: Path, serve: Any, context: Any
) -> None:
    server = serve(result)
    page = open_page(context, server, name="Dr Sign")
    page.click("#signout")
    page.keyboard.press("Enter")  # the panel's Confirm has the focus
    page.wait_for_selector("#addendum-text")
    signed = (result / "result.json").read_bytes()
    assert page.locator("#save").is_disabled() and page.locator("#comment").is_disabled()
    click_glomerulus(page, 3)
    assert page.locator(
        '[data-lesion="cellular_crescent"] button[data-value="present"]'
    ).is_disabled()
    assert page.locator("#unsaved").count() == 0
    page.fill("#addendum-text", HOSTILE)
    page.click("#addendum-add")
    page.wait_for_selector("#addenda-list li")
    assert "unchanged" in page.locator("#message").text_content()
    on_disk = lnpath.SlideResult.load(result).to_dict()
    assert on_disk["status"] == "confirmed" and on_disk["revision"] == 1
    assert [(a["text"], a["by"]) for a in on_disk["addenda"]] == [(HOSTILE, "Dr Sign")]
    assert json.loads(signed)["scores"] == on_disk["scores"]
    lnpath.verify(result)
    assert HOSTILE in page.locator("#addenda-list").text_content()
    assert page.evaluate("window.__lnpath_pwned") is None
    assert not page.errors


def test_after_sign_out_drawing_and_every_edit_control_is_greyed_and_the_keys_say_why(
    result: Path, serve: Any, context: Any
) -> None:
    """The "Draw glomerulus" button and its ``d`` stayed active on a signed-out result (and the
    calls, the extent and the exclusions): drawing ended only in a refusal. Each is greyed saying
    why; a key does nothing but say so."""
    server = serve(result)
    page = open_page(context, server, name="Dr Sign")
    assert page.locator("#draw").is_enabled()
    page.click("#signout")
    page.keyboard.press("Enter")
    page.wait_for_selector("#addendum-text")
    why = "signed out: add an addendum instead"
    for selector in ("#draw", "#save", "#signout", "#note"):
        control = page.locator(selector)
        assert control.is_disabled() and why in control.get_attribute("title"), selector
    assert why in page.locator("#draw-hint").text_content()
    assert page.locator("#pathologist").is_enabled() and page.locator("#addendum-text").is_enabled()
    click_glomerulus(page, 3)  # selecting is no edit
    assert "signed out" in page.locator("#glomerulus-locked").text_content()
    controls = page.locator("#glomerulus .calls button, #extent, #exclude-not, #exclude-ischemic")
    assert controls.count() == 3 * len(lnpath.LESIONS) + 3
    for i in range(controls.count()):
        control = controls.nth(i)
        assert control.is_disabled() and why in control.get_attribute("title"), i
    # the Biopsy panel's fields, greyed by their fieldset, which says why
    fieldsets = page.locator("#biopsy fieldset:not(#addenda)")
    assert fieldsets.count() == 8
    for i in range(fieldsets.count()):
        fieldset = fieldsets.nth(i)
        assert fieldset.evaluate("(n) => n.disabled") and why in fieldset.get_attribute("title")
    assert fieldsets.locator("input, select, textarea").first.is_disabled()
    calls = page.evaluate("JSON.stringify(W().state.glomeruli.find((g) => g.id === 3).calls)")
    page.evaluate("document.activeElement.blur()")
    box = page.locator("#viewer").bounding_box()
    for key in ("d", "Digit1", "Shift+Digit2", "n", "e", "x", "i"):
        page.evaluate("say('')")
        page.keyboard.press(key)
        assert "is signed out" in page.locator("#message").text_content(), key
        assert page.evaluate("drawing") is None and page.locator("#draw-finish").is_hidden(), key
    page.mouse.click(box["x"] + 130, box["y"] + box["height"] / 2 + 20)  # no point is drawn
    assert page.locator("#overlay polyline").count() == 0
    assert page.evaluate("dirty()") is False and page.locator("#unsaved").count() == 0
    assert page.evaluate("JSON.stringify(glom(3).calls)") == calls
    on_disk = lnpath.SlideResult.load(result)
    assert on_disk.status == "confirmed" and on_disk.revision == 1
    assert not page.errors


# --------------------------------------------------------------------------------------------
# security


def test_requests_without_the_token_get_403(result: Path, serve: Any) -> None:
    server = serve(result)
    for path in ("/", "/api/results", "/api/r/0/state", "/api/r/0/slide_files/12/0_0.jpeg"):
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(server.base.rstrip("/") + path)
        assert info.value.code == 403, path
    wrong = urllib.request.Request(
        server.base + "api/r/0/state", headers={"X-Lnpath-Token": "guess"}
    )
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(wrong)
    assert info.value.code == 403
    # a write with only the cookie (what a foreign page could make the browser send) is refused
    cookie = f"lnpath_token_{server.base.rsplit(':', 1)[1].strip('/')}={server.token}"
    post = urllib.request.Request(
        server.base + "api/r/0/save", data=b"{}", headers={"Cookie": cookie}, method="POST"
    )
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(post)
    assert info.value.code == 403
    ok = urllib.request.Request(
        server.base + "api/r/0/state", headers={"X-Lnpath-Token": server.token}
    )
    assert json.load(urllib.request.urlopen(ok))["revision"] == 1


def _send(server: Any, path: str, data: bytes) -> tuple[int, dict[str, Any]]:
    """POST ``data`` to the workstation's API with its token: the status and the JSON answer."""
    request = urllib.request.Request(
        server.base + path,
        data=data,
        headers={"X-Lnpath-Token": server.token, "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


def test_malformed_requests_get_one_line_not_a_server_error(result: Path, serve: Any) -> None:
    server = serve(result)

    def post(path: str, body: Any) -> tuple[int, dict[str, Any]]:
        return _send(server, path, json.dumps(body).encode())

    edits = (
        {"cortex": [0.1]},
        {"biopsy": "yes"},
        {"glomeruli": ["3"]},
        {"glomeruli": {"3": "present"}},
        {"glomeruli": {"3": {"cellular_crescent": "no"}}},  # was taken as present
        {"comment": ["x"]},
        {"biopsy": {"vessels": {"arteries_sampled": -3}}},  # the preview let it pass
        {"added": [[[0, 0], [100, 100], [200, 200]]]},  # no area: the preview let it pass
        {"added": [[[0, 0], [100, 100], [100, 0], [0, 100]]]},  # crosses itself
        {"added": [[[0, 0], [1, 1]]]},
    )
    for body in edits:
        for route in ("preview", "save"):
            status, answer = post(
                f"api/r/0/{route}", {"base_revision": 1, "pathologist": "X", **body}
            )
            assert status == 400, (route, body, answer)
            assert len(answer["error"].splitlines()) == 1 and "Traceback" not in answer["error"]
    status, answer = post("api/r/0/confirm", {"base_revision": "x", "pathologist": "X"})
    assert status == 400 and "base_revision" in answer["error"]
    dzi = urllib.request.Request(
        server.base + "api/r/7/slide.dzi", headers={"X-Lnpath-Token": server.token}
    )
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(dzi)
    assert info.value.code == 404
    assert lnpath.SlideResult.load(result).revision == 1


def test_the_preview_refuses_what_the_save_refuses_with_the_same_line(
    result: Path, serve: Any
) -> None:
    """The preview scored a class "VII", an override without its reason, a comment with a
    control character and outlines drawn past the slide's edges, each of which the save then
    refused (an outline naming a temporary file and a feature id the page never showed)."""
    server = serve(result)
    width, height = lnpath.SlideResult.load(result).to_dict()["slide"]["dimensions"]
    bound = f"(x 0 to {width}, y 0 to {height} px)"
    square = [[1000, 1000], [1200, 1000], [1200, 1200], [1000, 1200]]
    refused = (
        ({"class_override": {"class": "VII", "reason": "EM"}}, "is not an ISN/RPS class"),
        ({"class_override": {"class": "IV", "reason": " "}}, "give the reason"),
        ({"comment": "seen\u0007"}, "invisible control character"),
        ({"added": [[[x + 1e7, y + 1e7] for x, y in square]]}, bound),
        ({"added": [[[x - 5000, y - 5000] for x, y in square]]}, bound),
        ({"added": [square, [[x + width - 1100, y] for x, y in square]]}, bound),
    )
    for body, words in refused:
        answers = [
            _send(server, f"api/r/0/{route}", json.dumps({**body, **BASE}).encode())
            for route in ("preview", "save")
        ]
        assert answers[0] == answers[1], (body, answers)
        status, answer = answers[0]
        assert status == 400 and words in answer["error"], (body, answer)
        assert len(answer["error"].splitlines()) == 1
    assert "drawn glomerulus 2: point 2" in answer["error"]  # the outline and point named
    assert lnpath.SlideResult.load(result).revision == 1
    on_slide = {"added": [square], "class_override": {"class": "IV", "reason": "EM"}}
    for route in ("preview", "save"):
        status, answer = _send(
            server, f"api/r/0/{route}", json.dumps({**on_slide, **BASE}).encode()
        )
        assert status == 200, (route, answer)


BASE = {"base_revision": 1, "pathologist": "Dr X"}


def test_a_point_clicked_past_the_slide_is_refused_while_drawing(
    result: Path, serve: Any, context: Any
) -> None:
    """The viewer shows beyond the slide's edges; a point clicked there was drawn, previewed
    and then refused by the save."""
    server = serve(result)
    page = open_page(context, server)
    page.locator("#pathologist").blur()
    box = page.locator("#viewer").bounding_box()
    page.keyboard.press("d")
    # 300 px above the slide's top edge, in the viewer's blank margin
    x, y = page.evaluate(
        "(() => { const p = viewer.viewport.imageToViewerElementCoordinates("
        "new OpenSeadragon.Point(2000, -300)); return [p.x, p.y]; })()"
    )
    assert 0 < y < box["height"] and 0 < x < box["width"], (x, y)  # the margin is in view
    page.mouse.click(box["x"] + x, box["y"] + y)
    page.wait_for_function("document.getElementById('message').className === 'error'")
    width, height = lnpath.SlideResult.load(result).to_dict()["slide"]["dimensions"]
    message = page.locator("#message").text_content()
    assert f"lies outside the slide (x 0 to {width}, y 0 to {height} px)" in message
    assert page.evaluate("drawing.length") == 0
    assert not page.errors


def test_wrong_types_and_huge_bodies_get_a_4xx_and_change_nothing(result: Path, serve: Any) -> None:
    """``int()`` took 1.5, true and "1" for revision 1 and saved on them; an extent of 5 and a
    NaN point were server errors; the preview scored a cortex field the save refuses; a list
    was signed as the pathologist's name; compare took -1 for the last result; any body was
    read whole."""
    server = serve(result)

    def send(path: str, data: bytes) -> tuple[int, dict[str, Any]]:
        return _send(server, path, data)

    base = {"base_revision": 1, "pathologist": "Dr X", "comment": "typed"}
    edits: list[tuple[str, dict[str, Any]]] = [
        *(("save", {**base, "base_revision": wrong}) for wrong in (1.5, True, "1", None)),
        ("save", {**base, "glomeruli": {"3": {"extent": 5}}}),
        ("preview", {**base, "added": [[["NaN", 0], [100, 0], [0, 100]]]}),
        ("preview", {**base, "added": [[[float("inf"), 0], [100, 0], [0, 100]]]}),
        ("preview", {**base, "added": [[[True, 0], [100, 0], [0, 100]]]}),
        ("preview", {**base, "cortex": {"interstitial_fibrosys": 0.2}}),
        ("preview", {**base, "cortex": {"interstitial_fibrosis": True}}),
        ("preview", {**base, "class_override": {"class": 4, "reason": "x"}}),
        ("confirm", {**base, "pathologist": ["Dr X"]}),
        ("confirm", {**base, "note": {"a": 1}}),
        ("confirm", {**base, "base_created": 7}),
        ("addendum", {**base, "text": ["x"]}),
    ]
    for route, body in edits:
        # json.dumps writes NaN and Infinity, which the server's JSON reader takes
        status, answer = send(f"api/r/0/{route}", json.dumps(body).encode())
        assert status == 400, (route, body, status, answer)
        assert len(answer["error"].splitlines()) == 1 and "Traceback" not in answer["error"]
    # a body over 8 MiB, said by its length (answered before it is sent) or sent in chunks
    port = int(server.base.rsplit(":", 1)[1].strip("/"))
    head = (
        f"POST /api/r/0/save HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Lnpath-Token: {server.token}\r\n"
        "Content-Type: application/json\r\n"
    )
    chunk = b'{"comment": "' + b"x" * (8 * 2**20)
    for extra, body in (
        (f"Content-Length: {9 * 2**20}\r\n\r\n", b""),
        ("Transfer-Encoding: chunked\r\n\r\n", b"%x\r\n%s\r\n0\r\n\r\n" % (len(chunk), chunk)),
    ):
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(head.encode() + extra.encode() + body)
            status_line = sock.makefile("rb").readline()
        assert status_line.split()[1] == b"413", (extra, status_line)
    second = urllib.request.Request(
        server.base + "api/compare?baseline=-1&followup=0",
        headers={"X-Lnpath-Token": server.token},
    )
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(second)
    assert info.value.code == 400
    on_disk = lnpath.SlideResult.load(result)
    assert on_disk.revision == 1 and on_disk.status == "provisional"
    assert not on_disk.to_dict().get("comment")


def test_a_malformed_outline_or_field_is_refused_in_a_sentence_not_python(
    result: Path, serve: Any
) -> None:
    """A drawn outline of bare numbers got "edits: malformed (TypeError: cannot unpack
    non-iterable int object)"; a glomerulus key "x" got "invalid literal for int() with base 10";
    a wrong value was quoted in its Python spelling (True, None, {'a': 1}), not as sent."""
    server = serve(result)

    def refusal(route: str, body: dict[str, Any]) -> str:
        request = urllib.request.Request(
            server.base + f"api/r/0/{route}",
            data=json.dumps({"base_revision": 1, "pathologist": "X", **body}).encode(),
            headers={"X-Lnpath-Token": server.token, "Content-Type": "application/json"},
        )
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(request)
        assert info.value.code == 400, (route, body)
        return json.load(info.value)["error"]

    pair = "each point must be a pair of finite numbers [x, y]"
    one, points = "drawn glomerulus 1:", "must be a list of points [[x, y], ...]"
    square = [[0, 0], [100, 0], [100, 100], [0, 100]]
    cases: list[tuple[dict[str, Any], str]] = [
        ({"added": [[1, 2, 3]]}, f"{one} {pair} (point 1 is 1)"),
        ({"added": [square, [[1, 2, 3], *square]]},
         f"drawn glomerulus 2: {pair} (point 1 is [1, 2, 3])"),
        ({"added": [[[0, 0], [1], [2, 2]]]}, f"{one} {pair} (point 2 is [1])"),
        ({"added": [[[0, 0], [1, "x"], [2, 2]]]}, f'{one} {pair} (point 2 is [1, "x"])'),
        ({"added": [[[0, 0], [1, True], [2, 2]]]}, f"{one} {pair} (point 2 is [1, true])"),
        ({"added": [5]}, f"{one} {points}, not 5"),
        ({"added": [None]}, f"{one} {points}, not null"),
        ({"added": [[[0, 0], [1, 1]]]}, f"{one} an outline needs at least three points"),
        ({"glomeruli": {"x": {}}}, 'edits: glomeruli: "x" is not a glomerulus id (a whole number)'),
        ({"glomeruli": {"3": {"cellular_crescent": None, "fibrous_crescent": "no"}}},
         'edits: G3: fibrous_crescent must be true, false or null, not "no"'),
        ({"note": {"a": None}}, 'edits: note must be text (or null), not {"a": null}'),
        ({"cortex": {"interstitial_fibrosis": True}},
         "cortex: interstitial_fibrosis = true is not a fraction in [0, 1]"),
        ({"base_revision": True}, "base_revision must be a whole number, not true (reload)"),
    ]  # fmt: skip
    for body, said in cases:
        for route in ("preview", "save"):
            assert refusal(route, body) == said, (route, body)
    assert lnpath.SlideResult.load(result).revision == 1


def test_the_server_listens_on_loopback_only(result: Path, serve: Any) -> None:
    psutil = pytest.importorskip("psutil")
    server = serve(result)
    assert server.base.startswith("http://127.0.0.1:")
    listening = [
        c for c in psutil.Process(server.proc.pid).net_connections("inet") if c.status == "LISTEN"
    ]
    assert listening and all(c.laddr.ip == "127.0.0.1" for c in listening)


def test_hostile_names_and_notes_are_shown_as_text(result: Path, serve: Any, context: Any) -> None:
    server = serve(result)
    page = open_page(context, server, name=HOSTILE)
    page.fill("#note", HOSTILE)
    click_glomerulus(page, 3)
    page.keyboard.press("n")
    assert save(page) == "saved revision 2"
    banner = page.locator("#banner").text_content()
    assert banner.count(HOSTILE) == 3  # patient id, reviewer and note, verbatim
    assert page.evaluate("window.__lnpath_pwned") is None
    assert page.locator("body script").count() == 0 and page.locator("body img[src=x]").count() == 0
    page.reload()
    page.wait_for_selector("body[data-ready=true]")
    assert page.evaluate("window.__lnpath_pwned") is None


@pytest.mark.parametrize("width", [1280, 800])
def test_a_long_name_and_note_wrap_instead_of_widening_the_page(
    result: Path, serve: Any, context: Any, width: int
) -> None:
    """A name or note without spaces (a pasted identifier, a signature block) ran off the right
    edge of the banner and of a refusal, cut off, and gave the whole page a sideways scroll."""
    server = serve(result)
    long = "Dr" + "X" * 400
    page = open_page(context, server, name=long)
    page.set_viewport_size({"width": width, "height": 800})
    page.fill("#note", "N" * 400)
    click_glomerulus(page, 3)
    page.keyboard.press("n")
    assert save(page) == "saved revision 2"
    lnpath.review(result, comment="elsewhere", pathologist="Z" * 300)
    click_glomerulus(page, 4)
    page.keyboard.press("n")
    assert "changed by ZZZ" in save(page)  # the refusal names the long name too
    for selector in ("#banner", "#message"):
        box = page.locator(selector).bounding_box()
        inner = page.locator(selector).evaluate("(n) => [n.scrollWidth, n.clientWidth]")
        assert box["x"] + box["width"] <= width + 1 and inner[0] <= inner[1], (selector, inner)
    widths = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    assert widths[0] <= widths[1], widths
    # measurements are numbers, whole: the wrapping is for free text only
    value = page.locator("#glomerulus table").nth(1).locator("tr td:nth-child(2)").first
    assert value.evaluate("(n) => n.getClientRects().length === 1 && n.offsetHeight < 30")


def test_measurements_are_shown_rounded_in_their_units_and_stored_as_measured(
    result: Path, serve: Any, context: Any
) -> None:
    """The glomerulus panel showed raw decimals (``26782.25``, ``0.2558658977910935`` as
    ``0.256``) beside thresholds such as "> 0.5": areas are whole µm², fractions a % like the
    thresholds beside them; the findings keep the measured values."""
    stored = (result / "findings.csv").read_bytes()
    server = serve(result)
    page = open_page(context, server)
    click_glomerulus(page, 1)
    rows = page.locator("#glomerulus table").nth(1).locator("tr")
    shown = {
        rows.nth(i).locator("td").nth(0).text_content(): (
            rows.nth(i).locator("td").nth(1).text_content(),
            rows.nth(i).locator("td").nth(2).text_content(),
        )
        for i in range(rows.count())
    }
    g1 = findings(result).loc[1]
    assert "area" not in shown  # the outline's area is the one shown (beside "Machine:")
    assert shown["tuft area"][0] == f"{round(g1['m_tuft_area_um2']):,} µm²"
    assert shown["diameter"][0] == f"{round(g1['m_diameter_um'])} µm"
    assert shown["nuclei"][0] == str(int(g1["m_nuclei"]))
    assert shown["nuclei per 1000µm²"] == (
        f"{g1['m_nuclei_per_1000um2']:.1f}",
        "endocapillary > 5.5",
    )
    assert shown["sclerosed fraction"] == (
        f"{100 * g1['m_sclerosed_fraction']:.1f}%",
        "global sclerosis > 50%; segmental sclerosis > 35%",
    )
    assert shown["lumen fraction"] == (
        f"{100 * g1['m_lumen_fraction']:.1f}%",
        "endocapillary < 10%",
    )
    assert shown["PAS matrix fraction"][0] == f"{100 * g1['m_pas_matrix_fraction']:.1f}%"
    assert len(shown) == sum(str(c).startswith("m_") for c in g1.index) - 1  # all but the mask area
    for text, _ in shown.values():
        assert re.fullmatch(r"[\d,]+( µm²| µm)?|\d+\.\d%|\d+\.\d", text), text
    # the measured value is kept (on hover, and in the folder)
    title = page.locator("#glomerulus td.measure").first.get_attribute("title")
    assert float(title) == round(g1["m_diameter_um"], 3)
    assert (result / "findings.csv").read_bytes() == stored
    assert not page.errors


def test_one_area_per_glomerulus_on_the_page_and_in_the_report(
    result: Path, serve: Any, context: Any
) -> None:
    """The page said "area 26,747 µm²" (the outline's) beside a measured "area 26,782 µm²" (the
    mask's pixels), and the report's appendix gave both as two columns: one glomerulus, two
    areas, unexplained. The outline's area is the one shown."""
    g1 = findings(result).loc[1]
    outline, mask = f"{round(g1['area_um2']):,}", f"{round(g1['m_area_um2']):,}"
    assert outline != mask  # the two differ on the demo's G1
    server = serve(result)
    page = open_page(context, server)
    click_glomerulus(page, 1)
    machine = page.locator("#glomerulus div.muted", has_text="Machine:").text_content()
    assert machine.endswith(f"; area {outline} µm²"), machine
    assert mask not in page.locator("#glomerulus").text_content()
    report = (result / "report.html").read_text(encoding="utf-8")
    heads = re.findall(r'<th scope="col">([^<]*)</th>', report)
    assert sum("area" in h.lower() and "tuft" not in h for h in heads) == 1, heads
    assert f"<td>{outline}</td>" in report and f"<td>{mask}</td>" not in report
    assert not page.errors


# --------------------------------------------------------------------------------------------
# several results


def test_results_side_by_side_and_compare(
    result: Path, tmp_path: Path, serve: Any, context: Any
) -> None:
    second = tmp_path / "second"
    shutil.copytree(result, second)
    server = serve(result, second)
    page = open_page(context, server)
    assert page.locator("#tabs button").count() == 3
    page.click('#tabs button[data-index="compare"]')
    page.wait_for_selector("#endpoint-value")
    assert page.locator("#compare .card").count() == 2
    # two results of one slide file are two readings, not a response: compare says so
    expected = lnpath.compare(result, second).to_dict()
    assert expected["status"] == "not_evaluable"
    assert "different_biopsies" in page.locator("#compare-result").text_content()
    page.click('#tabs button[data-index="1"]')
    # the page was already ready on the compare tab: wait for the second result's tab itself
    page.wait_for_selector('#tabs button.active[data-index="1"]')
    page.wait_for_selector("body[data-ready=true]")
    assert str(second) in (page.locator("#tabs button.active").get_attribute("title") or "")


# --------------------------------------------------------------------------------------------
# bad input: one line, non-zero exit


def run_cli(*args: str | Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lnpath", "workstation", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def one_line_error(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    return lines[0]


def test_a_folder_that_is_not_a_result(tmp_path: Path) -> None:
    line = one_line_error(run_cli(tmp_path))
    assert "not a result folder" in line and str(tmp_path) in line


def test_a_result_whose_slide_moved(result: Path, serve: Any) -> None:
    slide = Path(lnpath.SlideResult.load(result).to_dict()["slide"]["path"])
    moved = slide.with_name("moved.tiff")
    slide.rename(moved)
    try:
        line = one_line_error(run_cli(result))
        assert str(slide) in line and "missing" in line and "--slide PATH" in line
        server = serve(result, "--slide", moved)  # pointed at, it opens
        assert server.url.startswith("http://127.0.0.1:")
    finally:
        moved.rename(slide)


def test_a_port_in_use(result: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        line = one_line_error(run_cli(result, "--port", port))
    assert f"127.0.0.1:{port}" in line and "--port" in line


def test_a_port_another_workstation_serves_is_in_use(result: Path, serve: Any) -> None:
    """A restart may take the port at once (SO_REUSEADDR), a second workstation beside the first
    may not."""
    port = serve(result).base.rsplit(":", 1)[1].strip("/")
    line = one_line_error(run_cli(result, "--port", port))
    assert f"127.0.0.1:{port}" in line and "is another server using the port?" in line


def test_a_tampered_result_opens_read_only(result: Path, serve: Any, context: Any) -> None:
    path = result / "findings.csv"
    path.write_text(path.read_text().replace("No lesion", "Global sclerosis", 1))
    server = serve(result)
    assert any("read-only" in line for line in server.lines)
    page = open_page(context, server)
    assert "READ-ONLY" in page.locator("#banner").text_content()
    assert "modified" in page.locator("#banner").text_content()
    assert page.locator("#save").is_disabled()
    body = {"base_revision": 1, "pathologist": "X", "glomeruli": {"3": {"cellular_crescent": True}}}
    status = page.evaluate(
        """async ([token, body]) => (await fetch('/api/r/0/save', {method: 'POST',
            body: JSON.stringify(body), headers: {'X-Lnpath-Token': token}})).status""",
        [server.token, body],
    )
    assert status == 423
    assert lnpath.SlideResult.load(result).revision == 1


def test_sign_out_fields_are_saved_through_review(result: Path, serve: Any, context: Any) -> None:
    server = serve(result)
    page = open_page(context, server)
    click_glomerulus(page, 4)
    page.click("#exclude-ischemic")
    page.select_option("#membranous", "yes")
    page.select_option("#membranous-extent", "global")
    page.fill("#class-reason", HOSTILE)
    page.select_option("#class-override", "IV+V")
    page.fill("#comment", HOSTILE)
    page.locator("#comment").blur()
    assert save(page) == "saved revision 2"
    on_disk = lnpath.SlideResult.load(result).to_dict()
    assert on_disk["class_override"] == {"class": "IV+V", "reason": HOSTILE}
    assert on_disk["comment"] == HOSTILE
    assert on_disk["biopsy"]["membranous"]["present"] is True
    assert on_disk["biopsy"]["membranous"]["extent"] == "global"
    assert findings(result).loc[4, "exclusion"] == "ischemic"
    page.reload()
    page.wait_for_selector("body[data-ready=true]")
    assert page.locator("#class-reason").input_value() == HOSTILE
    assert page.locator("#comment").input_value() == HOSTILE
    assert page.evaluate("window.__lnpath_pwned") is None


def test_a_class_reason_without_a_class_is_refused_not_dropped(
    result: Path, serve: Any, context: Any
) -> None:
    """Review takes an empty class for "clear the override": a reason typed first was dropped
    and the page said "saved revision 1"; a save that changes nothing said "saved" too."""
    page = open_page(context, serve(result))
    page.fill("#class-reason", "full house IF, subendothelial deposits")
    page.locator("#note").focus()
    page.wait_for_selector("#summary-stale")
    assert "choose the class" in save(page)
    assert lnpath.SlideResult.load(result).revision == 1
    assert page.locator("#class-reason").input_value() == "full house IF, subendothelial deposits"
    page.select_option("#class-override", "IV")
    page.wait_for_function("!document.getElementById('summary-stale')")
    assert save(page) == "saved revision 2"
    assert lnpath.SlideResult.load(result).to_dict()["class_override"] == {
        "class": "IV",
        "reason": "full house IF, subendothelial deposits",
    }
    # a field set and set back is an edit that changes nothing: said so, not "saved"
    page.fill("#cortex-interstitial_inflammation", "20")
    page.locator("#note").focus()
    page.fill("#cortex-interstitial_inflammation", "")
    page.locator("#note").focus()
    assert save(page) == "nothing changed: revision 2 kept"
    assert lnpath.SlideResult.load(result).revision == 2
    assert not page.errors


def test_if_panel_deposits_and_membranous_extent_are_saved_from_the_page(
    result: Path, serve: Any, context: Any
) -> None:
    # every lesion called (absent), so that the class is proposed from the IF/EM inputs alone
    table = findings(result).reset_index()
    table[list(lnpath.LESIONS)] = False
    lnpath.review(result, findings=table, pathologist="Dr Setup")
    server = serve(result)
    page = open_page(context, server)
    page.get_by_label("Subepithelial deposits").select_option("yes")
    page.get_by_label("Mesangial deposits").select_option("yes")
    # subepithelial deposits are the membranous component when it is not stated: the save
    # proposes V, and the preview said I (mesangial deposits, normal glomeruli)
    page.wait_for_selector("#unsaved")
    page.wait_for_function("document.getElementById('class-value').textContent === 'Class V'")
    page.select_option("#membranous", "yes")
    page.fill("#membranous-capillary", "60")
    page.fill("#membranous-glomeruli", "40")
    page.get_by_label("Mesangial hypercellularity").select_option("no")
    panel = {"IgG": "3+", "C3": "2+", "C1q": "1+", "kappa": "trace", "fibrin": "0"}
    for stain, intensity in panel.items():
        page.get_by_label(f"immunofluorescence {stain}", exact=True).select_option(intensity)
    page.locator("#note").focus()  # the last number field's change
    assert save(page) == "saved revision 3"
    snapshot = result / "revisions" / "r003"
    saved = json.loads((snapshot / "result.json").read_text())
    biopsy = saved["biopsy"]
    assert {k: v for k, v in biopsy["if_panel"].items() if v is not None} == panel
    assert biopsy["deposits"] == {"subepithelial": True, "mesangial": True}
    assert biopsy["membranous"] == {
        "present": True,
        "capillary_surface_fraction": 0.6,
        "glomeruli_fraction": 0.4,
    }
    assert biopsy["mesangial_hypercellularity"] is False
    assert saved["scores"]["isn_rps_class"]["proposal"] == "V"
    report = (snapshot / "report.html").read_text()
    assert "<td>IgG</td><td>3+</td>" in report and "<td>κ</td><td>trace</td>" in report
    assert "60% of capillary surface, in 40% of glomeruli" in report
    assert "subepithelial present" in report
    lnpath.verify(result)
    page.reload()
    page.wait_for_selector("body[data-ready=true]")
    assert page.locator("#if-IgG").input_value() == "3+"
    assert page.locator("#if-lambda").input_value() == ""  # not stated
    assert page.locator("#membranous-capillary").input_value() == "60"
    assert page.locator("#deposits-subepithelial").input_value() == "yes"
    assert page.locator("#class-value").text_content() == "Class V"
    assert not page.errors


def test_an_edit_that_cannot_be_scored_marks_the_summary_stale(
    result: Path, serve: Any, context: Any
) -> None:
    """A refused preview leaves the last summary on screen; it must not pass for the fields'."""
    page = open_page(context, serve(result))
    page.fill("#cortex-interstitial_fibrosis", "20")
    page.locator("#note").focus()
    page.wait_for_selector("#unsaved")
    assert page.locator("#summary-stale").count() == 0
    page.fill("#cortex-interstitial_fibrosis", "150")
    page.locator("#note").focus()
    page.wait_for_selector("#summary-stale")
    assert "cannot be scored" in page.locator("#summary-stale").text_content()
    assert "not updated" in page.locator("#headline").text_content()
    page.fill("#cortex-interstitial_fibrosis", "30")
    page.locator("#note").focus()
    page.wait_for_function("!document.getElementById('summary-stale')")
    assert "not updated" not in page.locator("#headline").text_content()
    assert not page.errors


def test_stains_examined_are_recorded_from_the_page(result: Path, serve: Any, context: Any) -> None:
    """The §3.3 stain panel a response endpoint needs is a sign-out field, saved and reported."""
    server = serve(result)
    page = open_page(context, server)
    assert page.locator("#stain-PAS").input_value() == ""  # not recorded
    page.select_option("#stain-PAS", "yes")
    page.select_option("#stain-trichrome", "yes")
    page.select_option("#stain-silver", "no")
    page.wait_for_selector("#unsaved")
    assert save(page).startswith("saved revision")
    saved = lnpath.SlideResult.load(result).to_dict()
    assert saved["biopsy"]["stains_examined"] == {"PAS": True, "trichrome": True, "silver": False}
    report = (result / "report.html").read_text()
    assert "Slide stain PAS; stains examined: PAS, trichrome" in report
    assert "Stains examined (a response endpoint" not in report  # no longer left to supply
    page.reload()
    page.wait_for_selector("body[data-ready=true]")
    assert page.locator("#stain-trichrome").input_value() == "yes"
    assert page.locator("#stain-silver").input_value() == "no"
    assert page.locator("#stain-HE").input_value() == ""
    assert not page.errors


def test_a_not_evaluable_reason_from_the_page_lets_an_incomplete_index_be_signed(
    result: Path, serve: Any, context: Any
) -> None:
    # the demo's marks, less tubular atrophy and interstitial fibrosis: an incomplete index
    gaps = {"tubular_atrophy": None, "interstitial_fibrosis": None}
    lnpath.review(result, biopsy={"not_evaluable": gaps}, pathologist="Dr Setup")
    server = serve(result)
    page = open_page(context, server, name="Dr Sign")
    listed = page.locator("#not-evaluable input").evaluate_all(
        "(nodes) => nodes.map((n) => n.dataset.component)"
    )
    not_assessed = lnpath.SlideResult.load(result).to_dict()["scores"]
    expected = [*not_assessed["activity_index"]["not_assessed"]]
    expected += not_assessed["chronicity_index"]["not_assessed"]
    assert listed == expected  # only what the summary lists as not assessed
    page.click("#signout")
    page.click("#signout-confirm")
    page.wait_for_function("document.getElementById('message').textContent.includes('sign')")
    message = page.locator("#message").text_content()
    assert "not assessed: Tubular atrophy, Interstitial fibrosis" in message
    assert "Biopsy > Not evaluable" in message and "Biopsy > Cortex" in message
    assert "lnpath review" not in message  # the page's fields, not the command line
    assert page.evaluate("document.activeElement.id") == "not-evaluable-tubular_atrophy"
    assert lnpath.SlideResult.load(result).status == "provisional"
    # a reason for one, the other supplied; an empty reason clears a mark
    page.keyboard.type(HOSTILE)
    page.fill("#cortex-interstitial_fibrosis", "20")
    page.fill("#not-evaluable-fibrous_crescents", "")
    page.locator("#note").focus()
    page.wait_for_selector("#unsaved")
    assert save(page) == "saved revision 3"
    marks = lnpath.SlideResult.load(result).to_dict()["biopsy"]["not_evaluable"]
    assert marks["tubular_atrophy"] == HOSTILE and "fibrous_crescents" not in marks
    assert "interstitial_fibrosis" not in marks
    page.click("#signout")
    page.click("#signout-confirm")
    page.wait_for_function("document.getElementById('message').textContent.includes('sign')")
    assert "Fibrous crescents" in page.locator("#message").text_content()
    page.fill("#not-evaluable-fibrous_crescents", "no trichrome")
    page.locator("#note").focus()
    assert save(page) == "saved revision 4"
    page.click("#signout")
    page.click("#signout-confirm")
    page.wait_for_function("document.getElementById('message').textContent.includes('confirmed')")
    on_disk = lnpath.SlideResult.load(result).to_dict()
    assert on_disk["status"] == "confirmed" and on_disk["revision"] == 4
    assert on_disk["cortex_fractions"]["interstitial_fibrosis"] == 0.2
    lnpath.verify(result)
    assert page.locator("#not-evaluable-tubular_atrophy").input_value() == HOSTILE
    assert page.evaluate("window.__lnpath_pwned") is None
    assert not page.errors


# --------------------------------------------------------------------------------------------
# what this round's engine says, said by the page too


def _all_called(result: Path) -> pd.DataFrame:
    """The result's table with every lesion called absent (a pathologist's complete review)."""
    table = lnpath.SlideResult.load(result).findings.copy()
    for lesion in lnpath.LESIONS:
        table[lesion] = pd.array([False] * len(table), dtype="boolean")
    return table


def test_a_score_the_unassessed_glomeruli_cannot_change_is_shown_with_its_note_and_signs(
    result: Path, serve: Any, context: Any, tmp_path: Path
) -> None:
    # neutrophils in G1 only, every other call absent: 1 of N is band 1 whatever G2 shows
    table = _all_called(result)
    table.loc[table["glomerulus_id"] == 1, "neutrophils_karyorrhexis"] = True
    path = tmp_path / "called.csv"
    table.to_csv(path, index=False)
    # the demo's "not evaluable" mark for it cleared: a scored component needs none
    clear = {"not_evaluable": {"neutrophils_karyorrhexis": None}}
    lnpath.review(result, findings=path, biopsy=clear, pathologist="Dr Setup")
    server = serve(result)
    page = open_page(context, server, name="Dr Sign")
    click_glomerulus(page, 2)
    page.click('[data-lesion="neutrophils_karyorrhexis"] button[data-value="na"]')
    page.wait_for_selector("#unsaved")
    table.loc[table["glomerulus_id"] == 2, "neutrophils_karyorrhexis"] = pd.NA
    expected = lnpath.score_findings(table).activity_index.components["neutrophils_karyorrhexis"]
    assert expected.assessed and expected.score == 1 and expected.n_not_assessed == 1
    cell = page.locator('#summary td[data-component="neutrophils_karyorrhexis"]')
    page.wait_for_function(
        "(note) => document.querySelector('#summary td[data-component="
        '"neutrophils_karyorrhexis"]\').textContent.includes(note)',
        arg=expected.note,
    )
    assert "whatever they show" in expected.note and cell.text_content().startswith("1 ×1")
    assert "not assessed (" not in cell.text_content()
    assert save(page) == "saved revision 3"
    # the saved summary says the same, and the component asks for no not-evaluable reason
    assert expected.note in cell.text_content()
    assert page.locator("#not-evaluable-neutrophils_karyorrhexis").count() == 0
    page.click("#signout")
    page.click("#signout-confirm")
    page.wait_for_function("document.getElementById('message').textContent.includes('confirmed')")
    on_disk = lnpath.SlideResult.load(result).to_dict()
    assert on_disk["status"] == "confirmed" and on_disk["revision"] == 3
    component = on_disk["scores"]["activity_index"]["components"]["neutrophils_karyorrhexis"]
    assert component["score"] == 1 and component["note"] == expected.note
    lnpath.verify(result)
    assert not page.errors


def test_each_index_gives_its_band_word_as_the_report_heading_does(
    result: Path, serve: Any, context: Any, tmp_path: Path
) -> None:
    from lnpath.report.sections import band_text

    table = _all_called(result)
    path = tmp_path / "called.csv"
    table.to_csv(path, index=False)
    cortex = dict.fromkeys(
        ("interstitial_inflammation", "interstitial_fibrosis", "tubular_atrophy"), 0.1
    )
    lnpath.review(result, findings=path, cortex=cortex, pathologist="Dr Setup")
    saved = lnpath.SlideResult.load(result).to_dict()["scores"]
    report = (result / "report.html").read_text(encoding="utf-8")
    server = serve(result)
    page = open_page(context, server)
    for key, name in (("activity_index", "ai"), ("chronicity_index", "ci")):
        word = band_text(saved[key])
        assert word is not None and word.startswith("low (0–")
        assert f'<span class="band">· {word}</span>' in report
        assert page.locator(f"#{name}-band").text_content() == f" · {word}"
    # one glomerulus globally sclerosed: the preview's CI moves to its next word
    click_glomerulus(page, 3)
    page.click('[data-lesion="global_sclerosis"] button[data-value="present"]')
    page.wait_for_selector("#unsaved")
    table.loc[table["glomerulus_id"] == 3, "global_sclerosis"] = True
    edited = lnpath.score_findings(table, cortex=cortex).to_dict()["chronicity_index"]
    word = band_text(edited)
    assert word is not None and not word.startswith("low")
    page.wait_for_function(
        "(word) => (document.getElementById('ci-band') || {}).textContent === ` · ${word}`",
        arg=word,
    )
    assert not page.errors


def test_an_addendum_from_the_page_is_not_said_signed_beside_a_signed_sign_out(
    result: Path, serve: Any, context: Any, tmp_path: Path
) -> None:
    from lnpath.results.integrity import generate_key

    private, public = generate_key(tmp_path / "dr_sign")
    lnpath.confirm(result, pathologist="Dr Sign", key=private)
    server = serve(result)
    page = open_page(context, server, name="Dr Sign")
    page.fill("#addendum-text", "IF arrived: full house")
    page.click("#addendum-add")
    page.wait_for_selector("#addenda-list li")
    assert "not signed with a key" in page.locator("#message").text_content()
    first = page.locator("#addenda-list li").nth(0)
    assert first.get_attribute("data-signed") == "false"
    assert "(not signed with a key)" in first.text_content()
    # verify names it too: the page's word and verify's agree
    assert any("addendum 1" in u for u in lnpath.verify(result).unchecked)
    lnpath.add_addendum(result, "EM: subendothelial deposits", pathologist="Dr Sign", key=private)
    page.reload()
    page.wait_for_selector("#addenda-list li >> nth=1")
    second = page.locator("#addenda-list li").nth(1)
    assert second.get_attribute("data-signed") == "true"
    assert "(signed with a key)" in second.text_content()
    assert "(not signed with a key)" in page.locator("#addenda-list li").nth(0).text_content()
    lnpath.verify(result, public_key=public)
    assert not page.errors
    # a folder changed outside lnpath opens read-only: no signature in it is vouched for
    path = result / "findings.csv"
    path.write_text(path.read_text().replace("No lesion", "Global sclerosis", 1))
    tampered = open_page(context, serve(result))
    assert "READ-ONLY" in tampered.locator("#banner").text_content()
    listed = tampered.locator("#addenda-list li")
    assert listed.count() == 2 and "signed with a key" not in listed.nth(1).text_content()
    assert listed.nth(1).get_attribute("data-signed") == "false"


# --------------------------------------------------------------------------------------------
# outlines with holes and several parts


@pytest.fixture
def ringed_demo(repo_dir: Path, tmp_path: Path) -> tuple[Path, Any]:
    """The demo scored from outlines whose first glomerulus (G1) is ring-shaped: a hole of half
    its size around its middle, as QuPath exports an annotation with a hole."""
    from shapely import affinity
    from shapely.geometry import Polygon, mapping, shape

    data = json.loads((repo_dir / "examples" / "demo_biopsy_glomeruli.geojson").read_text())
    outer = shape(data["features"][0]["geometry"])
    hole = affinity.scale(outer, 0.5, 0.5, origin=outer.centroid).exterior
    ring = Polygon(outer.exterior, [hole])
    assert ring.is_valid
    data["features"][0]["geometry"] = mapping(ring)
    outlines = tmp_path / "ringed.geojson"
    outlines.write_text(json.dumps(data))
    out = tmp_path / "ringed-result"
    slide = repo_dir / "examples" / "demo_biopsy.tiff"
    score = [sys.executable, "-m", "lnpath", "score", str(slide), "--glomeruli", str(outlines)]
    subprocess.run([*score, "--out", str(out)], check=True, capture_output=True)
    return out, ring


def at_image_point(page: Any, x: float, y: float) -> tuple[float, float]:
    """Zoom the viewer (at once) onto image pixel (x, y); where it then lies on the screen."""
    return tuple(
        page.evaluate(
            """([x, y]) => {
              const around = viewer.world.getItemAt(0)
                .imageToViewportRectangle(x - 400, y - 400, 800, 800);
              viewer.viewport.fitBounds(around, true);
              const p = viewer.viewport
                .imageToViewerElementCoordinates(new OpenSeadragon.Point(x, y));
              const box = document.getElementById('viewer').getBoundingClientRect();
              return [box.left + p.x, box.top + p.y];
            }""",
            [x, y],
        )
    )


def drawn_filled(page: Any, gid: int, x: float, y: float) -> bool:
    """Whether the overlay's outline of ``gid`` fills image pixel (x, y), by the browser's own
    geometry (the overlay's user units are image pixels)."""
    return page.evaluate(
        """([gid, x, y]) => {
          const outline = document.querySelector(`#overlay path[data-gid="${gid}"]`);
          return outline.isPointInFill(new DOMPoint(x, y));
        }""",
        [gid, x, y],
    )


def test_a_ring_shaped_outline_is_drawn_and_clicked_with_its_hole(
    ringed_demo: tuple[Path, Any], serve: Any, context: Any
) -> None:
    folder, ring = ringed_demo
    page = open_page(context, serve(folder))
    middle = ring.centroid  # in the hole
    assert not ring.contains(middle)
    in_ring = ring.representative_point()
    assert drawn_filled(page, 1, in_ring.x, in_ring.y)
    assert not drawn_filled(page, 1, middle.x, middle.y)  # once drawn filled
    # a click in the hole selects nothing; one in the ring selects G1
    page.mouse.click(*at_image_point(page, middle.x, middle.y))
    page.wait_for_timeout(300)
    assert page.evaluate("W().selected") is None
    page.mouse.click(*at_image_point(page, in_ring.x, in_ring.y))
    page.wait_for_selector("#glomerulus-title:text-matches('^G1:')")
    assert not page.errors


def test_every_part_of_a_multipolygon_outline_is_drawn_and_selects(
    result: Path, serve: Any, context: Any
) -> None:
    """An outline in two parts (a multipolygon, as an edit or an export may give) is drawn and
    clicked as both; the state is the server's own with G2's outline given a second part."""
    from shapely.geometry import Point, box

    from lnpath.results.folder import read_polygons

    outlines = read_polygons(result)
    x0, y0 = 2000, 2300  # an empty stretch of the slide below G2
    extra = box(x0, y0, x0 + 200, y0 + 200)
    assert not any(extra.intersects(o) for o in outlines.values())
    server = serve(result)
    page = context.new_page()

    def add_part(route: Any) -> None:
        state = route.fetch().json()
        g2 = next(g for g in state["glomeruli"] if g["id"] == 2)
        g2["outline"].append([[list(p) for p in extra.exterior.coords]])
        route.fulfill(json=state)

    page.route(re.compile(r".*/api/r/0/state$"), add_part)
    page.errors = []
    page.on("pageerror", lambda exc: page.errors.append(str(exc)))
    page.goto(server.url)
    page.wait_for_selector("body[data-ready=true]")
    page.wait_for_selector('#overlay path[data-gid="2"]')
    first = outlines[2]
    inner = first.representative_point()
    assert drawn_filled(page, 2, inner.x, inner.y)
    assert drawn_filled(page, 2, x0 + 100, y0 + 100)  # once only the largest part was drawn
    assert not drawn_filled(page, 2, x0 - 50, y0 + 100)
    assert not Point(x0 - 50, y0 + 100).intersects(first)
    page.mouse.click(*at_image_point(page, x0 + 100, y0 + 100))
    page.wait_for_selector("#glomerulus-title:text-matches('^G2:')")
    assert not page.errors


# --------------------------------------------------------------------------------------------
# a page left open while the workstation is restarted


def restarted(result: Path, serve: Any, context: Any) -> tuple[Any, Any]:
    """A page with an unsaved crescent on G3, and the workstation started again on the same port
    (a new token); the page tells what to do and keeps the edit."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    first = serve(result, "--port", port)
    page = open_page(context, first)
    page.on("dialog", lambda dialog: dialog.accept())  # "leave the page with unsaved edits?"
    click_glomerulus(page, 3)
    page.click('[data-lesion="cellular_crescent"] button[data-value="present"]')
    page.wait_for_selector("#unsaved")
    first.stop()
    # at once: the browser's connections to the first server must not hold the port
    second = serve(result, "--port", port)
    assert second.token != first.token
    message = save(page)
    assert message.startswith("the workstation was restarted") and "nothing was saved" in message
    assert "open the URL it printed in this tab" in message and "Forbidden" not in message
    assert page.evaluate("dirty()") is True
    assert lnpath.SlideResult.load(result).revision == 1
    return page, second


def test_a_restarted_workstation_takes_the_edits_back_after_its_url_is_opened(
    result: Path, serve: Any, context: Any
) -> None:
    page, server = restarted(result, serve, context)
    page.goto(server.url)
    page.wait_for_selector("body[data-ready=true]")
    page.wait_for_selector("#unsaved")
    assert (
        "edits from before the workstation was restarted are back"
        in page.locator("#message").text_content()
    )
    assert page.locator("#kept").is_hidden()
    assert save(page) == "saved revision 2"
    assert bool(findings(result).loc[3, "cellular_crescent"]) is True
    lnpath.verify(result)
    assert not page.errors


def test_edits_kept_over_a_restart_do_not_overwrite_what_was_saved_meanwhile(
    result: Path, serve: Any, context: Any
) -> None:
    page, server = restarted(result, serve, context)
    lnpath.review(result, cortex={"interstitial_fibrosis": 0.3}, pathologist="Dr Elsewhere")
    page.goto(server.url)
    page.wait_for_selector("body[data-ready=true]")
    kept = page.locator("#kept")
    kept.wait_for(state="visible")
    said = kept.text_content()
    assert "made on revision 1" in said and "now at revision 2: someone saved it since" in said
    assert '"cellular_crescent": true' in page.locator("#kept-edits").text_content()
    assert page.evaluate("dirty()") is False and page.locator("#unsaved").count() == 0
    assert save(page) == "nothing to save"
    on_disk = lnpath.SlideResult.load(result)
    assert on_disk.revision == 2 and pd.isna(findings(result).loc[3, "cellular_crescent"])
    assert not page.errors


def test_edits_kept_over_a_restart_are_not_put_on_a_folder_scored_anew_at_the_same_path(
    result: Path, serve: Any, context: Any, repo_dir: Path
) -> None:
    page, server = restarted(result, serve, context)
    slide = json.loads((result / "result.json").read_text())["slide"]["path"]
    outlines = repo_dir / "examples" / "demo_biopsy_glomeruli.geojson"
    time.sleep(1.1)  # created_at counts seconds
    rescored = lnpath_cli("score", slide, "--glomeruli", outlines, "--overwrite", "--out", result)
    assert rescored.returncode == 0, rescored.stderr
    assert lnpath.SlideResult.load(result).revision == 1  # the revision the edits were made on
    page.goto(server.url)
    page.wait_for_selector("body[data-ready=true]")
    kept = page.locator("#kept")
    kept.wait_for(state="visible")
    assert "was scored anew since" in kept.text_content()
    assert page.evaluate("dirty()") is False and page.locator("#unsaved").count() == 0
    assert pd.isna(findings(result).loc[3, "cellular_crescent"])
    assert not page.errors


@pytest.mark.parametrize(
    ("results", "slides", "message"),
    [
        (None, (), "workstation: expected result folder paths, got NoneType"),
        (5, (), "workstation: expected result folder paths, got int"),
        ([None], (), "workstation: results: expected a file or folder path, got NoneType"),
        ("/nowhere", [None], "workstation: slides: expected a file or folder path"),
    ],
)
def test_workstation_arguments_of_the_wrong_kind_are_one_line(
    results: object, slides: object, message: str
) -> None:
    """None reached ``list(None)`` (``'NoneType' object is not iterable``) or pathlib."""
    with pytest.raises(lnpath.InputError, match=message):
        lnpath.workstation(results, slides=slides)  # type: ignore[arg-type]
