"""``lnpath info`` and ``lnpath tiles``: output on real slides, one-line errors on bad input."""

from __future__ import annotations

import csv
import json
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import lnpath
from lnpath.cli import main


def _error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if line.startswith("lnpath: error:")]
    assert len(errors) == 1, err
    assert not any("Traceback" in line for line in err)
    return errors[0]


def test_info_table(slides_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", str(slides_dir / "cmu-1-small-region.svs")]) == 0
    out = capsys.readouterr().out
    for expected in ("aperio", "2220 x 2967", "0.499 (source: metadata)", "mm²", "240x240"):
        assert expected in out


def test_info_json_with_caller_mpp(slides_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = slides_dir / "tcga-cr-7395-01a-01-ts1.svs"
    assert main(["info", str(path), "--mpp", "0.5", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["mpp"] == 0.5 and info["mpp_source"] == "caller"
    assert [lv["dimensions"] for lv in info["levels"]] == [[4443, 3567], [2221, 1783]]
    assert info["levels"][1]["mpp"] == pytest.approx(1.0, rel=1e-3)
    assert info["tissue"]["area_mm2"] > 0.5 and info["tissue"]["pieces"] >= 1


def test_tiles_writes_pngs_index_and_provenance(
    slides_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "tiles"
    slide_path = slides_dir / "cmu-1-small-region.svs"
    args = ["tiles", str(slide_path), "--mpp", "1.0", "--size", "128", "--overlap", "16"]
    assert main([*args, "--min-tissue", "0.5", "--out", str(out)]) == 0
    assert "tiles of 128 px" in capsys.readouterr().out
    with (out / "tiles.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    record = json.loads((out / "tiles.json").read_text())
    assert record["n_tiles"] == len(rows) > 0
    assert record["spec"]["stride"] == 112 and record["slide"]["mpp_source"] == "metadata"
    assert all(float(r["tissue_fraction"]) >= 0.5 for r in rows)
    assert sorted(p.name for p in (out / "tiles").iterdir()) == sorted(
        Path(r["file"]).name for r in rows
    )
    # a written tile equals the same region read through the API
    slide = lnpath.open_slide(slide_path)
    first = rows[0]
    png = np.asarray(Image.open(out / first["file"]))
    x, y, w = int(first["x"]), int(first["y"]), int(first["width"])
    expected = slide.read(x, y, w, w, mpp=1.0)
    assert png.shape == (128, 128, 3)
    assert np.abs(png.astype(int) - expected.astype(int)).max() <= 1

    # an existing output folder is refused, then replaced only with --overwrite
    assert main([*args, "--out", str(out)]) != 0
    assert "already exists" in _error_line(capsys)
    assert main([*args, "--min-tissue", "0", "--out", str(out), "--overwrite"]) == 0
    assert json.loads((out / "tiles.json").read_text())["n_tiles"] > record["n_tiles"]


def test_tiles_in_worker_processes(
    slides_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(lnpath.wsi.tiling, "_MIN_PARALLEL_BYTES", 0)  # a small test grid
    path = str(slides_dir / "tcga-cr-7395-01a-01-ts1.svs")
    common = ["tiles", path, "--slide-mpp", "0.25", "--mpp", "2.0", "--size", "96"]
    assert main([*common, "--out", str(tmp_path / "a")]) == 0
    assert main([*common, "--workers", "2", "--out", str(tmp_path / "b")]) == 0
    a = sorted((tmp_path / "a" / "tiles").iterdir())
    b = sorted((tmp_path / "b" / "tiles").iterdir())
    assert [p.name for p in a] == [p.name for p in b] and a
    assert all(
        np.array_equal(np.asarray(Image.open(p)), np.asarray(Image.open(q)))
        for p, q in zip(a, b, strict=True)
    )


def test_no_tissue_gives_an_empty_index_and_a_warning(
    data_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    blank = data_dir / "tissue-detection-tiles" / "no-tissue.png"
    out = tmp_path / "out"
    args = ["tiles", str(blank), "--slide-mpp", "0.5", "--mpp", "0.5", "--size", "64"]
    with caplog.at_level(logging.WARNING):
        code = main([*args, "--out", str(out)])
    assert code == 0
    assert "no tissue" in caplog.text and "0 tiles" in capsys.readouterr().out
    assert (
        out / "tiles.csv"
    ).read_text().strip() == "file,x,y,width,height,row,col,tissue_fraction"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["info", "{slides}/does-not-exist.svs"], "does-not-exist.svs: no such file"),
        (["info", "{slides}"], "is a directory"),
        (["info", "{tmp}/notes.svs"], "notes.svs: not a slide format"),
        (["info", "{slides}/broken.svs"], "broken.svs: not a slide format"),
        (["info", "{slides}/unopenable.tiff"], "unopenable.tiff: cannot open"),
        (["info", "{slides}/unreadable.svs"], "unreadable.svs: cannot read region x=0 y=0"),
        (
            ["tiles", "{slides}/unreadable.svs", "--mpp", "0.5", "--out", "{tmp}/o"],
            "unreadable.svs: cannot read region",
        ),
        (["info", "{slides}/tcga-cr-7395-01a-01-ts1.svs"], "no µm/px in the file; pass"),
        (["info", "{slides}/boxes.tiff"], "352.8 from tiff-resolution"),
        (["info", "{slides}/cmu-1-small-region.svs", "--mpp", "500"], "--mpp: 500.0 µm/px"),
        (
            ["tiles", "{slides}/tcga-cr-7395-01a-01-ts1.svs", "--mpp", "1", "--out", "{tmp}/o"],
            "with --slide-mpp",
        ),
        (
            ["tiles", "{slides}/cmu-1-small-region.svs", "--mpp", "0", "--out", "{tmp}/o"],
            "--mpp: 0.0 µm/px is outside",
        ),
        (
            ["tiles", "{slides}/small.svs", "--mpp", "1", "--size", "-4", "--out", "{tmp}/o"],
            "tile size must be a positive integer",
        ),
        (  # one tile bigger than the slide was 0 tiles and exit 0 (or, with no tissue
            # filter, a 300 TB allocation)
            ["tiles", "{slides}/small.svs", "--mpp", "1", "--size", "10000000", "--out", "{tmp}/o"],
            "tile size must be at most 16384 px",
        ),
    ],
)
def test_bad_input_is_one_line(
    slides_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    message: str,
) -> None:
    (tmp_path / "notes.svs").write_text("this is a text file, not a slide\n")
    argv = [a.format(slides=slides_dir, tmp=tmp_path) for a in argv]
    assert main(argv) != 0
    assert message in _error_line(capsys)
    assert not (tmp_path / "o").exists()  # nothing half-written


def test_module_entry_point_prints_no_traceback(slides_dir: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "lnpath", "info", str(slides_dir / "unreadable.svs")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode != 0
    assert result.stderr.strip().count("\n") == 0
    assert "unreadable.svs: cannot read region" in result.stderr
