"""Public API arguments of the wrong kind: one InputError line that names the argument.

Python reads any non-empty string as true, so ``tta="no"`` once ran four flips and
``review(..., supersede="no")`` revised a confirmed result; a score dict that was ``None``
surfaced as ``'NoneType' object is not subscriptable``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from .conftest import file_hashes

DEMO = Path(__file__).resolve().parents[1] / "examples"
SLIDE = DEMO / "demo_biopsy.tiff"
OUTLINES = DEMO / "demo_biopsy_glomeruli.geojson"
NOT_FLAGS = ["no", "False", 0, 1.0]


def _one_line(exc: pytest.ExceptionInfo[BaseException], *needles: str) -> None:
    text = str(exc.value)
    assert "\n" not in text, text
    for needle in needles:
        assert needle in text, text


@pytest.mark.parametrize("value", ["yes", "no", 1, 0.0])
@pytest.mark.parametrize("name", ["tta", "progress"])
def test_segment_glomeruli_flag_that_is_no_bool(name: str, value: object) -> None:
    import lnpath

    with lnpath.open_slide(SLIDE) as slide, pytest.raises(lnpath.InputError) as exc:
        lnpath.segment_glomeruli(slide, **{name: value})  # type: ignore[arg-type]
    _one_line(exc, name, "True or False")


@pytest.mark.parametrize("name", ["tta", "progress", "overwrite"])
def test_score_slide_option_that_is_no_bool(name: str, tmp_path: Path) -> None:
    import lnpath

    out = tmp_path / "r"
    with pytest.raises(lnpath.InputError) as exc:
        lnpath.score_slide(SLIDE, out=out, glomeruli=OUTLINES, **{name: "no"})
    _one_line(exc, name, "True or False")
    assert not out.exists()


def test_score_slide_supersede_that_is_no_bool(tmp_path: Path) -> None:
    import lnpath

    with pytest.raises(lnpath.InputError) as exc:
        lnpath.score_slide(SLIDE, out=tmp_path / "r", glomeruli=OUTLINES, supersede="no")  # type: ignore[arg-type]
    _one_line(exc, "supersede")
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("value", NOT_FLAGS)
def test_score_options_refuse_what_is_no_bool(value: object) -> None:
    from lnpath.core.errors import InputError
    from lnpath.workflow.options import ScoreOptions

    with pytest.raises(InputError, match="tta"):
        ScoreOptions(tta=value)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="overwrite"):
        ScoreOptions.build(overwrite=value)
    assert ScoreOptions(tta=None, progress=None).tta is None  # None stays "the default"


@pytest.mark.parametrize("device", [5, "cuda:x", "gpu", None])
def test_score_slide_device_that_means_nothing(device: object, tmp_path: Path) -> None:
    """With outlines given no network runs: ``device="gpu"`` was accepted and never used."""
    import lnpath

    with pytest.raises(lnpath.InputError) as exc:
        lnpath.score_slide(SLIDE, out=tmp_path / "r", glomeruli=OUTLINES, device=device)
    _one_line(exc, "device", repr(device))
    assert not (tmp_path / "r").exists()


def test_score_batch_supersede_that_is_no_bool(tmp_path: Path) -> None:
    import lnpath

    manifest = tmp_path / "m.csv"
    manifest.write_text(f"slide_id,path,patient_id,timepoint\ns1,{SLIDE},P1,0\n")
    with pytest.raises(lnpath.InputError) as exc:
        lnpath.score_batch(manifest, tmp_path / "out", supersede="yes")  # type: ignore[arg-type]
    _one_line(exc, "supersede")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("name", ["supersede", "allow_deletions"])
def test_review_of_a_confirmed_result_with_a_flag_that_is_text(
    name: str, confirmed_template: Path, copy_result: Callable[..., Path]
) -> None:
    """``supersede="no"`` once revised a confirmed result."""
    import lnpath

    folder = copy_result(confirmed_template)
    before = file_hashes(folder)
    with pytest.raises(lnpath.InputError) as exc:
        lnpath.review(folder, pathologist="Dr R", comment="c", **{name: "no"})
    _one_line(exc, name)
    assert file_hashes(folder) == before
    assert lnpath.SlideResult.load(folder).status == "confirmed"


def test_tile_upsample_that_is_text() -> None:
    import lnpath

    with lnpath.open_slide(SLIDE) as slide, pytest.raises(lnpath.InputError) as exc:
        lnpath.tile(slide, mpp=slide.mpp / 4, upsample="no")  # type: ignore[arg-type]
    _one_line(exc, "upsample")


@pytest.mark.parametrize("name", ["pairs", "consecutive"])
def test_cohort_table_flag_that_is_text(name: str, tmp_path: Path) -> None:
    import lnpath

    with pytest.raises(lnpath.InputError) as exc:
        lnpath.cohort_table(tmp_path, **{name: "no"})
    _one_line(exc, name)


@pytest.mark.parametrize("name", ["overwrite", "skip_missing_slides", "progress"])
def test_train_lesions_flag_that_is_text(name: str, tmp_path: Path) -> None:
    import lnpath

    with pytest.raises(lnpath.InputError) as exc:
        lnpath.train_lesions_from_results([tmp_path / "r"], tmp_path / "m", **{name: "no"})
    _one_line(exc, name)
    assert not (tmp_path / "m").exists()


def test_progress_that_is_text_is_refused_wherever_a_bar_starts() -> None:
    from lnpath.core.errors import InputError
    from lnpath.core.progress import progress_enabled, progress_scope

    with pytest.raises(InputError, match="progress"):
        progress_enabled("no")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="progress"), progress_scope("no"):  # type: ignore[arg-type]
        pass
    assert progress_enabled(False) is False


# --------------------------------------------------------------------------------------------
# BiopsyScore.from_dict


def _score_dict(demo_result_template: Path) -> dict[str, Any]:
    data = json.loads((demo_result_template / "result.json").read_text(encoding="utf-8"))
    return dict(data["scores"])


@pytest.mark.parametrize("value", [None, 5, "scores", ["activity_index"]])
def test_biopsy_score_from_something_that_is_no_mapping(value: object) -> None:
    import lnpath

    with pytest.raises(lnpath.InputError) as exc:
        lnpath.BiopsyScore.from_dict(value)  # type: ignore[arg-type]
    _one_line(exc, "BiopsyScore.to_dict()", type(value).__name__)
    assert "subscriptable" not in str(exc.value) and "indices" not in str(exc.value)


@pytest.mark.parametrize("part", ["activity_index", "isn_rps_class", "adequacy"])
def test_biopsy_score_without_a_part(part: str, demo_result_template: Path) -> None:
    import lnpath

    scores = _score_dict(demo_result_template)
    assert lnpath.BiopsyScore.from_dict(scores).adequacy.n_glomeruli > 0  # the whole dict reads
    del scores[part]
    with pytest.raises(lnpath.InputError) as exc:
        lnpath.BiopsyScore.from_dict(scores)
    _one_line(exc, part, "missing")
    assert "KeyError" not in str(exc.value)


def test_biopsy_score_with_a_part_lacking_a_key(demo_result_template: Path) -> None:
    import lnpath

    scores = _score_dict(demo_result_template)
    del scores["adequacy"]["n_glomeruli"]
    with pytest.raises(lnpath.InputError) as exc:
        lnpath.BiopsyScore.from_dict(scores)
    _one_line(exc, "'n_glomeruli'")
    assert "KeyError" not in str(exc.value)
