"""Benchmark ``lnpath batch``: 1 vs 2 local Dask workers, against scoring in one process, as ratios.

Contenders over the same slides (copies of the demo biopsy under distinct names), in one run,
interleaved round by round, each into a fresh folder (nothing is skipped as already done):

* ``one_process``: ``lnpath.score_slide`` on each slide in turn, in this process (torch on every
  CPU it may use): what a user without a cluster runs;
* ``batch_1``: ``lnpath.score_batch`` with one local worker process (its start-up included);
* ``batch_2``: the same with two workers, each scoring its own slides (Dask gives each worker
  one thread and one torch thread). With ``--device cuda`` it is one worker per visible GPU,
  each task claiming one ``GPU`` resource (``batch_gpus``), as ``lnpath batch --device cuda``
  runs.

Printed as JSON: median seconds per contender and per slide, the ratios of throughput
``batch_2 / one_process`` and ``batch_2 / batch_1`` (above 1: the workers help), every slide's
outcome (a contender that fails a slide stops the benchmark), and the load average before and
after (``os.getloadavg``).

Usage::

    python scripts/bench_batch.py [--slides 4] [--repeats 3] [--device cpu|cuda]

On a machine shared with other jobs the seconds move with the load; compare ratios from one run.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import torch

import lnpath
from lnpath.core.errors import ModelError
from lnpath.nn.predict import resolve_device

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "examples" / "demo_biopsy.tiff"


def slide_copies(folder: Path, count: int) -> pd.DataFrame:
    """A manifest of ``count`` copies of the demo, one patient each, in ``folder``."""
    rows = []
    for i in range(count):
        path = folder / f"biopsy_{i + 1:02d}.tiff"
        shutil.copyfile(DEMO, path)
        rows.append(
            {
                "slide_id": path.stem,
                "path": str(path),
                "patient_id": f"P{i + 1:02d}",
                "timepoint": 0,
            }
        )
    return pd.DataFrame(rows)


def contenders(
    manifest: pd.DataFrame, scratch: Path, device: str, gpus: int
) -> dict[str, Callable[[], int]]:
    """Each contender scores every slide into a new folder and returns how many it scored."""
    runs = itertools.count()

    def fresh() -> Path:
        return scratch / f"run-{next(runs)}"

    def one_process() -> int:
        out = fresh()
        for slide_id, path in zip(manifest["slide_id"], manifest["path"], strict=True):
            lnpath.score_slide(path, out=out / slide_id, device=device, progress=False)
        return len(manifest)

    def batch(workers: int) -> Callable[[], int]:
        def run() -> int:
            status = lnpath.score_batch(
                manifest, fresh(), workers=workers, device=device, progress=False
            )
            failed = status[status["outcome"] != "scored"]
            if len(failed):
                raise SystemExit(
                    f"bench_batch: {failed.iloc[0]['slide_id']}: {failed.iloc[0]['error']}"
                )
            return int((status["outcome"] == "scored").sum())

        return run

    second = "batch_gpus" if device == "cuda" else "batch_2"
    return {
        "one_process": one_process,
        "batch_1": batch(1),
        second: batch(gpus if device == "cuda" else 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slides", type=int, default=4, help="copies of the demo (default 4)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    args = parser.parse_args(argv)
    if args.slides < 2 or args.repeats < 1:
        parser.error("--slides must be at least 2 and --repeats at least 1")
    try:
        resolve_device(args.device)
    except ModelError as exc:  # CUDA asked for where PyTorch sees no GPU
        parser.exit(2, f"bench_batch: {exc}\n")
    gpus = torch.cuda.device_count() if args.device == "cuda" else 0
    with tempfile.TemporaryDirectory(prefix="lnpath-bench-batch-") as tmp:
        scratch = Path(tmp)
        (scratch / "slides").mkdir()
        manifest = slide_copies(scratch / "slides", args.slides)
        race = contenders(manifest, scratch, args.device, gpus)
        race["one_process"]()  # warm-up: imports, the model, oneDNN kernels (workers start cold)
        load_before = os.getloadavg()
        seconds: dict[str, list[float]] = {name: [] for name in race}
        for i in range(args.repeats):  # interleaved; the order rotates so none always leads
            names = list(race)
            for name in names[i % len(names) :] + names[: i % len(names)]:
                start = time.perf_counter()
                scored = race[name]()
                seconds[name].append(time.perf_counter() - start)
                assert scored == args.slides, (name, scored)
                for done in scratch.glob("run-*"):
                    shutil.rmtree(done)
    med = {k: statistics.median(v) for k, v in seconds.items()}
    many = "batch_gpus" if args.device == "cuda" else "batch_2"
    report = {
        "benchmark": "lnpath batch on a local Dask cluster vs score_slide in one process",
        "slides": args.slides,
        "slide": DEMO.name,
        "device": torch.cuda.get_device_name(0) if gpus else "cpu",
        "workers": {"batch_1": 1, many: gpus if args.device == "cuda" else 2},
        "repeats": args.repeats,
        "statistic": "median of interleaved rounds (cluster start-up included)",
        "seconds": {k: round(v, 2) for k, v in med.items()},
        "seconds_per_slide": {k: round(v / args.slides, 2) for k, v in med.items()},
        f"ratio_{many}_vs_one_process": round(med["one_process"] / med[many], 3),
        f"ratio_{many}_vs_batch_1": round(med["batch_1"] / med[many], 3),
        "ratio_meaning": "throughput: above 1, the second is faster",
        "all_runs_s": {k: [round(x, 2) for x in v] for k, v in seconds.items()},
        "machine": {
            "cpus_usable": len(os.sched_getaffinity(0)),
            "load_average_before": [round(x, 2) for x in load_before],
            "load_average_after": [round(x, 2) for x in os.getloadavg()],
            "python": platform.python_version(),
            "torch": torch.__version__,
            "gpus": gpus,
            "note": "shared machine: other processes compete for the CPUs; compare within a run",
        },
    }
    json.dump(report, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
