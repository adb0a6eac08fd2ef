"""Training and evaluating the glomerulus U-Net: one code path for the shipped model and for labs.

``scripts/train_glomeruli.py`` (the shipped model, from the Bueno PAS tiles) and
``lnpath train-glomeruli`` (a lab fine-tuning on its own slides and QuPath annotations) both build a
list of :class:`LabelledImage` and call :func:`train`, then :func:`evaluate`; the model card records
what went in and what came out.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from scipy import ndimage
from skimage.draw import polygon as draw_polygon

from .errors import InputError
from .glomeruli import Glomeruli
from .measure import normalise_white, slide_white
from .nn.augment import colour_jitter, flip_rotate, stain_jitter
from .nn.metrics import SegmentationScore
from .nn.postprocess import MIN_AREA_UM2, label_glomeruli
from .nn.predict import predict_batch, to_tensor
from .nn.unet import UNet, UNetConfig

if TYPE_CHECKING:
    from .model_store import SegmentationModel
    from .slide import Slide

log = logging.getLogger(__name__)


@dataclass
class LabelledImage:
    """One training or evaluation image with its binary glomerulus mask.

    Attributes:
        name: Identifier for logs and the model card.
        image: uint8 RGB (H, W, 3).
        mask: bool (H, W), True inside glomeruli.
        mpp: µm/px of ``image`` and ``mask``.
    """

    name: str
    image: np.ndarray
    mask: np.ndarray
    mpp: float


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
            and on GPUs, and needs no loss scaling).
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
    foreground_crops: float = 0.6
    balance_glomeruli: bool = True
    val_every: int = 150
    time_limit_s: float | None = None
    bf16: bool = True
    unet: UNetConfig = field(default_factory=lambda: UNetConfig(width=8, depth=4, norm="batch"))

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


def load_tile_folder(folder: str | Path, names: Sequence[str], mpp: float) -> list[LabelledImage]:
    """Read ``images/NAME.png`` + ``masks/NAME.png`` pairs (the Bueno layout: red = glomerulus).

    Each image is white-balanced against its own glass (:func:`lnpath.measure.normalise_white`),
    as whole-slide inference does with the slide's.
    """
    folder = Path(folder)
    out = []
    for name in names:
        image = normalise_white(
            np.asarray(Image.open(folder / "images" / f"{name}.png").convert("RGB"))
        )
        mask_rgb = np.asarray(Image.open(folder / "masks" / f"{name}.png").convert("RGB"))
        out.append(LabelledImage(name, image, mask_rgb[..., 0] > 127, mpp))
    return out


def resample(item: LabelledImage, mpp: float) -> LabelledImage:
    """The same image and mask at ``mpp`` (area-averaged image, mask re-thresholded at 0.5)."""
    if math.isclose(item.mpp, mpp, rel_tol=1e-3):
        return item
    factor = item.mpp / mpp
    size = (
        max(1, round(item.image.shape[1] * factor)),
        max(1, round(item.image.shape[0] * factor)),
    )
    image = np.asarray(Image.fromarray(item.image).resize(size, Image.Resampling.LANCZOS))
    mask = Image.fromarray(item.mask.astype(np.uint8) * 255).resize(size, Image.Resampling.BOX)
    return LabelledImage(item.name, image, np.asarray(mask) > 127, mpp)


class PatchSampler:
    """Random augmented training crops at the working µm/px.

    Crops are cut from the source resolution with a random zoom, then flipped/rotated and stain
    jittered. A share of crops is centred near a glomerulus pixel so that the rare foreground class
    is seen often enough.
    """

    def __init__(self, items: Sequence[LabelledImage], config: TrainingConfig) -> None:
        if not items:
            raise ValueError("no training images")
        self.items = list(items)
        self.config = config
        self.foreground = [
            _glomerulus_pixels(item.mask, config.balance_glomeruli) for item in self.items
        ]

    def sample(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """One crop: float32 RGB in [0, 1] (patch, patch, 3) and float32 mask (patch, patch)."""
        cfg = self.config
        index = int(rng.integers(len(self.items)))
        item, objects = self.items[index], self.foreground[index]
        fg = objects[int(rng.integers(len(objects)))] if objects else np.empty((0, 2), np.int64)
        lo, hi = np.log(cfg.scale_range[0]), np.log(cfg.scale_range[1])
        side = max(8, round(cfg.patch * cfg.mpp / item.mpp * float(np.exp(rng.uniform(lo, hi)))))
        height, width = item.mask.shape
        if len(fg) and rng.random() < cfg.foreground_crops:
            cy, cx = fg[int(rng.integers(len(fg)))] + rng.integers(-side // 3, side // 3 + 1, 2)
            y0, x0 = int(cy) - side // 2, int(cx) - side // 2
        else:
            y0 = int(rng.integers(min(0, height - side), max(0, height - side) + 1))
            x0 = int(rng.integers(min(0, width - side), max(0, width - side) + 1))
        image = _crop(item.image, y0, x0, side, fill=255)
        mask = _crop(item.mask.astype(np.uint8) * 255, y0, x0, side, fill=0)
        size = (cfg.patch, cfg.patch)
        image = np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BILINEAR))
        mask = np.asarray(Image.fromarray(mask).resize(size, Image.Resampling.BILINEAR)) > 127
        image, mask = flip_rotate(image, mask, rng)
        rgb = colour_jitter(
            stain_jitter(image, rng, cfg.stain_strength, cfg.density_range),
            rng,
            cfg.saturation_range,
            cfg.hue_shift,
        )
        return rgb, mask.astype(np.float32)

    def batch(self, rng: np.random.Generator, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """A batch as tensors: images (N, H, W, 3) float in [0, 1] and masks (N, 1, H, W)."""
        crops = [self.sample(rng) for _ in range(size)]
        images = torch.from_numpy(np.stack([c[0] for c in crops]))
        masks = torch.from_numpy(np.stack([c[1] for c in crops]))[:, None]
        return images, masks


def _glomerulus_pixels(mask: np.ndarray, per_object: bool) -> list[np.ndarray]:
    """Foreground pixel coordinates, one array per glomerulus (or one for all of them)."""
    if not mask.any():
        return []
    if not per_object:
        return [np.argwhere(mask)]
    labels, count = ndimage.label(mask)
    return [np.argwhere(labels == index) for index in range(1, count + 1)]


def _crop(array: np.ndarray, y0: int, x0: int, side: int, fill: int) -> np.ndarray:
    """``array[y0:y0+side, x0:x0+side]`` padded with ``fill`` where it leaves the array."""
    out = np.full((side, side, *array.shape[2:]), fill, dtype=array.dtype)
    ys, xs = max(0, y0), max(0, x0)
    ye, xe = min(array.shape[0], y0 + side), min(array.shape[1], x0 + side)
    if ye > ys and xe > xs:
        out[ys - y0 : ye - y0, xs - x0 : xe - x0] = array[ys:ye, xs:xe]
    return out


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
) -> tuple[float, dict[str, dict[str, float | int]]]:
    """The probability cut with the best ``dice + recall`` on validation images (ties: 0.5-ward).

    Crops centred on glomeruli over-represent the foreground during training, so the calibrated
    cut for whole tissue is not necessarily 0.5; it is chosen here on validation data only.
    """
    predictions = predict_items(model, items, mpp, device)
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
) -> TrainResult:
    """Train a U-Net; with validation images, return the weights that validated best.

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
    """
    seed_everything(config.seed)
    rng = np.random.default_rng(config.seed)
    model = UNet(config.unet)
    if init_state is not None:
        model.load_state_dict(
            {k: v.float() if v.is_floating_point() else v for k, v in init_state.items()}
        )
    model = model.to(device).to(memory_format=torch.channels_last)
    sampler = PatchSampler(train_items, config)
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    best_key, best_state, best_it, best_val = -1.0, None, 0, None
    history: list[dict[str, float]] = []
    clock = _budget_clock(device)
    start, wall_start, running, step = clock(), time.monotonic(), 0.0, 0
    for step in range(1, config.iterations + 1):
        model.train()
        progress = (step - 1) / config.iterations
        if config.time_limit_s:
            progress = max(progress, (clock() - start) / config.time_limit_s)
        for group in opt.param_groups:
            group["lr"] = config.lr * _lr_factor(progress, 1 / config.iterations)
        images, masks = sampler.batch(rng, config.batch_size)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=config.bf16):
            logits = model(to_tensor(images, device))
        loss = dice_bce_loss(logits.float(), masks.to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        value = loss.item()
        running = 0.9 * running + 0.1 * value if step > 1 else value
        if on_step is not None:
            on_step(step, running)
        out_of_time = config.time_limit_s is not None and clock() - start > config.time_limit_s
        if val_items and (step % config.val_every == 0 or step == config.iterations or out_of_time):
            score = evaluate(model, val_items, config.mpp, device, tta=False)
            key = score.dice + score.recall
            history.append({"step": step, "loss": round(running, 4), **_rates(score)})
            log.info("step %d loss %.4f val %s", step, running, _rates(score))
            if key > best_key:
                best_key, best_it, best_val = key, step, score.to_dict()
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
                if checkpoint is not None:
                    torch.save(best_state, checkpoint)
        if out_of_time:
            log.warning("time limit of %.0f s reached at step %d", config.time_limit_s, step)
            break
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


def windows_from_annotations(
    slide: Slide, glomeruli: Glomeruli, mpp: float, window: int
) -> list[LabelledImage]:
    """Training windows centred on annotated glomeruli, read at ``mpp`` with their masks.

    Each window (``window`` px at ``mpp``) is centred on a glomerulus not already inside an earlier
    window; every annotated outline overlapping it is drawn into its mask. Windows are
    white-balanced with the slide's glass, as in whole-slide inference. The annotations are taken as
    complete inside these windows (QuPath reviews usually outline every glomerulus of a region).
    """
    side = window * mpp / slide.mpp  # level-0 px
    white = slide_white(slide)
    taken: list[tuple[float, float]] = []
    out = []
    for g in sorted(glomeruli, key=lambda g: (g.centroid[1], g.centroid[0])):
        cx, cy = g.centroid
        if any(abs(cx - x) < side / 4 and abs(cy - y) < side / 4 for x, y in taken):
            continue
        taken.append((cx, cy))
        x0, y0 = cx - side / 2, cy - side / 2
        image = normalise_white(slide.read(x0, y0, side, side, mpp=mpp), white)
        mask = np.zeros(image.shape[:2], bool)
        scale = slide.mpp / mpp
        for other in glomeruli:
            minx, miny, maxx, maxy = other.polygon.bounds
            if maxx < x0 or maxy < y0 or minx > x0 + side or miny > y0 + side:
                continue
            ring = np.asarray(other.polygon.exterior.coords)
            rr, cc = draw_polygon((ring[:, 1] - y0) * scale, (ring[:, 0] - x0) * scale, mask.shape)
            mask[rr, cc] = True
        out.append(LabelledImage(f"{slide.path.name}@{cx:.0f},{cy:.0f}", image, mask, mpp))
    return out


def fine_tune_config(base_model: SegmentationModel) -> TrainingConfig:
    """The default fine-tuning recipe: 300 steps at lr 1e-3 with the base model's patch and
    augmentation, so fine-tuning on one lab's slides keeps the robustness to other labs."""
    recipe = base_model.card.get("training", {}).get("config", {})
    defaults = TrainingConfig()
    return TrainingConfig(
        mpp=base_model.mpp,
        patch=int(recipe.get("patch", 256)),
        iterations=300,
        lr=1e-3,
        scale_range=tuple(recipe.get("scale_range", defaults.scale_range)),
        stain_strength=float(recipe.get("stain_strength", defaults.stain_strength)),
        density_range=tuple(recipe.get("density_range", defaults.density_range)),
        saturation_range=tuple(recipe.get("saturation_range", defaults.saturation_range)),
        hue_shift=float(recipe.get("hue_shift", defaults.hue_shift)),
        unet=base_model.network.config,
    )


