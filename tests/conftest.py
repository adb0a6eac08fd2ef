"""Shared fixtures: the real public data beside the checkout (``../shared/data``)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

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


class TrainDemo(NamedTuple):
    """A slide like the demo made of the Bueno *train* tiles only, with their outlines."""

    slide: Path
    geojson: Path
    tiles: Path


def demo_script(repo: Path) -> Any:
    """``scripts/make_demo_slide.py`` as a module (scripts are not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "make_demo_slide", repo / "scripts" / "make_demo_slide.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def train_demo(
    bueno_dir: Path, repo_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> TrainDemo:
    """What the tests *train* on instead of ``examples/demo_biopsy.tiff``: the shipped demo holds
    the test split too (never train or tune on it), and a training window or crop around a train
    glomerulus reaches into the neighbouring tile, so filtering outlines is not enough. Built once
    by ``make_demo_slide.build(split="train")``: the demo's size and coordinates, test tiles glass.
    """
    out = tmp_path_factory.mktemp("train-demo")
    slide, geojson = out / "demo_train.tiff", out / "demo_train_glomeruli.geojson"
    demo_script(repo_dir).build(bueno_dir, slide, geojson, split="train")
    return TrainDemo(slide, geojson, out / "demo_train_tiles.json")


def held_test_split_tiles(
    slide: Path, tile_map: Path, origin: tuple[int, int] = (0, 0)
) -> list[str]:
    """The demo's test-split tiles (``*_tiles.json``) whose pixels are in ``slide``, a slide cut
    from a demo-like one at level-0 ``origin``: a test tile left as glass is uniform, so any
    spread of colour there is test-split tissue. The guard that training slides hold none."""
    import lnpath

    inset = 8  # a level-0 margin: resampling at the seam may blend in the next (train) tile
    found = []
    with lnpath.open_slide(slide) as opened:
        width, height = opened.dimensions
        for tile in json.loads(tile_map.read_text()):
            x0, y0 = tile["x"] - origin[0] + inset, tile["y"] - origin[1] + inset
            x1, y1 = x0 + tile["size"] - 2 * inset, y0 + tile["size"] - 2 * inset
            x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)
            if tile["split"] != "test" or x1 - x0 < 16 or y1 - y0 < 16:
                continue
            pixels = opened.read(x0, y0, x1 - x0, y1 - y0, mpp=2.0)
            if pixels.std(axis=(0, 1)).max() > 2.0:
                found.append(tile["tile"])
    return found


class LabelledDemo(NamedTuple):
    """The train-split demo slide with synthetic glomerulus labels (they test label handling,
    not accuracy)."""

    geojson: Path
    slide: Path
    glomeruli: int
    sclerotic: int


@pytest.fixture
def labelled_demo(train_demo: TrainDemo, tmp_path: Path) -> LabelledDemo:
    """Every third glomerulus of the train-split demo relabelled ``Sclerotic``, the others
    ``Normal`` (lesion training reads crops around them, so not the test split's demo)."""
    from lnpath.io.qupath import read_qupath, write_qupath

    features = read_qupath(train_demo.geojson)
    for i, feature in enumerate(features):
        feature.classification = "Sclerotic" if i % 3 == 0 else "Normal"
    geojson = tmp_path / "labelled.geojson"
    write_qupath(features, geojson)
    return LabelledDemo(geojson, train_demo.slide, len(features), len(range(0, len(features), 3)))


class BuenoCrop(NamedTuple):
    """One crop of a Bueno *train* tile, with a synthetic class (labels test machinery only)."""

    name: str
    tile: str
    rgb: Any
    mask: Any
    cls: str


#: µm/px of the Bueno tiles (Aperio ScanScope CS at 20x, PROVENANCE.md).
BUENO_MPP = 0.5


def bueno_train_crops(bueno: Path, tissue_per_tile: int = 0) -> list[BuenoCrop]:
    """Labelled crops from the Bueno PAS ``train`` tiles (CC BY 4.0), for lesion-training tests.

    Every glomerulus (a connected component of its tile's mask) gives a crop of its bounding box
    + 10 px and its mask. The labels are synthetic, because no licensed set labels lesions: by
    position in (tile, component) order, every third glomerulus is ``pos``, one in six ``rare``
    (a class with too few members to fit), the others ``neg``. ``tissue_per_tile`` adds 256 px
    windows of tissue without glomerulus (class ``tissue``, full mask). The tests map these names
    to lesions to exercise the code paths; nothing trained on them says anything about accuracy.
    """
    import numpy as np
    from skimage import io, measure

    split = json.loads((bueno / "split.json").read_text())
    crops: list[BuenoCrop] = []
    k = 0
    for tile in split["train"]:
        rgb = io.imread(bueno / "images" / f"{tile}.png")[..., :3]
        fg = io.imread(bueno / "masks" / f"{tile}.png").reshape(*rgb.shape[:2], -1).max(-1) > 0
        instances = measure.label(fg)
        for j, region in enumerate(measure.regionprops(instances)):
            y0, x0, y1, x1 = region.bbox
            y0, x0 = max(y0 - 10, 0), max(x0 - 10, 0)
            y1, x1 = min(y1 + 10, rgb.shape[0]), min(x1 + 10, rgb.shape[1])
            cls = "pos" if k % 3 == 0 else "rare" if k % 6 == 1 else "neg"
            mask = instances[y0:y1, x0:x1] == region.label
            crops.append(BuenoCrop(f"{tile}_{j}", tile, rgb[y0:y1, x0:x1], mask, cls))
            k += 1
        taken = 0
        for y in range(0, rgb.shape[0] - 255, 256):
            for x in range(0, rgb.shape[1] - 255, 256):
                window = rgb[y : y + 256, x : x + 256]
                if taken == tissue_per_tile or fg[y : y + 256, x : x + 256].any():
                    continue
                if (window.mean(-1) < 200).mean() < 0.5:  # mostly glass
                    continue
                full = np.ones(window.shape[:2], bool)
                crops.append(BuenoCrop(f"{tile}_t{taken}", tile, window, full, "tissue"))
                taken += 1
    return crops


