"""Interpretable per-glomerulus measurements from a crop and its mask.

The measurements are the evidence behind the morphometry lesion calls and go into the findings table
as ``m_<name>`` columns, so a pathologist can see *why* a glomerulus was called. Everything is
computed on arrays (no per-pixel Python loops) at a model-independent working resolution
(default 0.5 µm/px); all length scales are given in µm and converted with ``mpp``.

Optical densities are taken relative to the crop's own white point (the per-channel 99th
percentile of its grey pixels: glass, lumina or Bowman's space), as colour deconvolution
assumes; this keeps the thresholds meaningful for under-exposed camera snapshots and scanners with
a grey background.

Pixel classes inside the glomerulus mask:

* **white** (open lumen / Bowman's space): every RGB channel transmits at least 75 % of the light
  (optical density < 0.125 in R, G and B) -- near-glass, so pale matrix is not mistaken for lumen.
* **nuclear**: haematoxylin optical density (``skimage.color.rgb2hed``, Ruifrok-Johnston vectors)
  after a Gaussian of σ = 1 µm is at least ``NUCLEAR_OD``.
* **PAS-positive matrix**: tissue that is neither white nor nuclear and is magenta: green optical
  density exceeds the mean of red and blue by ``MAGENTA_OD`` (PAS magenta absorbs green).

Nuclei are *counted* with a blob/peak detector: local maxima of the haematoxylin image smoothed
with a Gaussian of σ = 2 µm (≈ the σ of a LoG matched to a 5-6 µm nucleus), at least 4 µm
apart (about one nuclear diameter), with a peak optical density of at least ``NUCLEUS_PEAK_OD``.

The tuft is the tissue inside the mask eroded by 4 µm (to drop Bowman's capsule), closed by 2 µm to
bridge capillary walls, with enclosed holes (capillary lumina) filled; Bowman's space is the white
area in the mask outside the tuft.

The sclerosed tuft fraction is the share of tuft pixels whose 20 µm x 20 µm neighbourhood (about
two to three capillary loops) contains less than 5 % open lumen *and* less than 10 % nuclear area:
solid, lumen-free, paucicellular matrix -- the textbook picture of sclerosis, as opposed to a tuft
whose lumina are occluded by cells (endocapillary hypercellularity). These constants are chosen from
histology (capillary loop 5-10 µm, nucleus 5-7 µm), not fitted to any labelled set.
"""

from __future__ import annotations

import logging
import math
import os
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from scipy import ndimage as ndi
from skimage import color, feature, measure, morphology

from lnpath.analysis.glomeruli import outlines
from lnpath.core.args import check_count
from lnpath.core.errors import InputError
from lnpath.core.morphology import fill_holes
from lnpath.core.progress import progress_bar
from lnpath.wsi.slide import check_mpp, require_open
from lnpath.wsi.workers import available_cpus

if TYPE_CHECKING:
    from shapely.geometry import Polygon

log = logging.getLogger(__name__)

WHITE_OD = 0.125
NUCLEAR_OD = 0.06
NUCLEUS_PEAK_OD = 0.05
MAGENTA_OD = 0.1
CAPSULE_UM = 4.0
NEIGHBOURHOOD_UM = 20.0
SCLEROSIS_MAX_LUMEN = 0.05
SCLEROSIS_MAX_NUCLEAR = 0.10
MIN_TISSUE_FRACTION = 0.2
MIN_AREA_UM2 = 500.0
DEFAULT_MPP = 0.5

MEASUREMENTS: tuple[str, ...] = (
    "m_area_um2",
    "m_diameter_um",
    "m_tuft_area_um2",
    "m_nuclei",
    "m_nuclei_per_1000um2",
    "m_pas_matrix_fraction",
    "m_lumen_fraction",
    "m_bowman_space_fraction",
    "m_ring_nuclei_per_100um",
    "m_sclerosed_fraction",
)


