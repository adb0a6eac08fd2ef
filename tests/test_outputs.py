"""Outputs are checked before any work, and --overwrite never deletes what lnpath did not write."""

from __future__ import annotations

from pathlib import Path

import pytest

from lnpath.cli import main, score_slide_main


@pytest.fixture
def demo(repo_dir: Path) -> tuple[Path, Path]:
    examples = repo_dir / "examples"
    return examples / "demo_biopsy.tiff", examples / "demo_biopsy_glomeruli.geojson"


def test_overwrite_refuses_a_folder_lnpath_did_not_write(
    demo: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    slide, outlines = demo
    other = tmp_path / "thesis"
    other.mkdir()
    (other / "thesis.docx").write_text("precious")
    args = [str(slide), "--glomeruli", str(outlines), "--out", str(other), "--overwrite"]
    assert score_slide_main(args) == 2
    assert "not an lnpath output folder (no result.json)" in capsys.readouterr().err
    tiles = ["tiles", str(slide), "--mpp", "8", "--out", str(other), "--overwrite"]
    assert main(tiles) == 2
    assert "no tiles.csv" in capsys.readouterr().err
    assert (other / "thesis.docx").read_text() == "precious"
    # a file is not replaced by a result folder either
    afile = tmp_path / "afile"
    afile.write_text("keep")
    assert score_slide_main([*args[:3], "--out", str(afile), "--overwrite"]) == 2
    assert "exists and is not a folder" in capsys.readouterr().err
    assert afile.read_text() == "keep"


@pytest.mark.parametrize(
    ("out", "message"),
    [("{tmp}/afile/sub", "is a file, not a folder"), ("/proc/lnpath-out", "cannot write in")],
)
def test_unwritable_output_fails_before_the_work(
    demo: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    out: str,
    message: str,
) -> None:
    slide, outlines = demo
    (tmp_path / "afile").write_text("keep")
    target = out.format(tmp=tmp_path)
    assert score_slide_main([str(slide), "--glomeruli", str(outlines), "--out", target]) == 2
    err = capsys.readouterr().err
    assert message in err and "Open slide (" not in err  # refused before opening the slide


def test_segment_never_overwrites_a_geojson_silently(
    demo: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    slide, _ = demo
    edited = tmp_path / "seg.geojson"
    edited.write_text("a pathologist's QuPath edits")
    assert main(["segment", str(slide), "--out", str(edited)]) == 2
    assert "file already exists (use --overwrite" in capsys.readouterr().err
    assert main(["segment", str(slide), "--out", str(tmp_path)]) == 2
    assert "is a folder" in capsys.readouterr().err
    assert main(["segment", str(slide), "--out", str(tmp_path / "x"), "--batch-size", "0"]) == 2
    assert "--batch-size must be >= 1" in capsys.readouterr().err
    assert edited.read_text() == "a pathologist's QuPath edits"


def test_outlines_from_another_slide_are_refused(
    demo: tuple[Path, Path], qupath_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    slide, _ = demo
    foreign = qupath_dir / "TPATH012.geojson"  # a 40x slide's outlines, far beyond the demo
    out = tmp_path / "o"
    assert score_slide_main([str(slide), "--glomeruli", str(foreign), "--out", str(out)]) == 2
    assert "lies outside this slide (13696x3584 px)" in capsys.readouterr().err
    assert not out.exists()


def test_an_unknown_lesion_model_fails_before_segmentation(
    demo: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    slide, _ = demo
    out = tmp_path / "o"
    assert score_slide_main([str(slide), "--lesion-model", "nope", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "unknown lesion model 'nope'" in err and "Find glomeruli" not in err
    assert not out.exists()
