"""What a notebook hands from one call to the next (an audit of the Python API as in Jupyter).

A data scientist keeps the objects lnpath returns and passes them on: the SlideResult that
``score_slide`` returned into ``verify``/``review``/``confirm``, the open Slide into
``score_slide``. Those once failed with ``TypeError: expected str, bytes or os.PathLike object``;
arguments in the wrong order or of the wrong kind failed with ``AttributeError`` deep inside; an
impossible µm/px was warned about once per glomerulus (or silently kept) instead of refused once.
Now each object that names a folder or a slide is taken, and each mistake is one lnpath error.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import lnpath

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "examples" / "demo_biopsy.tiff"
OUTLINES = REPO / "examples" / "demo_biopsy_glomeruli.geojson"


@pytest.fixture(scope="module")
def slide() -> Any:
    return lnpath.open_slide(DEMO)


@pytest.fixture(scope="module")
def gloms(slide: Any) -> Any:
    return lnpath.Glomeruli.from_geojson(OUTLINES, mpp=slide.mpp)


# --------------------------------------------------------------------------------------------
# a SlideResult goes back in wherever a result folder does


def test_verify_review_and_confirm_take_the_slide_result_they_return(
    demo_result_template: Path, copy_result: Callable[..., Path]
) -> None:
    folder = copy_result(demo_result_template)
    result = lnpath.SlideResult.load(folder)
    assert lnpath.verify(result).revision == 1
    reviewed = lnpath.review(result, pathologist="Dr R", comment="checked in a notebook")
    assert reviewed.revision == 2
    assert json.loads((folder / "result.json").read_text())["comment"] == "checked in a notebook"
    confirmed = lnpath.confirm(reviewed, pathologist="Dr A", note="agree")
    assert confirmed.status == "confirmed"
    signed = lnpath.add_addendum(confirmed, "EM: subepithelial deposits", pathologist="Dr A")
    assert [a["text"] for a in signed.data["addenda"]] == ["EM: subepithelial deposits"]
    assert lnpath.verify(signed).status == "confirmed"
    assert lnpath.SlideResult.load(signed).revision == signed.revision


def test_a_slide_result_older_than_its_folder_is_not_signed_or_edited(
    demo_result_template: Path, copy_result: Callable[..., Path]
) -> None:
    """A notebook's SlideResult from before a colleague saved would have signed a revision
    nobody in that notebook had looked at."""
    folder = copy_result(demo_result_template)
    seen = lnpath.SlideResult.load(folder)  # revision 1, as the notebook shows it
    lnpath.review(folder, pathologist="Dr B", comment="a colleague's revision")  # revision 2
    before = (folder / "result.json").read_bytes()
    held = "you hold revision 1, but the result is at revision 2"
    with pytest.raises(lnpath.ResultError, match=held):
        lnpath.confirm(seen, pathologist="Dr A")
    with pytest.raises(lnpath.ResultError, match="made on revision 1, but the result is at"):
        lnpath.review(seen, pathologist="Dr A", comment="mine")
    assert (folder / "result.json").read_bytes() == before
    current = lnpath.SlideResult.load(folder)
    assert lnpath.confirm(current, pathologist="Dr A").status == "confirmed"
    with pytest.raises(lnpath.ResultError, match="you hold revision 1, but the result is at"):
        lnpath.add_addendum(seen, "EM pending", pathologist="Dr A")
    # signing keeps the revision's number: the one held is the one signed
    assert lnpath.add_addendum(current, "EM pending", pathologist="Dr A").revision == 2


@pytest.mark.parametrize(
    "call",
    [
        lambda value: lnpath.verify(value),
        lambda value: lnpath.review(value, pathologist="Dr R", comment="c"),
        lambda value: lnpath.confirm(value, pathologist="Dr A"),
        lambda value: lnpath.add_addendum(value, "text", pathologist="Dr A"),
        lambda value: lnpath.SlideResult.load(value),
    ],
    ids=["verify", "review", "confirm", "add_addendum", "load"],
)
@pytest.mark.parametrize("value", [3, None, ["r"]], ids=["int", "None", "list"])
def test_a_result_that_is_neither_a_path_nor_a_slide_result(
    call: Callable[[object], object], value: object
) -> None:
    with pytest.raises(lnpath.InputError, match="expected a result folder path or a SlideResult"):
        call(value)


# --------------------------------------------------------------------------------------------
# an open Slide goes into score_slide


def test_score_slide_takes_the_open_slide_with_the_mpp_it_was_opened_at(
    tmp_path: Path, gloms: Any
) -> None:
    opened = lnpath.open_slide(DEMO, mpp=0.5)
    result = lnpath.score_slide(opened, out=tmp_path / "r", glomeruli=gloms, progress=False)
    recorded = result.data["slide"]
    assert Path(recorded["path"]) == DEMO.resolve()
    assert (recorded["mpp"], recorded["mpp_source"]) == (0.5, "caller")
    assert result.score.adequacy.n_glomeruli == len(gloms)


@pytest.mark.parametrize(
    ("arguments", "error", "needle"),
    [
        ({"path": 3}, lnpath.SlideError, "expected a slide file path"),
        ({"path": str(DEMO), "out": 3}, lnpath.InputError, "out must be a folder path"),
    ],
    ids=["slide", "out"],
)
def test_score_slide_arguments_of_the_wrong_kind(
    arguments: dict[str, Any],
    error: type[Exception],
    needle: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)  # where the default result folder would go
    with pytest.raises(error, match=needle):
        lnpath.score_slide(**arguments)
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------------------------
# arguments swapped or of the wrong kind


@pytest.mark.parametrize(
    ("call", "needle"),
    [
        (lambda s, g: lnpath.measure_glomeruli(s, g), "expected an open Slide"),
        (lambda s, g: lnpath.measure_cortex(g, s), "expected an open Slide"),
        (lambda s, g: lnpath.MorphometryCaller().call(s, g), "expected an open Slide"),
        (lambda s, g: lnpath.MorphometryCaller().call(str(OUTLINES), s), "read the outlines first"),
        (lambda s, g: lnpath.measure_glomeruli(5, s), "expected Glomeruli"),
        (lambda s, g: lnpath.tile(s, mpp=2.0, tissue=g), "expected a TissueMask"),
        (lambda s, g: lnpath.segment_glomeruli(s, tissue="tissue.png"), "expected a TissueMask"),
        (lambda s, g: lnpath.segment_glomeruli(s, batch_size=-1), "batch_size"),
        (lambda s, g: lnpath.segment_glomeruli(s, batch_size=0), "batch_size"),
        (lambda s, g: g.write_geojson("x.geojson", object_type="cell"), "object_type"),
    ],
    ids=[
        "measure-swapped",
        "cortex-swapped",
        "caller-swapped",
        "caller-path",
        "measure-number",
        "tile-tissue",
        "segment-tissue",
        "batch-negative",
        "batch-zero",
        "object-type",
    ],
)
def test_a_wrong_argument_is_one_lnpath_error(
    call: Callable[[Any, Any], object], needle: str, slide: Any, gloms: Any
) -> None:
    with pytest.raises(lnpath.InputError, match=needle) as caught:
        call(slide, gloms)
    assert "\n" not in str(caught.value)


def test_an_unknown_object_type_writes_nothing(gloms: Any, tmp_path: Path) -> None:
    """QuPath reads ``annotation`` or ``detection`` outlines; ``cell`` was written unchecked."""
    target = tmp_path / "outlines.geojson"
    with pytest.raises(lnpath.InputError, match="annotation, detection"):
        gloms.write_geojson(target, object_type="cell")
    assert not target.exists()
    gloms.write_geojson(target, object_type="annotation")
    back = lnpath.read_qupath(target)
    assert {f.object_type for f in back} == {"annotation"} and len(back) == len(gloms)


# --------------------------------------------------------------------------------------------
# an impossible µm/px is refused once


def test_measure_glomeruli_refuses_an_impossible_mpp_once(
    slide: Any, gloms: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """It once logged "glomerulus N not measured" for all 23 and returned a table of NaN."""
    with pytest.raises(lnpath.InputError, match="measure_glomeruli: mpp: -1"):
        lnpath.measure_glomeruli(gloms, slide, mpp=-1, progress=False)
    assert "not measured" not in caplog.text
    with pytest.raises(lnpath.InputError, match="MorphometryCaller: mpp: 0"):
        lnpath.MorphometryCaller(mpp=0)


@pytest.mark.parametrize("mpp", [-0.5, 0, "abc", float("nan"), True])
def test_outlines_read_at_an_impossible_mpp_are_refused(mpp: object, qupath_dir: Path) -> None:
    """A negative µm/px was kept (``Glomeruli(..., mpp=-0.5)``); text failed as a TypeError;
    ``True`` read as 1 µm/px (as it still did in ``open_slide``)."""
    with pytest.raises(lnpath.InputError, match=r"Glomeruli\.from_geojson: mpp"):
        lnpath.Glomeruli.from_geojson(qupath_dir / "TPATH012.geojson", mpp=mpp)  # type: ignore[arg-type]
    with pytest.raises(lnpath.InputError, match="not a number"):
        lnpath.open_slide(DEMO, mpp=True)
    read = lnpath.Glomeruli.from_geojson(qupath_dir / "TPATH012.geojson", mpp=0.25)
    assert len(read) == 32 and read.mpp == 0.25
