"""A CLI audit of hand-edited results, key files and identifiers.

Each case once reported on numbers nobody wrote (compare of a hand-edited provisional result),
leaked Python's or cryptography's own wording ("'float' object is not subscriptable", a paragraph
with a URL), misnamed the problem (an empty audit trail "missing", a text file an "unreadable
result.json"), crashed ("internal error") or stored a patient id over two lines. Now each is one
line naming the file, and nothing is written.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from .conftest import assert_one_line_error, file_hashes, lnpath_cli

DEMO = Path(__file__).resolve().parents[1] / "examples" / "demo_biopsy.tiff"


def _edit(folder: Path, edit: Callable[[dict[str, Any]], None]) -> None:
    """Edit result.json by hand, as someone outside lnpath would."""
    path = folder / "result.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    edit(data)
    path.write_text(json.dumps(data), encoding="utf-8")


# --------------------------------------------------------------------------------------------
# malformed scores, and the workstation of a tampered result

EDITS: dict[str, Callable[[dict[str, Any]], None]] = {
    "slide": lambda d: d.__setitem__("slide", 5),
    "status": lambda d: d.__setitem__("status", None),
    "nan-score": lambda d: d["scores"].__setitem__("activity_index", math.nan),
}


def test_malformed_scores_given_as_a_dict_are_a_sentence(demo_result_template: Path) -> None:
    import lnpath
    from lnpath.core.errors import InputError

    data = json.loads((demo_result_template / "result.json").read_text(encoding="utf-8"))
    data["scores"]["activity_index"] = math.nan
    with pytest.raises(InputError, match=r"activity_index is nan, not an index record") as exc:
        lnpath.compare(data, data)
    assert "subscriptable" not in str(exc.value)
    data = json.loads((demo_result_template / "result.json").read_text(encoding="utf-8"))
    data["scores"]["activity_index"]["components"]["endocapillary_hypercellularity"]["score"] = (
        math.nan  # int(nan) once said "cannot convert float NaN to integer"
    )
    with pytest.raises(InputError, match=r"endocapillary_hypercellularity\.score=nan is not 0"):
        lnpath.compare(data, data)


def test_workstation_of_a_result_whose_slide_record_was_edited(
    demo_result_template: Path, copy_result: Callable[..., Path]
) -> None:
    """It was "internal error: AttributeError: 'int' object has no attribute 'get'"."""
    folder = copy_result(demo_result_template)
    _edit(folder, EDITS["slide"])
    proc = lnpath_cli("workstation", folder)
    assert proc.returncode == 3, proc.stderr
    assert_one_line_error(proc, str(folder), "modified after it was written", "(slide)")


def test_verify_names_an_emptied_audit_trail(
    demo_result_template: Path, copy_result: Callable[..., Path]
) -> None:
    folder = copy_result(demo_result_template)
    (folder / "revisions" / "audit.jsonl").write_bytes(b"")
    proc = lnpath_cli("verify", folder)
    assert proc.returncode == 3
    line = assert_one_line_error(proc, str(folder / "revisions" / "audit.jsonl"), ": empty")
    assert "missing" not in line


# --------------------------------------------------------------------------------------------
# a file where a result folder belongs


FILE_CASES = [
    (command, name)
    for name in ("notes.txt", "copy.json")
    for command in ("review", "compare", "workstation", "verify", "confirm")
    if (command, name) != ("workstation", "copy.json")  # the old code served it: a hang
]


@pytest.mark.parametrize(("command", "name"), FILE_CASES)
def test_a_file_given_for_a_result_folder(
    command: str, name: str, demo_result_template: Path, tmp_path: Path
) -> None:
    """review, compare and workstation read any file as a result.json: "unreadable result.json
    (Expecting value ...)" of a text file, while verify and confirm said what it is."""
    path = tmp_path / name
    if name == "copy.json":
        path.write_bytes((demo_result_template / "result.json").read_bytes())
    else:
        path.write_text("my notes\n", encoding="utf-8")
    args: dict[str, tuple[object, ...]] = {
        "review": ("review", path, "--cortex", "interstitial_fibrosis=0.3", "--pathologist", "R"),
        "compare": ("compare", path, demo_result_template),
        "workstation": ("workstation", path),
        "verify": ("verify", path),
        "confirm": ("confirm", path, "--pathologist", "Dr A"),
    }
    proc = lnpath_cli(*args[command])
    assert proc.returncode == 3, proc.stderr
    line = assert_one_line_error(proc, str(path), "a file, not a result folder")
    assert "unreadable" not in line


