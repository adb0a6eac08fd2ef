"""Nothing a pathologist signed can be lost or quietly changed (issue #20).

Every test starts from a real result folder (the demo slide scored through the CLI, see
``conftest.py``), does what a user, a crash or a casual editor would do, and checks through the
CLI that the confirmed result survives, or that ``lnpath verify`` notices.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from .conftest import assert_one_line_error, file_hashes, lnpath_cli


def _read(folder: Path) -> dict[str, Any]:
    return json.loads((folder / "result.json").read_text(encoding="utf-8"))


def _write(folder: Path, data: dict[str, Any]) -> None:
    (folder / "result.json").write_text(json.dumps(data, indent=2), encoding="utf-8")


def _audit(folder: Path) -> list[dict[str, Any]]:
    text = (folder / "revisions" / "audit.jsonl").read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line]


def _write_audit(folder: Path, events: list[dict[str, Any]]) -> None:
    text = "".join(json.dumps(e) + "\n" for e in events)
    (folder / "revisions" / "audit.jsonl").write_text(text, encoding="utf-8")


def _verified(folder: Path) -> bool:
    return lnpath_cli("verify", folder).returncode == 0


def _score_again(repo_dir: Path, out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return lnpath_cli(
        "score",
        repo_dir / "examples" / "demo_biopsy.tiff",
        "--glomeruli",
        repo_dir / "examples" / "demo_biopsy_glomeruli.geojson",
        "--patient-id",
        "P1",
        "--out",
        out,
        *extra,
    )


# --------------------------------------------------------------------------------------------
# --overwrite never replaces a confirmed result silently


def test_overwrite_refuses_a_confirmed_result(
    repo_dir: Path, confirmed_template: Path, copy_result: Callable[..., Path]
) -> None:
    folder = copy_result(confirmed_template)
    before = file_hashes(folder)
    proc = _score_again(repo_dir, folder, "--overwrite")
    assert_one_line_error(proc, "confirmed")
    assert proc.returncode == 4  # refused by the sign-out rules, not 3 (tampered)
    assert file_hashes(folder) == before
    assert _verified(folder)


def test_overwrite_of_an_unreadable_result_stays_exit_3(
    repo_dir: Path, demo_result_template: Path, copy_result: Callable[..., Path]
) -> None:
    """Whether it was confirmed is unknown: a malformed folder (3), not a sign-out refusal (4)."""
    folder = copy_result(demo_result_template)
    (folder / "result.json").write_text("{", encoding="utf-8")
    proc = _score_again(repo_dir, folder, "--overwrite")
    assert_one_line_error(proc, "cannot be read")
    assert proc.returncode == 3


def test_supersede_moves_a_confirmed_result_aside_and_records_it(
    repo_dir: Path, confirmed_template: Path, copy_result: Callable[..., Path]
) -> None:
    folder = copy_result(confirmed_template)
    sealed = _read(folder)["confirmation"]
    proc = _score_again(repo_dir, folder, "--overwrite", "--supersede")
    assert proc.returncode == 0, proc.stderr
    aside = sorted(folder.parent.glob("r.superseded-*"))
    assert len(aside) == 1, list(folder.parent.iterdir())
    assert _verified(aside[0])
    assert _read(aside[0])["confirmation"] == sealed
    new = _read(folder)
    assert new["status"] == "provisional"
    assert new["supersedes"]["folder"] == str(aside[0])
    assert new["supersedes"]["confirmed_by"] == "Dr A"
    assert _audit(folder)[0]["supersedes"] == new["supersedes"]
    assert _verified(folder)


def test_a_superseding_score_that_fails_leaves_the_confirmed_result_in_place(
    repo_dir: Path,
    confirmed_template: Path,
    copy_result: Callable[..., Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The disk fills while the new report is written: the confirmed folder was already moved
    aside, so its place stood empty and a re-run scored anew with no link to it."""
    import errno

    import lnpath
    from lnpath.core.errors import OutputError
    from lnpath.results import folder as result_folder

    folder = copy_result(confirmed_template)
    before = file_hashes(folder)

    def disk_full(*args: object, **kwargs: object) -> str:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(result_folder, "render_report", disk_full)
    with pytest.raises(OutputError):
        lnpath.score_slide(
            repo_dir / "examples" / "demo_biopsy.tiff",
            out=folder,
            glomeruli=repo_dir / "examples" / "demo_biopsy_glomeruli.geojson",
            patient_id="P1",
            overwrite=True,
            supersede=True,
            progress=False,
        )
    assert file_hashes(folder) == before
    assert not list(folder.parent.glob("r.superseded-*"))
    assert not list(folder.parent.glob(".r.*.tmp"))  # no half-written result left beside it
    assert _verified(folder)


def test_batch_overwrite_refuses_a_confirmed_result(
    repo_dir: Path, confirmed_template: Path, tmp_path: Path
) -> None:
    out = tmp_path / "batch"
    out.mkdir()
    shutil.copytree(confirmed_template, out / "s1", symlinks=True)
    manifest = tmp_path / "manifest.csv"
    manifest.write_text(
        "slide_id,path,patient_id,timepoint,glomeruli\n"
        f"s1,{repo_dir / 'examples' / 'demo_biopsy.tiff'},P1,0,"
        f"{repo_dir / 'examples' / 'demo_biopsy_glomeruli.geojson'}\n"
    )
    before = file_hashes(out / "s1")
    proc = lnpath_cli("batch", manifest, "--out", out, "--overwrite")
    assert proc.returncode == 1, proc.stderr
    status = pd.read_csv(out / "batch_status.csv", dtype=str, keep_default_na=False)
    assert status["outcome"].tolist() == ["failed"]
    assert "confirmed" in status["error"][0]
    assert file_hashes(out / "s1") == before


# --------------------------------------------------------------------------------------------
# verify notices every edit of the plain JSON


def _rename_pathologist(folder: Path) -> None:
    data = _read(folder)
    data["confirmation"]["pathologist"] = "Dr B"
    _write(folder, data)
    events = _audit(folder)
    events[-1]["by"] = "Dr B"
    _write_audit(folder, events)


def _backdate(folder: Path) -> None:
    data = _read(folder)
    data["confirmation"]["confirmed_at"] = "2020-01-02T03:04:05+00:00"
    _write(folder, data)
    events = _audit(folder)
    events[-1]["at"] = "2020-01-02T03:04:05+00:00"
    _write_audit(folder, events)


def _rewrite_note(folder: Path) -> None:
    data = _read(folder)
    data["confirmation"]["note"] = "disagree: class IV"
    _write(folder, data)
    events = _audit(folder)
    events[-1]["note"] = "disagree: class IV"
    _write_audit(folder, events)


def _delete_earlier_revision(folder: Path) -> None:
    shutil.rmtree(folder / "revisions" / "r001")
    _write_audit(folder, [e for e in _audit(folder) if e["revision"] != 1])


def _rewrite_audit_event(folder: Path) -> None:
    events = _audit(folder)
    reviewed = next(e for e in events if e["event"] == "reviewed")
    reviewed["by"] = "Dr Z"
    reviewed["note"] = "nothing to see"
    _write_audit(folder, events)


def _folderfile_hashes() -> tuple[Callable[..., str], Callable[[Path], str]]:
    """lnpath's own public hash functions, wherever the package keeps them."""
    try:
        from lnpath.results.folder import content_sha256, file_sha256
    except ImportError:
        from lnpath.result import content_sha256, file_sha256
    return content_sha256, file_sha256


def _change_score_and_rehash(folder: Path) -> None:
    content_sha256, file_sha256 = _folderfile_hashes()
    data = _read(folder)
    data["scores"]["activity_index"]["total"] = 12
    data["scores"]["isn_rps_class"]["proposal"] = "IV"
    sha = content_sha256(folder, data)
    data["confirmation"]["sha256"] = sha
    _write(folder, data)
    events = _audit(folder)
    events[-1]["content_sha256"] = sha
    revision = f"r{data['revision']:03d}"
    for snapshot in (folder / "revisions").glob(f"{revision}*"):
        shutil.copy2(folder / "result.json", snapshot / "result.json")
    events[-1]["snapshot"]["result.json"] = file_sha256(folder / "result.json")
    _write_audit(folder, events)


def _strip_the_chain(folder: Path) -> None:
    """Pass a chained trail off as one from lnpath 0.1.0 (which had no hashes)."""
    data = _read(folder)
    del data["seal"]
    _write(folder, data)
    _write_audit(
        folder,
        [{k: v for k, v in e.items() if k not in ("hash", "prev")} for e in _audit(folder)],
    )


TAMPERING = {
    "renamed pathologist": _rename_pathologist,
    "back-dated confirmation": _backdate,
    "rewritten note": _rewrite_note,
    "deleted earlier revision": _delete_earlier_revision,
    "rewritten audit event": _rewrite_audit_event,
    "changed score, rehashed": _change_score_and_rehash,
    "stripped hash chain": _strip_the_chain,
}


