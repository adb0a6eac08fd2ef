"""Exit codes a script can act on: 3 a folder that fails its checks, 4 a step the sign-out rules
refuse. ``lnpath confirm`` exited 3 for an index not ready to sign, the code ``verify`` gives a
tampered folder, so a script running sign-outs could not tell the two apart."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

import lnpath

from .conftest import assert_one_line_error, file_hashes, lnpath_cli


def _incomplete(folder: Path) -> None:
    """Clear the demo's "not evaluable" mark on tubular atrophy: its index is not ready to sign."""
    lnpath.review(folder, pathologist="Dr R", biopsy={"not_evaluable": {"tubular_atrophy": None}})


def test_not_ready_to_sign_exits_4_and_a_tampered_folder_still_exits_3(
    demo_result_template: Path, copy_result: Callable[..., Path]
) -> None:
    folder = copy_result(demo_result_template)
    _incomplete(folder)
    before = file_hashes(folder)
    proc = lnpath_cli("confirm", folder, "--pathologist", "Dr A")
    assert proc.returncode == 4, proc.stderr
    assert_one_line_error(proc, "cannot sign an incomplete index; not assessed: tubular_atrophy")
    assert file_hashes(folder) == before
    with pytest.raises(lnpath.SignOutRefused, match="incomplete index") as refused:
        lnpath.confirm(folder, pathologist="Dr A")
    assert isinstance(refused.value, lnpath.ResultError)  # `except ResultError` still catches it

    findings = folder / "findings.csv"
    findings.write_bytes(findings.read_bytes().replace(b"False", b"True", 1))
    proc = lnpath_cli("confirm", folder, "--pathologist", "Dr A")
    assert proc.returncode == 3, proc.stderr  # tampered beats not ready: verify runs first
    assert_one_line_error(proc, "findings.csv")
    assert lnpath_cli("verify", folder).returncode == 3
    with pytest.raises(lnpath.ResultError, match=r"findings\.csv") as tampered:
        lnpath.confirm(folder, pathologist="Dr A")
    assert not isinstance(tampered.value, lnpath.SignOutRefused)


@pytest.mark.parametrize(
    ("template", "args", "words"),
    [
        ("confirmed", ("confirm", "--pathologist", "Dr B"), "is already confirmed by Dr A"),
        ("confirmed", ("review", "--comment", "x", "--pathologist", "Dr B"), "--supersede"),
        ("draft", ("addendum", "--pathologist", "Dr B", "--text", "EM"), "is not signed out"),
    ],
    ids=["confirm twice", "review a confirmed result", "addendum to a draft"],
)
def test_every_sign_out_refusal_exits_4_and_writes_nothing(
    template: str,
    args: tuple[str, ...],
    words: str,
    demo_result_template: Path,
    confirmed_template: Path,
    copy_result: Callable[..., Path],
) -> None:
    folder = copy_result(confirmed_template if template == "confirmed" else demo_result_template)
    before = file_hashes(folder)
    proc = lnpath_cli(args[0], folder, *args[1:])
    assert proc.returncode == 4, proc.stderr
    assert_one_line_error(proc, words)
    assert file_hashes(folder) == before
    assert lnpath_cli("verify", folder).returncode == 0


def test_bad_options_at_sign_out_stay_exit_2(
    demo_result_template: Path, copy_result: Callable[..., Path]
) -> None:
    folder = copy_result(demo_result_template)
    proc = lnpath_cli("review", folder, "--pathologist", "Dr R", "--class-reason", "EM")
    assert proc.returncode == 2, proc.stderr
    assert_one_line_error(proc, "give the class with --class")
    proc = lnpath_cli("confirm", folder, "--pathologist", " ")
    assert proc.returncode == 2, proc.stderr
    assert_one_line_error(proc, "pathologist")


def test_help_and_readme_list_the_same_exit_codes(repo_dir: Path) -> None:
    from lnpath.cli import EXIT_CODES

    proc = lnpath_cli("--help")
    assert proc.returncode == 0, proc.stderr
    assert EXIT_CODES in proc.stdout
    listed = re.findall(r"^  (\d+) ", EXIT_CODES, flags=re.M)
    readme = (repo_dir / "README.md").read_text(encoding="utf-8")
    assert re.findall(r"^\| (\d+) \|", readme, flags=re.M) == listed
    assert listed == ["0", "1", "2", "3", "4", "130"]
    assert lnpath.SignOutRefused.exit_code == 4 and lnpath.ResultError.exit_code == 3


@pytest.mark.parametrize(
    "args",
    [
        ("confirm", "--pathologist", "Dr B"),
        ("review", "--comment", "x", "--pathologist", "Dr B"),
        ("addendum", "--pathologist", "Dr B", "--text", "EM"),
        ("score", "{slide}", "--glomeruli", "{outlines}", "--overwrite", "--out"),
    ],
    ids=["confirm", "review", "addendum", "score over it"],
)
def test_a_tampered_confirmed_folder_exits_3_never_4(
    args: tuple[str, ...],
    confirmed_template: Path,
    copy_result: Callable[..., Path],
    repo_dir: Path,
) -> None:
    folder = copy_result(confirmed_template)
    findings = folder / "findings.csv"
    findings.write_bytes(findings.read_bytes().replace(b"False", b"True", 1))
    before = file_hashes(folder)
    examples = repo_dir / "examples"
    filled = [
        a.format(
            slide=examples / "demo_biopsy.tiff", outlines=examples / "demo_biopsy_glomeruli.geojson"
        )
        for a in args
    ]
    argv = [*filled, folder] if filled[0] == "score" else [filled[0], folder, *filled[1:]]
    proc = lnpath_cli(*argv)
    assert proc.returncode == 3, proc.stderr  # tampering is never a sign-out rule's refusal
    assert_one_line_error(proc, "findings.csv")
    assert file_hashes(folder) == before


def test_ctrl_c_right_after_the_result_is_written_says_so(repo_dir: Path, tmp_path: Path) -> None:
    """Ctrl-C as the result folder lands (while the slide is closed) once ended in a
    segmentation fault, no message and exit -11: openslide-python marks a handle closed in a
    Python callback, so the KeyboardInterrupt left it to be freed again. Now the command exits
    130 and says the result was written in full (it was, and verifies)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "r"
    demo = repo_dir / "examples"
    outlines = ["--glomeruli", str(demo / "demo_biopsy_glomeruli.geojson")]
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "lnpath",
            "score",
            demo / "demo_biopsy.tiff",
            "--out",
            out,
            *outlines,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "LNPATH_PROGRESS": "0"},
    )
    while proc.poll() is None and not (out / "result.json").exists():
        time.sleep(0.001)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert "Fatal Python error" not in err and "Traceback" not in err, err
    assert proc.returncode in (0, 130), (proc.returncode, err)
    if proc.returncode == 130:
        assert f"interrupted after {out} was written in full" in err.splitlines()[-1], err
    assert lnpath.verify(out).revision == 1  # raises unless intact
