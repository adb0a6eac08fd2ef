"""The house's rules (ARCHITECTURE.md): floors enforced by import-linter, a light command line,
one fine-tuning recipe for the CLI and the API, and result folders of the previous version."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import lnpath
from lnpath.cli import main

ROOT = Path(__file__).resolve().parents[1]
OLD_RESULT = Path(__file__).parent / "fixtures" / "result-0.1.0-confirmed"
MAX_MODULE_LINES = 450


def _lint_imports(config: Path) -> subprocess.CompletedProcess[str]:
    """``lint-imports`` on a copy of the package whose contracts are in ``config``."""
    return subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from importlinter.cli import lint_imports_command;"
            " sys.exit(lint_imports_command())",
            "--config",
            str(config),
            "--no-cache",
        ],
        cwd=config.parent,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_import_contracts_hold() -> None:
    run = _lint_imports(ROOT / "pyproject.toml")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "0 broken" in run.stdout


def test_a_planted_violation_breaks_the_floors(tmp_path: Path) -> None:
    """Scoring importing a slide reader must fail the contracts, so the check can fail."""
    shutil.copytree(ROOT / "lnpath", tmp_path / "lnpath")
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    (tmp_path / "lnpath" / "scoring" / "planted.py").write_text(
        "from lnpath.wsi.slide import open_slide\n", encoding="utf-8"
    )
    run = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from importlinter.cli import lint_imports_command;"
            " sys.exit(lint_imports_command())",
            "--no-cache",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env={"PYTHONPATH": str(tmp_path), "PATH": ""},
    )
    assert run.returncode != 0
    assert "lnpath.scoring.planted -> lnpath.wsi.slide" in run.stdout


def test_help_imports_nothing_heavy() -> None:
    probe = (
        "import sys\n"
        "from lnpath.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = ('numpy', 'pandas', 'openslide', 'torch', 'scipy', 'dask', 'shapely', 'rich')\n"
        "print('HEAVY:' + ','.join(m for m in heavy if m in sys.modules))\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120
    )
    assert run.stdout.strip().splitlines()[-1] == "HEAVY:"


def test_sign_out_and_scoring_from_outlines_do_not_import_torch(
    tmp_path: Path, confirmed_template: Path
) -> None:
    """review/confirm/verify/addendum and score_slide --glomeruli start without torch's seconds."""
    folder = tmp_path / "r"
    shutil.copytree(confirmed_template, folder, symlinks=True)
    demo = ROOT / "examples" / "demo_biopsy.tiff"
    outlines = ROOT / "examples" / "demo_biopsy_glomeruli.geojson"
    probe = (
        "import sys, lnpath\n"
        f"lnpath.verify({str(folder)!r})\n"
        f"lnpath.add_addendum({str(folder)!r}, 'EM received', pathologist='Dr B')\n"
        f"lnpath.score_slide({str(demo)!r}, out={str(tmp_path / 's')!r}, "
        f"glomeruli={str(outlines)!r}, progress=False)\n"
        "print('TORCH:' + str('torch' in sys.modules))\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=600, cwd=tmp_path
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip().splitlines()[-1] == "TORCH:False"


def test_no_module_is_too_long() -> None:
    long = {
        str(path.relative_to(ROOT)): n
        for path in (ROOT / "lnpath").rglob("*.py")
        if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES
    }
    assert long == {}


def test_every_public_name_still_imports() -> None:
    for name in lnpath.__all__:
        assert getattr(lnpath, name) is not None


def test_cli_and_api_fine_tune_with_the_same_recipe(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``lnpath train-glomeruli`` must train what ``fine_tune_config`` describes (the base model's
    stain augmentation included), not a recipe of its own."""
    from lnpath.models.store import load_model
    from lnpath.training import fine_tuning as training

    seen: dict[str, Any] = {}

    def capture(slides: Any, annotations: Any, out: Any, **kwargs: Any) -> Path:
        seen.update(kwargs)
        raise SystemExit(0)

    monkeypatch.setattr(training, "fine_tune", capture)
    geojson = ROOT / "examples" / "demo_biopsy_glomeruli.geojson"
    slide = ROOT / "examples" / "demo_biopsy.tiff"
    argv = ["train-glomeruli", "--slides", str(slide), "--annotations", str(geojson)]
    with pytest.raises(SystemExit):
        main([*argv, "--out", str(tmp_path / "m"), "--iterations", "40", "--lr", "0.002"])
    expected = training.fine_tune_config(load_model("glomeruli-unet-pas"), iterations=40, lr=0.002)
    assert seen["config"] == expected
    assert seen["config"].density_range == tuple(expected.density_range) != (1.0, 1.0)


def test_a_result_written_by_the_previous_version_still_reads(tmp_path: Path) -> None:
    """A confirmed result folder from lnpath 0.1.0 (main 062bd2c, checked in) reads, verifies and
    compares; moving its slide does not stop any of that."""
    folder = tmp_path / "old"
    shutil.copytree(OLD_RESULT, folder)
    result = lnpath.SlideResult.load(folder)
    assert result.to_dict()["status"] == "confirmed"
    assert lnpath.verify(folder).status == "confirmed"
    score = result.score
    assert score.adequacy.n_glomeruli == 3
    endpoint = lnpath.compare(folder, folder)
    assert endpoint.to_dict()["status"] == "not_evaluable"
    data = json.loads((folder / "result.json").read_text(encoding="utf-8"))
    assert data["confirmation"]["pathologist"] == "Dr A. Renal"
