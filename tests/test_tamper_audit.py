"""What a hostile-but-realistic user does to a signed result folder, and what lnpath says.

Each test edits a real, confirmed result folder the way a person with a shell would (a link
instead of a file, a snapshot added, a signature stripped, the folder copied onto another
patient's slide) and checks the one line ``verify``, ``review`` and ``cohort`` answer with.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from .conftest import assert_one_line_error, file_hashes, lnpath_cli


def _audit(folder: Path) -> list[dict]:
    text = (folder / "revisions" / "audit.jsonl").read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line]


def _write_audit(folder: Path, events: list[dict]) -> None:
    text = "".join(json.dumps(e) + "\n" for e in events)
    (folder / "revisions" / "audit.jsonl").write_text(text, encoding="utf-8")


def _link_findings(folder: Path) -> None:
    outside = folder.parent / "findings-elsewhere.csv"
    shutil.copy2(folder / "findings.csv", outside)
    (folder / "findings.csv").unlink()
    os.symlink(outside, folder / "findings.csv")


def _link_revisions(folder: Path) -> None:
    outside = folder.parent / "revisions-elsewhere"
    shutil.move(folder / "revisions", outside)
    os.symlink(outside, folder / "revisions")


def _link_in_assets(folder: Path) -> None:
    os.symlink(folder.parent, folder / "assets" / "more")  # not a file: content hash skips it


LINKS = {
    "findings.csv": _link_findings,
    "revisions": _link_revisions,
    "assets/more": _link_in_assets,
}


@pytest.mark.parametrize("where", list(LINKS), ids=list(LINKS))
def test_verify_refuses_a_link_where_lnpath_keeps_its_files(
    where: str, confirmed_template: Path, copy_result: Callable[..., Path]
) -> None:
    """A link to an identical copy verified as intact, though the confirmed content then lived
    (and could change) outside the folder."""
    folder = copy_result(confirmed_template)
    LINKS[where](folder)
    assert_one_line_error(lnpath_cli("verify", folder), where, "symbolic link")


def test_verify_refuses_a_snapshot_or_file_added_to_revisions(
    history_template: Path, copy_result: Callable[..., Path]
) -> None:
    folder = copy_result(history_template)
    shutil.copytree(folder / "revisions" / "r001", folder / "revisions" / "r009")
    assert_one_line_error(lnpath_cli("verify", folder), "revisions/r009", "not written by lnpath")
    shutil.rmtree(folder / "revisions" / "r009")
    (folder / "revisions" / "r001" / "findings-corrected.csv").write_text("glomerulus_id\n")
    assert_one_line_error(lnpath_cli("verify", folder), "r001/findings-corrected.csv", "revision 1")


def test_a_content_edit_is_named(
    confirmed_template: Path, copy_result: Callable[..., Path]
) -> None:
    folder = copy_result(confirmed_template)
    signed = (folder / "result.json").read_bytes()
    data = json.loads(signed)
    data["scores"]["activity_index"]["total"] = 12
    (folder / "result.json").write_text(json.dumps(data), encoding="utf-8")
    assert_one_line_error(lnpath_cli("verify", folder), "result.json (scores)")
    (folder / "result.json").write_bytes(signed)
    table = folder / "findings.csv"
    table.write_text(table.read_text(encoding="utf-8").replace("False", "True", 1))
    line = assert_one_line_error(lnpath_cli("verify", folder), "findings.csv")
    assert "result.json" not in line


def test_review_keeps_the_users_own_files_in_the_folder(
    demo_result_template: Path, copy_result: Callable[..., Path]
) -> None:
    """A QuPath export saved into the result folder was deleted by the review that read it."""
    folder = copy_result(demo_result_template)
    export = folder / "edited.geojson"
    shutil.copy2(folder / "glomeruli.geojson", export)
    (folder / "notes").mkdir()
    (folder / "notes" / "case.txt").write_text("ask for EM")
    before = file_hashes(folder / "notes")
    proc = lnpath_cli("review", folder, "--pathologist", "Dr R", "--geojson", export,
                      "--comment", "seen")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert export.is_file()
    assert file_hashes(folder / "notes") == before
    proc = lnpath_cli("confirm", folder, "--pathologist", "Dr A")
    assert proc.returncode == 0, proc.stderr
    assert export.is_file() and (folder / "notes" / "case.txt").is_file()
    proc = lnpath_cli("verify", folder)
    assert proc.returncode == 0, proc.stderr
    assert "edited.geojson, notes (not lnpath's)" in " ".join(proc.stdout.split())


@pytest.fixture
def signed(demo_result_template: Path, copy_result: Callable[..., Path]) -> tuple[Path, Path]:
    """The demo result confirmed with an Ed25519 key, and the public key's file."""
    folder = copy_result(demo_result_template)
    stem = folder.parent / "keys" / "dr_a"
    assert lnpath_cli("keygen", "--out", stem).returncode == 0
    proc = lnpath_cli("confirm", folder, "--pathologist", "Dr A", "--key", f"{stem}.pem")
    assert proc.returncode == 0, proc.stderr
    return folder, stem.with_name("dr_a.pub.pem")


