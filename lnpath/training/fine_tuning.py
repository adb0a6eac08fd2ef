"""Fine-tuning the shipped glomerulus U-Net on a lab's labelled images: the public API.

:func:`fine_tune_glomeruli` trains from labelled tiles (Python, notebooks) and :func:`fine_tune`
from slides + QuPath outlines (``lnpath train-glomeruli``); both run the base model's recipe
(:func:`fine_tune_config`) through :func:`fine_tune_glomeruli`, and :meth:`FineTunedModel.save`
writes the one kind of fine-tuned model card.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from lnpath.analysis.glomeruli import Glomeruli
from lnpath.core.args import check_flag, check_optional_flag, refuse_eval_only
from lnpath.core.errors import InputError
from lnpath.io.atomic import check_output_dir
from lnpath.models.store import DEFAULT_MODEL, SegmentationModel, load_model, save_model
from lnpath.nn.metrics import SegmentationScore
from lnpath.nn.predict import resolve_device
from lnpath.nn.unet import UNet
from lnpath.training.glomeruli import TrainingConfig, TrainResult, evaluate, train
from lnpath.training.glomeruli_data import LabelledImage, resample, windows_from_annotations

if TYPE_CHECKING:
    from lnpath.wsi.slide import Slide

#: Sections of the base model's card that describe the base's weights only: its figures, how it
#: was trained, its int8 calibration (ranges measured on those weights) and its measured speed
#: (in int8, which a fine-tuned model does not run) do not carry over.
BASE_ONLY = ("metrics", "training", "int8", "speed")


@dataclass(repr=False)
class FineTunedModel:
    """A U-Net fine-tuned from a base model, still in memory: evaluate it, then :meth:`save` it.

    It reads at the base model's µm/px and keeps the base's inference and post-processing
    settings, so its scores compare with the base's on the same tiles.

    Attributes:
        base: The model it started from.
        config: The training recipe it ran.
        record: What the run did: ``history`` (validation every ``config.val_every`` steps),
            ``best_iteration`` (the step whose weights were kept), ``best_validation``,
            ``iterations_run``, ``seconds`` and ``wall_seconds``.
        device: Where it trained.
        images: How many images it trained and validated on (``{"train": n, "validation": m}``).
    """

    base: SegmentationModel
    config: TrainingConfig
    record: TrainResult
    device: torch.device
    images: dict[str, int]

    def __repr__(self) -> str:
        record, best = self.record, self.record.best_validation
        kept = f"dice {best['dice']}, recall {best['recall']}" if best else "no validation"
        return (
            f"FineTunedModel(base={self.base.name!r}, {record.iterations_run} steps in "
            f"{record.wall_seconds:.0f} s, kept step {record.best_iteration}: {kept})"
        )

    @property
    def network(self) -> UNet:
        """The fine-tuned U-Net (the weights that validated best), on CPU."""
        return self.record.model

    def _card(self, data: str | Sequence[str] | Mapping[str, Any], metrics: Any) -> dict:
        """The model card :meth:`save` writes: the base's, less what held only for its weights.

        ``data`` says what it was trained on; ``metrics`` maps a split name to a
        :class:`~lnpath.nn.metrics.SegmentationScore` (or its ``to_dict()``).
        """
        if not isinstance(data, str | Sequence | Mapping) or not data:
            raise InputError(f"data must say what the model was trained on (got {data!r})")
        if metrics is not None and not isinstance(metrics, Mapping):
            raise InputError(f"metrics must map a split name to a score (got {metrics!r})")
        record = self.record
        card = {k: v for k, v in self.base.card.items() if k not in BASE_ONLY}
        card["base_model"] = {"name": self.base.name, "sha256": self.base.sha256}
        card["training"] = {
            "config": self.config.to_dict(),
            "data": data if isinstance(data, str | Mapping) else [str(d) for d in data],
            "images": dict(self.images),
            "best_iteration": record.best_iteration,
            "iterations_run": record.iterations_run,
            "seconds": round(record.seconds, 1),
            "wall_seconds": round(record.wall_seconds, 1),
            "device": str(self.device),
        }
        card["metrics"] = {"iou_threshold": 0.5}
        for split, score in (metrics or {}).items():
            card["metrics"][str(split)] = (
                score.to_dict() if isinstance(score, SegmentationScore) else dict(score)
            )
        return card

    def save(
        self,
        folder: str | os.PathLike[str],
        data: str | Sequence[str] | Mapping[str, Any],
        metrics: Mapping[str, SegmentationScore | Mapping[str, Any]] | None = None,
        overwrite: bool = False,
    ) -> SegmentationModel:
        """Write the model folder (``weights.pt`` + ``card.json``) and load it back, verified.

        The folder's name becomes the model's name: under ``$LNPATH_MODELS``,
        ``lnpath.load_model(name)`` and ``segment_glomeruli(slide, model=name)`` find it.

        Args:
            folder: The new model folder.
            data: What it was trained on, for the card (text, paths, or a mapping of them).
            metrics: Scores to record, by split (``{"validation": ..., "test": ...}``), e.g. from
                :func:`evaluate_segmentation`.
            overwrite: Replace an existing model folder (never another kind of folder).

        Raises:
            InputError: ``folder`` exists (without ``overwrite``) or is not a model folder.
            OutputError: The folder could not be written; nothing was left half-written.
        """
        return load_model(save_model(folder, self.network, self._card(data, metrics), overwrite))


def fine_tune_config(
    base_model: SegmentationModel, iterations: int = 300, lr: float = 1e-3, seed: int = 0
) -> TrainingConfig:
    """The fine-tuning recipe: the base model's patch and augmentation, ``iterations`` steps at
    ``lr``, so fine-tuning on one lab's slides keeps the robustness to other labs.

    The one recipe both ``lnpath train-glomeruli`` and :func:`fine_tune_glomeruli` use.
    """
    recipe = base_model.card.get("training", {}).get("config", {})
    defaults = TrainingConfig()
    return TrainingConfig(
        mpp=base_model.mpp,
        patch=int(recipe.get("patch", 256)),
        iterations=iterations,
        lr=lr,
        seed=seed,
        val_every=max(10, iterations // 10),
        scale_range=tuple(recipe.get("scale_range", defaults.scale_range)),
        stain_strength=float(recipe.get("stain_strength", defaults.stain_strength)),
        density_range=tuple(recipe.get("density_range", defaults.density_range)),
        saturation_range=tuple(recipe.get("saturation_range", defaults.saturation_range)),
        hue_shift=float(recipe.get("hue_shift", defaults.hue_shift)),
        unet=base_model.network.config,
    )


def fine_tune_glomeruli(
    tiles: Sequence[LabelledImage],
    validation: Sequence[LabelledImage] = (),
    base: str | os.PathLike[str] | SegmentationModel = DEFAULT_MODEL,
    steps: int = 300,
    lr: float = 1e-3,
    seed: int = 0,
    time_limit_s: float | None = None,
    validate_every: int | None = None,
    device: str = "auto",
    progress: bool | None = None,
) -> FineTunedModel:
    """Fine-tune the glomerulus U-Net on a lab's labelled images, so it finds that lab's
    glomeruli; the base model's recipe keeps its robustness to other labs.

    Args:
        tiles: Images to train on (:func:`load_labelled_tiles`, or :class:`LabelledImage` built
            from arrays), at any µm/px: they are brought to the base model's.
        validation: Held-out images, scored every ``validate_every`` steps; the weights that
            score best (Dice + recall) are kept. Empty: the last weights are kept.
        base: The model to start from: a name, a folder, or :func:`lnpath.load_model`'s result.
        steps: Optimiser steps (the learning rate anneals over them).
        lr: Peak learning rate.
        seed: Seeds the crops, augmentation and initial state, so a CPU run repeats.
        time_limit_s: Stop after this many seconds of compute (keeping the best weights).
        validate_every: Steps between validations (default: a tenth of ``steps``, at least 10).
        device: ``auto``, ``cpu`` or ``cuda``.
        progress: A bar over the steps; default on in Jupyter and on a terminal.

    Raises:
        InputError: No training image, no glomerulus in any, or a value that cannot train.
        ModelError: ``base`` is unknown or not a glomerulus segmentation model, or CUDA missing.
    """
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise InputError(f"steps must be a whole number >= 1 (got {steps!r})")
    if time_limit_s is not None and not (
        isinstance(time_limit_s, int | float) and float(time_limit_s) > 0  # also refuses NaN
    ):
        raise InputError(f"time_limit_s must be a number of seconds > 0 (got {time_limit_s!r})")
    progress = check_optional_flag(progress, "fine_tune_glomeruli: progress")
    base_model = _segmentation_model(base)
    config = fine_tune_config(base_model, iterations=steps, lr=lr, seed=seed)
    config = replace(
        config,
        time_limit_s=time_limit_s,
        val_every=config.val_every if validate_every is None else validate_every,
    )
    return _fine_tune(tiles, validation, base_model, config, device, progress)


def evaluate_segmentation(
    model: str | os.PathLike[str] | SegmentationModel | FineTunedModel,
    tiles: Sequence[LabelledImage],
    tta: bool | None = None,
    device: str = "auto",
) -> SegmentationScore:
    """Score a glomerulus model on labelled images, to compare models on the same tiles.

    Each image is brought to the model's µm/px, predicted whole and post-processed with the
    model card's settings (threshold, smallest glomerulus), as whole-slide inference does; the
    score pools pixel Dice and object recall/precision (IoU ≥ 0.5) over the images.

    Args:
        model: A name, a folder, :func:`lnpath.load_model`'s result or a :class:`FineTunedModel`.
        tiles: Labelled images (see :func:`load_labelled_tiles`).
        tta: Average four flips (default: the card's setting); ``False`` is about 4x faster.
        device: ``auto``, ``cpu`` or ``cuda``.

    Raises:
        InputError: No images, or an item that is not a :class:`LabelledImage`.
        ModelError: ``model`` is unknown or not a glomerulus segmentation model.
    """
    card_model = model.base if isinstance(model, FineTunedModel) else _segmentation_model(model)
    network = model.network if isinstance(model, FineTunedModel) else card_model.network
    items = _labelled(tiles, "tiles")
    if not items:
        raise InputError("evaluate_segmentation: no tiles to score")
    post = card_model.postprocess
    return evaluate(
        network,
        items,
        card_model.mpp,
        resolve_device(device),
        tta=bool(card_model.card.get("tta", True)) if tta is None else check_flag(tta, "tta"),
        threshold=float(post.get("threshold", 0.5)),
        **({"min_area_um2": float(post["min_area_um2"])} if "min_area_um2" in post else {}),
    )


def fine_tune(
    slides: Sequence[Slide],
    annotations: Sequence[str | Path],
    out: str | Path,
    base: str | Path = DEFAULT_MODEL,
    config: TrainingConfig | None = None,
    device: str = "auto",
    val_fraction: float = 0.2,
    overwrite: bool = False,
    progress: bool | None = None,
) -> Path:
    """Fine-tune a model on a lab's slides + QuPath GeoJSON and write a new model folder.

    ``lnpath train-glomeruli``: windows around the outlined glomeruli, then
    :func:`fine_tune_glomeruli`'s training and :meth:`FineTunedModel.save`'s card, with the
    validation windows scored as the model will run (flips, the card's threshold).

    Args:
        slides: Open slides, one per annotation file (same order).
        annotations: QuPath GeoJSON exports of glomerulus outlines (e.g. from ``lnpath review``).
        out: New model folder (its name becomes the model name).
        base: Model to start from (name or folder); its architecture, µm/px and inference
            settings are kept.
        config: Training recipe; default: :func:`fine_tune_config` of the base model.
        device: ``auto``, ``cpu`` or ``cuda``.
        val_fraction: Share of windows held out to select the weights and report metrics.
        overwrite: Replace an existing ``out`` folder.
        progress: A bar over the steps; default on in Jupyter and on a terminal, off in pipes
            (``LNPATH_PROGRESS``).

    Raises:
        InputError: Slides and annotation files do not pair up, a file lies under ``eval-only/``,
            or no glomerulus is annotated.
        ModelError: Unknown base model or CUDA missing.
    """
    if len(slides) != len(annotations):
        raise InputError(f"{len(slides)} slides but {len(annotations)} annotation files; pair them")
    refuse_eval_only(*annotations, *(getattr(slide, "path", None) for slide in slides))
    if not 0 <= val_fraction < 1:  # also refuses NaN
        raise InputError(f"val_fraction must be in [0, 1) (got {val_fraction!r})")
    check_output_dir(out, overwrite, marker="card.json")  # before the training, not after it
    base_model = load_model(base)
    resolve_device(device)  # a missing GPU is one line before the slides are read
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
    tuned = _fine_tune(fit, val, base_model, config, device, progress)
    data = {"annotations": [str(p) for p in annotations], "slides": [str(s.path) for s in slides]}
    metrics = (
        {"validation": evaluate_segmentation(tuned, val, tta=True, device=device)} if val else {}
    )
    return tuned.save(out, data, metrics, overwrite=overwrite).path


def _fine_tune(
    tiles: Sequence[LabelledImage],
    validation: Sequence[LabelledImage],
    base: SegmentationModel,
    config: TrainingConfig,
    device: str,
    progress: bool | None,
) -> FineTunedModel:
    """Train ``config`` from ``base``'s weights on images brought to its µm/px once."""
    fit = [resample(t, base.mpp) for t in _labelled(tiles, "tiles")]
    val = [resample(t, base.mpp) for t in _labelled(validation, "validation")]
    if not fit:
        raise InputError("fine-tuning: no training tiles")
    if not any(t.mask.any() for t in fit):
        raise InputError("fine-tuning: no glomerulus in any training tile (all masks are empty)")
    dev = resolve_device(device)
    record = train(fit, val, config, dev, init_state=base.network.state_dict(), progress=progress)
    return FineTunedModel(base, config, record, dev, {"train": len(fit), "validation": len(val)})


def _segmentation_model(model: object) -> SegmentationModel:
    """A loaded glomerulus model from a name, a folder or a loaded one (else one clear error)."""
    if isinstance(model, SegmentationModel):
        return model
    if isinstance(model, str | os.PathLike):
        return load_model(model)
    raise InputError(
        f"expected a glomerulus segmentation model (a name, a folder or lnpath.load_model's "
        f"result), got {type(model).__name__}"
    )


def _labelled(items: object, what: str) -> list[LabelledImage]:
    if isinstance(items, LabelledImage) or not isinstance(items, Sequence):
        raise InputError(f"{what} must be a list of lnpath.LabelledImage (got {items!r:.60})")
    wrong = [type(item).__name__ for item in items if not isinstance(item, LabelledImage)]
    if wrong:
        raise InputError(f"{what} must be lnpath.LabelledImage items, not {wrong[0]}")
    return list(items)