@pytest.mark.parametrize("edit", list(TAMPERING), ids=list(TAMPERING))
def test_verify_detects_each_edit(
    edit: str, history_template: Path, copy_result: Callable[..., Path]
) -> None:
    folder = copy_result(history_template)
    assert _verified(folder)
    TAMPERING[edit](folder)
    proc = lnpath_cli("verify", folder)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "OK" not in proc.stdout


def test_revision_snapshots_are_never_rewritten(
    demo_result_template: Path, copy_result: Callable[..., Path]
) -> None:
    folder = copy_result(demo_result_template)
    first = {k: v for k, v in file_hashes(folder).items() if k.startswith("revisions/r")}
    assert first
    assert lnpath_cli("confirm", folder, "--pathologist", "Dr A").returncode == 0
    after = file_hashes(folder)
    assert {k: after.get(k) for k in first} == first
    assert _verified(folder)


def _snapshot_inodes(folder: Path) -> dict[str, int]:
    return {
        path.relative_to(folder).as_posix(): path.stat().st_ino
        for path in (folder / "revisions").glob("r*/*")
    }


def test_earlier_snapshots_are_carried_as_links_not_copies(
    demo_result_template: Path, copy_result: Callable[..., Path]
) -> None:
    """A new revision links the write-once snapshots: its cost and disk use do not grow with the
    history, and tampering with a carried snapshot is still detected."""
    folder = copy_result(demo_result_template)
    before = _snapshot_inodes(folder)
    assert lnpath_cli("confirm", folder, "--pathologist", "Dr A").returncode == 0
    after = _snapshot_inodes(folder)
    assert {k: after[k] for k in before} == before  # the same files, not copies
    assert len(after) > len(before)
    assert _verified(folder)
    carried = folder / next(iter(before))
    carried.write_bytes(carried.read_bytes() + b" ")
    assert lnpath_cli("verify", folder).returncode == 3


