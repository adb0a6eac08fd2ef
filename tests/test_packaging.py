"""Packaging: a non-editable install carries the shipped models, and names resolve in one order.

The wheel is built the way pip builds it from a release (sdist first, then the wheel from the
unpacked sdist), offline (``--no-build-isolation --no-deps``), from a copy of the sources so the
checkout gets no ``build/`` folder. Installing it with ``--target`` and importing it from there
checks that the installed code finds its own models, away from the checkout.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from lnpath.core.errors import ModelError
from lnpath.models import store as model_store
from lnpath.models.store import CARD_FILE, DEFAULT_MODEL, ENV_VAR, resolve_model_path

REPO = Path(__file__).resolve().parents[1]
BUILD_INPUTS = ("pyproject.toml", "setup.cfg", "README.md", "lnpath", "models")
OFFLINE = ("--no-deps", "--no-build-isolation", "--no-index", "--quiet")


def _model_folders() -> list[Path]:
    return sorted(card.parent for card in (REPO / "models").glob(f"*/{CARD_FILE}"))


def _run(*args: str, cwd: Path) -> None:
    subprocess.run(args, cwd=cwd, check=True, capture_output=True, text=True)


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """sdist and wheel (built from that sdist) of a copy of the checkout."""
    if not (REPO / "pyproject.toml").is_file():
        pytest.skip("not a source checkout")
    root = tmp_path_factory.mktemp("packaging")
    src = root / "src"
    src.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for name in BUILD_INPUTS:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, src / name, ignore=ignore)
        else:
            shutil.copy2(REPO / name, src / name)
    out = root / "dist"
    hook = "import sys, setuptools.build_meta as b; b.build_sdist(sys.argv[1])"
    _run(sys.executable, "-c", hook, str(out), cwd=src)
    (sdist,) = out.glob("lnpath-*.tar.gz")
    _run(sys.executable, "-m", "pip", "wheel", *OFFLINE, "-w", str(out), str(sdist), cwd=root)
    (wheel,) = out.glob("lnpath-*.whl")
    return {"root": root, "sdist": sdist, "wheel": wheel}


@pytest.mark.slow
def test_wheel_from_the_sdist_carries_every_model_and_module(dist: dict[str, Path]) -> None:
    folders = _model_folders()
    assert any(folder.name == DEFAULT_MODEL for folder in folders)
    with tarfile.open(dist["sdist"]) as sdist:
        in_sdist = {name.split("/", 1)[1] for name in sdist.getnames() if "/" in name}
    with zipfile.ZipFile(dist["wheel"]) as wheel:
        in_wheel = set(wheel.namelist())
        for folder in folders:
            card = json.loads((folder / CARD_FILE).read_text(encoding="utf-8"))
            assert f"models/{folder.name}/{CARD_FILE}" in in_sdist
            packed_card = wheel.read(f"lnpath/_models/{folder.name}/{CARD_FILE}")
            assert packed_card == (folder / CARD_FILE).read_bytes()
            if "weights" in card:
                weights = wheel.read(f"lnpath/_models/{folder.name}/{card['weights']}")
                assert hashlib.sha256(weights).hexdigest() == card["sha256"], folder.name
    modules = {
        path.relative_to(REPO).as_posix()
        for path in (REPO / "lnpath").rglob("*.py")
        if "__pycache__" not in path.parts
    }
    assert modules <= in_wheel, sorted(modules - in_wheel)  # the explicit package list is complete
    assert "lnpath/report/templates/report.html" in in_wheel and "lnpath/py.typed" in in_wheel


@pytest.mark.slow
def test_installed_wheel_finds_its_models_away_from_the_checkout(dist: dict[str, Path]) -> None:
    target = dist["root"] / "site"
    pip = (sys.executable, "-m", "pip", "install", *OFFLINE, "--target", str(target))
    _run(*pip, str(dist["wheel"]), cwd=dist["root"])
    probe = (
        "import lnpath.models.store as m; "
        f"print(m.__file__); print(m.load_model({DEFAULT_MODEL!r}).path)"
    )
    env = {k: v for k, v in os.environ.items() if k != ENV_VAR}
    env["PYTHONPATH"] = str(target)  # ahead of the editable checkout in site-packages
    out = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=dist["root"],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    assert out == [
        str(target / "lnpath" / "models" / "store.py"),
        str(target / "lnpath" / "_models" / DEFAULT_MODEL),
    ]


def _model(folder: Path, tag: str) -> Path:
    folder.mkdir(parents=True)
    (folder / CARD_FILE).write_text(json.dumps({"tag": tag}), encoding="utf-8")
    return folder


def test_lookup_order_env_then_checkout_then_installed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lab, checkout, bundled = tmp_path / "lab", tmp_path / "checkout", tmp_path / "site" / "_models"
    for where in (lab, checkout / "models", bundled):
        _model(where / "m", where.name)
    _model(bundled / "shipped-only", "bundled")
    (checkout / "pyproject.toml").write_text("", encoding="utf-8")
    monkeypatch.setattr(model_store, "_CHECKOUT", checkout)
    monkeypatch.setattr(model_store, "_BUNDLED", bundled)

    monkeypatch.setenv(ENV_VAR, str(lab))
    assert model_store.model_search_path() == [lab, checkout / "models", bundled]
    assert resolve_model_path("m") == lab / "m"
    assert resolve_model_path("shipped-only") == bundled / "shipped-only"
    monkeypatch.delenv(ENV_VAR)
    assert resolve_model_path("m") == checkout / "models" / "m"
    (checkout / "pyproject.toml").unlink()  # an installed package: no checkout beside it
    assert model_store.model_search_path() == [bundled]
    assert resolve_model_path("m") == bundled / "m"
    assert resolve_model_path(lab / "m") == lab / "m"  # a path wins over any name


def test_unknown_model_names_every_folder_searched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lab, bundled = tmp_path / "lab", tmp_path / "site" / "_models"
    _model(bundled / "shipped", "bundled")
    monkeypatch.setattr(model_store, "_CHECKOUT", tmp_path / "no-checkout")
    monkeypatch.setattr(model_store, "_BUNDLED", bundled)
    monkeypatch.setenv(ENV_VAR, str(lab))
    with pytest.raises(ModelError) as info:
        resolve_model_path("absent", kind="lesion model")
    message = str(info.value)
    assert message.startswith("unknown lesion model 'absent'") and "\n" not in message
    assert str(lab) in message and str(bundled) in message and "known: shipped" in message
