"""Training-time augmentation for PAS tiles: geometry, scale and stain variation.

Labs differ in section thickness, staining time and scanner colour response, and a model trained on
one lab's 17 tiles otherwise learns that lab's colours. The stain jitter perturbs the haematoxylin,
eosin/PAS and residual optical densities independently (Tellez et al. 2018), then brightness,
contrast, saturation and blur on top.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage.color import hed_from_rgb, hsv2rgb, rgb2hsv, rgb_from_hed


def flip_rotate(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> tuple:
    """Apply one of the eight dihedral transforms (histology has no preferred orientation)."""
    k = int(rng.integers(4))
    image, mask = np.rot90(image, k), np.rot90(mask, k)
    if rng.random() < 0.5:
        image, mask = image[:, ::-1], mask[:, ::-1]
    return np.ascontiguousarray(image), np.ascontiguousarray(mask)


def stain_jitter(
    image: np.ndarray,
    rng: np.random.Generator,
    strength: float = 0.05,
    density: tuple[float, float] = (1.0, 1.0),
) -> np.ndarray:
    """Perturb the HED optical densities: ``d * od * (1 + a) + b`` per channel, ``a, b ~ U(±s)``.

    Args:
        image: uint8 RGB.
        rng: Random generator.
        strength: Half-width ``s`` of the uniform perturbations.
        density: Range of ``d``, one factor for all stains (drawn log-uniformly): optical density
            grows with section thickness and staining time, so a lab cutting 2 µm sections and one
            cutting 6 µm differ by about that factor in every stain at once.

    Returns:
        The jittered image as float32 RGB in [0, 1].
    """
    od = -np.log((image.astype(np.float32) + 1.0) / 256.0)
    hed = od.reshape(-1, 3) @ hed_from_rgb.astype(np.float32)
    alpha = 1.0 + rng.uniform(-strength, strength, 3).astype(np.float32) * 4
    alpha *= np.float32(np.exp(rng.uniform(*np.log(density))))
    beta = rng.uniform(-strength, strength, 3).astype(np.float32) * 0.2
    od = (hed * alpha + beta) @ rgb_from_hed.astype(np.float32)
    rgb = (256.0 * np.exp(-od) - 1.0) / 255.0
    return np.clip(rgb, 0.0, 1.0).reshape(image.shape).astype(np.float32)


def colour_jitter(
    image: np.ndarray,
    rng: np.random.Generator,
    saturation: tuple[float, float] = (0.7, 1.3),
    hue_shift: float = 0.0,
) -> np.ndarray:
    """Hue, brightness, contrast, saturation, gamma and occasional blur on float RGB in [0, 1].

    Args:
        image: float RGB in [0, 1].
        rng: Random generator.
        saturation: Range of the saturation factor (drawn log-uniformly).
        hue_shift: Half-width of a uniform hue rotation in turns (0 = none); PAS from other labs
            ranges from pink to deep violet.
    """
    if hue_shift:
        hsv = rgb2hsv(image)
        hsv[..., 0] = (hsv[..., 0] + rng.uniform(-hue_shift, hue_shift)) % 1.0
        image = hsv2rgb(hsv)
    grey = image.mean(axis=2, keepdims=True)
    image = grey + (image - grey) * np.exp(rng.uniform(*np.log(saturation)))
    image = (image - 0.5) * rng.uniform(0.8, 1.2) + 0.5 + rng.uniform(-0.08, 0.08)
    image = np.clip(image, 0.0, 1.0) ** rng.uniform(0.8, 1.25)
    if rng.random() < 0.2:
        image = ndimage.gaussian_filter(image, sigma=(rng.uniform(0.3, 1.2),) * 2 + (0,))
    return image.astype(np.float32)
