"""Every notebook in notebooks/ executes top to bottom, shows figures, and is stored clean."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))

#: What each notebook must show (text or HTML of its outputs), beyond running without an error.
EXPECTED = {
    "01_score_a_biopsy": ["SlideResult(", "BiopsyScore(", "Glomeruli(", "data:image/png;base64,"],
    "02_review_and_compare": ["ResponseResult(", "status='final'", "confirmed"],
    "03_cohort_on_dask": ["ai_total", "skipped"],
    "04_train_a_glomerulus_model": ["glomeruli-unet-mylab", "fine-tuned"],
    "05_learn_from_sign_outs": ["4 confirmed biopsies of 3 patients", "unconfirmed", "lab-lesions"],
}
#: Training in seconds, not minutes, under test (notebook 04 reads these).
QUICK = {"LNPATH_NOTEBOOK_TRAIN_SECONDS": "5", "LNPATH_NOTEBOOK_TRAIN_STEPS": "4"}
WIDGET = "application/vnd.jupyter.widget-view+json"


def _outputs(notebook: Any) -> list[Any]:
    return [
        output
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.get("outputs", [])
    ]


def _text(output: Any) -> str:
    data = output.get("data", {})
    return (
        str(output.get("text", ""))
        + str(data.get("text/plain", ""))
        + str(data.get("text/html", ""))
    )


def test_there_are_the_five_notebooks() -> None:
    assert [p.stem for p in NOTEBOOKS] == sorted(EXPECTED)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_is_stored_without_outputs(path: Path) -> None:
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    dirty = [
        i
        for i, cell in enumerate(notebook.cells)
        if cell.cell_type == "code" and (cell.get("outputs") or cell.get("execution_count"))
    ]
    assert not dirty, f"cells {dirty} keep outputs; strip them before committing"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_uses_the_public_api(path: Path) -> None:
    """A recipe a lab copies uses ``import lnpath``; internals may move between versions."""
    notebook = nbformat.read(path, as_version=4)
    private = [
        line.strip()
        for cell in notebook.cells
        if cell.cell_type == "code"
        for line in cell.source.splitlines()
        if line.lstrip().startswith(("from lnpath.", "import lnpath."))
    ]
    assert not private, private


def _stray_stderr(outputs: list[Any]) -> list[str]:
    """stderr lines that are not a text progress bar: warnings, log records, tracebacks."""
    return [
        line
        for o in outputs
        if o.output_type == "stream" and o.name == "stderr"
        for line in o.text.splitlines()
        if line.strip() and "%|" not in line
    ]


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_executes_with_figures(
    path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernel's inline backend draws PNGs
    monkeypatch.delenv("LNPATH_PROGRESS", raising=False)
    monkeypatch.setenv("LNPATH_SHARED_DATA", str(data_dir))
    for name, value in QUICK.items():
        monkeypatch.setenv(name, value)
    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(
        notebook,
        timeout=900,
        kernel_name="python3",
        resources={"metadata": {"path": str(path.parent)}},
    )
    client.execute()
    outputs = _outputs(notebook)
    errors = [o for o in outputs if o.output_type == "error"]
    assert not errors, "\n".join("\n".join(o.get("traceback", [])) for o in errors)[-3000:]
    assert not _stray_stderr(outputs), f"{path.name}: {_stray_stderr(outputs)[:5]}"
    figures = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(figures) >= 2, f"{path.name}: {len(figures)} figure(s)"
    text = "".join(_text(o) for o in outputs)
    for expected in EXPECTED[path.stem]:
        assert expected in text, f"{path.name}: no {expected!r} in the outputs"
    assert "file://" not in text


@pytest.mark.slow
def test_segmentation_shows_progress_in_jupyter(data_dir: Path) -> None:
    """Progress is on by default in a kernel: a widget bar (or, without ipywidgets, text)."""
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [
        nbformat.v4.new_code_cell(
            "import lnpath\n"
            "slide = lnpath.open_slide('../examples/demo_biopsy.tiff')\n"
            "gloms = lnpath.Glomeruli.from_geojson("
            "'../examples/demo_biopsy_glomeruli.geojson', slide.mpp)\n"
            "table = lnpath.measure_glomeruli(gloms[:4], slide, workers=1)\n"
        ),
        nbformat.v4.new_code_cell(
            "table = lnpath.measure_glomeruli(gloms[:4], slide, workers=1, progress=False)"
        ),
    ]
    folder = NOTEBOOKS[0].parent
    NotebookClient(notebook, timeout=300, resources={"metadata": {"path": str(folder)}}).execute()
    shown, silenced = (cell.get("outputs", []) for cell in notebook.cells)

    def bars(outputs: list[Any]) -> list[Any]:
        return [o for o in outputs if WIDGET in o.get("data", {}) or "glom" in o.get("text", "")]

    assert bars(shown), shown
    assert not bars(silenced), silenced
