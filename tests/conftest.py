"""Shared fixtures: the real public data beside the checkout (``../shared/data``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

import pytest

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("LNPATH_SHARED_DATA", REPO.parent / "shared" / "data"))


def _require(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"shared test data not found at {path} (set LNPATH_SHARED_DATA)")
    return path


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """``../shared/data``; tests that need it skip with a clear reason when it is absent."""
    return _require(DATA)


@pytest.fixture(scope="session")
def slides_dir(data_dir: Path) -> Path:
    return _require(data_dir / "slides")


@pytest.fixture(scope="session")
def qupath_dir(data_dir: Path) -> Path:
    return _require(data_dir / "qupath-glomeruli-annotations")


@pytest.fixture(scope="session")
def bueno_dir(data_dir: Path) -> Path:
    return _require(data_dir / "glomeruli-pas-bueno")


@pytest.fixture(scope="session")
def repo_dir() -> Path:
    return REPO


@pytest.fixture(scope="session")
def demo_followup(repo_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A second slide *file* of the demo tissue, standing in for a follow-up biopsy.

    ``compare`` refuses two results of one slide file; the repo ships one demo slide, so this is
    its exact bytes plus one trailing byte (which TIFF readers ignore): the same pixels under a
    different fingerprint, as a re-scan would have.
    """
    source = repo_dir / "examples" / "demo_biopsy.tiff"
    if not source.is_file():
        pytest.skip("demo biopsy not in the checkout")
    target = tmp_path_factory.mktemp("followup") / "demo_followup.tiff"
    target.write_bytes(source.read_bytes() + b"\0")
    return target


class LabelledDemo(NamedTuple):
    """The demo slide with synthetic glomerulus labels (they test label handling, not accuracy)."""

    geojson: Path
    slide: Path
    glomeruli: int
    sclerotic: int


@pytest.fixture
def labelled_demo(repo_dir: Path, tmp_path: Path) -> LabelledDemo:
    """Every third demo glomerulus relabelled ``Sclerotic``, the others ``Normal``."""
    from lnpath.io.qupath import read_qupath, write_qupath

    features = read_qupath(repo_dir / "examples" / "demo_biopsy_glomeruli.geojson")
    for i, feature in enumerate(features):
        feature.classification = "Sclerotic" if i % 3 == 0 else "Normal"
    geojson = tmp_path / "labelled.geojson"
    write_qupath(features, geojson)
    slide = repo_dir / "examples" / "demo_biopsy.tiff"
    return LabelledDemo(geojson, slide, len(features), len(range(0, len(features), 3)))
