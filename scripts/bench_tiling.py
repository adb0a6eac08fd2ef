"""Benchmark: tiles/s of ``lnpath.tile(...)`` vs a plain OpenSlide ``read_region`` loop.

Both read the same grid (every tile at the slide's own resolution) with the same number of
processes, in one run, each repeat on fresh slide handles (each tile is decoded once, as in real
use). Printed as JSON: medians of ``--repeats`` runs, the lnpath/plain ratio and the speed-up
from worker processes. Slides: the CMU test slide (240-px JPEG file tiles, so 256/512-px grid
tiles are unaligned) and a larger pyramidal JPEG TIFF built once from the real Bueno PAS tiles
(training split only) and cached under ``.cache/bench/``.

Usage::

    python scripts/bench_tiling.py [--repeats 5] [--workers 2] [--sizes 256 512]

Timings on a shared machine are noisy; compare figures from the same run only. CPU seconds
summed over the process tree (psutil) are reported beside wall clock because they are not.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing as mp
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import openslide
import psutil
import tifffile
from PIL import Image

import lnpath
from lnpath.wsi.tiling import TileGrid

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


# --- the plain baseline: one read_region per grid tile ------------------------------------
_OSR: openslide.OpenSlide | None = None


def _plain_init(path: str) -> None:
    global _OSR
    _OSR = openslide.OpenSlide(path)


def _plain_read(rects: list[tuple[int, int, int]]) -> list[np.ndarray]:
    assert _OSR is not None
    return [np.asarray(_OSR.read_region((x, y), 0, (s, s)).convert("RGB")) for x, y, s in rects]


def plain_tiles(path: Path, grid: TileGrid, workers: int) -> Iterator[np.ndarray]:
    """What a user writes without lnpath: read_region per tile (in workers: one row per task)."""
    size = grid.spec.size
    rows = [
        [(int(x), int(y), size) for x, y in zip(g["x"], g["y"], strict=True)]
        for _, g in grid.table.groupby("row", sort=True)
    ]
    if workers == 1:
        _plain_init(str(path))
        for row in rows:
            yield from _plain_read(row)
        return
    ctx = mp.get_context("forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn")
    with ProcessPoolExecutor(workers, ctx, initializer=_plain_init, initargs=(str(path),)) as pool:
        for tiles in pool.map(_plain_read, rows):
            yield from tiles


def lnpath_tiles(path: Path, size: int, workers: int) -> Callable[[], Iterator[np.ndarray]]:
    slide = lnpath.open_slide(path)
    grid = lnpath.tile(slide, slide.mpp, size, min_tissue=0)
    return lambda: (arr for _, arr in grid.iter(workers=workers))


class TreeCpu:
    """CPU seconds used by this process and every descendant (workers, forkserver) since
    creation, sampled while the workers are alive: wall clock on a shared machine measures the
    other users' load as much as ours, CPU time does not."""

    def __init__(self) -> None:
        self.start = self._sample()
        self.seen = dict(self.start)

    @staticmethod
    def _sample() -> dict[int, float]:
        me = psutil.Process()
        cpu = {}
        for proc in [me, *me.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                times = proc.cpu_times()
                cpu[proc.pid] = times.user + times.system
        return cpu

    def update(self) -> None:
        for pid, value in self._sample().items():
            self.seen[pid] = max(value, self.seen.get(pid, 0.0))

    def used(self) -> float:
        return sum(v - self.start.get(pid, 0.0) for pid, v in self.seen.items())


def tiles_per_second(
    make: Callable[[], Iterator[np.ndarray]], expected: int
) -> tuple[float, float]:
    """Wall-clock tiles/s, and tiles per CPU-second summed over all processes involved."""
    cpu = TreeCpu()
    start = time.perf_counter()
    n = 0
    checksum = 0
    for arr in make():
        n += 1
        checksum += int(arr[0, 0, 0])  # touch the pixels
        if n % 128 == 0 or n == expected:  # sampling costs CPU too: rarely
            cpu.update()
    elapsed = time.perf_counter() - start
    assert n == expected, (n, expected)
    return n / elapsed, n / max(cpu.used(), 1e-9)


def bench_slide(path: Path, sizes: list[int], workers: int, repeats: int) -> list[dict]:
    results = []
    for size in sizes:
        probe = lnpath.open_slide(path)
        grid = lnpath.tile(probe, probe.mpp, size, min_tissue=0)
        n = len(grid)
        runs: dict[str, list[float]] = {}
        cpu: dict[str, list[float]] = {}
        for _ in range(repeats):  # interleaved, fresh handles every time
            for procs in (1, workers):
                for name, make in (
                    (f"lnpath_{procs}", lnpath_tiles(path, size, procs)),
                    (f"plain_{procs}", lambda p=procs, g=grid: plain_tiles(path, g, p)),
                ):
                    wall, per_cpu = tiles_per_second(make, n)
                    runs.setdefault(name, []).append(wall)
                    cpu.setdefault(name, []).append(per_cpu)
        med = {k: statistics.median(v) for k, v in runs.items()}
        med_cpu = {k: statistics.median(v) for k, v in cpu.items()}
        results.append(
            {
                "slide": path.name,
                "size": size,
                "tiles": n,
                "file_tile": list(probe.native_tile_size(0) or []),
                "megapixels": round(n * size * size / 1e6, 1),
                "workers_used_by_lnpath": (
                    workers if n * size * size * 3 >= lnpath.wsi.tiling._MIN_PARALLEL_BYTES else 1
                ),
                "tiles_per_s": {k: round(v, 1) for k, v in med.items()},
                "ratio_lnpath_vs_plain_1": round(med["lnpath_1"] / med["plain_1"], 3),
                f"ratio_lnpath_vs_plain_{workers}": round(
                    med[f"lnpath_{workers}"] / med[f"plain_{workers}"], 3
                ),
                f"speedup_{workers}_workers_lnpath": round(
                    med[f"lnpath_{workers}"] / med["lnpath_1"], 3
                ),
                f"speedup_{workers}_workers_plain": round(
                    med[f"plain_{workers}"] / med["plain_1"], 3
                ),
                "tiles_per_cpu_s": {k: round(v, 1) for k, v in med_cpu.items()},
                "ratio_lnpath_vs_plain_1_cpu": round(med_cpu["lnpath_1"] / med_cpu["plain_1"], 3),
                # CPU per tile with 1 process / with N (all processes): 1.0 = no parallel overhead;
                # on N idle cores the speed-up approaches N times this
                f"parallel_efficiency_{workers}_lnpath": round(
                    med_cpu[f"lnpath_{workers}"] / med_cpu["lnpath_1"], 3
                ),
                "all_runs": {k: [round(x, 1) for x in v] for k, v in runs.items()},
            }
        )
        print(json.dumps(results[-1]), file=sys.stderr)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    args = parser.parse_args()
    slides = [DATA / "slides" / "cmu-1-small-region.svs", build_pyramid(CACHE / "bueno-8192.tif")]
    if "forkserver" in mp.get_all_start_methods():
        # One fork server serves both contenders; whichever starts it first decides what it
        # preloads. Preload what both need (numpy, OpenSlide, PIL via lnpath.wsi.tiling) so that
        # neither pays the imports in every worker.
        mp.get_context("forkserver").set_forkserver_preload(["lnpath.wsi.tiling"])
    load_before = os.getloadavg()
    results = []
    for path in slides:
        results += bench_slide(path, args.sizes, args.workers, args.repeats)
    report = {
        "benchmark": "lnpath.tile iteration vs plain OpenSlide read_region loop (tiles/s)",
        "repeats": args.repeats,
        "statistic": "median",
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
