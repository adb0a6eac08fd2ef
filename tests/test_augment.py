"""Stain augmentation on a real PAS tile: the ranges in the training recipe mean what they say."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from skimage.color import rgb2hsv

from lnpath.nn.augment import colour_jitter, stain_jitter
from lnpath.training.glomeruli import TrainingConfig
from lnpath.training.glomeruli_data import load_labelled_tiles


def _tile(bueno_dir: Path) -> np.ndarray:
    return load_labelled_tiles(bueno_dir, ["10177"], 0.5)[0].image[:384, :384]


def _od(rgb: np.ndarray) -> np.ndarray:
    return -np.log((rgb.astype(np.float64) + 1.0) / 256.0)


def test_stain_jitter_without_perturbation_returns_the_image(bueno_dir: Path) -> None:
    image = _tile(bueno_dir)
    out = stain_jitter(image, np.random.default_rng(0), strength=0.0)
    assert np.abs(out * 255 - image).max() < 1.0


def test_density_factor_scales_every_stain_together(bueno_dir: Path) -> None:
    """density (2, 2) is a section twice as thick: twice the optical density in each channel."""
    image = _tile(bueno_dir)
    out = stain_jitter(image, np.random.default_rng(0), strength=0.0, density=(2.0, 2.0))
    before, after = _od(image), _od(np.round(out * 255))
    tissue = (before.sum(axis=2) > 0.3) & (after.max(axis=2) < 4.0)
    assert tissue.mean() > 0.2
    ratio = np.median(after[tissue] / np.maximum(before[tissue], 1e-3), axis=0)
    assert np.allclose(ratio, 2.0, atol=0.1), ratio


def test_hue_shift_rotates_the_stain_colour(bueno_dir: Path) -> None:
    image = _tile(bueno_dir).astype(np.float32) / 255
    tissue = rgb2hsv(image)[..., 1] > 0.2
    assert _largest_hue_move(image, tissue, 0.0) < 0.02
    assert 0.05 < _largest_hue_move(image, tissue, 0.1) <= 0.1 + 0.02


def _largest_hue_move(image: np.ndarray, tissue: np.ndarray, hue_shift: float) -> float:
    """Largest shift of the tissue's median hue (in turns) over eight random draws."""
    before = np.median(rgb2hsv(image)[..., 0][tissue])
    moves = []
    for seed in range(8):
        out = colour_jitter(image, np.random.default_rng(seed), hue_shift=hue_shift)
        move = abs(float(np.median(rgb2hsv(out)[..., 0][tissue])) - before)
        moves.append(min(move, 1 - move))
    return max(moves)


def test_recipe_ranges_are_recorded_in_the_card() -> None:
    config = TrainingConfig(density_range=(0.6, 2.5), saturation_range=(0.6, 1.8), hue_shift=0.04)
    card = config.to_dict()
    assert card["density_range"] == [0.6, 2.5]
    assert card["saturation_range"] == [0.6, 1.8]
    assert card["hue_shift"] == 0.04
