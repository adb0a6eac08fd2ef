"""Worker processes die with ``score_slide`` (issue #20: ``kill -9`` once left ~580 MB running)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest


def test_workers_die_with_a_killed_score_slide(repo_dir: Path, tmp_path: Path) -> None:
    psutil = pytest.importorskip("psutil")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "lnpath",
            "score",
            str(repo_dir / "examples" / "demo_biopsy.tiff"),
            "--glomeruli",
            str(repo_dir / "examples" / "demo_biopsy_glomeruli.geojson"),
            "--out",
            str(tmp_path / "out"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    parent = psutil.Process(proc.pid)
    descendants: list = []
    try:
        workers: list = []
        while proc.poll() is None and not workers:  # pool workers: grandchildren (forkserver)
            try:  # or further children (spawn) of the run
                descendants = parent.children(recursive=True)
                workers = [p for p in descendants if p.ppid() != proc.pid] or (
                    descendants if len(descendants) > 2 else []
                )
            except psutil.NoSuchProcess:
                break
            time.sleep(0.1)  # a polling interval, not a timing assertion
        if not workers:
            pytest.skip("score_slide started no worker processes here (one CPU?)")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        _, alive = psutil.wait_procs(descendants, timeout=30)
        assert not alive, f"{len(alive)} worker process(es) outlived score_slide"
    finally:
        for child in descendants:
            with contextlib.suppress(psutil.NoSuchProcess):
                child.kill()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