# --------------------------------------------------------------------------------------------
# key files


def _keys(tmp_path: Path) -> Path:
    """A real key pair written by keygen, and the bad key files a user might pass instead."""
    keys = tmp_path / "keys"
    keys.mkdir()
    proc = lnpath_cli("keygen", "--out", keys / "dr", "--pathologist", "Dr A")
    assert proc.returncode == 0, proc.stderr
    (keys / "empty.pem").write_bytes(b"")
    (keys / "notes.pem").write_text("my key\n", encoding="utf-8")
    for kind in ("PRIVATE", "PUBLIC"):  # a header, then no key: MalformedFraming or ASN.1
        (keys / f"damaged-{kind.lower()}.pem").write_text(
            f"-----BEGIN {kind} KEY-----\nAAAA\n-----END {kind} KEY-----\n", encoding="ascii"
        )
    (keys / "unframed.pem").write_text("-----BEGIN PRIVATE KEY-----\nAAAA\n", encoding="ascii")
    for path in keys.iterdir():
        path.chmod(0o600)
    return keys


PRIVATE_CASES = {
    "empty.pem": "the private key file is empty",
    "notes.pem": "not a PEM key",
    "damaged-private.pem": "not a PEM private key",
    "unframed.pem": "not a PEM private key",
    "dr.pub.pem": "is a public key; sign with its private half (dr.pem)",
}
PUBLIC_CASES = {
    "empty.pem": "the public key file is empty",
    "notes.pem": "not a PEM key",
    "damaged-public.pem": "not a PEM public key",
    "dr.pem": "is a private key; verify with its public half (dr.pub.pem)",
}


@pytest.mark.parametrize("command", ["confirm", "addendum"])
def test_a_bad_private_key_file_is_one_short_line(
    command: str,
    demo_result_template: Path,
    confirmed_template: Path,
    copy_result: Callable[..., Path],
    tmp_path: Path,
) -> None:
    """A damaged PEM printed cryptography's "Unable to load PEM file. See https://..." paragraph,
    and a zero-byte key file was not called empty."""
    keys = _keys(tmp_path)
    folder = copy_result(confirmed_template if command == "addendum" else demo_result_template)
    before = file_hashes(folder)
    extra = ("--note", "agree") if command == "confirm" else ("--text", "later")
    for name, needle in PRIVATE_CASES.items():
        proc = lnpath_cli(command, folder, "--pathologist", "Dr A", *extra, "--key", keys / name)
        assert proc.returncode == 2, proc.stderr
        line = assert_one_line_error(proc, str(keys / name), needle)
        assert "http" not in line and "MalformedFraming" not in line and len(line) < 200
    assert file_hashes(folder) == before


def test_a_bad_public_key_file_is_one_short_line(confirmed_template: Path, tmp_path: Path) -> None:
    keys = _keys(tmp_path)
    for name, needle in PUBLIC_CASES.items():
        proc = lnpath_cli("verify", confirmed_template, "--public-key", keys / name)
        assert proc.returncode == 2, proc.stderr
        line = assert_one_line_error(proc, str(keys / name), needle)
        assert "http" not in line and "MalformedFraming" not in line and len(line) < 200


# --------------------------------------------------------------------------------------------
# patient ids


@pytest.mark.parametrize("patient", ["P1\nP2", "P1\u2028P2", "P1\x1b[2J", "P\u202e1"])
def test_a_patient_id_must_be_one_line(patient: str, tmp_path: Path) -> None:
    """A pathologist's name must be one line of plain text; a patient id was stored as given."""
    out = tmp_path / "r"
    proc = lnpath_cli("score", DEMO, "--patient-id", patient, "--out", out)
    assert proc.returncode == 2, proc.stderr
    assert_one_line_error(proc, "score_slide", "the patient id holds", "one line of plain text")
    assert not out.exists()


def test_a_manifest_patient_id_must_be_one_line(tmp_path: Path) -> None:
    manifest = tmp_path / "manifest.csv"
    manifest.write_text(
        f'slide_id,path,patient_id,timepoint\ns1,{DEMO},P1,baseline\ns2,{DEMO},"P2\nP3",1\n',
        encoding="utf-8",
    )
    out = tmp_path / "batch"
    proc = lnpath_cli("batch", manifest, "--out", out)
    assert proc.returncode == 2, proc.stderr
    assert_one_line_error(proc, str(manifest), "line 3", "the patient id holds", "U+000A")
    assert not out.exists()
