"""From a probability map to one label per glomerulus.

A U-Net predicts pixels; pathology needs objects. The steps: threshold, fill holes (Bowman's space
and open capillary lumina read as background), drop specks, split touching glomeruli with a
distance-transform watershed, and drop anything smaller than a plausible glomerulus section.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage.morphology import h_maxima
from skimage.segmentation import watershed

from lnpath.core.morphology import fill_holes

# A glomerular tuft is 100-250 µm across (area ≈ 8,000-50,000 µm²); sections cut near the pole
# or at a tissue edge are smaller. 1,000 µm² (a disc ≈ 36 µm across, a few cells) keeps those
# while dropping specks of false-positive pixels.
MIN_AREA_UM2 = 1000.0
# Two touching glomeruli are split where the distance-to-border ridge between their centres dips by
# more than this many µm below each centre; a single glomerulus is convex enough not to.
SPLIT_DEPTH_UM = 20.0


def label_glomeruli(
    prob: np.ndarray,
    mpp: float,
    threshold: float = 0.5,
    min_area_um2: float = MIN_AREA_UM2,
    split_depth_um: float | None = SPLIT_DEPTH_UM,
) -> np.ndarray:
    """Label map (int32, 0 = background, 1..n = glomeruli) from a foreground probability map.

    Args:
        prob: Probability map (H, W) in [0, 1] (uint8 maps are read as ``prob / 255``).
        mpp: µm per pixel of ``prob``; every size rule is in µm so it holds at any resolution.
        threshold: Foreground probability cut.
        min_area_um2: Objects below this area are dropped.
        split_depth_um: Watershed marker depth (see :data:`SPLIT_DEPTH_UM`); ``None`` keeps
            touching glomeruli together.
    """
    cut = round(threshold * 255) if prob.dtype == np.uint8 else threshold
    mask = fill_holes(prob >= cut)
    mask = ndimage.binary_opening(mask, structure=_disc(max(1, round(3.0 / mpp))))
    components, _ = ndimage.label(mask)
    del mask
    min_pixels = min_area_um2 / mpp**2
    count = 0
    # Work object by object on its bounding box: the cost follows the glomeruli, not the canvas.
    # Objects are relabelled in place (kept ones as -1, -2, ... until the end, so that a new number
    # never collides with a component not yet visited): a second canvas of labels would cost as
    # much memory as the probabilities themselves.
    for index, box in enumerate(ndimage.find_objects(components), start=1):
        if box is None:
            continue
        view = components[box]
        component = view == index
        view[component] = 0
        if component.sum() < min_pixels:
            continue
        parts = (
            _split_touching(component, mpp, split_depth_um)
            if split_depth_um is not None and component.sum() >= 2 * min_pixels
            else component.astype(np.int32)
        )
        sizes = np.bincount(parts.ravel())
        for part in np.flatnonzero(sizes >= min_pixels):
            if part:
                count += 1
                view[parts == part] = -count
    return np.negative(components, out=components)


def _disc(radius: int) -> np.ndarray:
    yy, xx = np.mgrid[-radius : radius + 1, -radius : radius + 1]
    return np.asarray(xx**2 + yy**2 <= radius**2)


def _split_touching(component: np.ndarray, mpp: float, depth_um: float) -> np.ndarray:
    """Watershed one connected component into glomeruli (labels 1..k, 0 outside)."""
    mask = np.pad(component, 1)
    distance = ndimage.distance_transform_edt(mask)
    markers, count = ndimage.label(h_maxima(ndimage.gaussian_filter(distance, 2.0), depth_um / mpp))
    if count < 2:
        return component.astype(np.int32)
    return watershed(-distance, markers, mask=mask)[1:-1, 1:-1].astype(np.int32)