def test_a_stripped_or_edited_signature_is_detected_without_the_key(
    signed: tuple[Path, Path],
) -> None:
    """The signature sits outside its event's hash: removing it verified as intact."""
    folder, public = signed
    proc = lnpath_cli("verify", folder)
    assert proc.returncode == 0, proc.stderr
    assert "give --public-key" in " ".join(proc.stdout.split())
    assert lnpath_cli("verify", folder, "--public-key", public).returncode == 0
    events = _audit(folder)
    signature = events[-1].pop("signature")
    _write_audit(folder, events)
    assert_one_line_error(lnpath_cli("verify", folder), "signature was removed or edited")
    events[-1]["signature"] = {**signature, "value": signature["value"][::-1]}
    _write_audit(folder, events)
    assert_one_line_error(lnpath_cli("verify", folder), "signature was removed or edited")
    before = file_hashes(folder)
    assert_one_line_error(
        lnpath_cli("addendum", folder, "--pathologist", "Dr A", "--text", "EM: deposits"),
        "signature",
    )
    assert file_hashes(folder) == before


def test_cohort_refuses_a_signed_folder_copied_onto_another_patients_slide(
    repo_dir: Path, confirmed_template: Path, tmp_path: Path
) -> None:
    """Patient P1's confirmed folder put in place of P2's verified, and cohort published P1's
    scores as P2's, in the slide table and in P2's pair."""
    out = tmp_path / "batch"
    slide = repo_dir / "examples" / "demo_biopsy.tiff"
    outlines = repo_dir / "examples" / "demo_biopsy_glomeruli.geojson"
    header = "slide_id,path,patient_id,timepoint,glomeruli\n"
    first = tmp_path / "p2.csv"
    first.write_text(header + f"p2a,{slide},P2,0,{outlines}\n")
    assert lnpath_cli("batch", first, "--out", out).returncode == 0
    shutil.copytree(out / "p2a", out / "p2b", symlinks=True)  # the same inputs: resumed
    shutil.copytree(confirmed_template, out / "p1a", symlinks=True)
    manifest = tmp_path / "manifest.csv"
    manifest.write_text(
        header + f"p1a,{slide},P1,0,{outlines}\n"
        f"p2a,{slide},P2,0,{outlines}\np2b,{slide},P2,1,{outlines}\n"
    )
    proc = lnpath_cli("batch", manifest, "--out", out)
    assert proc.returncode == 0, proc.stderr
    shutil.rmtree(out / "p2a")
    shutil.copytree(out / "p1a", out / "p2a", symlinks=True)
    assert lnpath_cli("verify", out / "p2a").returncode == 0  # nothing inside the folder says so
    proc = lnpath_cli("cohort", out, "--preset", "lnhr_default")
    assert proc.returncode == 0, proc.stderr
    cohort = pd.read_csv(out / "cohort.csv", dtype=str, keep_default_na=False).set_index("slide_id")
    assert cohort.loc["p1a", "integrity"] == "ok"
    assert cohort.loc["p2a", "status"] == "tampered"
    assert "patient_id 'P1'" in cohort.loc["p2a", "integrity"]
    assert cohort.loc["p2a", "ai_total"] == ""
    pairs = pd.read_csv(out / "cohort_pairs.csv", dtype=str, keep_default_na=False)
    pair = pairs[pairs["patient_id"] == "P2"].iloc[0]
    assert pair["status"] == "error"
    assert "patient_id 'P1'" in pair["reasons"]


def test_a_path_to_result_json_names_its_folder_and_another_file_is_refused(
    confirmed_template: Path, copy_result: Callable[[Path], Path]
) -> None:
    folder = copy_result(confirmed_template)
    before = file_hashes(folder)
    # read as a folder, the file had no audit trail: an intact result was called tampered with
    proc = lnpath_cli("verify", folder / "result.json")
    assert proc.returncode == 0, proc.stderr
    assert "is intact" in proc.stdout and "confirmed" in proc.stdout
    printed = "".join(proc.stdout.split())  # rich wraps long paths anywhere
    assert f"OK:{folder}revision" in printed, proc.stdout  # the folder checked, not the file
    proc = lnpath_cli(
        "addendum", folder / "result.json", "--pathologist", "Dr A", "--text", "IF pending"
    )
    assert proc.returncode == 0, proc.stderr
    assert "IF pending" in json.loads((folder / "result.json").read_text())["addenda"][0]["text"]
    assert not list(folder.glob(".*.lock")), "a lock was taken inside the folder"
    plain = folder.parent / "notes.txt"
    plain.write_text("not a result\n")
    assert_one_line_error(lnpath_cli("verify", plain), "notes.txt", "a file, not a result folder")
    assert_one_line_error(
        lnpath_cli("confirm", plain, "--pathologist", "Dr A"), "a file, not a result folder"
    )
    assert set(file_hashes(folder)) >= set(before)  # nothing lost


