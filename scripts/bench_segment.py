"""Benchmark whole-slide glomerulus segmentation against the model's bare forward pass, as ratios.

Contenders on the same slide and the same tissue tiles, in one run, interleaved round by round:

* ``forward``: the network as loaded, alone on the tiles already in memory as tensors (lnpath's
  settings: bfloat16 autocast where the CPU has it, channels_last, batch 4; no flips);
* ``forward_folded``: the same with BatchNorm folded into the convolutions;
* ``forward_fused``: the folded network with each convolution fused with its ReLU and the
  decoder's skip concatenation (:class:`lnpath.nn.fused.FusedUNet`), as segmentation runs it on
  a CPU: the compute floor;
* ``forward_int8``: the int8 network (:mod:`lnpath.nn.int8`) alone on the same tiles as bytes,
  where the CPU has VNNI: the compute floor of segmentation with flips there;
* ``segment_1``: ``segment_glomeruli(tta=False, workers=1)``: reading (in a thread, a few
  batches ahead), white balance, network, stitching and outlines in this process;
* ``segment_2``: the same with two reader processes decoding while the network runs;
* ``segment_tta``: the default (four flips, default readers; int8 where the CPU has VNNI), with
  ``--tta``, and ``segment_tta_float``: the same with ``LNPATH_CPU_INT8=0`` (where int8 runs);
* ``forward_folded_returned``: ``forward_folded`` in a child process with
  ``LNPATH_KEEP_FREED_MEMORY=0``, so glibc hands each large activation back to the kernel and
  faults it in again (the allocator before :mod:`lnpath.core.memory`); timed inside the child
  after its warm-up, one child per round. Every other contender runs with freed memory kept, as
  segmentation does.

Printed as JSON: median seconds per contender, the ratios ``forward_fused / forward_folded``
(below 1: fusing helps), ``forward_int8 / forward_fused`` and ``segment_tta /
segment_tta_float`` (below 1: int8 helps), ``segment_1 / forward_fused`` (what reading, white
balance and stitching add to the floor), ``segment_2 / segment_1`` (below 1: the readers help) and
``forward_folded / forward_folded_returned`` (below 1: keeping freed memory helps), the medians of
lnpath's own timings (``read_s``: waiting for pixels, ``compute_s``, ``stitch_s``), and the load
average before and after (``os.getloadavg``).

With ``--device cuda`` the contenders are those a GPU runs: ``forward`` (the network as loaded,
float16 autocast, batches of 16 as segmentation takes them there), ``segment_1``, ``segment_2``
and ``segment_tta``, with the ratios to ``forward`` and the outlines' agreement with the CPU's
(counts and each GPU outline's best IoU among the CPU's). Goal: 0.5 s per demo biopsy.

Usage::

    python scripts/bench_segment.py [SLIDE] [--threads 2] [--repeats 5] [--tta] [--float32]
        [--model NAME] [--device cpu|cuda]

Default slide: ``examples/demo_biopsy.tiff`` (two cores, 55 tiles of 512 px at 1 µm/px). On a
machine shared with other jobs the seconds move with the load; the ratios less so.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lnpath.analysis.glomeruli import Glomeruli
from lnpath.analysis.measure import normalise_white, slide_white
from lnpath.analysis.segment import MIN_TISSUE, segment_glomeruli
from lnpath.core.errors import ModelError
from lnpath.core.memory import ENV_VAR, keep_freed_memory
from lnpath.io.atomic import write_json
from lnpath.models.store import SegmentationModel, load_model
from lnpath.nn.fused import inference_network
from lnpath.nn.int8 import CPU_INT8_ENV, Int8UNet, card_ranges, int8_enabled
from lnpath.nn.predict import CPU_BFLOAT16_ENV, fast_autocast, resolve_device, to_tensor
from lnpath.nn.unet import fold_batch_norm
from lnpath.wsi.slide import Slide, open_slide
from lnpath.wsi.tiling import tile
from lnpath.wsi.tissue import TissueMask, detect_tissue

REPO = Path(__file__).resolve().parents[1]
BATCH = 4
GPU_BATCH = 16  # segmentation's batch on a GPU
CPU = torch.device("cpu")


def forward_pass(
    slide: Slide,
    model: SegmentationModel,
    tissue: TissueMask,
    form: str,
    device: torch.device = CPU,
) -> Callable[[], int]:
    """The network alone over the slide's tissue tiles, prepared as tensors beforehand, as
    trained (``eager``), BatchNorm folded (``folded``) or fused as segmentation runs it; on a
    GPU (``eager`` only, as segmentation runs it there) in batches of 16 under float16."""
    grid = tile(  # as segmentation asks: a coarse scan is enlarged to the model's µm/px
        slide, model.mpp, model.patch, model.overlap, MIN_TISSUE, tissue, upsample=True
    )
    white = slide_white(slide)
    arrays = [arr for _, arr in grid]
    size = GPU_BATCH if device.type == "cuda" else BATCH
    batches = [
        to_tensor(normalise_white(np.stack(arrays[i : i + size]), white), device)
        for i in range(0, len(arrays), size)
    ]
    bf16 = fast_autocast(device)
    if form in ("fused", "int8"):
        ranges = card_ranges(model.card) if form == "int8" else None
        net = inference_network(
            model.network, device, torch.bfloat16 if bf16 else torch.float32, ranges
        )
        if form == "int8":
            assert isinstance(net, Int8UNet), "the int8 network did not pass its check here"
            batches = [  # the bytes it takes, channels-last (what predict_batch hands it)
                torch.from_numpy(normalise_white(np.stack(arrays[i : i + BATCH]), white)).permute(
                    0, 3, 1, 2
                )
                for i in range(0, len(arrays), BATCH)
            ]
    else:
        net = fold_batch_norm(model.network) if form == "folded" else model.network.eval()
    net.to(device)
    dtype = torch.float16 if device.type == "cuda" else torch.bfloat16

    def run() -> int:
        with (
            torch.no_grad(),
            torch.autocast(device.type, dtype=dtype, enabled=bf16),
        ):
            for x in batches:
                net(x)
        if device.type == "cuda":
            torch.cuda.synchronize(device)  # the GPU runs ahead of Python: wait for the work
        return len(arrays)

    return run


def forward_returned(args: argparse.Namespace, seconds: list[float]) -> Callable[[], int]:
    """``forward_folded`` in a child process whose freed memory goes back to the kernel."""
    command = [sys.executable, __file__, str(args.slide), "--threads", str(args.threads)]
    command += ["--child-forward"] + (["--model", args.model] if args.model else [])

    def run() -> int:
        env = {**os.environ, ENV_VAR: "0"}
        out = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
        tiles, elapsed = out.stdout.split()[-2:]
        seconds.append(float(elapsed))
        return int(tiles)

    return run


def cpu_name() -> str:
    """The CPU model (``/proc/cpuinfo``), so a figure names the machine it came from."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def segmenter(
    slide: Slide,
    model: SegmentationModel,
    tissue: TissueMask,
    tta: bool,
    workers: int | None,
    timings: list[dict[str, float]],
    int8: bool = True,
    device: str = "cpu",
) -> Callable[[], int]:
    def run() -> int:
        before = os.environ.get(CPU_INT8_ENV)
        if not int8:
            os.environ[CPU_INT8_ENV] = "0"
        try:
            gloms = segment_glomeruli(
                slide, model=model, device=device, tissue=tissue, workers=workers, tta=tta
            )
        finally:
            if before is None:
                os.environ.pop(CPU_INT8_ENV, None)
            else:
                os.environ[CPU_INT8_ENV] = before
        timings.append(gloms.metadata["timings"])
        return int(gloms.metadata["timings"]["tiles"])

    return run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "slide", nargs="?", type=Path, default=REPO / "examples" / "demo_biopsy.tiff"
    )
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--tta", action="store_true", help="also time four-flip averaging")
    parser.add_argument("--model", help="model name or folder (default: the shipped default)")
    parser.add_argument(
        "--float32",
        action="store_true",
        help=f"keep the CPU in float32 where it has BF16 ({CPU_BFLOAT16_ENV}=0), as CI runs",
    )
    parser.add_argument(
        "--device",
        choices=("cpu", "cuda"),
        default="cpu",
        help="cuda: the bare forward pass and segmentation on the GPU, and their agreement "
        "with the CPU's outlines",
    )
    parser.add_argument("--child-forward", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument(
        "--record",
        action="store_true",
        help="write the medians into the model card's `speed` (with the machine and the date)",
    )
    args = parser.parse_args(argv)
    try:
        resolve_device(args.device)
    except ModelError as exc:  # CUDA asked for where PyTorch sees no GPU
        parser.exit(2, f"bench_segment: {exc}\n")
    if args.float32:
        os.environ[CPU_BFLOAT16_ENV] = "0"  # here and in the child process
    torch.set_num_threads(args.threads)
    kept = keep_freed_memory()
    model = load_model(args.model) if args.model else load_model()
    slide = open_slide(args.slide)
    tissue = detect_tissue(slide)
    if args.child_forward:  # one warm folded forward pass: its tiles and seconds on stdout
        run = forward_pass(slide, model, tissue, "folded")
        run()
        start = time.perf_counter()
        tiles = run()
        print(tiles, time.perf_counter() - start)
        return 0
    timings: dict[str, list[dict[str, float]]] = {"segment_1": [], "segment_2": []}
    if args.device == "cuda":
        return gpu_benchmark(args, model, slide, tissue, timings)
    race: dict[str, Callable[[], int]] = {
        "forward": forward_pass(slide, model, tissue, "eager"),
        "forward_folded": forward_pass(slide, model, tissue, "folded"),
        "forward_fused": forward_pass(slide, model, tissue, "fused"),
        "segment_1": segmenter(slide, model, tissue, False, 1, timings["segment_1"]),
        "segment_2": segmenter(slide, model, tissue, False, 2, timings["segment_2"]),
    }
    int8 = int8_enabled() and card_ranges(model.card) is not None
    if int8:
        race["forward_int8"] = forward_pass(slide, model, tissue, "int8")
    if args.tta:
        timings["segment_tta"] = []
        race["segment_tta"] = segmenter(slide, model, tissue, True, None, timings["segment_tta"])
        if int8:
            timings["segment_tta_float"] = []
            race["segment_tta_float"] = segmenter(
                slide, model, tissue, True, None, timings["segment_tta_float"], int8=False
            )
    child_seconds: list[float] = []
    if kept:  # else there is nothing to compare with
        race["forward_folded_returned"] = forward_returned(args, child_seconds)
    for run in race.values():
        run()  # warm-up: lazy imports, the fork server, oneDNN kernels
    for t in timings.values():
        t.clear()
    load_before = os.getloadavg()
    seconds, tiles = interleaved(race, args.repeats)
    if kept:  # the child's own timing, not its start-up
        seconds["forward_folded_returned"] = child_seconds[-args.repeats :]
    med = {k: statistics.median(v) for k, v in seconds.items()}
    report: dict[str, Any] = {
        "benchmark": "segment_glomeruli vs the model's bare forward pass on the same tiles",
        "slide": args.slide.name,
        "tiles": tiles,
        "tile_px": model.patch,
        "model_mpp": model.mpp,
        "threads": args.threads,
        "bf16_autocast": fast_autocast(torch.device("cpu")),
        "int8_with_flips": int8,
        "freed_memory_kept": kept,
        "repeats": args.repeats,
        "statistic": "median of interleaved rounds",
        "seconds": {k: round(v, 2) for k, v in med.items()},
        "model": {
            "name": model.name,
            "sha256": model.sha256[:8],
            "card_tta": model.card.get("tta", True),
        },
        "ratio_forward_folded_vs_forward": round(med["forward_folded"] / med["forward"], 3),
        "ratio_forward_fused_vs_folded": round(med["forward_fused"] / med["forward_folded"], 3),
        "ratio_segment_1_vs_forward_fused": round(med["segment_1"] / med["forward_fused"], 3),
        "ratio_segment_2_vs_forward_fused": round(med["segment_2"] / med["forward_fused"], 3),
        "ratio_segment_2_vs_segment_1": round(med["segment_2"] / med["segment_1"], 3),
        "lnpath_timings_median_s": median_timings(timings, 2),
        "all_runs_s": {k: [round(x, 2) for x in v] for k, v in seconds.items()},
        "machine": machine(load_before),
    }
    if kept:
        report["ratio_forward_folded_vs_returned"] = round(
            med["forward_folded"] / med["forward_folded_returned"], 3
        )
    if args.tta:
        report["ratio_segment_tta_vs_forward_fused"] = round(
            med["segment_tta"] / med["forward_fused"], 3
        )
    if int8:
        report["ratio_forward_int8_vs_fused"] = round(med["forward_int8"] / med["forward_fused"], 3)
        if args.tta:
            report["ratio_segment_tta_vs_float"] = round(
                med["segment_tta"] / med["segment_tta_float"], 3
            )
    json.dump(report, sys.stdout, indent=2)
    print()
    if args.record:
        record_speed(model, report)
    return 0


def median_timings(timings: dict[str, list[dict[str, float]]], digits: int) -> dict[str, Any]:
    """Medians of lnpath's own timings (waiting for pixels, network, stitching) per contender."""
    return {
        name: {
            k: round(statistics.median(t[k] for t in runs), digits)
            for k in ("read_s", "compute_s", "stitch_s")
        }
        for name, runs in timings.items()
    }


def machine(load_before: tuple[float, float, float]) -> dict[str, Any]:
    """Where a run was measured, and the load around it (seconds follow the other users)."""
    return {
        "cpus_usable": len(os.sched_getaffinity(0)),
        "cpu": cpu_name(),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "torch": torch.__version__,
        "note": "shared machine: other processes compete for the CPUs; compare within a run",
    }


def interleaved(
    race: dict[str, Callable[[], int]], repeats: int
) -> tuple[dict[str, list[float]], int]:
    """Seconds of each contender per round, the order rotating so that none always leads."""
    seconds: dict[str, list[float]] = {name: [] for name in race}
    tiles = 0
    for i in range(repeats):
        names = list(race)
        for name in names[i % len(names) :] + names[: i % len(names)]:
            start = time.perf_counter()
            tiles = race[name]()
            seconds[name].append(time.perf_counter() - start)
    return seconds, tiles


def gpu_benchmark(
    args: argparse.Namespace,
    model: SegmentationModel,
    slide: Slide,
    tissue: TissueMask,
    timings: dict[str, list[dict[str, float]]],
) -> int:
    """The GPU's contenders: the bare float16 forward pass, segmentation without flips (reading
    here or in two reader processes) and with the default four; the outlines compared with the
    CPU's (same model, same tiles), since the GPU computes in float16."""
    device = torch.device("cuda")
    timings["segment_tta"] = []
    race: dict[str, Callable[[], int]] = {
        "forward": forward_pass(slide, model, tissue, "eager", device),
        "segment_1": segmenter(slide, model, tissue, False, 1, timings["segment_1"], device="cuda"),
        "segment_2": segmenter(slide, model, tissue, False, 2, timings["segment_2"], device="cuda"),
        "segment_tta": segmenter(
            slide, model, tissue, True, None, timings["segment_tta"], device="cuda"
        ),
    }
    for run in race.values():
        run()  # warm-up: CUDA context, cuDNN autotuning, the fork server
    for t in timings.values():
        t.clear()
    load_before = os.getloadavg()
    seconds, tiles = interleaved(race, args.repeats)
    med = {k: statistics.median(v) for k, v in seconds.items()}
    on_gpu = segment_glomeruli(slide, model=model, device="cuda", tissue=tissue)
    on_cpu = segment_glomeruli(slide, model=model, device="cpu", tissue=tissue)
    report = {
        "benchmark": "segment_glomeruli on a GPU vs the model's bare forward pass there",
        "slide": args.slide.name,
        "tiles": tiles,
        "device": torch.cuda.get_device_name(device),
        "precision": "float16 autocast",
        "repeats": args.repeats,
        "statistic": "median of interleaved rounds",
        "seconds": {k: round(v, 3) for k, v in med.items()},
        "ratio_segment_1_vs_forward": round(med["segment_1"] / med["forward"], 3),
        "ratio_segment_2_vs_segment_1": round(med["segment_2"] / med["segment_1"], 3),
        "ratio_segment_tta_vs_forward": round(med["segment_tta"] / med["forward"], 3),
        "goal_s_per_demo_biopsy": 0.5,
        "lnpath_timings_median_s": median_timings(timings, 3),
        "agreement_with_cpu": outline_agreement(on_gpu, on_cpu),
        "all_runs_s": {k: [round(x, 3) for x in v] for k, v in seconds.items()},
        "machine": {**machine(load_before), "cuda": torch.version.cuda},
    }
    json.dump(report, sys.stdout, indent=2)
    print()
    return 0


def outline_agreement(a: Glomeruli, b: Glomeruli) -> dict[str, Any]:
    """Counts of two segmentations of one slide, and each outline of ``a``'s best IoU in ``b``."""
    best = []
    for g in a:
        overlaps = [g.polygon.intersection(h.polygon).area for h in b]
        j = int(np.argmax(overlaps)) if overlaps else -1
        inter = overlaps[j] if overlaps else 0.0
        union = g.polygon.area + (b[j].polygon.area if overlaps else 0.0) - inter
        best.append(inter / union if union else 0.0)
    return {
        "glomeruli": [len(a), len(b)],
        "median_best_iou": round(float(np.median(best)), 4) if best else None,
        "min_best_iou": round(float(min(best)), 4) if best else None,
    }


def record_speed(model: SegmentationModel, report: dict[str, Any]) -> None:
    """The model card's ``speed``: what this run measured, where and when (the card records the
    speed beside the Dice, and only a benchmark run writes it)."""
    card_path = model.path / "card.json"
    card = json.loads(card_path.read_text(encoding="utf-8"))
    card["speed"] = {
        "measured_by": "scripts/bench_segment.py"
        + (" --tta" if "segment_tta" in report["seconds"] else ""),
        "date": time.strftime("%Y-%m-%d"),
        "slide": report["slide"],
        "tiles": report["tiles"],
        "threads": report["threads"],
        "bf16_autocast": report["bf16_autocast"],
        "int8_with_flips": report["int8_with_flips"],
        "median_seconds": report["seconds"],
        "machine": {k: report["machine"][k] for k in ("cpus_usable", "cpu", "torch")},
        "load_average": [
            report["machine"]["load_average_before"][0],
            report["machine"]["load_average_after"][0],
        ],
    }
    write_json(card_path, card)


if __name__ == "__main__":
    raise SystemExit(main())
