"""Every bad input gets one clear line and a non-zero exit, never a traceback (issue #20).

Each case is something a user can hand the CLI (a GeoJSON with NaN, a pickled weights file, a
result folder they cannot write, ...); the check is the same for all: one ``error:`` line naming
the problem, no "internal error".
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from .conftest import assert_one_line_error, lnpath_cli


def _feature(coordinates: object, **properties: object) -> dict[str, object]:
    return {
        "type": "Feature",
        "geometry": {"type": "Polygon", "coordinates": coordinates},
        "properties": {"objectType": "annotation", **properties},
    }


def _collection(*features: dict[str, object]) -> dict[str, object]:
    return {"type": "FeatureCollection", "features": list(features)}


SQUARE = [[[100, 100], [400, 100], [400, 400], [100, 400], [100, 100]]]


# --------------------------------------------------------------------------------------------
# score-findings: malformed GeoJSON


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_coordinates(token: str, tmp_path: Path) -> None:
    path = tmp_path / "inf.geojson"
    text = json.dumps(_collection(_feature(SQUARE, classification={"name": "Sclerotic"})))
    path.write_text(text.replace("400, 100]", f"{token}, 100]", 1))
    assert token in path.read_text()
    assert_one_line_error(lnpath_cli("score-findings", path), str(path.name))


def test_deeply_nested_geojson(tmp_path: Path) -> None:
    path = tmp_path / "deep.geojson"
    depth = 200_000
    path.write_text(
        '{"type": "FeatureCollection", "features": [{"type": "Feature", "geometry": '
        '{"type": "Polygon", "coordinates": ' + "[" * depth + "]" * depth + "}}]}"
    )
    assert_one_line_error(lnpath_cli("score-findings", path), str(path.name))


def test_text_where_a_measurement_number_belongs(tmp_path: Path) -> None:
    path = tmp_path / "text.geojson"
    feature = _feature(SQUARE, classification={"name": "Sclerotic"})
    feature["properties"]["measurements"] = {"call: global_sclerosis": "yes please"}  # type: ignore[index]
    path.write_text(json.dumps(_collection(feature)))
    assert_one_line_error(lnpath_cli("score-findings", path), "call: global_sclerosis")


def test_text_where_a_colour_belongs(tmp_path: Path) -> None:
    path = tmp_path / "colour.geojson"
    feature = _feature(SQUARE, classification={"name": "Sclerotic", "color": ["red", 0, 0]})
    path.write_text(json.dumps(_collection(feature)))
    proc = lnpath_cli("score-findings", path)
    if proc.returncode != 0:  # a colour is decoration: ignoring it is as good as refusing it
        assert_one_line_error(proc, "colo")


# --------------------------------------------------------------------------------------------
# score_slide: outlines that are not glomeruli


def _score(repo_dir: Path, outlines: Path, out: Path) -> subprocess.CompletedProcess[str]:
    return lnpath_cli(
        "score",
        repo_dir / "examples" / "demo_biopsy.tiff",
        "--glomeruli",
        outlines,
        "--out",
        out,
    )


def test_specks_are_not_glomeruli(repo_dir: Path, tmp_path: Path) -> None:
    """30 copies of a 0.25 px² speck once scored as "30 glomeruli, adequate"."""
    speck = [[[500, 500], [500.5, 500], [500.5, 500.5], [500, 500.5], [500, 500]]]
    path = tmp_path / "specks.geojson"
    path.write_text(
        json.dumps(_collection(*[_feature(speck, classification={"name": "Normal"})] * 30))
    )
    assert_one_line_error(_score(repo_dir, path, tmp_path / "out"), "area")
    assert not (tmp_path / "out").exists()


def test_lon_lat_polygons_are_not_glomeruli(repo_dir: Path, tmp_path: Path) -> None:
    """A GIS polygon in degrees (Boston) is no outline in slide pixels."""
    boston = [[[-71.06, 42.35], [-71.05, 42.35], [-71.05, 42.36], [-71.06, 42.36], [-71.06, 42.35]]]
    path = tmp_path / "gis.geojson"
    path.write_text(
        json.dumps(_collection(*[_feature(boston, classification={"name": "Normal"})] * 10))
    )
    assert_one_line_error(_score(repo_dir, path, tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_edge_to_edge_tissue_is_scored(bueno_dir: Path, tmp_path: Path) -> None:
    """A crop inside one glomerulus shows no glass at all: tissue, not "no tissue found"."""
    image = Image.open(bueno_dir / "images" / "10150.png").convert("RGB")
    crop = tmp_path / "inside_glomerulus.png"
    image.crop((352, 359, 532, 539)).save(crop)  # 90 x 90 µm at ~0.5 µm/px, all tissue
    proc = lnpath_cli("score", crop, "--mpp", "0.5", "--out", tmp_path / "out")
    assert proc.returncode == 0, proc.stderr
    assert "no tissue" not in proc.stderr
    assert (tmp_path / "out" / "result.json").is_file()


# --------------------------------------------------------------------------------------------
# lesion model cards and weights


def _lesion_model(folder: Path, mpp: object, weights: bytes | None = None) -> Path:
    """A lesion-model folder of a real (untrained) LesionNet, or of ``weights`` if given."""
    import io

    import torch

    from lnpath.nn.lesion_net import LesionNet, LesionNetConfig

    config = LesionNetConfig(labels=("global_sclerosis",), input_size=32)
    if weights is None:
        torch.manual_seed(0)
        buffer = io.BytesIO()
        torch.save(LesionNet(config).state_dict(), buffer)
        weights = buffer.getvalue()
    folder.mkdir(parents=True)
    (folder / "weights.pt").write_bytes(weights)
    card = {
        "name": folder.name,
        "kind": "lesion-classifier",
        "labels": list(config.labels),
        "network": config.to_dict(),
        "weights": "weights.pt",
        "sha256": hashlib.sha256(weights).hexdigest(),
        "mpp": mpp,
        "threshold": 0.5,
    }
    (folder / "card.json").write_text(json.dumps(card))
    return folder


def _score_with_model(repo_dir: Path, model: Path, out: Path) -> subprocess.CompletedProcess[str]:
    return lnpath_cli(
        "score",
        repo_dir / "examples" / "demo_biopsy.tiff",
        "--glomeruli",
        repo_dir / "examples" / "demo_biopsy_glomeruli.geojson",
        "--lesion-model",
        model,
        "--out",
        out,
    )


@pytest.mark.parametrize("mpp", [0, -3, "fine"])
def test_lesion_card_with_a_bad_mpp(mpp: object, repo_dir: Path, tmp_path: Path) -> None:
    model = _lesion_model(tmp_path / "model", mpp)
    assert_one_line_error(_score_with_model(repo_dir, model, tmp_path / "out"), "mpp")


class _NotWeights:
    """Anything a ``weights_only`` unpickler refuses."""


def test_pickle_as_lesion_weights_never_suggests_weights_only_false(
    repo_dir: Path, tmp_path: Path
) -> None:
    payload = pickle.dumps({"conv.weight": _NotWeights()})
    model = _lesion_model(tmp_path / "model", 2.0, weights=payload)
    line = assert_one_line_error(_score_with_model(repo_dir, model, tmp_path / "out"), "weights")
    assert "weights_only" not in line
    assert "weights_only" not in _score_with_model(repo_dir, model, tmp_path / "o2").stderr


# --------------------------------------------------------------------------------------------
# result folders and batch folders the user cannot write


def _without_root_powers() -> list[str]:
    """A command prefix under which permission bits apply: root ignores them otherwise."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip(
            "running as root and setpriv (util-linux) is absent: cannot honour a read-only folder"
        )
    return [setpriv, "--bounding-set", "-dac_override,-dac_read_search,-fowner", "--"]


