"""``lnpath batch --slurm`` on a real SLURM cluster (CI starts one: scripts/ci_slurm.sh).

Two slides on two SLURM worker jobs, one of which is cancelled (``scancel``) while the batch runs:
the batch must still finish both slides, its dask scheduler must listen on loopback only, and a
re-run must find both results done.
"""

from __future__ import annotations

import getpass
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

pytestmark = pytest.mark.skipif(
    shutil.which("sbatch") is None,
    reason="sbatch not found: no SLURM here (CI installs one with scripts/ci_slurm.sh)",
)

JOB_NAME = "lnpath-test-worker"


def _jobs() -> list[tuple[str, str]]:
    """(job id, state) of this test's worker jobs."""
    out = subprocess.run(
        ["squeue", "-h", "-n", JOB_NAME, "-u", getpass.getuser(), "-o", "%i %T"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [tuple(line.split()) for line in out.splitlines() if line.strip()]  # type: ignore[misc]


def test_batch_on_slurm_survives_a_cancelled_worker(
    repo_dir: Path, demo_followup: Path, tmp_path: Path
) -> None:
    subprocess.run(["sinfo"], check=True, capture_output=True)  # the cluster must be up
    outlines = repo_dir / "examples" / "demo_biopsy_glomeruli.geojson"
    manifest = tmp_path / "manifest.csv"
    manifest.write_text(
        "slide_id,path,patient_id,timepoint,glomeruli\n"
        f"s1,{repo_dir / 'examples' / 'demo_biopsy.tiff'},P1,0,{outlines}\n"
        f"s2,{demo_followup},P1,1,{outlines}\n"
    )
    out = tmp_path / "batch"
    command = [
        sys.executable,
        "-m",
        "lnpath",
        "batch",
        str(manifest),
        "--out",
        str(out),
        "--slurm",
        "--slurm-jobs",
        "2",
        "--slurm-memory",
        "3GB",
        "--slurm-walltime",
        "00:30:00",
        "--slurm-job-name",
        JOB_NAME,
        "--device",
        "cpu",
    ]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    cancelled = None
    try:
        while proc.poll() is None and cancelled is None:
            running = [job for job, state in _jobs() if state == "RUNNING"]
            if len(running) == 2:
                cancelled = running[0]
                subprocess.run(["scancel", cancelled], check=True)
            time.sleep(0.5)  # a polling interval, not a timing assertion
        _, stderr = proc.communicate()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for job, _ in _jobs():
            subprocess.run(["scancel", job], check=False)
    assert cancelled is not None, "the two worker jobs never ran together"
    assert proc.returncode == 0, stderr[-3000:]
    status = pd.read_csv(out / "batch_status.csv", dtype=str, keep_default_na=False)
    assert sorted(status["outcome"]) == ["scored", "scored"], status.to_dict("records")
    for slide_id in ("s1", "s2"):
        assert lnpath_cli("verify", out / slide_id).returncode == 0
    logs = "".join(p.read_text(errors="replace") for p in (out / "slurm-logs").glob("*"))
    assert "tcp://127.0.0.1:" in logs  # the workers reached a loopback-only scheduler
    again = lnpath_cli("batch", manifest, "--out", out)
    assert again.returncode == 0, again.stderr
    status = pd.read_csv(out / "batch_status.csv", dtype=str, keep_default_na=False)
    assert sorted(status["outcome"]) == ["skipped", "skipped"]


def test_slurm_scheduler_exposed_only_when_asked(repo_dir: Path, tmp_path: Path) -> None:
    """Binding to a real interface is a choice the user makes, and is warned about."""
    manifest = tmp_path / "manifest.csv"
    # one slide that fails its pre-flight: a cluster starts, no job has work (an empty manifest
    # and 0 jobs, which this once used, are refused up front)
    manifest.write_text(f"slide_id,path,patient_id,timepoint\ns1,{tmp_path / 'none.svs'},P1,0\n")
    names = (
        [n for n in os.listdir("/sys/class/net") if n != "lo"]
        if Path("/sys/class/net").is_dir()
        else []
    )
    if not names:
        pytest.skip("no network interface besides loopback")
    proc = lnpath_cli(
        "batch",
        manifest,
        "--out",
        tmp_path / "b",
        "--slurm",
        "--slurm-jobs",
        "1",
        "--slurm-interface",
        names[0],
    )
    warning = next((line for line in proc.stderr.splitlines() if "authentication" in line), "")
    assert f"listens on {names[0]} without authentication" in warning, proc.stderr


def test_ctrl_c_on_a_slurm_batch_exits_interrupted(repo_dir: Path, tmp_path: Path) -> None:
    """Importing dask-jobqueue made Ctrl-C a silent ``sys.exit()``: the interrupted batch exited
    0, as if every slide were done. It must say "interrupted", exit 130 and cancel its jobs."""
    subprocess.run(["sinfo"], check=True, capture_output=True)
    demo = repo_dir / "examples" / "demo_biopsy.tiff"
    manifest = tmp_path / "manifest.csv"
    manifest.write_text(f"slide_id,path,patient_id,timepoint\ns1,{demo},P1,0\ns2,{demo},P2,0\n")
    out = tmp_path / "batch"
    options = ["--slurm-jobs", "1", "--slurm-memory", "3GB", "--slurm-job-name", JOB_NAME]
    proc = batch_as_on_a_terminal(
        manifest, "--out", out, "--slurm", *options, "--no-tta", "--device", "cpu"
    )
    try:
        while proc.poll() is None and not (out / ".s1.lock").exists():
            time.sleep(0.2)  # a worker job is scoring s1 once it holds the slide's lock
        os.killpg(proc.pid, signal.SIGINT)
        err = proc.communicate(timeout=120)[1]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        for job, _ in _jobs():
            subprocess.run(["scancel", job], check=False)
    assert proc.returncode == 130, err
    assert "lnpath: interrupted" in err and "Traceback" not in err, err
