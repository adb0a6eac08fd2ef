"""A sweep of the options added lately (addendum --key, verify --public-key, batch manifests,
train-lesions --slide-root): each bad value is one line, and nothing already written changes.

Each case below once either named the wrong thing ("the private key is readable by other users"
of a public key, "no such manifest file" of a folder) or left files behind (a mistyped result
path got its missing parent folders and a lock file).
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path

import pytest

from .conftest import assert_one_line_error, file_hashes, lnpath_cli

DEMO = Path(__file__).resolve().parents[1] / "examples"


@pytest.fixture
def key_pair(tmp_path: Path) -> tuple[Path, Path]:
    """A fresh Ed25519 key pair from ``lnpath keygen`` (private 0600, public 0644)."""
    proc = lnpath_cli("keygen", "--out", tmp_path / "keys" / "lab")
    assert proc.returncode == 0, proc.stderr
    return tmp_path / "keys" / "lab.pem", tmp_path / "keys" / "lab.pub.pem"


def _key_variant(kind: str, keys: tuple[Path, Path], tmp_path: Path) -> Path:
    private, public = keys
    if kind == "public":
        return public
    if kind == "folder":
        return private.parent
    path = tmp_path / f"{kind}.pem"
    path.write_bytes(private.read_bytes() if kind == "world-readable" else b"not a key\n")
    path.chmod(0o644 if kind == "world-readable" else 0o600)
    return path


@pytest.mark.parametrize(
    ("kind", "needle"),
    [
        ("public", "is a public key"),
        ("folder", "is a folder"),
        ("world-readable", "readable by other users"),
        ("corrupt", "not a PEM key"),
    ],
)
@pytest.mark.parametrize("command", ["addendum", "confirm"])
def test_a_signing_key_that_cannot_sign(
    command: str,
    kind: str,
    needle: str,
    key_pair: tuple[Path, Path],
    confirmed_template: Path,
    demo_result_template: Path,
    copy_result: Callable[..., Path],
    tmp_path: Path,
) -> None:
    """A public key once got "readable by other users (chmod 600)", which would not help."""
    key = _key_variant(kind, key_pair, tmp_path)
    folder = copy_result(confirmed_template if command == "addendum" else demo_result_template)
    before = file_hashes(folder)
    args = ["--text", "more"] if command == "addendum" else []
    proc = lnpath_cli(command, folder, "--pathologist", "Dr A", *args, "--key", key)
    assert_one_line_error(proc, str(key), needle)
    assert file_hashes(folder) == before


def test_verify_with_the_private_key(key_pair: tuple[Path, Path], confirmed_template: Path) -> None:
    before = file_hashes(confirmed_template)
    proc = lnpath_cli("verify", confirmed_template, "--public-key", key_pair[0])
    assert_one_line_error(proc, "is a private key", "lab.pub.pem")
    assert file_hashes(confirmed_template) == before


@pytest.mark.parametrize(
    "args",
    [
        ("review", "--pathologist", "Dr R", "--comment", "c"),
        ("confirm", "--pathologist", "Dr A"),
        ("addendum", "--pathologist", "Dr A", "--text", "t"),
    ],
    ids=lambda a: a[0],
)
def test_a_mistyped_result_path_leaves_nothing_behind(
    args: tuple[str, ...], tmp_path: Path
) -> None:
    """It once made the missing parent folders and a ``.NAME.lock`` file before refusing."""
    typo = tmp_path / "no-such-batch" / "s1"
    proc = lnpath_cli(args[0], typo, *args[1:])
    assert_one_line_error(proc, str(typo), "result folder not found")
    assert list(tmp_path.iterdir()) == []


def test_batch_of_a_manifest_that_is_a_folder(tmp_path: Path) -> None:
    manifest = tmp_path / "manifest.csv"
    manifest.mkdir()
    out = tmp_path / "batch"
    proc = lnpath_cli("batch", manifest, "--out", out)
    assert_one_line_error(proc, str(manifest), "is a folder")
    assert not out.exists()


def test_batch_glomeruli_that_is_a_folder_is_named_so(tmp_path: Path) -> None:
    """The slide's failure said "no such glomeruli file" of an existing folder."""
    outlines = tmp_path / "outlines.geojson"
    outlines.mkdir()
    manifest = tmp_path / "m.csv"
    manifest.write_text(
        "slide_id,path,patient_id,timepoint,glomeruli\n"
        f"s1,{DEMO / 'demo_biopsy.tiff'},P1,0,{outlines}\n"
    )
    proc = lnpath_cli("batch", manifest, "--out", tmp_path / "batch", "--workers", "1")
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    with (tmp_path / "batch" / "batch_status.csv").open() as handle:
        (row,) = csv.DictReader(handle)
    assert row["outcome"] == "failed"
    assert row["error"] == f"{outlines}: is a folder, not a glomeruli file"


@pytest.mark.parametrize("kind", ["missing", "file"])
def test_train_lesions_slide_root_that_is_not_a_folder(
    kind: str, confirmed_template: Path, copy_result: Callable[..., Path], tmp_path: Path
) -> None:
    """It once said "its slide is not there nor in FILE (moved?)" of a slide that is there."""
    root = tmp_path / "slides"
    if kind == "file":
        root.write_text("not a folder")
    folder = copy_result(confirmed_template)
    before = file_hashes(folder)
    out = tmp_path / "model"
    proc = lnpath_cli("train-lesions", "--from-results", folder, "--slide-root", root, "--out", out)
    assert_one_line_error(proc, str(root), "--slide-root", "not a folder")
    assert not out.exists()
    assert file_hashes(folder) == before
