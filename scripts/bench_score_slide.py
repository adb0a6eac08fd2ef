"""Benchmark ``score_slide``: seconds and peak RAM per stage, on the demo and a 4x larger slide.

Goal (issue 6): at most 60 s and 2 GB for a whole biopsy on 2 CPU cores. Each slide is scored in
a fresh process so that its peak RAM is its own. Peak RSS per stage is measured by resetting the
kernel's high-water mark (``/proc/self/clear_refs``) at each stage start and reading ``VmHWM`` at
its end; reader worker processes are reported separately (their lifetime peak).

The larger slide (the demo's level 0 repeated 2x2: four cores, 27392x7168 px) is built once into
``.cache/bench/`` (git-ignored). Prints one JSON document.

    python scripts/bench_score_slide.py [--threads 2] [--device cpu]
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "examples" / "demo_biopsy.tiff"
CACHE = REPO / ".cache" / "bench"
GOAL_S, GOAL_MB = 60.0, 2048.0


def _vm(field: str) -> float:
    """A memory field of this process from /proc/self/status, in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _reset_peak() -> None:
    # not Linux, or not permitted: the peak then covers the run so far
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def large_slide() -> Path:
    """The demo repeated 2x2 as a pyramidal JPEG TIFF, built once."""
    target = CACHE / "demo_4x.tiff"
    if target.is_file() and target.stat().st_mtime > DEMO.stat().st_mtime:
        return target
    spec = importlib.util.spec_from_file_location(
        "make_demo_slide", REPO / "scripts" / "make_demo_slide.py"
    )
    assert spec and spec.loader
    maker = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(maker)
    base = tifffile.imread(DEMO, level=0)
    big = np.tile(base, (2, 2, 1))
    maker.write_tiff(maker.pyramid(big), target, quality=80)
    return target


def score_one(slide: Path, device: str, threads: int) -> dict[str, Any]:
    """Score ``slide`` in this process and measure every stage."""
    import torch

    import lnpath

    torch.set_num_threads(threads)
    stages: dict[str, dict[str, float]] = {}
    started: dict[str, float] = {}

    def on_stage(stage: str, done: bool) -> None:
        if not done:
            _reset_peak()
            started[stage] = time.perf_counter()
            return
        stages[stage] = {
            "seconds": round(time.perf_counter() - started[stage], 2),
            "peak_rss_mb": round(_vm("VmHWM"), 1),
        }

    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        result = lnpath.score_slide(
            slide, out=Path(tmp) / "result", device=device, on_stage=on_stage
        )
        total = time.perf_counter() - start
        data = result.to_dict()
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    peak = max(s["peak_rss_mb"] for s in stages.values())
    return {
        "slide": slide.name,
        "bytes": slide.stat().st_size,
        "dimensions": data["slide"]["dimensions"],
        "n_glomeruli": data["scores"]["adequacy"]["n_glomeruli"],
        "total_seconds": round(total, 2),
        "peak_rss_mb": peak,
        "worker_peak_rss_mb": round(children, 1),
        "stages": stages,
        "goal_met": total <= GOAL_S and peak + children <= GOAL_MB,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="torch threads (2 = the goal)")
    parser.add_argument("--device", default="cpu", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--one", type=Path, help=argparse.SUPPRESS)  # child mode
    args = parser.parse_args()
    if args.one:
        print(json.dumps(score_one(args.one, args.device, args.threads)))
        return
    runs = []
    for slide in (DEMO, large_slide()):
        cmd = [
            sys.executable,
            __file__,
            "--one",
            str(slide),
            "--threads",
            str(args.threads),
            "--device",
            args.device,
        ]
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
        out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True, env=env)
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    report = {
        "goal": {"seconds": GOAL_S, "peak_mb": GOAL_MB},
        "cpu_count": os.cpu_count(),
        "threads": args.threads,
        "device": args.device,
        "runs": runs,
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