def test_a_lock_file_replaced_by_a_link_is_refused_and_its_target_untouched(
    confirmed_template: Path, copy_result: Callable[[Path], Path]
) -> None:
    folder = copy_result(confirmed_template)
    before = file_hashes(folder)
    target = folder.parent / "precious.txt"
    target.write_text("someone else's file\n")
    (folder.parent / f".{folder.name}.lock").symlink_to(target)
    proc = lnpath_cli("addendum", folder, "--pathologist", "Dr A", "--text", "IF pending")
    assert_one_line_error(proc, "lock file", "symbolic link")
    assert target.read_text() == "someone else's file\n"
    assert file_hashes(folder) == before


def _forge_addendum(folder: Path, edit: Callable[[Path, dict], None]) -> None:
    """Change a signed result, then pass the change off as an addendum (unsigned), re-hashing
    everything with lnpath's own code, as anyone able to write the folder could."""
    from lnpath.io.hashing import file_sha256
    from lnpath.results.folder import SNAPSHOT_FILES, content_sha256, read_audit
    from lnpath.results.integrity import chained, seal

    data = json.loads((folder / "result.json").read_text(encoding="utf-8"))
    edit(folder, data)
    entry = {"text": "EM pending", "by": "Dr A", "at": "2026-01-02T03:04:05+00:00"}
    data["addenda"] = [*(data.get("addenda") or []), entry]
    data["confirmation"]["sha256"] = sha = content_sha256(folder, data)
    snapshot = folder / "revisions" / f"r{data['revision']:03d}-addendum"
    snapshot.mkdir()
    (snapshot / "result.json").write_text(json.dumps({**data, "seal": None}), encoding="utf-8")
    for name in SNAPSHOT_FILES[1:]:
        shutil.copy2(folder / name, snapshot / name)
    events = read_audit(folder)
    event = {**entry, "event": "addendum", "note": None, "revision": data["revision"]}
    event.update(content_sha256=sha, snapshot_dir=snapshot.name)
    event["snapshot"] = {n: file_sha256(snapshot / n) for n in SNAPSHOT_FILES}
    events.append(chained(events, event))
    data["seal"] = seal(events)
    (folder / "result.json").write_text(json.dumps(data), encoding="utf-8")
    _write_audit(folder, events)


def _change_class(folder: Path, data: dict) -> None:
    data["scores"]["isn_rps_class"]["proposal"] = "IV"


def _rewrite_report(folder: Path, data: dict) -> None:
    report = folder / "report.html"
    report.write_text(report.read_text(encoding="utf-8").replace("Dr A", "Dr Z"), "utf-8")


def test_a_content_change_passed_off_as_an_addendum_is_named_even_with_the_key(
    signed: tuple[Path, Path],
) -> None:
    """The signed confirmation's content sha256 was never compared with the content: behind a
    forged addendum, an edited class verified as intact and signed, with the public key."""
    folder, public = signed
    _forge_addendum(folder, _change_class)
    for extra in ((), ("--public-key", public)):
        line = assert_one_line_error(lnpath_cli("verify", folder, *extra))
        assert "changed after it was confirmed: result.json (scores)" in line


def test_an_unsigned_addendum_after_a_signed_confirmation_is_named_not_vouched_for(
    signed: tuple[Path, Path],
) -> None:
    """A report rewritten behind a forged unsigned addendum read "intact ... signature"."""
    folder, public = signed
    _forge_addendum(folder, _rewrite_report)
    proc = lnpath_cli("verify", folder, "--public-key", public)
    assert proc.returncode == 0, proc.stderr
    said = " ".join(proc.stdout.split())
    rendered = "the report.html and overlay.png rendered since"
    assert f"not checked: addendum 1 and {rendered} (not signed" in said


