"""Whole-slide glomerulus segmentation: tissue tiles → U-Net → stitched probability → polygons.

Only tiles that contain tissue are read, at the model's µm/px, with overlap, and white-balanced with
the slide's glass (one gain per slide: scanners deliver white glass and change nothing, an
under-exposed camera snapshot is brought to the colours the network was trained on). Neighbouring
tiles form groups (one per tissue piece); each group gets a probability canvas just large enough
for it, with overlaps blended by linear ramps, so a glomerulus cut by a tile seam is segmented as
one object and memory scales with the biopsy, never with the glass around it (peers.md #1). A group
is labelled and turned into polygons as soon as its last tile is predicted, then its canvas is
freed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import pandas as pd
import torch
from scipy import ndimage
from shapely import affinity
from shapely.geometry import Polygon
from shapely.validation import make_valid
from skimage.measure import find_contours

from lnpath.analysis.glomeruli import Glomeruli, Glomerulus
from lnpath.analysis.measure import normalise_white, slide_white
from lnpath.core.args import check_count, check_optional_flag
from lnpath.core.memory import keep_freed_memory
from lnpath.core.progress import progress_bar
from lnpath.core.threads import ordered_on_threads
from lnpath.models.store import DEFAULT_MODEL, SegmentationModel, load_model
from lnpath.nn.fused import inference_network
from lnpath.nn.int8 import card_ranges
from lnpath.nn.postprocess import glomerulus_masks
from lnpath.nn.predict import fast_autocast, precision, predict_batch, resolve_device
from lnpath.wsi.grid import TileInfo
from lnpath.wsi.kept_pixels import KeptPixels, require_kept
from lnpath.wsi.prefetch import prefetched
from lnpath.wsi.slide import SNAP_TOLERANCE, coarse_scan, require_open
from lnpath.wsi.tiling import TileGrid, default_readers, tile
from lnpath.wsi.workers import available_cpus

if TYPE_CHECKING:
    from lnpath.wsi.slide import Slide
    from lnpath.wsi.tissue import TissueMask

log = logging.getLogger(__name__)

MIN_TISSUE = 0.02
"""Tiles with less tissue than this are skipped (a glomerulus at a tissue edge still reaches it)."""

WEAK_DETECTION = 0.7
"""Mean probability inside an outline below which a detection is *weak*. With the shipped model on
the 17 licensed training tiles, 1 of 18 true detections (a glomerulus cut by the tile edge, 0.66)
and 2 of 3 false ones (0.59, 0.66) fall below it; the median true detection has 0.95."""

WEAK_SLIDE_MEDIAN = 0.8
"""A slide whose median detection is below this has mostly weak detections: the model does not
recognise the tissue as it knows glomeruli (another organ or stain, a wrong µm/px). Far from both
sides: 0.94 on the demo biopsy; 0.64 on an H&E skin section (CMU-1), where it outlines 11
"glomeruli"."""


def segment_glomeruli(
    slide: Slide,
    model: SegmentationModel | str | os.PathLike[str] | None = None,
    device: str = "auto",
    batch_size: int | None = None,
    progress: bool | None = None,
    tissue: TissueMask | None = None,
    workers: int | None = None,
    tta: bool | None = None,
    keep: KeptPixels | None = None,
) -> Glomeruli:
    """Find every glomerulus in a slide.

    Args:
        slide: An open slide (its µm/px is required; :func:`~lnpath.open_slide` refuses without).
        model: A loaded model, a model name or folder; default ``glomeruli-unet-pas``.
        device: ``"auto"`` (CUDA when available), ``"cpu"`` or ``"cuda"``.
        batch_size: Tiles per forward pass (default 16 on CUDA; on a CPU 4 tiles in flight:
            2 per batch in each of two lanes, 4 where torch has one thread).
        progress: A bar over the tiles; default on in Jupyter and on a terminal, off in pipes
            (``LNPATH_PROGRESS``).
        tissue: A tissue mask already computed for this slide (detected here otherwise).
        workers: Reader processes, each opening its own slide handle (1 = reading in this
            process, a few batches ahead of the network, two blocks at once on threads);
            default 2 (for grids over 8 tiles) when the network leaves a core free: on CUDA,
            or when torch's CPU threads are fewer than the CPUs. Else 1: on 2 cores running 2
            torch threads, 2 reader processes made the demo 1.6x slower than reading in this
            process (``scripts/bench_segment.py``).
        tta: Average over four flips (default: the model card's setting); ``False`` runs one
            forward pass instead of four (segmentation about twice as fast on a CPU: reading and
            stitching stay) at a small cost in outline quality.
        keep: where to keep the tiles read, when it is at the model's µm/px, so that a later
            pass over the tissue at that µm/px (:func:`~lnpath.analysis.cortex.measure_cortex`)
            cuts them out instead of reading them again.

    Returns:
        The glomeruli (polygons in level-0 px), with ``metadata`` holding the model, tile count
        and timings (``read_s``: waiting for pixels; ``compute_s``: the network, summed over
        the lanes that run batches at once, so it can exceed the wall time; ``stitch_s``).

    Raises:
        ModelError: Unknown or tampered model, or CUDA requested where none exists.
        InputError: ``slide`` is not an open slide, ``batch_size`` or ``workers`` is not a
            whole number >= 1, ``tta`` or ``progress`` is neither a bool nor None, or ``keep``
            is not a :class:`KeptPixels`.
    """
    require_open(slide, "segment_glomeruli")
    if batch_size is not None:
        batch_size = check_count(batch_size, "batch_size")
    if workers is not None:
        workers = check_count(workers, "workers")
    tta = check_optional_flag(tta, "segment_glomeruli: tta")
    progress = check_optional_flag(progress, "segment_glomeruli: progress")
    require_kept(keep, "segment_glomeruli: keep")
    dev = resolve_device(device)
    if dev.type == "cpu":
        keep_freed_memory()  # no page faults on every layer's output (lnpath.core.memory)
    net = model if isinstance(model, SegmentationModel) else load_model(model or DEFAULT_MODEL)
    net.network.to(dev)
    lanes = _compute_lanes(dev)  # and as many reading threads
    batch = batch_size or (16 if dev.type == "cuda" else 4 // lanes)
    if slide.mpp > net.mpp * (1.0 + SNAP_TOLERANCE):
        log.warning("%s: %s", slide.path, coarse_scan(slide.mpp, net.mpp))
    grid = tile(slide, net.mpp, net.patch, net.overlap, MIN_TISSUE, tissue, upsample=True)
    stats = _Stats(tiles=len(grid))
    meta: dict[str, Any] = {
        "model": net.name,
        "sha256": net.sha256,
        "mpp": net.mpp,
        "device": str(dev),
        "precision": precision(dev),
        "timings": stats.timings,
    }
    if len(grid) == 0:
        log.warning("%s: no tissue found; returning zero glomeruli", slide.path)
        return Glomeruli([], slide.mpp, net.name, metadata=meta)
    n_workers = workers if workers is not None else _readers(grid, dev)
    use_tta = bool(net.card.get("tta", True)) if tta is None else tta
    meta["tta"] = use_tta
    white = slide_white(slide)
    meta["white_point"] = [round(float(v), 1) for v in white]
    stitcher = _Stitcher(grid, net)
    network = inference_network(
        net.network,
        dev,
        torch.bfloat16 if fast_autocast(dev) else torch.float32,
        int8_ranges=card_ranges(net.card) if use_tta else None,  # validated with the flips
    )
    meta["precision"] = getattr(network, "precision", meta["precision"])
    if hasattr(network, "ranges_sha256"):  # int8: its calibration is part of the model run
        meta["int8_ranges_sha256"] = network.ranges_sha256
    glomeruli: list[Glomerulus] = []
    store = keep if keep is not None and keep.accepts(grid.spec) else None

    def compute(
        batch: tuple[list[int], list[TileInfo], list[np.ndarray]],
    ) -> tuple[np.ndarray, float]:
        arrays = batch[2]
        start = time.perf_counter()
        images = normalise_white(np.stack(arrays), white)
        probs = predict_batch(network, images, dev, tta=use_tta)
        return probs, time.perf_counter() - start

    # closed on any error, so that the reader thread stops and the slide is free at once
    with (
        contextlib.closing(_batches(grid, batch, n_workers, lanes, progress, stats)) as batches,
        contextlib.closing(_in_lanes(batches, compute, lanes)) as predicted,
    ):
        for (indices, infos, arrays), (probs, compute_s) in predicted:
            if store is not None and not all(map(store.keep, infos, arrays)):
                store = None  # over its budget: the later pass reads the rest itself
            stats.timings["compute_s"] = round(stats.timings["compute_s"] + compute_s, 3)
            start = time.perf_counter()
            for index, prob in zip(indices, probs, strict=True):
                for group in stitcher.add(index, prob):
                    first = len(glomeruli) + 1
                    glomeruli.extend(stitcher.objects(group, slide.mpp, first_id=first))
            stats.add("stitch_s", start)
    log.info(
        "%s: %d glomeruli from %d tiles (%s)",
        slide.path.name,
        len(glomeruli),
        len(grid),
        stats.timings,
    )
    meta["detection_quality"] = detection_quality(glomeruli)
    if meta["detection_quality"]["warning"]:
        log.warning("%s: %s", slide.path.name, meta["detection_quality"]["warning"])
    return Glomeruli(glomeruli, slide.mpp, net.name, metadata=meta)


def detection_quality(glomeruli: list[Glomerulus]) -> dict[str, Any]:
    """How confidently the model outlined a slide's glomeruli, with a warning when mostly weakly.

    Returns:
        ``n``, ``median_probability``, ``weak`` (detections below :data:`WEAK_DETECTION`) and
        ``warning`` (None, or one sentence when the median is below :data:`WEAK_SLIDE_MEDIAN`).
    """
    probs = np.array([g.probability for g in glomeruli], dtype=float)
    probs = probs[~np.isnan(probs)]
    if not len(probs):
        return {"n": 0, "median_probability": None, "weak": 0, "warning": None}
    median = float(np.median(probs))
    weak = int((probs < WEAK_DETECTION).sum())
    warning = None
    if median < WEAK_SLIDE_MEDIAN:
        warning = (
            f"most glomerulus detections are weak (median probability {median:.2f}; {weak} of "
            f"{len(probs)} below {WEAK_DETECTION}): is this a PAS-stained kidney section at the "
            "stated µm/px? Check every outline before using the counts"
        )
    return {
        "n": len(probs),
        "median_probability": round(median, 3),
        "weak": weak,
        "warning": warning,
    }


@dataclass
class _Stats:
    tiles: int
    timings: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.timings.update(tiles=self.tiles, read_s=0.0, compute_s=0.0, stitch_s=0.0)

    def add(self, key: str, start: float) -> None:
        self.timings[key] = round(self.timings[key] + time.perf_counter() - start, 3)


def _readers(grid: TileGrid, device: torch.device) -> int:
    """Reader processes by default: only where they do not take the network's cores."""
    spare = device.type == "cuda" or torch.get_num_threads() < available_cpus()
    return default_readers(grid) if spare else 1


def _compute_lanes(device: torch.device) -> int:
    """Batches computed at once: 2 on a CPU where torch has 2 or more threads, each lane with
    half of them. A network on all the cores stalls whenever the reader thread takes one (its
    threads wait for each other at every layer); two lanes keep every core busy, and on the
    demo with 2 cores took segmentation from 2.95 s to 2.36 s without flips and from 5.08 s to
    4.19 s with four, at two tiles per batch and lane (``scripts/bench_segment.py``).

    Reading decodes as many blocks at once as there are lanes: without flips, two took the demo
    from 2.28 s to 2.05 s. Where torch has one thread (a Dask worker, ``OMP_NUM_THREADS=1``),
    one lane and one reader keep each task on about one core."""
    return 2 if device.type == "cpu" and torch.get_num_threads() >= 2 else 1


B = TypeVar("B")
R = TypeVar("R")


def _in_lanes(
    items: Iterator[B], work: Callable[[B], R], lanes: int
) -> Generator[tuple[B, R], None, None]:
    """``(item, work(item))`` in the order of ``items``, ``lanes`` at once on threads that each
    run torch on ``torch.get_num_threads() // lanes`` threads (1 lane: here, in this thread)."""
    if lanes == 1:
        for item in items:
            yield item, work(item)
        return
    threads = torch.get_num_threads()
    per_lane = (max(1, threads // lanes),)
    try:  # one batch waits while each lane computes
        yield from ordered_on_threads(
            work, items, lanes, lanes + 1, "lnpath-lane", torch.set_num_threads, per_lane
        )
    finally:
        if torch.get_num_threads() != threads:  # builds where the setting is per process
            torch.set_num_threads(threads)


def _batches(
    grid: TileGrid, size: int, workers: int, threads: int, progress: bool | None, stats: _Stats
) -> Generator[tuple[list[int], list[TileInfo], list[np.ndarray]], None, None]:
    """Tiles in table order, grouped in batches, read by ``workers`` processes or, with one, on
    ``threads`` threads here; time spent waiting for pixels is ``read_s``."""
    indices: list[int] = []
    infos: list[TileInfo] = []
    arrays: list[np.ndarray] = []
    ahead = None
    if workers == 1:  # reader processes already read ahead; a thread does here
        # the bar lives in this thread: widgets and progress_scope's context stay on this side
        ahead = prefetched(grid.iter(progress=False, threads=threads), depth=2 * size)
        read = progress_bar(len(grid), grid.slide.path.name, "tile", progress, iterable=ahead)
    else:
        read = grid.iter(workers=workers, progress=progress)
    tiles = iter(enumerate(read))
    try:
        while True:
            start = time.perf_counter()
            item = next(tiles, None)
            stats.add("read_s", start)
            if item is not None:
                index, (info, array) = item
                indices.append(index)
                infos.append(info)
                arrays.append(array)
            if arrays and (item is None or len(arrays) == size):
                yield indices, infos, arrays
                indices, infos, arrays = [], [], []
            if item is None:
                return
    finally:
        if ahead is not None:
            ahead.close()  # stops the reader thread now, not when garbage is collected


class _Stitcher:
    """Blends tile probabilities into one canvas per group of touching tiles."""

    def __init__(self, grid: TileGrid, net: SegmentationModel) -> None:
        self.net = net
        self.spec = grid.spec
        table = grid.table
        self.rows = table["row"].to_numpy()
        self.cols = table["col"].to_numpy()
        level_ds = grid.slide.level_downsamples[grid.spec.level]
        origins = grid.origins() * level_ds  # float level-0 px of each tile's corner
        step = grid.spec.stride * grid.spec.downsample
        self.x0 = float(origins[0, 0] - self.cols[0] * step)  # level-0 px of lattice (0, 0)
        self.y0 = float(origins[0, 1] - self.rows[0] * step)
        self.group, self.boxes = _tile_groups(table)
        self.remaining = np.bincount(self.group)
        self.sums: dict[int, np.ndarray] = {}
        self.weights: dict[int, np.ndarray] = {}
        self.ramp = _ramp(grid.spec.size, grid.spec.overlap)

    def add(self, index: int, prob: np.ndarray) -> list[int]:
        """Blend tile ``index``; return the groups completed by it."""
        g = int(self.group[index])
        r0, c0, r1, c1 = self.boxes[g]
        stride, size = self.spec.stride, self.spec.size
        if g not in self.sums:
            shape = ((r1 - r0) * stride + size, (c1 - c0) * stride + size)
            self.sums[g] = np.zeros(shape, np.float32)
            self.weights[g] = np.zeros(shape, np.float32)
        y = (self.rows[index] - r0) * stride
        x = (self.cols[index] - c0) * stride
        self.sums[g][y : y + size, x : x + size] += prob * self.ramp
        self.weights[g][y : y + size, x : x + size] += self.ramp
        self.remaining[g] -= 1
        return [g] if self.remaining[g] == 0 else []

    def objects(self, g: int, slide_mpp: float, first_id: int) -> list[Glomerulus]:
        """Label a completed group, free its canvas and return its glomeruli."""
        weights = self.weights.pop(g)
        prob = self.sums.pop(g)
        np.divide(prob, weights, out=prob, where=weights > 0)
        del weights
        post = self.net.postprocess
        masks = glomerulus_masks(
            prob,
            self.net.mpp,
            threshold=post["threshold"],
            min_area_um2=post["min_area_um2"],
            split_depth_um=post.get("split_depth_um"),
        )
        r0, c0 = self.boxes[g][:2]
        d = self.spec.downsample
        gx = self.x0 + c0 * self.spec.stride * d
        gy = self.y0 + r0 * self.spec.stride * d
        out: list[Glomerulus] = []
        # object by object on its bounding box: the cost follows the glomeruli, not the canvas
        for box, inside in masks:
            polygon = _outline(inside)
            if polygon is None:
                continue
            # contour coordinates are pixel centres: canvas pixel j spans [j, j+1) * d
            level0 = _affine(
                polygon, d, gx + (box[1].start + 0.5) * d, gy + (box[0].start + 0.5) * d
            )
            out.append(
                Glomerulus.from_polygon(
                    first_id + len(out),
                    level0,
                    slide_mpp,
                    probability=float(prob[box][inside].mean(dtype=np.float64)),
                )
            )
        return out


def _tile_groups(table: pd.DataFrame) -> tuple[np.ndarray, list[tuple[int, int, int, int]]]:
    """Group id per tile (8-connected in the row/col lattice) and each group's (r0, c0, r1, c1)."""
    rows, cols = table["row"].to_numpy(), table["col"].to_numpy()
    r_min, c_min = rows.min(), cols.min()
    occupied = np.zeros((rows.max() - r_min + 1, cols.max() - c_min + 1), bool)
    occupied[rows - r_min, cols - c_min] = True
    labels, _ = ndimage.label(occupied, structure=np.ones((3, 3), bool))
    group = labels[rows - r_min, cols - c_min] - 1
    boxes = []
    for sl in ndimage.find_objects(labels):
        assert sl is not None
        boxes.append(
            (
                sl[0].start + r_min,
                sl[1].start + c_min,
                sl[0].stop - 1 + r_min,
                sl[1].stop - 1 + c_min,
            )
        )
    return group.astype(np.int64), boxes


def _ramp(size: int, overlap: int) -> np.ndarray:
    """Blending weight of one tile: rises linearly across the overlap on every side."""
    edge = np.ones(size, np.float32)
    if overlap:
        rise = (np.arange(overlap, dtype=np.float32) + 1) / (overlap + 1)
        edge[:overlap] = rise
        edge[-overlap:] = rise[::-1]
    return np.outer(edge, edge)


def _outline(mask: np.ndarray) -> Polygon | None:
    """The outer contour of one object as a valid polygon in pixel-centre coordinates."""
    padded = np.pad(mask, 1)
    contours = find_contours(padded.astype(np.float32), 0.5)
    if not contours:
        return None
    ring = max(contours, key=len)
    polygon = Polygon(ring[:, ::-1] - 1.0).simplify(0.5)
    if not polygon.is_valid:
        fixed = make_valid(polygon)
        parts = [p for p in getattr(fixed, "geoms", [fixed]) if isinstance(p, Polygon)]
        polygon = max(parts, key=lambda p: p.area) if parts else None
    return polygon if polygon is not None and not polygon.is_empty else None


def _affine(polygon: Polygon, scale: float, dx: float, dy: float) -> Polygon:
    return affinity.affine_transform(polygon, [scale, 0.0, 0.0, scale, dx, dy])
