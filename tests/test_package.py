"""The package, its public API and its CLI entry points."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import lnpath


def test_public_names_resolve() -> None:
    for name in lnpath.__all__:
        assert getattr(lnpath, name) is not None, name


def test_no_public_name_is_shadowed_by_a_submodule() -> None:
    # Importing a submodule binds it on the package: a module named like an export (once,
    # lnpath.review) would replace the function depending on what ran first. Checked in a fresh
    # interpreter that imports every submodule before touching the exports. The one export that
    # shares its package's name, lnpath.workstation, is a callable package for that reason.
    code = (
        "import importlib, inspect, pkgutil, lnpath\n"
        "for m in pkgutil.walk_packages(lnpath.__path__, 'lnpath.'):\n"
        "    if not m.name.endswith('__main__'):\n"
        "        importlib.import_module(m.name)\n"
        "bad = [n for n in lnpath.__all__\n"
        "       if inspect.ismodule(x := getattr(lnpath, n)) and not callable(x)]\n"
        "assert not bad, bad\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr


def test_cli_version_and_help() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "lnpath", "--version"], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == f"lnpath {lnpath.__version__}"


def test_ci_runs_the_readme_test_command(repo_dir: Path) -> None:
    ci = (repo_dir / ".ci" / "run").read_text()
    readme = (repo_dir / "README.md").read_text()
    command = next(line for line in ci.splitlines() if "pytest" in line and "pip install" in line)
    assert command.strip() in readme