# --------------------------------------------------------------------------------------------
# Result folders for the integrity tests (issue #20): scored once per session through the CLI,
# then copied, so each test edits its own folder.


def batch_as_on_a_terminal(*args: object) -> subprocess.Popen[str]:
    """``python -m lnpath batch ARGS`` in a process group of its own that takes Ctrl-C as a
    terminal delivers it (``os.killpg(proc.pid, SIGINT)``); stderr is piped for its one line."""
    import signal

    return subprocess.Popen(
        [sys.executable, "-m", "lnpath", "batch", *map(str, args)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # as on a terminal
    )


def lnpath_cli(*args: object, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``python -m lnpath ARGS`` as a user would, capturing its output."""
    return subprocess.run(
        [sys.executable, "-m", "lnpath", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        check=False,
    )


def file_hashes(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder`` by relative path: "nothing changed" made checkable."""
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def assert_one_line_error(proc: subprocess.CompletedProcess[str], *needles: str) -> str:
    """A bad input: non-zero exit, no traceback, no "internal error", one ``error:`` line."""
    err = proc.stderr
    assert proc.returncode != 0, f"exited 0; stdout: {proc.stdout[-500:]}"
    assert "Traceback" not in err, err
    assert "internal error" not in err, err
    lines = [line for line in err.splitlines() if ": error: " in line]
    assert len(lines) == 1, err
    for needle in needles:
        assert needle.lower() in lines[0].lower(), lines[0]
    return lines[0]


#: Index components the demo's PAS section and the default rules leave ungraded.
DEMO_UNGRADED = (
    "neutrophils_karyorrhexis",
    "fibrinoid_necrosis",
    "hyaline_deposits",
    "cellular_fibrocellular_crescents",
    "interstitial_inflammation",
    "fibrous_crescents",
    "tubular_atrophy",
    "interstitial_fibrosis",
)


@pytest.fixture(scope="session")
def demo_result_template(repo_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo slide scored from its shipped outlines (patient P1): never edit it, copy it."""
    out = tmp_path_factory.mktemp("demo-result") / "r"
    # what a PAS section cannot grade is marked not evaluable, so that the result can be signed
    marks = out.parent / "not-evaluable.json"
    marks.write_text(json.dumps({"not_evaluable": dict.fromkeys(DEMO_UNGRADED, "PAS demo")}))
    proc = lnpath_cli(
        "score",
        repo_dir / "examples" / "demo_biopsy.tiff",
        "--glomeruli",
        repo_dir / "examples" / "demo_biopsy_glomeruli.geojson",
        "--patient-id",
        "P1",
        "--biopsy",
        marks,
        "--out",
        out,
    )
    assert proc.returncode == 0, proc.stderr
    return out


def sealed_result(template: Path, target: Path, data: dict[str, Any]) -> Path:
    """A result folder exactly as lnpath writes one (audit trail, snapshot, seal) whose
    result.json says what ``data`` says, around the glomeruli of the scored ``template``.

    Scores made up for a test still go through lnpath's own writer, so they verify; the slide
    fingerprint is the folder's name's, so two folders are two biopsies.
    """
    from lnpath.results.folder import ResultContent, write_result

    base = json.loads((template / "result.json").read_text(encoding="utf-8"))
    fingerprint = {**base["slide"]["fingerprint"], "sha256": _sha256_text(target.name)}
    slide = {**base["slide"], **data.get("slide", {}), "fingerprint": fingerprint}
    result = {**base, **data, "slide": slide}
    event = {"event": "scored", "at": base["created_at"], "by": "lnpath (test scores)"}
    write_result(target, result, event, ResultContent.load(template))
    return target


def _sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@pytest.fixture(scope="session")
def confirmed_template(
    demo_result_template: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """The demo result confirmed by "Dr A" with a note (revision 1)."""
    out = tmp_path_factory.mktemp("confirmed") / "r"
    shutil.copytree(demo_result_template, out, symlinks=True)
    proc = lnpath_cli("confirm", out, "--pathologist", "Dr A", "--note", "agree")
    assert proc.returncode == 0, proc.stderr
    return out


@pytest.fixture(scope="session")
def history_template(demo_result_template: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Scored, reviewed (interstitial fibrosis 30%) by "Dr R", then confirmed by "Dr A"."""
    out = tmp_path_factory.mktemp("history") / "r"
    shutil.copytree(demo_result_template, out, symlinks=True)
    proc = lnpath_cli(
        "review", out, "--cortex", "interstitial_fibrosis=0.3", "--reviewer", "Dr R", "--note", "IF"
    )
    assert proc.returncode == 0, proc.stderr
    proc = lnpath_cli("confirm", out, "--pathologist", "Dr A", "--note", "agree")
    assert proc.returncode == 0, proc.stderr
    return out


@pytest.fixture
def copy_result(tmp_path: Path) -> Callable[[Path], Path]:
    """Copy a template result folder into this test's tmp_path (as ``<tmp>/r``)."""

    def copy(template: Path, name: str = "r") -> Path:
        target = tmp_path / name
        shutil.copytree(template, target, symlinks=True)
        return target

    return copy
