"""Benchmark ``score_slide``: seconds and peak RAM per stage, on the demo and a 4x larger slide.

Goals: at most 2 GB for a whole biopsy on 2 CPU cores (issue 6), 8 s for the demo and 30 s for the
4x slide (issue 18). Each slide is scored in a fresh process so that its peak RAM is its own;
``--repeats`` rounds run interleaved and the medians are reported; ``--cli`` adds the
``score_slide`` command on the demo to each round (start-up and imports included).
``--compare-int8`` adds, in each round, a run of each slide with ``LNPATH_CPU_INT8=0`` (the
floating-point network where the CPU would run the int8 one), with the ratio of the medians.
``--compare-kept`` adds, in each round, a run in which the cortex reads its tiles again instead
of cutting them out of those segmentation kept (:mod:`lnpath.wsi.kept_pixels`), with the ratio
of the medians. Peak RSS per stage is measured by resetting the kernel's high-water mark
(``/proc/self/clear_refs``) at each stage start and reading ``VmHWM`` at its end; reader worker
processes are reported separately (their lifetime peak).

The larger slide (the demo's level 0 repeated 2x2: four cores, 27392x7168 px) is built once into
``.cache/bench/`` (git-ignored). Prints one JSON document.

    python scripts/bench_score_slide.py [--threads 2] [--device cpu] [--repeats 3] [--compare-kept]
        [--cli] [--compare-int8]
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

from lnpath.nn.int8 import CPU_INT8_ENV

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "examples" / "demo_biopsy.tiff"
CACHE = REPO / ".cache" / "bench"
GOAL_MB = 2048.0
GOAL_S = {"demo_biopsy.tiff": 8.0, "demo_4x.tiff": 30.0}


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


def score_one(slide: Path, device: str, threads: int, keep: bool = True) -> dict[str, Any]:
    """Score ``slide`` in this process and measure every stage (``keep=False``: nothing kept
    from segmentation for the cortex)."""
    import functools

    import torch

    import lnpath
    import lnpath.workflow.pipeline as pipeline

    torch.set_num_threads(threads)
    if not keep:
        pipeline.KeptPixels = functools.partial(pipeline.KeptPixels, budget_bytes=0)
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

    children_before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        result = lnpath.score_slide(
            slide, out=Path(tmp) / "result", device=device, on_stage=on_stage
        )
        total = time.perf_counter() - start
        data = result.to_dict()
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    # A child that only ran a tool (torch's CUDA build runs `ldconfig -p` when it loads) reports
    # the RSS this process had when it forked: not a worker's memory.
    children = children if children > children_before else 0.0
    peak = max(s["peak_rss_mb"] for s in stages.values())
    return {
        "slide": slide.name,
        "kept": keep,
        "bytes": slide.stat().st_size,
        "dimensions": data["slide"]["dimensions"],
        "n_glomeruli": data["scores"]["adequacy"]["n_glomeruli"],
        "total_seconds": round(total, 2),
        "peak_rss_mb": peak,
        "worker_peak_rss_mb": round(children, 1),
        "stages": stages,
    }


def _medians(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Median seconds (total and per stage) and the largest peak of runs of one slide."""
    stages = runs[0]["stages"]
    total = float(np.median([r["total_seconds"] for r in runs]))
    peak = max(r["peak_rss_mb"] + r["worker_peak_rss_mb"] for r in runs)
    goal = GOAL_S.get(runs[0]["slide"])
    return {
        "total_seconds": round(total, 2),
        "stage_seconds": {
            k: round(float(np.median([r["stages"][k]["seconds"] for r in runs])), 2) for k in stages
        },
        "peak_rss_mb_with_workers": round(peak, 1),
        "goal_seconds": goal,
        "goal_met": (goal is None or total <= goal) and peak <= GOAL_MB,
    }


def _time_command(device: str) -> float:
    """Wall seconds of ``score_slide DEMO`` as a user types it: interpreter start, imports and
    all (the console script beside this interpreter)."""
    script = Path(sys.executable).with_name("score_slide")
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [str(script), str(DEMO), "--out", str(Path(tmp) / "r"), "--device", device]
        start = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return round(time.perf_counter() - start, 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="torch threads (2 = the goal)")
    parser.add_argument("--device", default="cpu", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--repeats", type=int, default=1, help="interleaved rounds (medians)")
    parser.add_argument(
        "--compare-kept", action="store_true", help="also run with nothing kept for the cortex"
    )
    parser.add_argument(
        "--cli", action="store_true", help="also time the `score_slide` command on the demo"
    )
    parser.add_argument(
        "--compare-int8",
        action="store_true",
        help=f"also run with {CPU_INT8_ENV}=0 (the float network where int8 would run)",
    )
    parser.add_argument("--one", type=Path, help=argparse.SUPPRESS)  # child mode
    parser.add_argument("--no-keep", action="store_true", help=argparse.SUPPRESS)  # child mode
    args = parser.parse_args()
    if args.one:
        print(json.dumps(score_one(args.one, args.device, args.threads, keep=not args.no_keep)))
        return
    load_before = os.getloadavg()
    runs = []
    cli_runs: list[float] = []
    slides = (DEMO, large_slide())
    variants = [(True, True)]  # (kept, int8 allowed)
    variants += [(False, True)] if args.compare_kept else []
    variants += [(True, False)] if args.compare_int8 else []
    for _ in range(args.repeats):
        for slide in slides:
            for keep, int8 in variants:
                cmd = [sys.executable, __file__, "--one", str(slide), "--threads"]
                cmd += [str(args.threads), "--device", args.device]
                cmd += [] if keep else ["--no-keep"]
                env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
                env |= {} if int8 else {CPU_INT8_ENV: "0"}
                out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True, env=env)
                runs.append({**json.loads(out.stdout.strip().splitlines()[-1]), "int8": int8})
        if args.cli:
            cli_runs.append(_time_command(args.device))
    medians: dict[str, Any] = {}
    for slide in slides:
        ours = _medians([r for r in runs if r["slide"] == slide.name and r["kept"] and r["int8"]])
        medians[slide.name] = ours
        if args.compare_int8:
            floating = _medians([r for r in runs if r["slide"] == slide.name and not r["int8"]])
            ours["int8_off"] = floating
            ours["ratio_total_vs_int8_off"] = round(
                ours["total_seconds"] / floating["total_seconds"], 3
            )
        if args.compare_kept:
            baseline = _medians([r for r in runs if r["slide"] == slide.name and not r["kept"]])
            ours["nothing_kept"] = baseline
            ours["ratio_total_kept_vs_nothing_kept"] = round(
                ours["total_seconds"] / baseline["total_seconds"], 3
            )
            ours["ratio_cortex_kept_vs_nothing_kept"] = round(
                ours["stage_seconds"]["cortex"] / baseline["stage_seconds"]["cortex"], 3
            )
    if cli_runs:
        demo = medians[DEMO.name]
        cli = float(np.median(cli_runs))
        demo["cli_seconds"] = round(cli, 2)
        demo["cli_all_runs_s"] = cli_runs
        demo["ratio_cli_vs_api"] = round(cli / demo["total_seconds"], 3)
    report = {
        "goal": {"seconds": GOAL_S, "peak_mb": GOAL_MB},
        "cpu_count": os.cpu_count(),
        "threads": args.threads,
        "device": args.device,
        "repeats": args.repeats,
        "statistic": "median of interleaved rounds, each run in a fresh process",
        "medians": medians,
        "load_average_before": [round(v, 2) for v in load_before],
        "load_average_after": [round(v, 2) for v in os.getloadavg()],
        "runs": runs,
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
