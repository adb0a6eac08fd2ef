"""Batch runs survive faults: re-run tasks, interrupted batches (issue #20)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

from .conftest import lnpath_cli


def test_a_task_rerun_after_its_result_was_written_succeeds(
    repo_dir: Path, demo_result_template: Path, tmp_path: Path
) -> None:
    """Dask re-runs a task whose worker died right after writing: the result is valid."""
    from lnpath.batch.run import score_task

    out = tmp_path / "s1"
    shutil.copytree(demo_result_template, out, symlinks=True)
    task = {
        "slide_id": "s1",
        "path": str(repo_dir / "examples" / "demo_biopsy.tiff"),
        "glomeruli": str(repo_dir / "examples" / "demo_biopsy_glomeruli.geojson"),
        "patient_id": "P1",
        "out": str(out),
        "device": "cpu",
    }
    record = score_task(task)
    assert record["error"] is None
    assert record["outcome"] in ("scored", "skipped")
    assert lnpath_cli("verify", out).returncode == 0


def test_batch_status_is_written_as_each_slide_finishes(
    repo_dir: Path, demo_followup: Path, tmp_path: Path
) -> None:
    """An interrupted batch keeps the rows of the slides it finished, and cohort reads them."""
    outlines = repo_dir / "examples" / "demo_biopsy_glomeruli.geojson"
    manifest = tmp_path / "manifest.csv"
    manifest.write_text(
        "slide_id,path,patient_id,timepoint,glomeruli\n"
        f"s1,{repo_dir / 'examples' / 'demo_biopsy.tiff'},P1,0,{outlines}\n"
        f"s2,{demo_followup},P1,1,{outlines}\n"
    )
    out = tmp_path / "batch"
    proc = subprocess.Popen(
        [sys.executable, "-m", "lnpath", "batch", manifest, "--out", out, "--workers", "1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    status = out / "batch_status.csv"
    seen_early = False
    try:
        while proc.poll() is None and not seen_early:
            done = [(out / s / "result.json").is_file() for s in ("s1", "s2")]
            seen_early = status.is_file() and not all(done)
            time.sleep(0.2)  # a polling interval, not a timing assertion
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert seen_early, "batch_status.csv appeared only after every slide was done"
    rows = pd.read_csv(status, dtype=str, keep_default_na=False)
    assert len(rows) >= 1
    assert set(rows["outcome"]) <= {"scored", "skipped"}
    proc = lnpath_cli("cohort", out)
    assert proc.returncode == 0, proc.stderr
