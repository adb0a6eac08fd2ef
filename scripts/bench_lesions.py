"""Benchmark lesion evidence on the demo slide; print JSON (glomeruli per second).

* ``morphometry``: reading each glomerulus crop at 0.5 µm/px + all measurements + rules.
* ``cnn_end_to_end``: crop reading at the model's µm/px + the lesion CNN (untrained weights of the
  default architecture: speed does not depend on the weight values).
* ``cnn_forward``: the network alone on batches of 64 crops already in memory.
* ``cortex_mm2_per_s``: :func:`lnpath.analysis.cortex.measure_cortex` (PAS) over the slide's tissue.
* ``side_by_side``: the same work with 1 and with 2 workers, alternately in one run, as a speed-up
  ratio: morphometry of every glomerulus (threads) and the cortex (reader processes), on the demo
  and on the 4-core stress slide of ``bench_score_slide.py`` (the demo tiled 2x2, its outlines
  too).

Times are medians over ``--repeat`` runs.

Usage: ``python scripts/bench_lesions.py [--threads 2] [--device cpu|cuda] [--repeat 3]``
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from shapely import affinity

import lnpath
from lnpath.analysis.cortex import measure_cortex
from lnpath.analysis.glomeruli import Glomeruli, Glomerulus
from lnpath.analysis.lesion_cnn import TrainedLesionCaller
from lnpath.analysis.lesions import MorphometryCaller
from lnpath.analysis.measure import measure_glomeruli

REPO = Path(__file__).resolve().parents[1]


def _median(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def _paired(
    first: Callable[[], object], second: Callable[[], object], repeat: int
) -> tuple[float, float]:
    """Median seconds of two alternatives, run alternately so drifting load hits both alike."""
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(repeat):
        for fn, out in ((first, times[0]), (second, times[1])):
            start = time.perf_counter()
            fn()
            out.append(time.perf_counter() - start)
    return float(np.median(times[0])), float(np.median(times[1]))


def _side_by_side(slide: lnpath.Slide, gloms: Glomeruli, repeat: int) -> dict[str, Any]:
    """Morphometry and cortex with 1 vs 2 workers, alternately."""
    out: dict[str, Any] = {"glomeruli": len(gloms)}
    for name, workers_are, work in (
        ("morphometry", "threads", lambda w: measure_glomeruli(gloms, slide, workers=w)),
        (
            "cortex",
            "reader processes",
            lambda w: measure_cortex(slide, gloms, stain="PAS", workers=w),
        ),
    ):
        one, two = _paired(partial(work, 1), partial(work, 2), repeat)
        out[name] = {
            "workers_are": workers_are,
            "workers_1_s": round(one, 2),
            "workers_2_s": round(two, 2),
            "speedup": round(one / two, 2),
        }
    return out


def _stress_slide() -> Path:
    """The 4-core stress slide of ``bench_score_slide.py`` (the demo tiled 2x2), built once."""
    spec = importlib.util.spec_from_file_location(
        "bench_score_slide", REPO / "scripts" / "bench_score_slide.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return Path(module.large_slide())


def _tiled(gloms: Glomeruli, slide: lnpath.Slide) -> Glomeruli:
    """The demo's outlines repeated 2x2, as the stress slide repeats its pixels."""
    width, height = slide.dimensions
    copies = []
    for dy in (0, height):
        for dx in (0, width):
            for g in gloms:
                polygon = affinity.translate(g.polygon, dx, dy)
                copies.append(Glomerulus.from_polygon(len(copies) + 1, polygon, slide.mpp))
    return Glomeruli(copies, slide.mpp, "demo outlines tiled 2x2")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--arch", choices=("small", "resnet18"), default="small")
    parser.add_argument("--size", type=int, default=64)
    args = parser.parse_args()
    # torch is imported here, not at the top: worker processes re-import this script as their
    # __main__, and a top-level torch import would add a second to every worker pool's start
    import torch

    from lnpath.analysis.lesion_cnn import predict_logits
    from lnpath.nn.lesion_net import LesionNet, LesionNetConfig
    from lnpath.training.lesions import write_model_folder

    torch.set_num_threads(args.threads)
    slide = lnpath.open_slide(REPO / "examples" / "demo_biopsy.tiff")
    gloms = Glomeruli.from_geojson(REPO / "examples" / "demo_biopsy_glomeruli.geojson", slide.mpp)
    n = len(gloms)
    morph = _median(lambda: MorphometryCaller().call(gloms, slide), args.repeat)
    with tempfile.TemporaryDirectory() as tmp:
        labels = ("global_sclerosis", "segmental_sclerosis", "cellular_crescent")
        config = LesionNetConfig(labels=labels, arch=args.arch, input_size=args.size)
        write_model_folder(LesionNet(config), {"mpp": 1.0}, Path(tmp) / "bench")
        caller = TrainedLesionCaller.from_name(Path(tmp) / "bench", device=args.device)
        cnn = _median(lambda: caller.call(gloms, slide), args.repeat)
        crops = np.random.default_rng(0).integers(0, 255, (256, args.size, args.size, 3), np.uint8)
        forward = _median(lambda: predict_logits(caller.net, crops), args.repeat)
    cortex = _median(lambda: measure_cortex(slide, gloms, stain="PAS"), args.repeat)
    tissue_mm2 = measure_cortex(slide, gloms, stain="PAS").tissue_area_mm2
    stress = _stress_slide()
    stress_slide = lnpath.open_slide(stress)
    side_by_side = {
        "demo": _side_by_side(slide, gloms, args.repeat),
        "demo_4x": _side_by_side(stress_slide, _tiled(gloms, slide), args.repeat),
    }
    result = {
        "slide": "examples/demo_biopsy.tiff",
        "glomeruli": n,
        "device": args.device,
        "torch_threads": args.threads,
        "cpu": platform.processor() or platform.machine(),
        "cnn": {"arch": args.arch, "input_size": args.size},
        "glomeruli_per_s": {
            "morphometry": round(n / morph, 2),
            "cnn_end_to_end": round(n / cnn, 2),
            "cnn_forward": round(len(crops) / forward, 1),
        },
        "cortex_mm2_per_s": round(tissue_mm2 / cortex, 3),
        "side_by_side": side_by_side,
    }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