def test_an_addendum_signed_with_the_key_is_checked_and_one_with_another_is_named(
    signed: tuple[Path, Path],
) -> None:
    folder, public = signed
    keys = public.parent
    assert lnpath_cli("keygen", "--out", keys / "dr_c").returncode == 0
    proc = lnpath_cli("addendum", folder, "--pathologist", "Dr A", "--text", "EM: none")
    assert proc.returncode == 0, proc.stderr
    assert "the confirmation is signed but this addendum is not" in proc.stderr
    proc = lnpath_cli("addendum", folder, "--pathologist", "Dr A", "--text", "IF: C3",
                      "--key", keys / "dr_a.pem")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    proc = lnpath_cli("verify", folder, "--public-key", public)
    assert proc.returncode == 0, proc.stderr
    said = " ".join(proc.stdout.split())
    assert "signature of addendum 2" in said and "not signed" not in said  # 2 covers 1
    proc = lnpath_cli("addendum", folder, "--pathologist", "Dr A", "--text", "unsigned")
    assert proc.returncode == 0, proc.stderr
    proc = lnpath_cli("addendum", folder, "--pathologist", "Dr C", "--text", "late",
                      "--key", keys / "dr_c.pem")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    proc = lnpath_cli("verify", folder, "--public-key", public)
    assert proc.returncode == 0, proc.stderr
    # only Dr C's key covers addendum 3: with Dr A's key given, neither is vouched for
    assert "whose key signed addendum 4 (another key than" in " ".join(
        proc.stdout.split()
    ) and ", and addendum 3 before it (not signed)" in " ".join(proc.stdout.split())
    events = _audit(folder)
    events[-1]["signature"]["value"] = events[-3]["signature"]["value"]
    _write_audit(folder, events)
    assert_one_line_error(lnpath_cli("verify", folder), "addendum 4's signature")


def test_a_note_with_a_unicode_line_separator_keeps_the_trail_readable(
    demo_result_template: Path, copy_result: Callable[..., Path]
) -> None:
    """JSON leaves U+2028 unescaped and splitlines() split there: the confirmation's own
    audit line read as "edited by hand", and the signed result could take no addendum."""
    folder = copy_result(demo_result_template)
    proc = lnpath_cli("confirm", folder, "--pathologist", "Dr A", "--note", "agree\u2028IV")
    assert proc.returncode == 0, proc.stderr
    proc = lnpath_cli("addendum", folder, "--pathologist", "Dr A", "--text", "EM\u2029none")
    assert proc.returncode == 0, proc.stderr
    proc = lnpath_cli("verify", folder)
    assert proc.returncode == 0, proc.stderr
    assert _audit_events(folder)[-2]["note"] == "agree\u2028IV"


def _audit_events(folder: Path) -> list[dict]:
    from lnpath.results.folder import read_audit

    return read_audit(folder)


def test_a_private_key_other_users_can_read_is_refused(
    demo_result_template: Path, copy_result: Callable[..., Path]
) -> None:
    folder = copy_result(demo_result_template)
    stem = folder.parent / "keys" / "dr_a"
    assert lnpath_cli("keygen", "--out", stem).returncode == 0
    key = stem.with_name("dr_a.pem")
    key.chmod(0o644)
    before = file_hashes(folder)
    line = assert_one_line_error(
        lnpath_cli("confirm", folder, "--pathologist", "Dr A", "--key", key), "chmod 600"
    )
    assert "readable by other users (mode 0644)" in line
    assert file_hashes(folder) == before


def _audit_made_a_folder(folder: Path) -> None:
    (folder / "revisions" / "audit.jsonl").unlink()
    (folder / "revisions" / "audit.jsonl").mkdir()


def _revision_as_text(folder: Path) -> None:
    data = json.loads((folder / "result.json").read_text(encoding="utf-8"))
    (folder / "result.json").write_text(json.dumps({**data, "revision": "two"}), "utf-8")


MISSING = {
    "audit.jsonl a folder": (_audit_made_a_folder, "audit.jsonl: missing or not a file"),
    "report.html removed": (lambda f: (f / "report.html").unlink(), "report.html: missing"),
    "revision as text": (_revision_as_text, "revision 'two' is not a revision number"),
}


@pytest.mark.parametrize("case", list(MISSING), ids=list(MISSING))
def test_a_missing_or_malformed_part_is_named_by_verify_and_review(
    case: str, confirmed_template: Path, copy_result: Callable[..., Path]
) -> None:
    """They read "the trail does not end where the seal says", an [Errno 2] inside "unreadable",
    and (review) an internal error."""
    folder = copy_result(confirmed_template)
    tamper, needle = MISSING[case]
    tamper(folder)
    before = file_hashes(folder)
    assert_one_line_error(lnpath_cli("verify", folder), needle)
    proc = lnpath_cli("review", folder, "--pathologist", "Dr R", "--comment", "c", "--supersede")
    assert_one_line_error(proc, needle)
    assert file_hashes(folder) == before
