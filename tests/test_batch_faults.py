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
import pytest

from .conftest import batch_as_on_a_terminal, lnpath_cli


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


def test_ctrl_c_on_a_local_cluster_says_interrupted_in_one_line(
    repo_dir: Path, tmp_path: Path
) -> None:
    """Ctrl-C (SIGINT to the whole process group) while two workers score: the batch says
    "interrupted", not dask's tracebacks from workers that took the signal themselves."""
    demo = repo_dir / "examples" / "demo_biopsy.tiff"
    manifest = tmp_path / "manifest.csv"
    manifest.write_text(f"slide_id,path,patient_id,timepoint\ns1,{demo},P1,0\ns2,{demo},P2,0\n")
    out = tmp_path / "batch"
    proc = batch_as_on_a_terminal(
        manifest, "--out", out, "--workers", "2", "--no-tta", "--device", "cpu"
    )
    try:
        while proc.poll() is None and not all((out / f".{s}.lock").exists() for s in ("s1", "s2")):
            time.sleep(0.2)  # both slides are being scored once both hold their lock
        os.killpg(proc.pid, signal.SIGINT)
        err = proc.communicate(timeout=120)[1]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, err
    assert "lnpath: interrupted" in err
    assert "Traceback" not in err and "CancelledError" not in err, err
    assert not list(out.glob(".*.tmp"))  # nothing half-written left behind


def test_overwrite_keeps_a_result_whose_result_json_is_unreadable(
    repo_dir: Path, demo_result_template: Path, tmp_path: Path
) -> None:
    """A truncated result.json may have held a confirmation: --overwrite keeps the folder and
    says why, without naming a confirmation ("confirmed by None") that nobody can see."""
    out = tmp_path / "batch"
    shutil.copytree(demo_result_template, out / "s1", symlinks=True)
    result = out / "s1" / "result.json"
    result.write_bytes(result.read_bytes()[:500])
    before = result.read_bytes()
    manifest = tmp_path / "manifest.csv"
    manifest.write_text(
        "slide_id,path,patient_id,timepoint,glomeruli\n"
        f"s1,{repo_dir / 'examples' / 'demo_biopsy.tiff'},P1,0,"
        f"{repo_dir / 'examples' / 'demo_biopsy_glomeruli.geojson'}\n"
    )
    proc = lnpath_cli("batch", manifest, "--out", out, "--overwrite", "--device", "cpu")
    assert proc.returncode == 1, proc.stderr
    error = pd.read_csv(out / "batch_status.csv", dtype=str)["error"][0]
    assert "cannot be read" in error and "--supersede" in error and "None" not in error, error
    assert result.read_bytes() == before


def test_a_folder_in_the_way_is_told_the_way_out_that_works(
    repo_dir: Path, demo_result_template: Path, tmp_path: Path
) -> None:
    """Both said "(use --overwrite)", which then refused them: a folder of someone else's files
    is never replaced, and an unreadable result.json is moved aside only with --supersede."""
    out = tmp_path / "batch"
    shutil.copytree(demo_result_template, out / "s1", symlinks=True)
    (out / "s1" / "result.json").write_text("{", encoding="utf-8")
    (out / "s2").mkdir()
    (out / "s2" / "notes.txt").write_text("a lab's own file\n", encoding="utf-8")
    demo = repo_dir / "examples" / "demo_biopsy.tiff"
    outlines = repo_dir / "examples" / "demo_biopsy_glomeruli.geojson"
    manifest = tmp_path / "manifest.csv"
    manifest.write_text(
        "slide_id,path,patient_id,timepoint,glomeruli\n"
        f"s1,{demo},P1,0,{outlines}\ns2,{demo},P2,0,{outlines}\n"
    )
    assert lnpath_cli("batch", manifest, "--out", out, "--device", "cpu").returncode == 1
    errors = pd.read_csv(out / "batch_status.csv", dtype=str).set_index("slide_id")["error"]
    assert "--overwrite --supersede moves it aside" in errors["s1"]
    assert "not an lnpath result" in errors["s2"] and "another slide_id" in errors["s2"]
    done = lnpath_cli(
        "batch", manifest, "--out", out, "--device", "cpu", "--overwrite", "--supersede"
    )
    status = pd.read_csv(out / "batch_status.csv", dtype=str).set_index("slide_id")["outcome"]
    assert done.returncode == 1 and status["s1"] == "scored", done.stderr
    assert [p.name for p in out.glob("s1.superseded-*")]  # the unreadable one, kept aside
    assert (out / "s2" / "notes.txt").read_text(encoding="utf-8") == "a lab's own file\n"


@pytest.mark.skipif(
    not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2,
    reason="needs CPU affinity and two CPUs",
)
def test_local_cluster_fits_the_cpus_the_batch_may_use(slides_dir: Path, tmp_path: Path) -> None:
    """On one CPU of a larger node (a SLURM array task, taskset) the batch started a worker per
    node CPU, each scoring a slide at once: memory for all of them, time-sliced on one core."""
    manifest = tmp_path / "manifest.csv"
    manifest.write_text(
        "slide_id,path,patient_id,timepoint\n"  # each reaches a worker, and fails fast there
        f"a,{slides_dir / 'broken.svs'},P1,0\nb,{slides_dir / 'unopenable.tiff'},P2,0\n"
    )
    out = tmp_path / "batch"
    one_cpu = min(os.sched_getaffinity(0))
    proc = subprocess.run(
        [sys.executable, "-m", "lnpath", "batch", manifest, "--out", out],
        capture_output=True,
        text=True,
        check=False,
        preexec_fn=lambda: os.sched_setaffinity(0, {one_cpu}),
    )
    assert proc.returncode == 1, proc.stderr  # both slides failed, in a worker
    status = pd.read_csv(out / "batch_status.csv", dtype=str, keep_default_na=False)
    workers = set(status["worker"])
    assert len(workers) == 1 and "" not in workers, status  # one worker scored both


def test_a_slide_without_mpp_is_told_to_use_the_manifest_column(
    slides_dir: Path, tmp_path: Path
) -> None:
    """`lnpath batch` has no --mpp: the TCGA slide (no µm/px in its file) names the mpp column."""
    manifest = tmp_path / "manifest.csv"
    slide = slides_dir / "tcga-cr-7395-01a-01-ts1.svs"
    manifest.write_text(f"slide_id,path,patient_id,timepoint\nt1,{slide},P1,0\n")
    proc = lnpath_cli("batch", manifest, "--out", tmp_path / "batch", "--device", "cpu")
    assert proc.returncode == 1, proc.stderr
    error = pd.read_csv(tmp_path / "batch" / "batch_status.csv", dtype=str)["error"][0]
    assert "no µm/px" in error and "manifest's mpp column" in error and "--mpp" not in error
