"""A signing key names its pathologist: nobody signs as "Dr B" with Dr A's key unnoticed.

Every test starts from the demo slide's real result folder (``conftest.py``) and drives the CLI
(or the Python API where it says so), as a pathologist would. Keys made before keys had names
keep working, and ``verify`` says that they cannot vouch for a name.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

import lnpath
from lnpath.core.errors import InputError

from .conftest import assert_one_line_error, file_hashes, lnpath_cli


def _keygen(stem: Path, *name: str) -> None:
    args = ("--pathologist", *name) if name else ()
    proc = lnpath_cli("keygen", "--out", stem, *args)
    assert proc.returncode == 0, proc.stderr


def _unnamed_copy(key: Path, copy: Path) -> Path:
    """The key with its name line taken out: what a forger does to sign as someone else."""
    lines = key.read_bytes().splitlines(keepends=True)
    assert lines[0].startswith(b"Pathologist: ")
    copy.write_bytes(b"".join(lines[1:]))
    copy.chmod(0o600)
    return copy


def _untouched(folder: Path) -> Callable[[], None]:
    """A check that the folder and its parent are byte for byte as they are now (no lock)."""
    hashes, beside = file_hashes(folder), sorted(p.name for p in folder.parent.iterdir())

    def check() -> None:
        assert file_hashes(folder) == hashes
        assert sorted(p.name for p in folder.parent.iterdir()) == beside

    return check


@pytest.fixture
def dr_a(tmp_path: Path) -> Path:
    """The stem of a key pair made by ``lnpath keygen --pathologist "Dr A. Renal"``."""
    stem = tmp_path / "keys" / "dr_a"
    _keygen(stem, "Dr A. Renal")
    return stem


def test_keygen_names_the_pathologist_in_both_files_the_loaders_still_read(dr_a: Path) -> None:
    from cryptography.hazmat.primitives import serialization

    private, public = dr_a.with_name("dr_a.pem"), dr_a.with_name("dr_a.pub.pem")
    for path in (private, public):
        assert path.read_text().startswith("Pathologist: Dr A. Renal\n-----BEGIN ")
    key = serialization.load_pem_private_key(private.read_bytes(), password=None)
    assert serialization.load_pem_public_key(public.read_bytes()) == key.public_key()
    proc = lnpath_cli("keygen", "--out", dr_a.with_name("dr_b"), "--pathologist", "  Dr   B  ")
    assert proc.returncode == 0, proc.stderr
    assert "of Dr B." in " ".join(proc.stdout.split())
    assert dr_a.with_name("dr_b.pub.pem").read_text().startswith("Pathologist: Dr B\n")


@pytest.mark.parametrize(
    ("name", "said"),
    [
        ("Dr A\nDr B", "one line"),
        ("Dr A\u2028Dr B", "one line"),
        ("Dr \x1b[31mA", "control"),
        ("Dr \u202eA", "text-direction"),
        ("Dr -----BEGIN", "-----"),
        ("   ", "empty"),
    ],
)
def test_keygen_refuses_a_name_that_is_not_one_line_of_plain_text(
    name: str, said: str, tmp_path: Path
) -> None:
    assert_one_line_error(
        lnpath_cli("keygen", "--out", tmp_path / "k", "--pathologist", name), said
    )
    assert not list(tmp_path.glob("k*"))


def test_keygen_help_says_unnamed_keys_cannot_be_checked() -> None:
    proc = lnpath_cli("keygen", "--help")
    assert proc.returncode == 0
    assert "cannot be checked against the signer" in " ".join(proc.stdout.split())


def test_confirm_and_addendum_refuse_a_named_key_of_another_pathologist(
    demo_result_template: Path, copy_result: Callable[..., Path], dr_a: Path
) -> None:
    folder = copy_result(demo_result_template)
    untouched = _untouched(folder)
    key = dr_a.with_name("dr_a.pem")
    line = assert_one_line_error(
        lnpath_cli("confirm", folder, "--pathologist", "Dr B", "--key", key),
        "Dr A. Renal",
        "Dr B",
    )
    assert lnpath_cli("confirm", folder, "--pathologist", "Dr B", "--key", key).returncode == 2
    assert "nothing was written" in line
    untouched()
    with pytest.raises(InputError, match=re.escape("Dr A. Renal, not of Dr B")):
        lnpath.confirm(folder, pathologist="Dr B", key=key)
    untouched()
    # the same person, typed with other spacing and case, signs
    proc = lnpath_cli("confirm", folder, "--pathologist", "dr  a. RENAL", "--key", key)
    assert proc.returncode == 0, proc.stderr
    untouched = _untouched(folder)
    proc = lnpath_cli("addendum", folder, "--pathologist", "Dr B", "--text", "EM", "--key", key)
    assert proc.returncode == 2
    assert_one_line_error(proc, "Dr A. Renal", "Dr B")
    untouched()
    with pytest.raises(InputError, match=re.escape("Dr A. Renal, not of Dr B")):
        lnpath.add_addendum(folder, "EM", pathologist="Dr B", key=key)
    untouched()
    lnpath.add_addendum(folder, "EM: deposits", pathologist="Dr A. Renal", key=key)
    proc = lnpath_cli("verify", folder, "--public-key", dr_a.with_name("dr_a.pub.pem"))
    assert proc.returncode == 0, proc.stderr
    said = " ".join(proc.stdout.split())
    assert "signature of addendum 1" in said and "signer's name (Dr A. Renal" in said


def test_verify_fails_a_confirmation_signed_as_another_name_with_a_named_key(
    demo_result_template: Path, copy_result: Callable[..., Path], dr_a: Path
) -> None:
    folder = copy_result(demo_result_template)
    forged = _unnamed_copy(dr_a.with_name("dr_a.pem"), dr_a.with_name("forged.pem"))
    proc = lnpath_cli("confirm", folder, "--pathologist", "Dr B", "--key", forged)
    assert proc.returncode == 0, proc.stderr
    proc = lnpath_cli("verify", folder, "--public-key", dr_a.with_name("dr_a.pub.pem"))
    assert proc.returncode == 3
    assert_one_line_error(proc, "the confirmation was signed as Dr B", "key of Dr A. Renal")
    with pytest.raises(lnpath.ResultError, match="signed as Dr B"):
        lnpath.verify(folder, public_key=dr_a.with_name("dr_a.pub.pem"))


def test_verify_fails_an_addendum_signed_as_another_name_with_a_named_key(
    demo_result_template: Path, copy_result: Callable[..., Path], dr_a: Path
) -> None:
    folder = copy_result(demo_result_template)
    lnpath.confirm(folder, pathologist="Dr A. Renal", key=dr_a.with_name("dr_a.pem"))
    forged = _unnamed_copy(dr_a.with_name("dr_a.pem"), dr_a.with_name("forged.pem"))
    lnpath.add_addendum(folder, "EM: none", pathologist="Dr B", key=forged)
    proc = lnpath_cli("verify", folder, "--public-key", dr_a.with_name("dr_a.pub.pem"))
    assert proc.returncode == 3
    assert_one_line_error(proc, "addendum 1 was signed as Dr B", "key of Dr A. Renal")


def test_unnamed_keys_of_before_sign_and_verify_as_they_did_and_say_so(
    demo_result_template: Path, copy_result: Callable[..., Path], tmp_path: Path
) -> None:
    folder = copy_result(demo_result_template)
    stem = tmp_path / "keys" / "old"
    _keygen(stem)  # no --pathologist: the key file is what lnpath wrote before names
    assert stem.with_name("old.pub.pem").read_text().startswith("-----BEGIN PUBLIC KEY-----")
    proc = lnpath_cli("confirm", folder, "--pathologist", "Dr B", "--key", f"{stem}.pem")
    assert proc.returncode == 0, proc.stderr
    proc = lnpath_cli(
        "addendum", folder, "--pathologist", "Dr C", "--text", "EM", "--key", f"{stem}.pem"
    )
    assert proc.returncode == 0, proc.stderr
    proc = lnpath_cli("verify", folder, "--public-key", stem.with_name("old.pub.pem"))
    assert proc.returncode == 0, proc.stderr
    said = " ".join(proc.stdout.split())
    assert said.startswith("OK:") and "old.pub.pem names no pathologist" in said
    assert "signature of addendum 1" in said


def test_a_named_signer_is_escaped_in_the_report(
    demo_result_template: Path, copy_result: Callable[..., Path], tmp_path: Path
) -> None:
    folder = copy_result(demo_result_template)
    name = "Dr <b>O'Neil</b> & Co"
    stem = tmp_path / "keys" / "oneil"
    _keygen(stem, name)
    proc = lnpath_cli("confirm", folder, "--pathologist", name, "--key", f"{stem}.pem")
    assert proc.returncode == 0, proc.stderr
    report = (folder / "report.html").read_text(encoding="utf-8")
    assert "<b>O'Neil</b>" not in report
    assert "signed by <bdi>Dr &lt;b&gt;O&#39;Neil&lt;/b&gt; &amp; Co</bdi>" in report
    assert lnpath_cli("verify", folder, "--public-key", f"{stem}.pub.pem").returncode == 0


def _edited(key: Path, copy: Path, edit: Callable[[bytes], bytes]) -> Path:
    copy.write_bytes(edit(key.read_bytes()))
    copy.chmod(0o600)
    return copy


@pytest.mark.parametrize(
    ("edit", "says"),
    [
        (lambda pem: b"Pathologist: Dr B. Other\n" + pem, "2 Pathologist: lines"),
        (lambda pem: pem.split(b"\n", 1)[1] + b"Pathologist: Dr A. Renal\n", "after -----BEGIN"),
    ],
)
def test_a_key_whose_name_was_made_ambiguous_by_hand_is_refused(
    edit: Callable[[bytes], bytes], says: str, dr_a: Path, tmp_path: Path
) -> None:
    from lnpath.results.keyname import key_pathologist

    for suffix in (".pem", ".pub.pem"):
        copy = _edited(dr_a.with_name(f"dr_a{suffix}"), tmp_path / f"copy{suffix}", edit)
        with pytest.raises(InputError, match=says):
            key_pathologist(copy)  # the first line named one, a reader of the last another


def test_text_before_the_key_cannot_push_its_name_out_of_sight(dr_a: Path, tmp_path: Path) -> None:
    from lnpath.results.keyname import key_pathologist

    padded = _edited(
        dr_a.with_name("dr_a.pem"), tmp_path / "padded.pem", lambda pem: b"#" * 9000 + b"\n" + pem
    )
    assert key_pathologist(padded) == "Dr A. Renal"  # read as unnamed (signs for anyone) before
    indented = _edited(padded, tmp_path / "indented.pem", lambda pem: b"  " + pem.lstrip(b"#\n"))
    assert key_pathologist(indented) == "Dr A. Renal"


def test_a_name_typed_in_another_unicode_form_is_the_same_pathologist() -> None:
    from lnpath.results.keyname import same_pathologist

    assert same_pathologist("Dr Jos\u00e9 N\u00fa\u00f1ez", "dr jose\u0301 nu\u0301n\u0303ez ")
    assert not same_pathologist("Dr Ann Smith", "Dr \u0410nn Smith")  # Cyrillic A: another name