def test_snapshots_are_copied_where_links_are_refused(
    demo_result_template: Path, copy_result: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno
    import os

    from lnpath.workflow.signoff import confirm

    def refuse(src: str, dst: str) -> None:
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    folder = copy_result(demo_result_template)
    first = {k: v for k, v in file_hashes(folder).items() if k.startswith("revisions/r")}
    inodes = _snapshot_inodes(folder)
    monkeypatch.setattr(os, "link", refuse)
    confirm(folder, pathologist="Dr A")
    after = _snapshot_inodes(folder)
    assert all(after[k] != inodes[k] for k in inodes)  # copies
    assert {k: file_hashes(folder)[k] for k in first} == first
    assert _verified(folder)


# --------------------------------------------------------------------------------------------
# Ed25519 signatures: forgery needs a key kept outside the folder


def test_signed_confirmation_verifies_only_with_its_public_key(
    demo_result_template: Path, copy_result: Callable[..., Path], tmp_path: Path
) -> None:
    folder = copy_result(demo_result_template)
    keys = tmp_path / "keys"
    proc = lnpath_cli("keygen", "--out", keys / "dr_a")
    assert proc.returncode == 0, proc.stderr
    private, public = keys / "dr_a.pem", keys / "dr_a.pub.pem"
    assert private.is_file() and public.is_file()
    assert private.stat().st_mode & 0o077 == 0
    assert lnpath_cli("keygen", "--out", keys / "other").returncode == 0
    proc = lnpath_cli("confirm", folder, "--pathologist", "Dr A", "--key", private)
    assert proc.returncode == 0, proc.stderr
    proc = lnpath_cli("verify", folder, "--public-key", public)
    assert proc.returncode == 0, proc.stderr
    assert "signature" in proc.stdout.lower()
    assert_one_line_error(lnpath_cli("verify", folder, "--public-key", keys / "other.pub.pem"))
    _change_score_and_rehash(folder)
    assert lnpath_cli("verify", folder, "--public-key", public).returncode == 3


def test_verify_with_a_public_key_refuses_an_unsigned_confirmation(
    confirmed_template: Path, copy_result: Callable[..., Path], tmp_path: Path
) -> None:
    folder = copy_result(confirmed_template)
    assert lnpath_cli("keygen", "--out", tmp_path / "k").returncode == 0
    line = assert_one_line_error(
        lnpath_cli("verify", folder, "--public-key", tmp_path / "k.pub.pem")
    )
    assert "not signed" in line


# --------------------------------------------------------------------------------------------
# The cohort never publishes a tampered result as confirmed


def test_cohort_marks_a_tampered_confirmed_result(
    repo_dir: Path, confirmed_template: Path, tmp_path: Path
) -> None:
    out = tmp_path / "batch"
    out.mkdir()
    for name in ("good", "bad"):
        shutil.copytree(confirmed_template, out / name, symlinks=True)
    manifest = tmp_path / "manifest.csv"
    slide = repo_dir / "examples" / "demo_biopsy.tiff"
    outlines = repo_dir / "examples" / "demo_biopsy_glomeruli.geojson"
    manifest.write_text(
        "slide_id,path,patient_id,timepoint,glomeruli\n"
        f"good,{slide},P1,0,{outlines}\nbad,{slide},P1,1,{outlines}\n"
    )
    proc = lnpath_cli("batch", manifest, "--out", out)
    assert proc.returncode == 0, proc.stderr
    data = _read(out / "bad")
    data["scores"]["activity_index"]["total"] = 12
    data["scores"]["isn_rps_class"]["proposal"] = "IV"
    _write(out / "bad", data)
    proc = lnpath_cli("cohort", out)
    assert proc.returncode == 0, proc.stderr
    assert "2 slide(s), 0 failed, 1 tampered" in " ".join(proc.stdout.split())  # not "0 failed"
    cohort = pd.read_csv(out / "cohort.csv", dtype=str, keep_default_na=False).set_index("slide_id")
    assert cohort.loc["good", "status"] == "confirmed"
    assert cohort.loc["good", "integrity"] == "ok"
    assert cohort.loc["bad", "status"] != "confirmed"
    assert cohort.loc["bad", "integrity"].startswith("FAILED")
    assert cohort.loc["bad", "ai_total"] == ""  # a tampered value is not published
    assert cohort.loc["bad", "isn_rps_class"] == ""


# --------------------------------------------------------------------------------------------
# One writer at a time; symlinks resolved; crash windows of the writer


def test_confirm_through_a_symlink_confirms_the_real_folder(
    demo_result_template: Path, copy_result: Callable[..., Path]
) -> None:
    real = copy_result(demo_result_template)
    link = real.parent / "link"
    link.symlink_to(real, target_is_directory=True)
    proc = lnpath_cli("confirm", link, "--pathologist", "Dr A")
    assert proc.returncode == 0, proc.stderr
    assert link.is_symlink()
    assert _read(real)["status"] == "confirmed"
    assert _verified(real) and _verified(link)


def test_two_writers_to_one_result_one_is_refused(
    repo_dir: Path, demo_result_template: Path, copy_result: Callable[..., Path]
) -> None:
    folder = copy_result(demo_result_template)
    command = [
        sys.executable,
        "-m",
        "lnpath",
        "score",
        str(repo_dir / "examples" / "demo_biopsy.tiff"),
        "--glomeruli",
        str(repo_dir / "examples" / "demo_biopsy_glomeruli.geojson"),
        "--patient-id",
        "P1",
        "--out",
        str(folder),
        "--overwrite",
    ]
    first = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    second = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    outcomes = []
    for proc in (first, second):
        out, err = proc.communicate()
        outcomes.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    codes = sorted(p.returncode for p in outcomes)
    assert codes[0] == 0 and codes[1] != 0, [p.stderr for p in outcomes]
    refused = next(p for p in outcomes if p.returncode != 0)
    assert_one_line_error(refused, "another")
    assert _verified(folder)
    assert len([e for e in _audit(folder) if e["event"] == "scored"]) == 1


def test_a_result_left_aside_by_a_crash_is_recovered(
    demo_result_template: Path, copy_result: Callable[..., Path]
) -> None:
    """A crash between the writer's two renames leaves the result only in ``.r.old``."""
    folder = copy_result(demo_result_template)
    aside = folder.parent / f".{folder.name}.old"
    folder.rename(aside)
    proc = lnpath_cli("verify", folder)
    assert proc.returncode == 0, proc.stderr
    assert folder.is_dir() and not aside.exists()


def test_a_crash_during_a_write_leaves_nothing_behind(
    demo_result_template: Path, copy_result: Callable[..., Path]
) -> None:
    """A killed write leaves a ``.r.XXXX.tmp`` folder; the next write under the lock removes it."""
    folder = copy_result(demo_result_template)
    stale = folder.parent / f".{folder.name}.k3j5x_9q.tmp"
    shutil.copytree(folder, stale)
    assert lnpath_cli("confirm", folder, "--pathologist", "Dr A").returncode == 0
    assert not list(folder.parent.glob(f".{folder.name}.*.tmp"))
    assert _verified(folder)
