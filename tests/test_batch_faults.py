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


_MERGE = """
import sys
from pathlib import Path
from lnpath.batch.status import merge_status, status_rows
out, worker = Path(sys.argv[1]), sys.argv[2]
for i in range(int(sys.argv[3])):
    merge_status(out, status_rows([{{"slide_id": f"{{worker}}-{{i}}", "outcome": "scored"}}]))
"""


def test_status_merges_without_fcntl(tmp_path: Path) -> None:
    """Where ``fcntl`` does not exist (Windows), the status lock is still a lock (filelock)."""
    script = "import sys, warnings\nsys.modules['fcntl'] = None\nwarnings.simplefilter('ignore')\n"
    proc = subprocess.run(
        [sys.executable, "-c", script + _MERGE.format(), tmp_path, "w", "2"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    rows = pd.read_csv(tmp_path / "batch_status.csv", dtype=str)
    assert list(rows["slide_id"]) == ["w-0", "w-1"]


def test_concurrent_status_merges_keep_every_row(tmp_path: Path) -> None:
    """Array tasks merging into one batch_status.csv at once: no row is lost to a race."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _MERGE.format(), tmp_path, f"w{n}", "10"],
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in range(4)
    ]
    errors = [p.communicate()[1] for p in procs]
    assert all(p.returncode == 0 for p in procs), errors
    rows = pd.read_csv(tmp_path / "batch_status.csv", dtype=str)
    assert sorted(rows["slide_id"]) == sorted(f"w{n}-{i}" for n in range(4) for i in range(10))
