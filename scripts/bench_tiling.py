"""Benchmark: ``lnpath.tile(...)`` iteration vs a bare OpenSlide ``read_region`` loop, as ratios.

Contenders over the same level-0 grid, in one run, interleaved round by round (each on fresh
slide handles, so every file tile is decoded once as in real use):

* ``raw_1``: one ``OpenSlide.read_region`` per grid tile, nothing else (the PIL RGBA image it
  returns is not converted: this is OpenSlide's own speed, the floor lnpath is held to);
* ``lnpath_1``: iterating ``lnpath.tile(slide, slide.mpp, size)`` in this process (RGB arrays);
* ``lnpath_2``: the same with ``iter(workers=2)`` (tiles delivered to this one process);
* ``lnpath_2_threads``: the same with ``iter(threads=2)``: two blocks decoded at once on threads
  sharing the slide handle in this process (no copies between processes);
* ``raw_2procs``: two plain processes, each running the raw loop over half of the grid rows and
  keeping its tiles (the ceiling for two processes on this machine).

Printed as JSON: median tiles/s per contender and the ratios ``lnpath_1 / raw_1`` (goal >= 1.0),
``lnpath_2 / raw_1`` and ``lnpath_2_threads / raw_1`` (goal >= 1.8), ``raw_2procs / raw_1`` and
each two-way contender over ``raw_2procs``, plus
the load average before and after (``os.getloadavg``). Slides: the CMU test slide (240-px JPEG
file tiles, so 256/512-px grid tiles are unaligned) and a larger pyramidal JPEG TIFF built once
from the real Bueno PAS tiles (training split only) and cached under ``.cache/bench/``.

Usage::

    python scripts/bench_tiling.py [--repeats 5] [--sizes 256 512]

Timings on a shared machine are noisy: compare ratios from the same run only. CPU seconds of the
one-process contenders are reported beside wall clock because they are less so.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import openslide
import tifffile
from PIL import Image

import lnpath
from lnpath.wsi.tiling import _MIN_PARALLEL_BYTES

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("LNPATH_SHARED_DATA", REPO.parent / "shared" / "data"))
CACHE = REPO / ".cache" / "bench"
MOSAIC_TILES = 8  # 8 x 8 Bueno tiles of 1024 px: 8192 x 8192 px at 0.5 µm/px


def build_pyramid(out: Path) -> Path:
    """A generic pyramidal TIFF (256-px JPEG tiles, 4 levels) from the Bueno training tiles."""
    if out.exists():
        return out
    split = json.loads((DATA / "glomeruli-pas-bueno" / "split.json").read_text())
    images = [
        np.asarray(Image.open(DATA / "glomeruli-pas-bueno" / "images" / f"{n}.png").convert("RGB"))
        for n in split["train"]
    ]
    side = 1024 * MOSAIC_TILES
    mosaic = np.empty((side, side, 3), dtype=np.uint8)
    for i in range(MOSAIC_TILES * MOSAIC_TILES):
        r, c = divmod(i, MOSAIC_TILES)
        img = images[i % len(images)]
        if (i // len(images)) % 2:
            img = img[::-1]  # vary repeats so that no two mosaic tiles are identical
        mosaic[r * 1024 : (r + 1) * 1024, c * 1024 : (c + 1) * 1024] = img
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    with tifffile.TiffWriter(tmp, bigtiff=False) as tif:
        level = mosaic
        for i in range(4):
            tif.write(
                level,
                tile=(256, 256),
                compression="jpeg",
                compressionargs={"level": 85},
                photometric="rgb",
                subfiletype=1 if i else 0,
                resolution=(1e4 / (0.5 * 2**i),) * 2,
                resolutionunit="CENTIMETER",
            )
            level = np.asarray(
                Image.fromarray(level).reduce(2)  # box filter, like scanner pyramids
            )
    tmp.replace(out)
    return out


# --- the raw baseline: one read_region per grid tile, no conversion ------------------------
Rect = tuple[int, int, int]


def raw_loop(path: str, rects: list[Rect]) -> int:
    """Read every rectangle with a fresh handle; return how many (the images are dropped)."""
    osr = openslide.OpenSlide(path)
    try:
        for x, y, s in rects:
            osr.read_region((x, y), 0, (s, s))
    finally:
        osr.close()
    return len(rects)


def grid_rects(path: Path, size: int) -> list[list[Rect]]:
    """lnpath's level-0 grid at the slide's own resolution, as rows of (x, y, size)."""
    slide = lnpath.open_slide(path)
    table = lnpath.tile(slide, slide.mpp, size, min_tissue=0).table
    slide.close()
    return [
        [(int(x), int(y), size) for x, y in zip(g["x"], g["y"], strict=True)]
        for _, g in table.groupby("row", sort=True)
    ]


def contenders(path: Path, size: int, rows: list[list[Rect]]) -> dict[str, Callable[[], int]]:
    """Each contender reads the whole grid once and returns the number of tiles it saw."""
    flat = [r for row in rows for r in row]
    halves = [[r for row in rows[i::2] for r in row] for i in (0, 1)]  # interleaved rows

    def raw_1() -> int:
        return raw_loop(str(path), flat)

    def raw_2procs() -> int:
        with ProcessPoolExecutor(2, mp_context=_context()) as pool:
            return sum(pool.map(raw_loop, [str(path)] * 2, halves))

    def lnpath_n(workers: int, threads: int = 1) -> Callable[[], int]:
        def run() -> int:
            slide = lnpath.open_slide(path)
            n = 0
            grid = lnpath.tile(slide, slide.mpp, size, min_tissue=0)
            for _, arr in grid.iter(workers=workers, threads=threads):
                n += 1
                _ = arr[0, 0, 0]  # touch the pixels
            slide.close()
            return n

        return run

    return {
        "raw_1": raw_1,
        "lnpath_1": lnpath_n(1),
        "lnpath_2": lnpath_n(2),
        "lnpath_2_threads": lnpath_n(1, threads=2),
        "raw_2procs": raw_2procs,
    }


def _context() -> mp.context.BaseContext:
    return mp.get_context("forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn")


def timed(run: Callable[[], int], expected: int) -> tuple[float, float]:
    """Wall-clock tiles/s, and tiles per CPU-second of this process (meaningful for the
    one-process contenders only: workers' CPU is elsewhere)."""
    cpu, start = time.process_time(), time.perf_counter()
    n = run()
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    assert n == expected, (n, expected)
    return n / elapsed, n / max(cpu, 1e-9)


def bench_slide(path: Path, sizes: list[int], repeats: int) -> list[dict]:
    results = []
    for size in sizes:
        rows = grid_rects(path, size)
        n = sum(len(r) for r in rows)
        runs: dict[str, list[float]] = {}
        cpu: dict[str, list[float]] = {}
        race = contenders(path, size, rows)
        for i in range(repeats):  # interleaved; the order rotates so no contender always leads
            names = list(race)
            for name in names[i % len(names) :] + names[: i % len(names)]:
                wall, per_cpu = timed(race[name], n)
                runs.setdefault(name, []).append(wall)
                cpu.setdefault(name, []).append(per_cpu)
        med = {k: statistics.median(v) for k, v in runs.items()}
        med_cpu = {k: statistics.median(v) for k, v in cpu.items()}
        probe = lnpath.open_slide(path)
        results.append(
            {
                "slide": path.name,
                "size": size,
                "tiles": n,
                "file_tile": list(probe.native_tile_size(0) or []),
                "megapixels": round(n * size * size / 1e6, 1),
                "lnpath_2_uses_workers": n * size * size * 4 >= _MIN_PARALLEL_BYTES,
                "tiles_per_s": {k: round(v, 1) for k, v in med.items()},
                "ratio_lnpath_1_vs_raw_1": round(med["lnpath_1"] / med["raw_1"], 3),
                "ratio_lnpath_2_vs_raw_1": round(med["lnpath_2"] / med["raw_1"], 3),
                "ratio_raw_2procs_vs_raw_1": round(med["raw_2procs"] / med["raw_1"], 3),
                "ratio_lnpath_2_vs_raw_2procs": round(med["lnpath_2"] / med["raw_2procs"], 3),
                "ratio_lnpath_2_threads_vs_raw_1": round(med["lnpath_2_threads"] / med["raw_1"], 3),
                "ratio_lnpath_2_threads_vs_raw_2procs": round(
                    med["lnpath_2_threads"] / med["raw_2procs"], 3
                ),
                "tiles_per_cpu_s_1_process": {
                    k: round(med_cpu[k], 1) for k in ("raw_1", "lnpath_1")
                },
                "ratio_lnpath_1_vs_raw_1_cpu": round(med_cpu["lnpath_1"] / med_cpu["raw_1"], 3),
                "all_runs": {k: [round(x, 1) for x in v] for k, v in runs.items()},
            }
        )
        probe.close()
        print(json.dumps(results[-1]), file=sys.stderr)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    args = parser.parse_args()
    slides = [DATA / "slides" / "cmu-1-small-region.svs", build_pyramid(CACHE / "bueno-8192.tif")]
    if "forkserver" in mp.get_all_start_methods():
        # One fork server serves every contender; whichever starts it first decides what it
        # preloads. Preload what all need (numpy, OpenSlide, PIL via lnpath.wsi.tiling) so that
        # none pays the imports in every worker.
        mp.get_context("forkserver").set_forkserver_preload(["lnpath.wsi.tiling", __name__])
    with ProcessPoolExecutor(2, mp_context=_context()) as pool:
        list(pool.map(abs, [1, 2]))  # start the fork server before any contender is timed
    load_before = os.getloadavg()
    results = []
    for path in slides:
        results += bench_slide(path, args.sizes, args.repeats)
    report = {
        "benchmark": "lnpath.tile iteration vs a bare OpenSlide read_region loop (tiles/s)",
        "repeats": args.repeats,
        "statistic": "median of interleaved rounds",
        "goals": {
            "ratio_lnpath_1_vs_raw_1": 1.0,
            "ratio_lnpath_2_vs_raw_1": 1.8,
            "ratio_lnpath_2_threads_vs_raw_1": 1.8,
        },
        "machine": {
            "cpus_usable": len(os.sched_getaffinity(0)),
            "load_average_before": [round(x, 2) for x in load_before],
            "load_average_after": [round(x, 2) for x in os.getloadavg()],
            "python": platform.python_version(),
            "openslide": openslide.__library_version__,
            "note": "shared machine: other processes compete for the CPUs; compare within a run",
        },
        "results": results,
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
