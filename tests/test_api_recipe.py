"""The Python API as a data scientist meets it (issue #16).

The README snippet runs unchanged as a plain script; a script without an
``if __name__ == "__main__":`` guard still works (worker processes would re-run it); objects show
themselves in one short line of text and as a rich Jupyter view; long calls show progress on a
terminal unless silenced; scores are read through attributes; tiles default as on the command line.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import pty
import re
import struct
import subprocess
import sys
import termios
from pathlib import Path
from typing import Any

import pytest

import lnpath

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "examples" / "demo_biopsy.tiff"
DEMO_GLOMERULI = REPO / "examples" / "demo_biopsy_glomeruli.geojson"
GUARD = 'if __name__ == "__main__":'
PNG_URI = re.compile(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"')


def _env(**extra: str) -> dict[str, str]:
    """This checkout first on the path (also in the workers), a headless matplotlib."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    env["MPLBACKEND"] = "Agg"
    env.pop("LNPATH_PROGRESS", None)
    env.update(extra)
    return env


def _script(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "script.py"
    path.write_text(body.format(demo=str(DEMO), geojson=str(DEMO_GLOMERULI)), encoding="utf-8")
    return path


def _run(script: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(script)],
        cwd=script.parent,
        env=_env(**env),
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
    )


def _run_on_terminal(script: Path, **env: str) -> tuple[int, str]:
    """Run with stderr on a pseudo-terminal, as in an interactive shell; (exit code, stderr)."""
    leader, follower = pty.openpty()
    # a real terminal has a size; tqdm draws nothing in a 0-column one
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    proc = subprocess.Popen(
        [sys.executable, str(script)],
        cwd=script.parent,
        env=_env(**env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=follower,
    )
    os.close(follower)
    chunks = []
    while True:
        try:
            data = os.read(leader, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(leader)
    return proc.wait(), b"".join(chunks).decode("utf-8", errors="replace")


def readme_snippet() -> str:
    """The first Python block of the README's "In Python / Jupyter" section."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split("## In Python / Jupyter", 1)[1]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


# --------------------------------------------------------------------------------------------
# Scripts


@pytest.mark.slow
def test_readme_snippet_runs_unchanged_as_a_script(tmp_path: Path) -> None:
    snippet = readme_snippet()
    assert GUARD not in snippet, "the README snippet must work without a __main__ guard"
    (tmp_path / "examples").symlink_to(REPO / "examples")
    script = tmp_path / "recipe.py"
    script.write_text(snippet, encoding="utf-8")
    run = _run(script)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "Traceback" not in run.stderr
    result = json.loads((tmp_path / "demo-result" / "result.json").read_text())
    segmentation = result["models"][0]  # the snippet's own outlines, recorded as segmented
    assert segmentation["name"] == "glomeruli-unet-pas" and segmentation["sha256"]
    assert segmentation["run"]["timings"]["tiles"] > 0


def test_outlines_given_in_python_must_be_this_slides(tmp_path: Path) -> None:
    slide = lnpath.open_slide(REPO / "examples" / "demo_biopsy.tiff")
    outlines = REPO / "examples" / "demo_biopsy_glomeruli.geojson"
    gloms = lnpath.Glomeruli.from_geojson(outlines, slide.mpp)
    result = lnpath.score_slide(slide.path, out=tmp_path / "r", glomeruli=gloms, progress=False)
    assert result.to_dict()["models"][0]["name"].startswith("given in Python")
    assert result.to_dict()["scores"]["adequacy"]["n_glomeruli"] == len(gloms)
    other_scale = lnpath.Glomeruli.from_geojson(outlines, slide.mpp * 2)
    with pytest.raises(lnpath.InputError, match="µm/px"):
        lnpath.score_slide(slide.path, out=tmp_path / "s", glomeruli=other_scale)
    assert not (tmp_path / "s").exists()


# Reader processes (tiling with workers) need the guard; a script without one reads in-process.
UNGUARDED = """\
import lnpath

slide = lnpath.open_slide({demo!r})
tiles = lnpath.tile(slide, 1.0, size=512).iter(workers=2, progress=False)
print([int(pixels.sum()) for _, pixels in tiles])
"""

GUARDED = """\
import lnpath


def main():
    slide = lnpath.open_slide({demo!r})
    tiles = lnpath.tile(slide, 1.0, size=512).iter(workers=2, progress=False)
    print([int(pixels.sum()) for _, pixels in tiles])


if __name__ == "__main__":
    main()
"""


def test_a_script_without_a_main_guard_works_in_one_process_and_says_why(tmp_path: Path) -> None:
    run = _run(_script(tmp_path, UNGUARDED))
    assert run.returncode == 0, run.stderr[-3000:]
    assert "Traceback" not in run.stderr and "BrokenProcessPool" not in run.stderr
    sums = json.loads(run.stdout)
    assert len(sums) == len(lnpath.tile(lnpath.open_slide(DEMO), 1.0, size=512))
    said = [line for line in run.stderr.splitlines() if GUARD in line]
    assert len(said) == 1, run.stderr  # one clear sentence, naming the guard that would help


def test_a_guarded_script_uses_workers_without_a_word_and_measures_the_same(
    tmp_path: Path,
) -> None:
    guarded = _run(_script(tmp_path, GUARDED))
    assert guarded.returncode == 0, guarded.stderr[-3000:]
    assert GUARD not in guarded.stderr
    unguarded = _run(_script(tmp_path, UNGUARDED))
    assert json.loads(guarded.stdout) == json.loads(unguarded.stdout)


# --------------------------------------------------------------------------------------------
# Progress

PROGRESS = """\
import lnpath

slide = lnpath.open_slide({demo!r})
gloms = lnpath.Glomeruli.from_geojson({geojson!r}, slide.mpp)
lnpath.measure_glomeruli(gloms[:6], slide, workers=1{extra})
"""


def _progress_script(tmp_path: Path, extra: str = "") -> Path:
    return _script(tmp_path, PROGRESS.replace("{extra}", extra))


def test_progress_shows_on_a_terminal_by_default(tmp_path: Path) -> None:
    code, err = _run_on_terminal(_progress_script(tmp_path))
    assert code == 0, err
    assert "measuring glomeruli" in err and "6/6" in err


def test_progress_false_silences_it(tmp_path: Path) -> None:
    code, err = _run_on_terminal(_progress_script(tmp_path, ", progress=False"))
    assert code == 0, err
    assert "measuring glomeruli" not in err


def test_lnpath_progress_0_silences_it_and_1_forces_it_into_a_log(tmp_path: Path) -> None:
    script = _progress_script(tmp_path)
    code, err = _run_on_terminal(script, LNPATH_PROGRESS="0")
    assert code == 0, err
    assert "measuring glomeruli" not in err
    forced = _run(script, LNPATH_PROGRESS="1")  # stderr is a pipe here, as in a CI log
    assert forced.returncode == 0, forced.stderr
    assert "measuring glomeruli" in forced.stderr


def test_progress_stays_out_of_logs_by_default(tmp_path: Path) -> None:
    """A pipe (a CI log, cron mail) gets no progress bar unless asked for."""
    run = _run(_progress_script(tmp_path))
    assert run.returncode == 0, run.stderr
    assert "measuring glomeruli" not in run.stderr


SCORE_COMMAND = """\
import sys
from lnpath.cli import main

sys.exit(main(["score", {demo!r}, "--out", "OUT", "--glomeruli", {geojson!r}]))
"""


def _score_command(tmp_path: Path, out: str) -> Path:
    return _script(tmp_path, SCORE_COMMAND.replace("OUT", out))


def test_score_slide_keeps_its_bars_off_a_log_and_obeys_lnpath_progress(tmp_path: Path) -> None:
    """The command follows the library's rule: a log (cron, CI, `> log 2>&1`) gets the stage
    lines without the redrawn bars, a terminal gets both, and LNPATH_PROGRESS=0 silences the bars
    there too (the command used to force them on everywhere)."""
    logged = _run(_score_command(tmp_path, "logged"))
    assert logged.returncode == 0, logged.stderr[-3000:]
    assert "Call glomerular lesions" in logged.stderr  # the stage lines stay
    assert "measuring glomeruli" not in logged.stderr and "cortex:" not in logged.stderr
    code, err = _run_on_terminal(_score_command(tmp_path, "terminal"))
    assert code == 0, err[-3000:]
    assert "measuring glomeruli" in err
    code, err = _run_on_terminal(_score_command(tmp_path, "silenced"), LNPATH_PROGRESS="0")
    assert code == 0, err[-3000:]
    assert "Call glomerular lesions" in err and "measuring glomeruli" not in err


def test_an_unknown_progress_setting_is_said_once_and_ignored(tmp_path: Path) -> None:
    run = _run(_progress_script(tmp_path), LNPATH_PROGRESS="sometimes")
    assert run.returncode == 0, run.stderr
    said = [line for line in run.stderr.splitlines() if "LNPATH_PROGRESS" in line]
    assert len(said) == 1 and "sometimes" in said[0], run.stderr
    assert "measuring glomeruli" not in run.stderr  # automatic: a pipe gets no bar


# --------------------------------------------------------------------------------------------
# Objects: short text, rich Jupyter views, typed access, plots


@pytest.fixture(scope="module")
def slide() -> Any:
    return lnpath.open_slide(DEMO)


@pytest.fixture(scope="module")
def gloms(slide: Any) -> Any:
    return lnpath.Glomeruli.from_geojson(DEMO_GLOMERULI, slide.mpp)


@pytest.fixture(scope="module")
def result(tmp_path_factory: pytest.TempPathFactory) -> Any:
    out = tmp_path_factory.mktemp("recipe") / "demo-result"
    return lnpath.score_slide(
        DEMO, out=out, glomeruli=DEMO_GLOMERULI, patient_id="<script>alert(1)</script>"
    )


def _images(html: str) -> list[bytes]:
    """The inline PNGs of an HTML view (each must decode as a PNG)."""
    images = [base64.b64decode(m) for m in PNG_URI.findall(html)]
    assert all(image.startswith(b"\x89PNG\r\n\x1a\n") for image in images)
    return images


def _short(text: str) -> None:
    assert "\n" not in text and len(text) <= 200, text


def test_text_reprs_are_one_short_line(slide: Any, gloms: Any, result: Any) -> None:
    tissue = lnpath.detect_tissue(slide)
    for obj in (
        slide,
        tissue,
        lnpath.tile(slide, mpp=2.0, size=512),
        gloms,
        result,
        result.score,
        result.score.activity,
        result.score.isn_rps_class,
        *result.score.chronicity.components.values(),
    ):
        _short(repr(obj))
    assert "array" not in repr(tissue)
    score = result.score
    assert f"AI {score.activity.total}" in repr(score) or "AI not" in repr(score)
    fibrosis = score.chronicity.components["interstitial_fibrosis"]
    assert repr(fibrosis).startswith("Component(interstitial fibrosis: ")
    assert repr(score.isn_rps_class) == f"ClassProposal({score.isn_rps_class.label})"


def test_an_index_and_a_class_show_as_a_table_and_words(result: Any) -> None:
    """``score.activity`` in a cell showed the dataclass dump of every component."""
    score = result.score
    table = score.activity._repr_html_()
    assert "Modified NIH activity index" in table and table.count("<tr>") == 1 + len(
        score.activity.components
    )
    assert "Modified NIH chronicity index" in score.chronicity._repr_html_()
    words = score.isn_rps_class._repr_html_()
    assert score.isn_rps_class.label.replace("&", "&amp;") in words


def test_biopsy_score_html_has_component_tables_with_n_of_n(result: Any) -> None:
    score = result.score
    html = score._repr_html_()
    assert html.count("<table") >= 2
    for index in (score.activity, score.chronicity):
        for component in index.components.values():
            if component.n is not None and component.N is not None:
                assert f"{component.n}/{component.N}" in html
    assert "not assessed" in html
    assert len(html) < len(score.to_json())  # a view, not a dump


def test_slide_result_html_is_a_self_contained_summary(result: Any) -> None:
    html = result._repr_html_()
    score = result.score
    assert "file://" not in html
    assert "<script>" not in html and "&lt;script&gt;" in html  # patient id escaped
    assert result.diagnosis_line().split(";")[0].strip().replace("&", "&amp;") in html
    assert score.isn_rps_class.label.replace("&", "&amp;") in html
    assert "interstitial fibrosis" in html.lower()
    for name in score.activity.not_assessed + score.chronicity.not_assessed:
        assert name.replace("_", " ") in html.lower()
    assert _images(html), "no inline overlay thumbnail"


def test_slide_views_have_a_thumbnail(slide: Any, gloms: Any) -> None:
    tissue = lnpath.detect_tissue(slide)
    grid = lnpath.tile(slide, mpp=2.0, size=512)
    for obj in (slide, tissue, grid, gloms):
        html = obj._repr_html_()
        assert len(_images(html)) == 1, type(obj).__name__
        assert "file://" not in html


def test_response_result_is_short_and_has_a_view(result: Any) -> None:
    followup = result.findings.copy()
    followup["endocapillary_hypercellularity"] = False
    endpoint = lnpath.compare(result.score, lnpath.score_findings(followup))
    _short(repr(endpoint))
    assert endpoint.status in repr(endpoint)
    assert "<table" in endpoint._repr_html_()


def test_scores_read_through_attributes(result: Any) -> None:
    score = result.score
    as_dict = score.to_dict()
    assert score.activity.total == as_dict["activity_index"]["total"]
    assert score.chronicity.total == as_dict["chronicity_index"]["total"]
    fibrosis = score.chronicity.components["interstitial_fibrosis"]
    assert (
        fibrosis.score
        == as_dict["chronicity_index"]["components"]["interstitial_fibrosis"]["score"]
    )
    scored = lnpath.score_findings(result.findings, cortex={"interstitial_fibrosis": 0.3})
    assert scored.chronicity.components["interstitial_fibrosis"].score == 2


def test_plots_return_matplotlib_objects(slide: Any, gloms: Any, result: Any) -> None:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    tissue = lnpath.detect_tissue(slide)
    grid = lnpath.tile(slide, mpp=2.0, size=512)
    assert isinstance(result.plot(), Figure)
    assert isinstance(result.score.plot(), Axes)
    ax = gloms.plot(slide)
    assert isinstance(ax, Axes) and len(ax.patches) == len(gloms)
    assert isinstance(tissue.plot(), Axes)
    grid_ax = grid.plot()
    assert isinstance(grid_ax, Axes) and len(grid_ax.patches) == len(grid)
    followup = lnpath.score_findings(result.findings)
    assert isinstance(lnpath.compare(result.score, followup).plot(), Figure)


# --------------------------------------------------------------------------------------------
# Defaults


def test_tile_defaults_match_the_command_line(slide: Any, tmp_path: Path) -> None:
    grid = lnpath.tile(slide, mpp=2.0, size=512)
    assert grid.table["tissue_fraction"].notna().all()
    command = ["tiles", str(DEMO), "--mpp", "2", "--size", "512", "--out", str(tmp_path / "t")]
    run = subprocess.run(
        [sys.executable, "-m", "lnpath", *command],
        env=_env(),
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr
    written = json.loads((tmp_path / "t" / "tiles.json").read_text())
    assert written["n_tiles"] == len(grid)
    assert 0 < len(grid) < len(lnpath.tile(slide, mpp=2.0, size=512, min_tissue=0))
