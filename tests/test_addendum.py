"""Addenda to a signed result: appended, shown, audited, held to by verify; never reopening it."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

import lnpath
from lnpath.core.errors import InputError, ResultError
from tests.conftest import assert_one_line_error, lnpath_cli

TEXT = "Electron microscopy received: <subepithelial> deposits & spikes, consistent with class V."


def test_an_addendum_keeps_the_signature_and_reads_in_the_report(
    confirmed_template: Path, copy_result: Callable[[Path], Path]
) -> None:
    folder = copy_result(confirmed_template)
    before = json.loads((folder / "result.json").read_text())
    result = lnpath.add_addendum(folder, TEXT, pathologist="Dr B")
    after = result.to_dict()
    assert after["status"] == "confirmed" and after["revision"] == before["revision"]
    assert after["confirmation"] == before["confirmation"]  # who, when, the seal and its files
    assert after["scores"] == before["scores"]
    assert [(a["text"], a["by"]) for a in after["addenda"]] == [(TEXT, "Dr B")]
    report = (folder / "report.html").read_text()
    assert "subepithelial" in report and "<subepithelial>" not in report  # escaped
    assert "Electronically signed" in report or "signed" in report.lower()
    # added after the signature, so it follows it (it sat in the comment, above it)
    assert report.index("subepithelial") > report.index('id="signature"')
    events = [json.loads(line) for line in (folder / "revisions" / "audit.jsonl").open()]
    assert events[-1]["event"] == "addendum" and events[-1]["text"] == TEXT
    check = lnpath.verify(folder)
    assert check.status == "confirmed"
    second = lnpath.add_addendum(folder, "Second opinion agrees.", pathologist="Dr C")
    assert [a["by"] for a in second.to_dict()["addenda"]] == ["Dr B", "Dr C"]
    lnpath.verify(folder)


@pytest.mark.parametrize(
    "tamper",
    ["edit text", "drop it", "rename author"],
)
def test_verify_holds_result_json_to_the_audited_addenda(
    confirmed_template: Path, copy_result: Callable[[Path], Path], tamper: str
) -> None:
    folder = copy_result(confirmed_template)
    lnpath.add_addendum(folder, TEXT, pathologist="Dr B")
    path = folder / "result.json"
    data = json.loads(path.read_text())
    if tamper == "edit text":
        data["addenda"][0]["text"] = "No deposits."
    elif tamper == "drop it":
        data["addenda"] = []
    else:
        data["addenda"][0]["by"] = "Dr Z"
    path.write_text(json.dumps(data))
    with pytest.raises(ResultError, match="addenda"):
        lnpath.verify(folder)


def test_addenda_follow_sign_out_and_need_an_author_and_text(
    demo_result_template: Path, confirmed_template: Path, copy_result: Callable[[Path], Path]
) -> None:
    draft = copy_result(demo_result_template, "draft")
    with pytest.raises(ResultError, match="not signed out"):
        lnpath.add_addendum(draft, TEXT, pathologist="Dr B")
    signed = copy_result(confirmed_template, "signed")
    with pytest.raises(InputError, match="pathologist"):
        lnpath.add_addendum(signed, TEXT, pathologist=" ")
    with pytest.raises(InputError, match="text"):
        lnpath.add_addendum(signed, "   ", pathologist="Dr B")
    assert "addenda" not in json.loads((signed / "result.json").read_text())


def test_cli_addendum_and_its_one_line_errors(
    demo_result_template: Path, confirmed_template: Path, copy_result: Callable[[Path], Path]
) -> None:
    signed = copy_result(confirmed_template, "signed")
    proc = lnpath_cli("addendum", signed, "--pathologist", "Dr B", "--text", TEXT)
    assert proc.returncode == 0, proc.stderr
    assert "confirmation stands" in proc.stdout
    assert lnpath_cli("verify", signed).returncode == 0
    draft = copy_result(demo_result_template, "draft")
    proc = lnpath_cli("addendum", draft, "--pathologist", "Dr B", "--text", TEXT)
    assert_one_line_error(proc, "not signed out")
    assert proc.returncode == 4  # refused by the sign-out rules, not 3 (tampered)


def test_right_to_left_text_cannot_reorder_the_signature_beside_it(
    confirmed_template: Path, copy_result: Callable[[Path], Path]
) -> None:
    """An addendum or comment with a direction override (U+202E) stays inside its own <bdi>: on
    the line "(author, time): text" it would otherwise show the time reversed."""
    folder = copy_result(confirmed_template)
    hostile = "\u202eresolved\u202c after treatment"
    lnpath.add_addendum(folder, hostile, pathologist="Dr B")
    report = (folder / "report.html").read_text()
    assert f"<bdi>{hostile}</bdi>" in report
    assert "(<bdi>Dr B</bdi>," in report
    signed_by = json.loads((folder / "result.json").read_text())["confirmation"]["pathologist"]
    assert f"Electronically signed by <bdi>{signed_by}</bdi>" in report


def test_an_addendum_to_a_superseded_sign_out_says_so(
    confirmed_template: Path, copy_result: Callable[[Path], Path]
) -> None:
    """A revision that supersedes a signed one carries that sign-out's addenda (the audit trail
    holds them); the report names the revision each was added to, so none reads as its own."""
    folder = copy_result(confirmed_template)
    lnpath.add_addendum(folder, TEXT, pathologist="Dr B")
    lnpath.review(folder, pathologist="Dr C", cortex={"interstitial_fibrosis": 0.3}, supersede=True)
    earlier = "<b>Addendum</b> to revision 1, a superseded sign-out (<bdi>Dr B</bdi>,"
    assert earlier in (folder / "report.html").read_text()
    lnpath.confirm(folder, pathologist="Dr C")
    lnpath.add_addendum(folder, "Second look agrees.", pathologist="Dr C")
    report = (folder / "report.html").read_text()
    assert earlier in report
    assert "<b>Addendum</b> (<bdi>Dr C</bdi>," in report  # this revision's own addendum
    assert report.count("<b>Addendum</b>") == 2
    assert lnpath.verify(folder).status == "confirmed"
