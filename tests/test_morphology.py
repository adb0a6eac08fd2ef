"""The linear-time hole filling gives SciPy's mask exactly, on real and adversarial masks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage as ndi

from lnpath.analysis.measure import WHITE_OD, channel_max, optical_density
from lnpath.core.morphology import fill_holes


def _masks(bueno_dir: Path) -> list[np.ndarray]:
    """Glomerulus masks and thresholded tissue of real tiles, plus noise touching every border."""
    out = []
    for name in ("10003", "10177", "10215"):
        rgb = np.asarray(Image.open(bueno_dir / "images" / f"{name}.png").convert("RGB"))
        out.append(np.asarray(Image.open(bueno_dir / "masks" / f"{name}.png").convert("L")) > 0)
        out.append(channel_max(optical_density(rgb)) >= WHITE_OD)
    rng = np.random.default_rng(0)
    for level in (0.45, 0.5, 0.55):
        out.append(ndi.gaussian_filter(rng.random((300, 257)), 3) > level)
    out += [np.zeros((5, 7), bool), np.ones((5, 7), bool)]
    return out


def test_fill_holes_matches_scipy(bueno_dir: Path) -> None:
    masks = _masks(bueno_dir)
    filled_any = False
    for mask in masks:
        expected = ndi.binary_fill_holes(mask)
        assert np.array_equal(fill_holes(mask), expected)
        filled_any |= bool((expected & ~mask).any())
    assert filled_any  # the cases include real holes


@pytest.mark.parametrize("shape", [(1, 9), (9, 1)])
def test_fill_holes_on_thin_images(shape: tuple[int, int]) -> None:
    mask = np.zeros(shape, bool)
    mask.flat[::2] = True
    assert np.array_equal(fill_holes(mask), ndi.binary_fill_holes(mask))
