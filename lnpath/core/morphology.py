"""Binary morphology that scales with the image, for masks as large as a whole biopsy."""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """``scipy.ndimage.binary_fill_holes(mask)`` (2-D, default structure), in one labelling pass.

    SciPy fills by dilating the background inward from the border until nothing changes, which
    costs one pass per pixel of the longest background path: seconds on a stitched biopsy canvas.
    Labelling the background (4-connected, as SciPy's default structure propagates) and keeping
    only the pieces that reach the border gives the same mask in linear time.
    """
    mask = np.asarray(mask, dtype=bool)
    background, count = ndi.label(~mask)
    if count == 0:
        return mask.copy()
    outside = np.zeros(count + 1, dtype=bool)
    for edge in (background[0], background[-1], background[:, 0], background[:, -1]):
        outside[edge] = True
    outside[0] = False
    return ~outside[background]
