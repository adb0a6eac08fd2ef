"""Training and evaluating the glomerulus U-Net: one code path for the shipped model and for labs.

``scripts/train_glomeruli.py`` (the shipped model, from the Bueno PAS tiles) and fine-tuning
(:mod:`lnpath.training.fine_tuning`: ``lnpath.fine_tune_glomeruli``, ``lnpath train-glomeruli``)
both build a list of :class:`LabelledImage` and call :func:`train`, then :func:`evaluate`; the
model card records what went in and what came out.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from lnpath.core.args import check_seed
from lnpath.core.errors import InputError
from lnpath.core.memory import keep_freed_memory
from lnpath.core.progress import progress_bar
from lnpath.io.atomic import atomic_path
from lnpath.models.store import write_weights
from lnpath.nn.metrics import SegmentationScore
from lnpath.nn.postprocess import MIN_AREA_UM2, label_glomeruli
from lnpath.nn.predict import fast_autocast, predict_batch, to_tensor
from lnpath.nn.unet import UNet, UNetConfig
from lnpath.training.glomeruli_data import (
    LabelledImage,
    resample,
)
from lnpath.training.sampler import (
    PatchSampler,
)

log = logging.getLogger(__name__)


@dataclass
class TrainingConfig:
    """Recipe of a training run; stored in the model card.

    Attributes:
        mpp: Working resolution of the network (µm/px).
        patch: Training crop size in px at ``mpp``.
        batch_size: Crops per step.
        iterations: Optimiser steps (linear warm-up over the first 5 %, then cosine decay to
            zero). With ``time_limit_s`` the schedule advances by whichever runs out first, steps
            or time, so a run stopped by the limit still ends on an annealed learning rate.
        lr: Peak learning rate (AdamW).
        weight_decay: AdamW weight decay.
        seed: Seeds numpy, torch and the crop sampler.
        scale_range: Random zoom range, so the model tolerates µm/px metadata that is off by ±25 %.
        stain_strength: HED jitter strength (see :func:`lnpath.nn.augment.stain_jitter`).
        density_range: Optical-density factor range (see :func:`lnpath.nn.augment.stain_jitter`).
        saturation_range: Saturation factor range (see :func:`lnpath.nn.augment.colour_jitter`).
        hue_shift: Hue rotation half-width in turns (see :func:`lnpath.nn.augment.colour_jitter`).
        distill: Weight of a teacher's probability in each crop's target (images carrying
            ``teacher`` maps, see :mod:`lnpath.training.distill`); 0 trains on the masks alone.
        foreground_crops: Share of crops placed over a glomerulus (they cover ~8 % of the tiles).
        balance_glomeruli: Centre foreground crops on a glomerulus drawn uniformly among those of
            the tile, not on a random foreground pixel: pixel sampling shows a large glomerulus
            many times more often than a small polar or edge-cut section, which the network then
            under-segments.
        val_every: Validate (and keep the best weights) every this many steps.
        time_limit_s: Stop early (keeping the best validated weights) after this many seconds of
            dedicated compute: on CPU, process CPU time divided by torch's thread count, so a run
            on a shared machine stops where it would on idle cores; on GPU, wall time.
        bf16: Mixed precision (bfloat16 autocast; about twice as fast on CPUs with AVX-512 BF16
            and on GPUs, and needs no loss scaling); ignored where it would be emulated.
        unet: Architecture.
    """

    mpp: float = 1.0
    patch: int = 256
    batch_size: int = 8
    iterations: int = 1500
    lr: float = 3e-3
    weight_decay: float = 1e-4
    seed: int = 0
    scale_range: tuple[float, float] = (0.8, 1.25)
    stain_strength: float = 0.05
    density_range: tuple[float, float] = (1.0, 1.0)
    saturation_range: tuple[float, float] = (0.7, 1.3)
    hue_shift: float = 0.0
    distill: float = 0.0
    foreground_crops: float = 0.6
    balance_glomeruli: bool = True
    val_every: int = 150
    time_limit_s: float | None = None
    bf16: bool = True
    unet: UNetConfig = field(default_factory=lambda: UNetConfig(width=8, depth=4, norm="batch"))

    def __post_init__(self) -> None:
        """Refuse a recipe that cannot train: ``iterations -1`` once wrote the base model back as
        a "fine-tuned" one, ``lr nan`` failed deep in torch."""
        for name in ("patch", "batch_size", "iterations", "val_every"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise InputError(f"training: {name} must be a whole number >= 1 (got {value!r})")
        for name, least in (("lr", 0.0), ("weight_decay", None)):  # lr > 0, weight_decay >= 0
            value = getattr(self, name)
            number = isinstance(value, int | float) and not isinstance(value, bool)
            if not number or not math.isfinite(value) or value < 0 or value == least:
                bound = "> 0" if least is not None else ">= 0"
                raise InputError(f"training: {name} must be a number {bound} (got {value!r})")
        check_seed(self.seed, "training: seed")  # -1 failed in numpy after the slides were read

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form for the model card."""
        out = asdict(self)
        out["unet"] = self.unet.to_dict()
        out["scale_range"] = list(self.scale_range)
        out["saturation_range"] = list(self.saturation_range)
        out["density_range"] = list(self.density_range)
        return out


