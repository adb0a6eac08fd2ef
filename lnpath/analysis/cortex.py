"""Cortex measurements: tissue area, interstitial fibrosis and inflammation fractions.

What is measured, and what is handed to scoring:

* **Tissue area**: non-white pixels (optical density >= 0.125 in some channel against the
  slide's white point) in connected pieces of at least 2000 µm² (dust and debris are dropped).
  Medulla and capsule are *not* detected: the whole tissue is treated as cortex, which the result
  states (``medulla_excluded: false``); on a biopsy with much medulla the fractions are diluted.
* **Interstitial fibrosis** only where the stain shows collagen: trichrome/Masson (aniline blue or
  light green collagen absorbs red far more than green: OD_R - OD_G >= 0.10) and Sirius red
  (bright-field red collagen absorbs green far more than red: OD_G - OD_R >= 0.25). It is a
  collagen *area fraction* of the non-glomerular tissue, so normal interstitium, tubular basement
  membranes and vessel walls count too; it is handed to scoring because collagen area fraction is
  the accepted automated surrogate (clinical spec §8, "the most automatable CI item"). On PAS, H&E
  and silver it is "not assessed".
* **Interstitial inflammation**: haematoxylin-dense clusters outside glomeruli -- pixels whose
  30 µm neighbourhood is at least 35 % nuclear (packed mononuclear cells; tubular epithelium is
  about 15-25 %), opened by 4 µm and kept if at least 500 µm² (≈ 20 lymphocytes). It is reported
  as a measurement, but *not* handed to scoring: it has not been validated against pathologist
  grades, and clusters of tubular nuclei or tangentially cut tubules can mimic infiltrates. On
  silver stains (black silver deposits defeat the haematoxylin deconvolution) it is not measured.
* **Tubular atrophy**: not assessed (needs tubule segmentation that is not validated).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy import ndimage as ndi
from shapely.geometry import box

from lnpath.analysis.glomeruli import outlines
from lnpath.analysis.measure import (
    WHITE_OD,
    channel_max,
    measure_threads,
    normalise_white,
    optical_density,
    pixel_classes,
    rasterize,
    slide_white,
)
from lnpath.core.args import check_count, check_optional_flag
from lnpath.core.errors import InputError
from lnpath.core.progress import progress_bar
from lnpath.core.threads import ordered_on_threads
from lnpath.wsi.kept_pixels import KeptPixels, require_kept
from lnpath.wsi.prefetch import prefetched
from lnpath.wsi.slide import require_open
from lnpath.wsi.tiling import TileGrid, TileInfo, tile
from lnpath.wsi.tissue import detect_tissue

if TYPE_CHECKING:
    from lnpath.wsi.tissue import TissueMask

log = logging.getLogger(__name__)

STAINS = ("PAS", "HE", "trichrome", "sirius_red", "silver")
_ALIASES = {
    "pas": "PAS",
    "he": "HE",
    "h&e": "HE",
    "hematoxylin-eosin": "HE",
    "trichrome": "trichrome",
    "masson": "trichrome",
    "sirius_red": "sirius_red",
    "sirius-red": "sirius_red",
    "siriusred": "sirius_red",
    "psr": "sirius_red",
    "silver": "silver",
    "jones": "silver",
    "pasm": "silver",
}
TRICHROME_COLLAGEN_OD = 0.10
SIRIUS_COLLAGEN_OD = 0.25
INFILTRATE_WINDOW_UM = 30.0
INFILTRATE_NUCLEAR_FRACTION = 0.35
INFILTRATE_MIN_UM2 = 500.0
MIN_TISSUE_UM2 = 2000.0
DEFAULT_CORTEX_MPP = 1.0
TILE_PX = 1024
# tiles whose thumbnail tissue fraction is below this hold no tissue and are not read
ANY_TISSUE = 1e-6


def normalise_stain(stain: str) -> str:
    """Canonical stain name (case-insensitive, Masson -> trichrome, Jones/PASM -> silver).

    Raises:
        InputError: an unknown stain.
    """
    canonical = _ALIASES.get(str(stain).strip().lower())
    if canonical is None:
        raise InputError(f"unknown stain {stain!r}; use one of {'|'.join(STAINS)}")
    return canonical


@dataclass
class CortexMeasurement:
    """Cortex measurements of one slide (see the module docstring for the methods).

    Attributes:
        stain: canonical stain name.
        mpp: µm/px the measurements were made at.
        tissue_area_mm2: all tissue (treated as cortex).
        glomerular_area_mm2: tissue inside glomerulus outlines (excluded from the interstitium).
        inflammation_fraction: infiltrate area / non-glomerular tissue (measured, not scored;
            None on silver).
        fibrosis_fraction: collagen area / non-glomerular tissue; None where the stain cannot
            show it.
        not_assessed: component -> reason, for components not handed to scoring.
    """

    stain: str
    mpp: float
    tissue_area_mm2: float
    glomerular_area_mm2: float
    inflammation_fraction: float | None
    fibrosis_fraction: float | None
    not_assessed: dict[str, str] = field(default_factory=dict)

    def fractions(self) -> dict[str, float | None]:
        """The cortex mapping for :func:`lnpath.score_findings` (None = not assessed)."""
        return {
            "interstitial_inflammation": None,
            "interstitial_fibrosis": self.fibrosis_fraction,
            "tubular_atrophy": None,
        }

    def to_dict(self) -> dict[str, Any]:
        """All measurements, the methods and the reasons for what is not assessed."""
        return {
            "stain": self.stain,
            "mpp": self.mpp,
            "tissue_area_mm2": self.tissue_area_mm2,
            "glomerular_area_mm2": self.glomerular_area_mm2,
            "medulla_excluded": False,
            "measurements": {
                "interstitial_inflammation_fraction": self.inflammation_fraction,
                "interstitial_fibrosis_fraction": self.fibrosis_fraction,
            },
            "scored": self.fractions(),
            "not_assessed": dict(self.not_assessed),
            "methods": {
                "tissue": "non-white pixels against the slide white point; medulla not excluded",
                "interstitial_fibrosis": "collagen colour threshold (trichrome, Sirius red) on "
                "non-glomerular tissue",
                "interstitial_inflammation": "haematoxylin-dense clusters (>=35 % nuclear in "
                "30 µm, >=500 µm²) outside glomeruli",
            },
        }


def collagen_mask(od: np.ndarray, stain: str) -> np.ndarray | None:
    """Collagen pixels for stains that show collagen, else None."""
    if stain == "trichrome":
        return od[..., 0] - od[..., 1] >= TRICHROME_COLLAGEN_OD
    if stain == "sirius_red":
        return od[..., 1] - od[..., 0] >= SIRIUS_COLLAGEN_OD
    return None


def infiltrate_mask(nuclear: np.ndarray, mpp: float) -> np.ndarray:
    """Dense mononuclear clusters: high local nuclear fraction, opened, small specks dropped."""
    size = max(3, round(INFILTRATE_WINDOW_UM / mpp))
    dense = ndi.uniform_filter(nuclear.astype(np.float32), size=size) >= (
        INFILTRATE_NUCLEAR_FRACTION
    )
    dense = ndi.binary_opening(dense, iterations=max(1, round(2.0 / mpp)))
    lab, n = ndi.label(dense)
    if n == 0:
        return dense
    sizes = np.bincount(lab.ravel())
    keep = sizes * mpp * mpp >= INFILTRATE_MIN_UM2
    keep[0] = False
    return keep[lab]


def tissue_mask(od: np.ndarray, mpp: float) -> np.ndarray:
    """Non-white pixels in connected pieces of at least ``MIN_TISSUE_UM2`` (dust is dropped)."""
    tissue = channel_max(od) >= WHITE_OD
    lab, n = ndi.label(tissue)
    if n == 0:
        return tissue
    keep = np.bincount(lab.ravel()) * mpp * mpp >= MIN_TISSUE_UM2
    keep[0] = False
    return keep[lab]


def measure_cortex(
    slide: Any,
    glomeruli: Any,
    stain: str = "PAS",
    mpp: float = DEFAULT_CORTEX_MPP,
    progress: bool | None = None,
    tissue: TissueMask | None = None,
    workers: int | None = None,
    kept: KeptPixels | None = None,
) -> CortexMeasurement:
    """Measure tissue area, fibrosis (collagen stains) and inflammation outside glomeruli.

    Args:
        slide: a :class:`lnpath.wsi.slide.Slide`.
        glomeruli: glomeruli whose outlines (level-0 polygons) are excluded from the interstitium.
        stain: ``PAS|HE|trichrome|sirius_red|silver`` (Masson, Jones, PASM accepted as aliases).
        mpp: working resolution in µm/px.
        progress: a bar over the tiles;
            on in Jupyter and on a terminal, off in pipes (``LNPATH_PROGRESS``).
        tissue: the slide's tissue mask (detected here if None); only tiles that touch tissue are
            read, so a needle biopsy on a large slide costs what the biopsy costs, not the glass.
        workers: reader processes (see :meth:`lnpath.wsi.tiling.TileGrid.iter`); default none:
            a thread reads the next tiles while threads count them, which on two cores beats
            two reader processes (the demo: 1.6 s against 4.0 s, ``scripts/bench_lesions.py``)
            without their memory.
        kept: tiles an earlier pass read at ``mpp`` (segmentation, in ``score_slide``): cut
            out of them where they cover a tile, the same pixels without decoding them again
            (the demo: 80 % of the cortex's pixels). Ignored with ``workers`` > 1.

    Raises:
        InputError: unknown stain, or no tissue on the slide.
    """
    require_open(slide, "measure_cortex")
    polygons = [polygon for _, polygon in outlines(glomeruli, "measure_cortex")]
    require_kept(kept, "measure_cortex: kept")
    progress = check_optional_flag(progress, "measure_cortex: progress")
    if workers is not None:
        workers = check_count(workers, "measure_cortex: workers")
    stain = normalise_stain(stain)
    white = slide_white(slide)
    if tissue is None:
        tissue = detect_tissue(slide)
    # a scan coarser than the working µm/px is enlarged, as for segmentation
    grid = tile(slide, mpp=mpp, size=TILE_PX, min_tissue=ANY_TISSUE, tissue=tissue, upsample=True)
    work_mpp = grid.spec.mpp
    reads: Iterator[tuple[TileInfo, np.ndarray]]
    if kept is not None and kept.accepts(grid.spec) and len(kept) and (workers or 1) == 1:
        size = grid.spec.size
        reads = ((info, kept.read(info, size)) for info in grid.infos())
    else:
        reads = grid.iter(workers=1 if workers is None else workers, progress=False)
    # closed on any error, so that the reader thread stops and the slide is free at once
    with contextlib.closing(prefetched(reads, depth=2)) as tiles:
        counts = _count_pixels(grid, tiles, polygons, white, stain, progress)
    px_mm2 = (work_mpp / 1000.0) ** 2
    inter = counts["tissue"] - counts["glom"]
    if inter <= 0:
        raise InputError(f"{slide.path}: no tissue found outside glomeruli; cortex not measurable")
    not_assessed = {
        "interstitial_inflammation": "measured as a haematoxylin-dense cluster fraction but not "
        "validated against pathologist grades; the pathologist must grade it",
        "tubular_atrophy": "no validated tubule segmentation; the pathologist must grade it",
    }
    inflammation = None if stain == "silver" else counts["infiltrate"] / inter
    if inflammation is None:
        not_assessed["interstitial_inflammation"] = (
            "not measured: silver deposits defeat the haematoxylin colour deconvolution"
        )
    fibrosis = None
    if stain in ("trichrome", "sirius_red"):
        fibrosis = counts["collagen"] / inter
    else:
        not_assessed["interstitial_fibrosis"] = (
            f"{stain} does not stain collagen selectively; use a trichrome or Sirius red section"
        )
    return CortexMeasurement(
        stain=stain,
        mpp=work_mpp,
        tissue_area_mm2=counts["tissue"] * px_mm2,
        glomerular_area_mm2=counts["glom"] * px_mm2,
        inflammation_fraction=inflammation,
        fibrosis_fraction=fibrosis,
        not_assessed=not_assessed,
    )


def _count_pixels(
    grid: TileGrid,
    tiles: Iterator[tuple[TileInfo, np.ndarray]],
    polygons: list[Any],
    white: np.ndarray,
    stain: str,
    progress: bool | None,
) -> dict[str, int]:
    """Tissue, glomerular, infiltrate and collagen pixels over the tiles, at the grid's µm/px.

    Tiles are counted on threads (NumPy and SciPy release the GIL: the demo's 1.0 s of counting
    took 0.5 s on two), a few at a time, so that memory stays that of a few tiles."""
    work_mpp = grid.spec.mpp
    counts = {"tissue": 0, "glom": 0, "infiltrate": 0, "collagen": 0}
    threads = measure_threads()

    def count(tile: tuple[TileInfo, np.ndarray]) -> dict[str, int]:
        return _tile_counts(*tile, polygons, white, stain, work_mpp)

    with progress_bar(len(grid), "cortex", "tile", progress) as bar:
        window = 2 * threads + 1
        for _, tile_counts in ordered_on_threads(count, tiles, threads, window, "lnpath-cortex"):
            for key, value in tile_counts.items():
                counts[key] += value
            bar.update(1)
    return counts


def _tile_counts(
    info: TileInfo,
    arr: np.ndarray,
    polygons: list[Any],
    white: np.ndarray,
    stain: str,
    work_mpp: float,
) -> dict[str, int]:
    """The pixel counts of one tile."""
    counts = {"tissue": 0, "glom": 0, "infiltrate": 0, "collagen": 0}
    rgb = normalise_white(arr, white)
    od = optical_density(rgb)
    tissue_px = tissue_mask(od, work_mpp)
    if not tissue_px.any():
        return counts
    scale = arr.shape[1] / info.width
    glom = np.zeros(tissue_px.shape, bool)
    tile_box = box(info.x, info.y, info.x + info.width, info.y + info.height)
    for poly in polygons:
        if poly.intersects(tile_box):
            glom |= rasterize(poly, tissue_px.shape, (info.x, info.y), scale)
    interstitium = tissue_px & ~glom
    nuclear = pixel_classes(rgb, work_mpp, od=od, nucleus_map=False)["nuclear"]
    counts["tissue"] = int(tissue_px.sum())
    counts["glom"] = int((tissue_px & glom).sum())
    counts["infiltrate"] = int((infiltrate_mask(nuclear, work_mpp) & interstitium).sum())
    collagen = collagen_mask(od, stain)
    if collagen is not None:
        counts["collagen"] = int((collagen & interstitium).sum())
    return counts