def _disk(radius_um: float, mpp: float) -> np.ndarray:
    return morphology.disk(max(1, round(radius_um / mpp)))


# Lookup tables over the 256 uint8 intensities: a table read costs a fraction of a logarithm per
# pixel, and whole-slide cortex measurement takes one per pixel of the biopsy.
_OD_TABLE = (-np.log10(np.maximum(np.arange(256, dtype=np.float64), 1.0) / 255.0)).astype(
    np.float32
)
# skimage.color.rgb2hed's haematoxylin channel: sum_c log(max(I_c / 255, 1e-6)) / log(1e-6) * H_c
_HAEM_TABLES = (
    np.log(np.maximum(np.arange(256, dtype=np.float64) / 255.0, 1e-6))[:, None]
    / np.log(1e-6)
    * color.hed_from_rgb[:, 0][None, :]
).T.astype(np.float32)


def optical_density(rgb: np.ndarray) -> np.ndarray:
    """Per-channel optical density ``-log10(I / 255)`` of a uint8 RGB array (float32)."""
    rgb = np.asarray(rgb)[..., :3]
    if rgb.dtype == np.uint8:
        return _OD_TABLE[rgb]
    return -np.log10(np.maximum(rgb.astype(np.float32), 1.0) / 255.0)


def haematoxylin_density(rgb: np.ndarray) -> np.ndarray:
    """Haematoxylin optical density of uint8 RGB, as ``skimage.color.rgb2hed(rgb)[..., 0]``
    (Ruifrok-Johnston vectors) in float32."""
    rgb = np.asarray(rgb)[..., :3]
    if rgb.dtype != np.uint8:
        return color.rgb2hed(rgb)[..., 0].astype(np.float32)
    haem = _HAEM_TABLES[0][rgb[..., 0]]
    haem += _HAEM_TABLES[1][rgb[..., 1]]
    haem += _HAEM_TABLES[2][rgb[..., 2]]
    return np.maximum(haem, 0.0, out=haem)


def estimate_white(rgb: np.ndarray) -> np.ndarray:
    """White point of an image: the per-channel 99th percentile of its grey (glass-like) pixels.

    Glass is unstained and therefore grey whatever the exposure; an image with (almost) no grey
    pixels -- tissue edge to edge -- shows no glass, and 255 is assumed instead of mistaking the
    palest tissue for white.
    """
    px = np.asarray(rgb)[..., :3].reshape(-1, 3)
    brightest = channel_max(px).astype(np.float32)
    darkest = np.minimum(np.minimum(px[:, 0], px[:, 1]), px[:, 2]).astype(np.float32)
    grey = px[(brightest - darkest) <= 0.08 * brightest + 2.0].astype(np.float32)
    if len(grey) < 0.01 * len(px) or len(grey) == 0:
        return np.full(3, 255.0, np.float32)
    return np.percentile(grey, 99, axis=0).astype(np.float32)


def normalise_white(rgb: np.ndarray, white: np.ndarray | None = None) -> np.ndarray:
    """Rescale a uint8 RGB crop so that its white point (:func:`estimate_white`) becomes 255.

    Through a 256-entry table per channel, computed with the same float32 arithmetic as the
    per-pixel formula, so the same bytes at 2.4x the speed (segmentation and the cortex pass
    every tile through here)."""
    rgb = np.asarray(rgb)[..., :3]
    if white is None:
        white = estimate_white(rgb)
    gain = 255.0 / np.clip(np.asarray(white, dtype=np.float32), 32.0, 255.0)
    if rgb.dtype != np.uint8:
        return np.clip(rgb.astype(np.float32) * gain + 0.5, 0, 255).astype(np.uint8)
    table = np.clip(np.arange(256, dtype=np.float32)[:, None] * gain + 0.5, 0, 255)
    table = table.astype(np.uint8)
    out = np.empty(rgb.shape, np.uint8)
    for channel in range(3):
        out[..., channel] = table[:, channel][rgb[..., channel]]
    return out