@dataclass
class TrainResult:
    """Outcome of :func:`train`: the selected weights and the validation history.

    ``seconds`` is dedicated-compute time (see ``TrainingConfig.time_limit_s``), ``wall_seconds``
    the elapsed time.
    """

    model: UNet
    best_iteration: int
    best_validation: dict[str, float | int] | None
    history: list[dict[str, float]]
    seconds: float
    wall_seconds: float
    iterations_run: int


def seed_everything(seed: int) -> None:
    """Seed Python-visible RNGs so that a CPU run is repeatable."""
    np.random.seed(seed)
    torch.manual_seed(seed)


def dice_bce_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy plus soft Dice over the batch (Dice keeps the rare class weighted)."""
    bce = F.binary_cross_entropy_with_logits(logits, target)
    prob = torch.sigmoid(logits)
    inter = (prob * target).sum()
    dice = (2 * inter + 1.0) / (prob.sum() + target.sum() + 1.0)
    return bce + (1 - dice)


def evaluate(
    model: UNet,
    items: Sequence[LabelledImage],
    mpp: float,
    device: torch.device,
    tta: bool = True,
    threshold: float = 0.5,
    min_area_um2: float = MIN_AREA_UM2,
) -> SegmentationScore:
    """Pixel Dice and object recall/precision (IoU ≥ 0.5) at the model's µm/px.

    Each image is resampled to ``mpp``, predicted whole, post-processed exactly as in whole-slide
    inference, and compared to its mask. True objects below ``min_area_um2`` (annotation specks; no
    glomerulus section is that small) are ignored, as the same rule removes them from predictions.
    """
    predictions = predict_items(model, items, mpp, device, tta)
    return score_predictions(predictions, mpp, threshold, min_area_um2)


def predict_items(
    model: UNet, items: Sequence[LabelledImage], mpp: float, device: torch.device, tta: bool = True
) -> list[tuple[np.ndarray, np.ndarray]]:
    """``(probability, true mask)`` pairs at ``mpp`` for scoring at several thresholds."""
    out = []
    for item in items:
        work = resample(item, mpp)
        out.append((predict_batch(model, work.image[None], device, tta=tta)[0], work.mask))
    return out


def score_predictions(
    predictions: Sequence[tuple[np.ndarray, np.ndarray]],
    mpp: float,
    threshold: float = 0.5,
    min_area_um2: float = MIN_AREA_UM2,
) -> SegmentationScore:
    """Score :func:`predict_items` output after the whole-slide post-processing."""
    score = SegmentationScore()
    for prob, mask in predictions:
        pred = label_glomeruli(prob, mpp, threshold=threshold, min_area_um2=min_area_um2)
        true, _ = ndimage.label(mask)
        sizes = np.bincount(true.ravel())
        true[(sizes < min_area_um2 / mpp**2)[true] & (true > 0)] = 0
        score.add(pred, true)
    return score


def select_threshold(
    model: UNet,
    items: Sequence[LabelledImage],
    mpp: float,
    device: torch.device,
    candidates: Sequence[float] = (0.3, 0.4, 0.5, 0.6, 0.7),
    tta: bool = True,
) -> tuple[float, dict[str, dict[str, float | int]]]:
    """The probability cut with the best ``dice + recall`` on validation images (ties: 0.5-ward).

    Crops centred on glomeruli over-represent the foreground during training, so the calibrated
    cut for whole tissue is not necessarily 0.5; it is chosen here on validation data only, with
    flip averaging (``tta``) as the model will be run.
    """
    predictions = predict_items(model, items, mpp, device, tta)
    table = {f"{t:g}": score_predictions(predictions, mpp, t) for t in candidates}
    best = max(
        candidates, key=lambda t: (table[f"{t:g}"].dice + table[f"{t:g}"].recall, -abs(t - 0.5))
    )
    return best, {k: v.to_dict() for k, v in table.items()}


def train(
    train_items: Sequence[LabelledImage],
    val_items: Sequence[LabelledImage],
    config: TrainingConfig,
    device: torch.device,
    init_state: dict[str, torch.Tensor] | None = None,
    on_step: Callable[[int, float], None] | None = None,
    checkpoint: Path | None = None,
    progress: bool | None = None,
) -> TrainResult:
    """Train a U-Net; with validation images, return the weights that validated best.

    Long because sampling, the step, the schedule, validation and keeping the best weights form
    one loop.

    Args:
        train_items: Images to sample crops from.
        val_items: Held-out images (from the training split) scored every ``config.val_every``
            steps; the best ``dice + recall`` wins. Empty: the last weights are returned.
        config: The recipe.
        device: Where to train.
        init_state: Start from these weights (fine-tuning) instead of a random initialisation.
        on_step: Called as ``on_step(step, loss)`` after every step (progress bars, logs).
        checkpoint: Save the best weights here whenever they improve, so an interrupted run
            still leaves a usable model.
        progress: A bar over the steps (with the smoothed loss); default on in Jupyter and on
            a terminal, off in pipes (``LNPATH_PROGRESS``).
    """
    seed_everything(config.seed)
    if device.type == "cpu":
        keep_freed_memory()  # 1.3-1.4x faster steps: no page faults on every activation
    rng = np.random.default_rng(config.seed)
    model = UNet(config.unet)
    if init_state is not None:
        model.load_state_dict(
            {k: v.float() if v.is_floating_point() else v for k, v in init_state.items()}
        )
    model = model.to(device).to(memory_format=torch.channels_last)
    sampler = PatchSampler(train_items, config)
    mixed = config.bf16 and fast_autocast(device)
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    best_key, best_state, best_it, best_val = -1.0, None, 0, None
    history: list[dict[str, float]] = []
    clock = _budget_clock(device)
    start, wall_start, running, step = clock(), time.monotonic(), 0.0, 0
    bar = progress_bar(config.iterations, "training", "step", progress)
    for step in range(1, config.iterations + 1):
        model.train()
        done = (step - 1) / config.iterations
        if config.time_limit_s:
            done = max(done, (clock() - start) / config.time_limit_s)
        for group in opt.param_groups:
            group["lr"] = config.lr * _lr_factor(done, 1 / config.iterations)
        images, masks = sampler.batch(rng, config.batch_size)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=mixed):
            logits = model(to_tensor(images, device))
        loss = dice_bce_loss(logits.float(), masks.to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        value = loss.item()
        running = 0.9 * running + 0.1 * value if step > 1 else value
        if on_step is not None:
            on_step(step, running)
        bar.set_postfix(loss=f"{running:.3f}", refresh=False)
        bar.update()
        out_of_time = config.time_limit_s is not None and clock() - start > config.time_limit_s
        if val_items and (step % config.val_every == 0 or step == config.iterations or out_of_time):
            score = evaluate(model, val_items, config.mpp, device, tta=False)
            key = score.dice + score.recall
            history.append({"step": step, "loss": round(running, 4), **_rates(score)})
            log.info("step %d loss %.4f val %s", step, running, _rates(score))
            if key > best_key:
                best_key, best_it, best_val = key, step, score.to_dict()
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
                if checkpoint is not None:  # whole or not at all, a full disk as one line
                    with atomic_path(checkpoint) as tmp:
                        write_weights(best_state, tmp)
        if out_of_time:
            log.info("time limit of %.0f s reached at step %d", config.time_limit_s, step)
            break
    bar.close()
    if best_state is not None:
        model.load_state_dict(best_state)
    else:
        best_it = step
    return TrainResult(
        model.cpu(),
        best_it,
        best_val,
        history,
        clock() - start,
        time.monotonic() - wall_start,
        step,
    )


def _lr_factor(progress: float, first: float, warmup: float = 0.05) -> float:
    """Share of the peak learning rate at ``progress`` in [0, 1] of the run.

    Linear warm-up from ``first`` (one step's share) over the first ``warmup`` of the run, then a
    cosine decay to zero at the end.
    """
    if progress < warmup:
        return min(1.0, (progress + first) / warmup)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, (progress - warmup) / (1 - warmup))))


def _budget_clock(device: torch.device) -> Callable[[], float]:
    if device.type != "cpu":
        return time.monotonic
    threads = torch.get_num_threads()
    return lambda: time.process_time() / threads


def _rates(score: SegmentationScore) -> dict[str, float]:
    return {k: round(getattr(score, k), 4) for k in ("dice", "precision", "recall", "f1")}