def test_read_only_result_folder(demo_result_template: Path, tmp_path: Path) -> None:
    root = tmp_path / "ro"
    root.mkdir()
    folder = root / "r"
    shutil.copytree(demo_result_template, folder)
    paths = [root, *root.rglob("*")]
    try:
        for path in paths:
            path.chmod(0o555 if path.is_dir() else 0o444)
        before = (folder / "result.json").read_bytes()
        proc = subprocess.run(
            [
                *_without_root_powers(),
                sys.executable,
                "-m",
                "lnpath",
                "confirm",
                str(folder),
                "--pathologist",
                "Dr A",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        assert_one_line_error(proc, str(folder))
        assert (folder / "result.json").read_bytes() == before
    finally:
        for path in paths:
            path.chmod(0o755)


def _manifest(path: Path, repo_dir: Path, slide_id: str) -> Path:
    path.write_text(
        "slide_id,path,patient_id,timepoint,glomeruli\n"
        f"{slide_id},{repo_dir / 'examples' / 'demo_biopsy.tiff'},P1,0,"
        f"{repo_dir / 'examples' / 'demo_biopsy_glomeruli.geojson'}\n"
    )
    return path


def test_slide_id_longer_than_a_file_name(repo_dir: Path, tmp_path: Path) -> None:
    manifest = _manifest(tmp_path / "m.csv", repo_dir, "é" * 130)  # 260 bytes in UTF-8
    assert_one_line_error(lnpath_cli("batch", manifest, "--out", tmp_path / "b"), "slide_id")
    assert not (tmp_path / "b").exists()


def test_unwritable_batch_out(repo_dir: Path, tmp_path: Path) -> None:
    manifest = _manifest(tmp_path / "m.csv", repo_dir, "s1")
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    assert_one_line_error(lnpath_cli("batch", manifest, "--out", blocker / "batch"), "a-file")


# --------------------------------------------------------------------------------------------
# review: an edit that deletes many glomeruli


def test_review_with_another_table_does_not_delete_glomeruli_silently(
    demo_result_template: Path, copy_result: Callable[..., Path], tmp_path: Path
) -> None:
    """Another slide's table without feature_id: its few ids match a few of ours by number."""
    folder = copy_result(demo_result_template)
    table = pd.read_csv(folder / "findings.csv")
    assert len(table) >= 10
    other = table.drop(columns=["feature_id"]).head(3)
    edited = tmp_path / "other_findings.csv"
    other.to_csv(edited, index=False)
    before = (folder / "result.json").read_bytes()
    proc = lnpath_cli("review", folder, "--findings", edited, "--pathologist", "Dr A")
    assert_one_line_error(proc, "delete")
    assert (folder / "result.json").read_bytes() == before
    proc = lnpath_cli(
        "review", folder, "--findings", edited, "--allow-deletions", "--pathologist", "Dr A"
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads((folder / "result.json").read_text())["scores"]["adequacy"][
        "n_glomeruli"
    ] == len(other)