def fine_tune(
    slides: Sequence[Slide],
    annotations: Sequence[str | Path],
    out: str | Path,
    base: str | Path = "glomeruli-unet-pas",
    config: TrainingConfig | None = None,
    device: str = "auto",
    val_fraction: float = 0.2,
    overwrite: bool = False,
    progress: bool = False,
) -> Path:
    """Fine-tune a model on a lab's slides + QuPath GeoJSON and write a new model folder.

    Args:
        slides: Open slides, one per annotation file (same order).
        annotations: QuPath GeoJSON exports of glomerulus outlines (e.g. from ``lnpath review``).
        out: New model folder (its name becomes the model name).
        base: Model to start from (name or folder); its architecture, µm/px and inference
            settings are kept.
        config: Training recipe; default: the base model's recipe with 300 steps and lr 1e-3.
        device: ``auto``, ``cpu`` or ``cuda``.
        val_fraction: Share of windows held out to select the weights and report metrics.
        overwrite: Replace an existing ``out`` folder.
        progress: Show a tqdm bar on stderr.

    Raises:
        InputError: Slides and annotation files do not pair up, or no glomerulus is annotated.
        ModelError: Unknown base model or CUDA missing.
    """
    from .model_store import load_model, save_model
    from .nn.predict import resolve_device

    if len(slides) != len(annotations):
        raise InputError(f"{len(slides)} slides but {len(annotations)} annotation files; pair them")
    base_model = load_model(base)
    dev = resolve_device(device)
    config = config or fine_tune_config(base_model)
    items: list[LabelledImage] = []
    for slide, path in zip(slides, annotations, strict=True):
        gloms = Glomeruli.from_geojson(path, slide.mpp)
        if not len(gloms):
            raise InputError(f"{path}: no glomerulus polygons to train on")
        items += windows_from_annotations(slide, gloms, config.mpp, 2 * config.patch)
    order = np.random.default_rng(config.seed).permutation(len(items))
    n_val = round(val_fraction * len(items)) if len(items) > 2 else 0
    val = [items[i] for i in order[:n_val]]
    fit = [items[i] for i in order[n_val:]]
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=config.iterations, unit="step", file=sys.stderr, desc="fine-tune")
    result = train(
        fit,
        val,
        config,
        dev,
        init_state=base_model.network.state_dict(),
        on_step=(lambda step, loss: bar.update(1)) if bar is not None else None,
    )
    if bar is not None:
        bar.close()
    card = {k: v for k, v in base_model.card.items() if k not in ("metrics", "training")}
    card["base_model"] = {"name": base_model.name, "sha256": base_model.sha256}
    card["training"] = {
        "config": config.to_dict(),
        "data": [str(p) for p in annotations],
        "slides": [str(s.path) for s in slides],
        "windows": {"train": len(fit), "validation": len(val)},
        "best_iteration": result.best_iteration,
        "iterations_run": result.iterations_run,
        "seconds": round(result.seconds, 1),
        "wall_seconds": round(result.wall_seconds, 1),
        "device": str(dev),
    }
    card["metrics"] = {"iou_threshold": 0.5}
    if val:
        threshold = float(base_model.postprocess.get("threshold", 0.5))
        score = evaluate(result.model, val, config.mpp, dev, threshold=threshold)
        card["metrics"]["validation"] = score.to_dict()
    return save_model(out, result.model, card, overwrite=overwrite)