def slide_white(slide: Any) -> np.ndarray:
    """White point of a whole slide, from a 16 µm/px thumbnail (:func:`estimate_white`).

    One white point per slide, not per tile: a tile that is tissue from edge to edge shows no glass
    and must still get the gain the rest of the slide needs.
    """
    return estimate_white(np.asarray(slide.thumbnail(max(slide.mpp, 16.0))))


def channel_max(image: np.ndarray) -> np.ndarray:
    """Per-pixel maximum over the 3 channels (much faster than ``max(axis=-1)`` on (H, W, 3))."""
    return np.maximum(np.maximum(image[..., 0], image[..., 1]), image[..., 2])


def pixel_classes(
    rgb: np.ndarray, mpp: float, od: np.ndarray | None = None, nucleus_map: bool = True
) -> dict[str, np.ndarray]:
    """Classify every pixel of a white-normalised crop as white, nuclear or PAS matrix.

    Args:
        rgb: White-normalised uint8 RGB.
        mpp: µm/px of ``rgb``.
        od: ``optical_density(rgb)`` when the caller already has it.
        nucleus_map: Also return the map nuclei are counted on (a second, wider Gaussian that
            area measurements such as the cortex's do not need).

    Returns:
        ``{"white", "nuclear", "matrix"}`` boolean arrays and, with ``nucleus_map``,
        ``"haematoxylin"``, the smoothed haematoxylin optical density used for nucleus detection.
    """
    od = optical_density(rgb) if od is None else od
    white = channel_max(od) < WHITE_OD
    haem = haematoxylin_density(rgb)
    haem_px = ndi.gaussian_filter(haem, sigma=1.0 / mpp)
    nuclear = (haem_px >= NUCLEAR_OD) & ~white
    magenta = od[..., 1] - 0.5 * (od[..., 0] + od[..., 2]) > MAGENTA_OD
    matrix = magenta & ~white & ~nuclear
    classes = {"white": white, "nuclear": nuclear, "matrix": matrix}
    if nucleus_map:
        classes["haematoxylin"] = ndi.gaussian_filter(haem, sigma=2.0 / mpp)
    return classes


def detect_nuclei(haematoxylin: np.ndarray, mask: np.ndarray, mpp: float) -> np.ndarray:
    """Nucleus centres ``(row, col)`` inside ``mask``: peaks of the smoothed haematoxylin image."""
    labels = mask.astype(np.int32)
    return feature.peak_local_max(
        haematoxylin,
        min_distance=max(1, round(4.0 / mpp)),
        threshold_abs=NUCLEUS_PEAK_OD,
        labels=labels,
        exclude_border=False,
    )


def segment_tuft(tissue: np.ndarray, mask: np.ndarray, mpp: float) -> np.ndarray:
    """The capillary tuft: tissue inside the capsule, small gaps bridged, lumina filled."""
    inner = ndi.binary_erosion(mask, structure=_disk(CAPSULE_UM, mpp))
    tuft = ndi.binary_closing(tissue & inner, structure=_disk(2.0, mpp))
    tuft = fill_holes(tuft) & inner
    tuft = ndi.binary_opening(tuft, structure=_disk(2.0, mpp))
    lab, n = ndi.label(tuft)
    if n <= 1:
        return tuft
    sizes = np.bincount(lab.ravel())[1:]
    keep = np.flatnonzero(sizes >= 0.1 * sizes.max()) + 1
    return np.isin(lab, keep)


def sclerosed_map(white: np.ndarray, nuclear: np.ndarray, mpp: float) -> np.ndarray:
    """Pixels whose 20 µm neighbourhood is lumen-free and paucicellular (solid matrix)."""
    size = max(3, round(NEIGHBOURHOOD_UM / mpp))
    lumen = ndi.uniform_filter(white.astype(np.float32), size=size, mode="reflect")
    nuc = ndi.uniform_filter(nuclear.astype(np.float32), size=size, mode="reflect")
    return (lumen < SCLEROSIS_MAX_LUMEN) & (nuc < SCLEROSIS_MAX_NUCLEAR)


def require_tissue(fraction: float) -> None:
    """Refuse a glomerulus whose outline is mostly glass: its measurements would read as findings.

    Raises:
        InputError: less than ``MIN_TISSUE_FRACTION`` of the outline is non-white.
    """
    if fraction < MIN_TISSUE_FRACTION:
        raise InputError(
            f"crop shows no tissue inside the glomerulus mask ({fraction:.0%} non-white)"
        )


def crop_tissue_fraction(rgb: np.ndarray, mask: np.ndarray) -> float:
    """Share of the mask that is not white (against the crop's white point)."""
    od = optical_density(normalise_white(rgb))
    return float((channel_max(od)[mask] >= WHITE_OD).mean()) if mask.any() else 0.0


def measure_crop(
    rgb: np.ndarray, mask: np.ndarray, mpp: float, white: np.ndarray | None = None
) -> dict[str, float]:
    """Measure one glomerulus in an RGB crop.

    Args:
        rgb: uint8 array (H, W, 3) (an alpha channel is ignored).
        mask: boolean array (H, W), the glomerulus including Bowman's capsule.
        mpp: µm per pixel of the crop.
        white: RGB white point of the image the crop comes from; estimated from the crop if None.

    Returns:
        The :data:`MEASUREMENTS` as floats: areas in µm², fractions in [0, 1], densities per
        1000 µm² of tuft, ring nuclei per 100 µm of capsule perimeter.

    Raises:
        InputError: the mask is empty or smaller than 500 µm², or the crop shows almost no tissue
            inside it (so a zero would be meaningless).
    """
    rgb = np.asarray(rgb)
    mask = np.asarray(mask, dtype=bool)
    if rgb.ndim != 3 or rgb.shape[-1] < 3 or rgb.shape[:2] != mask.shape:
        raise InputError(f"crop {rgb.shape} and mask {mask.shape} do not match (need HxWx3, HxW)")
    if not mpp > 0:
        raise InputError(f"µm/px must be positive, got {mpp}")
    px_um2 = mpp * mpp
    area_um2 = float(mask.sum()) * px_um2
    if area_um2 < MIN_AREA_UM2:
        raise InputError(f"glomerulus mask covers {area_um2:.0f} µm² (< {MIN_AREA_UM2:.0f} µm²)")
    cls = pixel_classes(normalise_white(rgb, white), mpp)
    tissue = ~cls["white"] & mask
    require_tissue(float(tissue.sum()) / float(mask.sum()))
    tuft = segment_tuft(tissue, mask, mpp)
    if not tuft.any():
        tuft = mask & ~cls["white"]
    n_tuft = float(tuft.sum())
    ring = mask & ~tuft
    centres = detect_nuclei(cls["haematoxylin"], mask, mpp)
    in_tuft = tuft[centres[:, 0], centres[:, 1]] if len(centres) else np.zeros(0, bool)
    perimeter_um = float(measure.perimeter(mask)) * mpp
    sclerosed = sclerosed_map(cls["white"], cls["nuclear"], mpp) & tuft
    return {
        "m_area_um2": area_um2,
        "m_diameter_um": 2.0 * math.sqrt(area_um2 / math.pi),
        "m_tuft_area_um2": n_tuft * px_um2,
        "m_nuclei": float(len(centres)),
        "m_nuclei_per_1000um2": 1000.0 * float(in_tuft.sum()) / (n_tuft * px_um2),
        "m_pas_matrix_fraction": float((cls["matrix"] & tuft).sum()) / n_tuft,
        "m_lumen_fraction": float((cls["white"] & tuft).sum()) / n_tuft,
        "m_bowman_space_fraction": float((cls["white"] & ring).sum()) / float(mask.sum()),
        "m_ring_nuclei_per_100um": 100.0 * float((~in_tuft).sum()) / max(perimeter_um, 1e-9),
        "m_sclerosed_fraction": float(sclerosed.sum()) / n_tuft,
    }


def rasterize(
    polygon: Polygon, shape: tuple[int, int], origin: tuple[float, float], scale: float
) -> np.ndarray:
    """Boolean mask of a shapely polygon (holes removed) in a crop: pixels whose centre is inside.

    An even-odd scanline fill, vectorised over rows x edges. It is unbiased (pixel count = polygon
    area within 0.1 % on glomeruli) where ``skimage.draw.polygon`` adds boundary pixels (+0.6 %),
    and about 40 times faster, which matters when every glomerulus of a slide is measured.

    Args:
        polygon: in level-0 pixels.
        shape: (height, width) of the crop.
        origin: level-0 (x, y) of the crop's top-left corner.
        scale: crop pixels per level-0 pixel.
    """
    height, width = shape
    mask = np.zeros(shape, dtype=bool)
    rings = [np.asarray(r.coords, dtype=float) for r in (polygon.exterior, *polygon.interiors)]
    rows = np.concatenate([(xy[:-1, 1] - origin[1]) * scale for xy in rings])
    cols = np.concatenate([(xy[:-1, 0] - origin[0]) * scale for xy in rings])
    rows_end = np.concatenate([(xy[1:, 1] - origin[1]) * scale for xy in rings])
    cols_end = np.concatenate([(xy[1:, 0] - origin[0]) * scale for xy in rings])
    first = max(0, math.ceil(min(rows.min(), rows_end.min())))
    last = min(height - 1, math.floor(max(rows.max(), rows_end.max())))
    if last < first or width == 0:
        return mask
    y = np.arange(first, last + 1, dtype=float)[:, None]
    # half-open in y, so a scanline through a vertex crosses exactly one of its two edges
    crosses = ((rows <= y) & (y < rows_end)) | ((rows_end <= y) & (y < rows))
    line, edge = np.nonzero(crosses)
    dy = rows_end[edge] - rows[edge]
    x = cols[edge] + (y[line, 0] - rows[edge]) * (cols_end[edge] - cols[edge]) / dy
    # a crossing at x flips inside/outside for every pixel centre right of it
    flips = np.zeros((last - first + 1, width + 1), np.int32)
    np.add.at(flips, (line, np.clip(np.floor(x).astype(np.int64) + 1, 0, width)), 1)
    mask[first : last + 1] = (np.cumsum(flips[:, :width], axis=1) & 1).astype(bool)
    return mask


def read_glomerulus(
    slide: Any, polygon: Polygon, mpp: float, margin_um: float = 10.0
) -> tuple[np.ndarray, np.ndarray]:
    """Read a glomerulus crop and its mask from a slide at ``mpp``.

    Raises:
        InputError: the polygon is empty, invalid, of zero area, or lies outside the slide.
    """
    if polygon.is_empty or polygon.geom_type != "Polygon" or not polygon.is_valid:
        raise InputError(f"degenerate polygon ({polygon.geom_type}, valid={polygon.is_valid})")
    if polygon.area <= 0:
        raise InputError("degenerate polygon (zero area)")
    width0, height0 = slide.dimensions
    minx, miny, maxx, maxy = polygon.bounds
    if maxx <= 0 or maxy <= 0 or minx >= width0 or miny >= height0:
        raise InputError(
            f"polygon bounds ({minx:.0f}, {miny:.0f}, {maxx:.0f}, {maxy:.0f}) lie outside "
            f"the slide ({width0}x{height0})"
        )
    pad = margin_um / slide.mpp
    x0, y0 = math.floor(minx - pad), math.floor(miny - pad)
    w0, h0 = math.ceil(maxx + pad) - x0, math.ceil(maxy + pad) - y0
    rgb = slide.read(x0, y0, w0, h0, mpp=mpp)
    scale = rgb.shape[1] / w0
    mask = rasterize(polygon, rgb.shape[:2], (x0, y0), scale)
    return rgb, mask


_CHUNK = 4  # glomeruli per task: small enough to balance the threads
MAX_THREADS = 4


def measure_threads() -> int:
    """Threads for measuring: one per CPU, at most :data:`MAX_THREADS`, and no more than
    ``OMP_NUM_THREADS`` where it is set (Dask's workers set 1: the cluster is the parallelism)."""
    limit = os.environ.get("OMP_NUM_THREADS", "").strip()
    cap = int(limit) if limit.isdigit() and int(limit) > 0 else MAX_THREADS
    return max(1, min(available_cpus(), MAX_THREADS, cap))


def measure_glomeruli(
    glomeruli: Any,
    slide: Any,
    mpp: float = DEFAULT_MPP,
    progress: bool | None = None,
    workers: int | None = None,
) -> pd.DataFrame:
    """Measure every glomerulus of a slide (one row each, ``glomerulus_id`` + ``m_*`` columns).

    A glomerulus that cannot be measured (degenerate polygon, outside the slide, no tissue) gets
    NaN measurements and a warning naming it -- never zeros, which would read as a real finding.

    Args:
        glomeruli: a :class:`lnpath.analysis.glomeruli.Glomeruli` (any sequence of objects with
            ``id`` and ``polygon`` in level-0 pixels).
        slide: a :class:`lnpath.wsi.slide.Slide`.
        mpp: working resolution in µm/px (defined at about 0.5; an implausible one is refused).
        progress: a bar over the glomeruli; on in Jupyter and a terminal (``LNPATH_PROGRESS``).
        workers: threads measuring in parallel on the one slide handle; default
            :func:`measure_threads` (one per CPU, at most 4, at most ``OMP_NUM_THREADS``).
            Threads, not processes: OpenSlide, NumPy and SciPy release the GIL for the heavy
            work, and a thread costs nothing to start, where two worker processes took about
            1.2 s to start and made the demo's 23 glomeruli 1.9x slower than one process
            (``scripts/bench_lesions.py``).
    """
    require_open(slide, "measure_glomeruli")
    mpp = check_mpp(mpp, "measure_glomeruli: mpp")
    items = outlines(glomeruli, "measure_glomeruli")
    workers = measure_threads() if workers is None else check_count(workers, "workers")
    chunks = [items[i : i + _CHUNK] for i in range(0, len(items), _CHUNK)]
    rows: list[dict[str, float]] = []
    bar = progress_bar(len(items), "measuring glomeruli", "glom", progress)
    threads = min(workers, max(len(chunks), 1))
    with bar, ThreadPoolExecutor(threads, thread_name_prefix="lnpath-measure") as pool:
        for chunk_rows, problems in pool.map(lambda c: _measure_chunk(c, mpp, slide), chunks):
            for problem in problems:
                log.warning("%s: %s", slide.path, problem)
            rows.extend(chunk_rows)
            bar.update(len(chunk_rows))
    table = pd.DataFrame(rows, columns=["glomerulus_id", *MEASUREMENTS])
    return table.astype(dict.fromkeys(MEASUREMENTS, "float64"))


def _measure_chunk(
    items: list[tuple[Any, Polygon]], mpp: float, slide: Any
) -> tuple[list[dict[str, float]], list[str]]:
    """Rows for ``(id, polygon)`` pairs and the problems met."""
    rows, problems = [], []
    for gid, polygon in items:
        row: dict[str, float] = {"glomerulus_id": gid}
        try:
            rgb, mask = read_glomerulus(slide, polygon, mpp)
            row.update(measure_crop(rgb, mask, mpp))
        except InputError as exc:
            problems.append(f"glomerulus {gid} not measured: {exc}")
            row.update(dict.fromkeys(MEASUREMENTS, math.nan))
        rows.append(row)
    return rows, problems
