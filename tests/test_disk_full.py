"""A full disk gets one line and loses nothing (issue #20).

Two real ways to make writes fail, neither a mock: a tiny tmpfs that fills up (needs root, as
in CI's container; skipped otherwise), and ``RLIMIT_FSIZE``, under which the kernel refuses to
grow a file past a size (EFBIG, "File too large") for any user. Each time the earlier result
must be byte for byte what it was, ``lnpath verify`` must pass, and no temporary folder or
``.old`` copy may be left beside it.
"""

from __future__ import annotations

import os
import resource
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from .conftest import assert_one_line_error, file_hashes, lnpath_cli


def _du(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def _leftovers(parent: Path) -> list[str]:
    """What a write left beside its target: temp files and folders, ``.old`` copies."""
    return sorted(p.name for p in parent.iterdir() if p.name.endswith((".tmp", ".old")))


def _under_file_size_limit(limit: int, *args: object) -> subprocess.CompletedProcess[str]:
    """``python ARGS`` where no file may grow past ``limit`` bytes."""

    def limited() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a failed write, not a killed process
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return subprocess.run(
        [sys.executable, *map(str, args)],
        capture_output=True,
        text=True,
        preexec_fn=limited,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
        check=False,
    )


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Callable[[int], Path]]:
    """Mount tmpfs file systems of a given size (in bytes) under tmp_path; unmount after."""
    mounted: list[Path] = []

    def mount(size: int) -> Path:
        point = tmp_path / f"disk{len(mounted)}"
        point.mkdir()
        proc = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(point)],
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            pytest.skip(f"cannot mount a small tmpfs here (needs root): {proc.stderr.strip()}")
        mounted.append(point)
        return point

    yield mount
    for point in mounted:
        subprocess.run(["umount", "-l", str(point)], check=False)


def _full_copy(template: Path, small_disk: Callable[[int], Path]) -> Path:
    """``template`` copied onto a disk with room for it and little else."""
    disk = small_disk(_du(template) + 512 * 1024)
    folder = disk / "r"
    shutil.copytree(template, folder)
    return folder


def test_review_on_a_full_disk(
    demo_result_template: Path, small_disk: Callable[[int], Path]
) -> None:
    folder = _full_copy(demo_result_template, small_disk)
    before = file_hashes(folder)
    proc = lnpath_cli("review", folder, "--cortex", "interstitial_fibrosis=0.3", "--reviewer", "R")
    assert_one_line_error(proc, str(folder), "no space left", "unchanged")
    assert file_hashes(folder) == before
    assert _leftovers(folder.parent) == []
    assert lnpath_cli("verify", folder).returncode == 0


def test_score_overwrite_on_a_full_disk(
    repo_dir: Path, demo_result_template: Path, small_disk: Callable[[int], Path]
) -> None:
    folder = _full_copy(demo_result_template, small_disk)
    before = file_hashes(folder)
    proc = lnpath_cli(
        "score",
        repo_dir / "examples" / "demo_biopsy.tiff",
        "--glomeruli",
        repo_dir / "examples" / "demo_biopsy_glomeruli.geojson",
        "--out",
        folder,
        "--overwrite",
    )
    assert_one_line_error(proc, str(folder), "no space left")
    assert file_hashes(folder) == before
    assert _leftovers(folder.parent) == []


@pytest.mark.parametrize(
    "command",
    [
        ("review", "--cortex", "interstitial_fibrosis=0.3", "--reviewer", "Dr R"),
        ("confirm", "--pathologist", "Dr A", "--note", "agree"),
    ],
    ids=["review", "confirm"],
)
def test_a_file_too_large_keeps_the_result(
    command: tuple[str, ...], demo_result_template: Path, copy_result: Callable[..., Path]
) -> None:
    folder = copy_result(demo_result_template)
    before = file_hashes(folder)
    proc = _under_file_size_limit(100_000, "-m", "lnpath", command[0], folder, *command[1:])
    assert_one_line_error(proc, str(folder), "file too large", "unchanged")
    assert file_hashes(folder) == before
    assert _leftovers(folder.parent) == []
    assert lnpath_cli("verify", folder).returncode == 0


def test_keygen_leaves_no_half_key_pair(tmp_path: Path) -> None:
    """A half-written private key would also make the next keygen refuse: "already exists"."""
    stem = tmp_path / "keys" / "lab"
    proc = _under_file_size_limit(64, "-m", "lnpath", "keygen", "--out", stem)
    assert_one_line_error(proc, "key pair", "file too large")
    assert sorted(p.name for p in stem.parent.iterdir()) == []
    proc = lnpath_cli("keygen", "--out", stem)
    assert proc.returncode == 0, proc.stderr


def test_model_weights_on_a_full_disk(tmp_path: Path) -> None:
    """torch.save into a path fails as a RuntimeError naming no file; the model folder stays."""
    script = (
        "import lnpath\n"
        "from lnpath.models.store import save_model\n"
        "from lnpath.nn.unet import UNet, UNetConfig\n"
        "try:\n"
        f"    save_model({str(tmp_path / 'model')!r}, UNet(UNetConfig()), {{}})\n"
        "except lnpath.OutputError as exc:\n"
        "    print('refused:', exc)\n"
    )
    proc = _under_file_size_limit(100_000, "-c", script)
    assert proc.returncode == 0, proc.stderr
    assert "refused:" in proc.stdout and "File too large" in proc.stdout, proc.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == []
