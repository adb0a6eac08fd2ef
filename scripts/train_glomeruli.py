"""Train the shipped glomerulus U-Net on the Bueno et al. PAS tiles (train split only).

Usage::

    python scripts/train_glomeruli.py --out models/glomeruli-unet-pas [--time-limit 1500]
    python scripts/train_glomeruli.py --evaluate-only models/glomeruli-unet-pas
    python scripts/train_glomeruli.py --distill-from models/glomeruli-unet-pas --out DIR

``--distill-from`` trains a student (initialised from the teacher) whose single forward pass
reproduces the teacher's four-flip average on the training tiles, and selects it and its
probability cut on validation without flips; its card says ``tta: false``.

The validation tiles are carved from ``train`` with the seed; the test split is touched only after
the weights are chosen, to fill the card's metrics. ``eval-only`` data is read for reporting only.
Runs in ≤ 30 min on 2 CPU cores (and on a GPU when there is one).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from eval_sets import BUPT_MPP_200X, bupt_mpp
from PIL import Image

from lnpath.analysis.measure import normalise_white
from lnpath.models.store import load_model, save_model
from lnpath.nn.postprocess import MIN_AREA_UM2, SPLIT_DEPTH_UM, label_glomeruli
from lnpath.nn.predict import MEAN, STD, predict_batch, resolve_device
from lnpath.training.distill import flip_ensembles, single_pass_by_orientation, with_teacher
from lnpath.training.glomeruli import TrainingConfig, evaluate, select_threshold, train
from lnpath.training.glomeruli_data import LabelledImage, load_labelled_tiles, resample

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
BUENO_MPP = 0.5  # Aperio ScanScope CS at 20x (PROVENANCE.md); glomeruli 350-450 px across
MULTISTAIN_MPP = 0.5  # not recorded; "~20x-equivalent" per PROVENANCE.md
MULTISTAIN_STAINS = {
    "02": "PAS",
    "03": "Jones (silver)",
    "32": "Sirius red",
    "16": "CD68 IHC",
    "39": "CD39 IHC",
}
INFERENCE = {"patch": 512, "overlap": 64, "stride": 448, "blend": "linear ramp over the overlap"}
NOTES = [
    "The public split shares two glomeruli between a train and a test tile (10102|10103 and "
    "10164|10165 are neighbours on their source slide); with seed 0 both train halves (10102, "
    "10165) fall in the validation subset, so no test glomerulus was trained on.",
    "Test metrics: 7 tiles, 8 glomeruli (the 354 px speck in 10215 is below min_area_um2 and "
    "ignored as in prediction); pixel Dice pooled over tiles; a glomerulus counts as found when "
    "one predicted object overlaps it with IoU >= 0.5.",
    "bupt_pas: other lab, microscope snapshots at 200x and 400x, µm/px not recorded (assumed from "
    "the magnification in the file name), eval only.",
    "Validation is 5 glomeruli on 4 tiles and noisy: tile 10165 shows a detached glomerular tuft "
    "that is not annotated (a false positive for every model that finds it) and, as its only "
    "annotation, a 1,500 µm² corner of test glomerulus 10164 (missed by every model so far), so "
    "validation precision and recall cap at 0.8 and small differences in validation Dice decide.",
    "Colour robustness: the last two warm restarts (lr 5e-4, then 3e-4) train with strong stain "
    "augmentation chosen a priori for other labs' PAS (one optical-density factor 0.6-2.5 for "
    "section thickness, HED jitter 0.08, saturation 0.6-1.8, hue +-0.04). Rule fixed before "
    "training: keep the better-validating restart if its validation dice + recall is within 0.01 "
    "of the previous model's (0.839 + 0.8 vs 0.845 + 0.8: kept). On the eval-only bupt PAS "
    "snapshots this raised glomerulus recall from 1/30 to 10/30; nothing was tuned on them.",
    "Distillation (this round, rule fixed before training): a student initialised from the "
    "four-flip model d10ddbaf and trained on 0.5 x mask + 0.5 x that model's four-flip map of each "
    "training tile replaces it as the default only if its single-pass validation dice is at least "
    "the teacher's with flips (0.839 at its cut 0.4) and its validation recall at least 0.8; the "
    "cut is chosen again on validation without flips. The test split is scored after that choice. "
    "First run (2026-12-02, a shared 2-core CPU without bf16, lr 3e-4, 384 px crops): single-pass "
    "validation dice 0.77, 0.75, 0.77 at steps 150, 300, 450 (the teacher without flips: 0.80), "
    "stopped there for time with no sign of reaching 0.839; the four-flip model stays the default.",
    "Second run (2026-12-02, the same CPU, nothing else on it; rule written down before it "
    "started): lr 1e-4 and an 800-step schedule (all run, 1140 s), otherwise as the first. Added "
    "to the rule: the single-pass validation dice averaged over the four flip orientations "
    "(--by-orientation) must also reach 0.839, because the teacher's own single pass scores "
    "0.799 / 0.824 / 0.840 / 0.801 (mean 0.816, cut 0.4) on the same tiles presented as scanned, "
    "mirrored, upside down and rotated: one orientation alone is noise. Result: validation dice "
    "0.78, 0.77, 0.77, 0.78, 0.77, 0.77 at steps 150-800, best step 150; at its cut 0.3 the "
    "student scores 0.785 as scanned and 0.814 averaged over orientations (teacher 0.816). "
    "Failed; the four-flip model stays the default. Further training moves the validation-"
    "selected teacher off its optimum on 5 validation glomeruli rather than toward its ensemble.",
    "Two flips instead of four (2026-12-02, rule fixed before measuring): an ensemble of the "
    "image and one flip of it would halve the default's cost; a kind replaces four flips only "
    "if its validation dice, averaged over its two ensembles (the slide may lie either way), is "
    ">= 0.839 with recall >= 0.8 at the cut 0.4. Result (--by-orientation): image + rotated "
    "0.830, + mirrored 0.831, + upside down 0.835, four flips 0.839, recall 0.8 for all. Failed; "
    "four flips stay the default, and the test split was not scored for them.",
    "Rejected on validation: Macenko stain normalisation of each tile to the training tiles' "
    "stain matrix (validation Dice 0.753 vs 0.845; estimates on mostly-glass tiles are unstable).",
]
NORMALISATION = {
    "white_balance": "per-channel gain so that the glass reads 255 "
    "(lnpath.analysis.measure.estimate_white: "
    "per slide from a 16 µm/px thumbnail; per image for tiles and snapshots)",
    "input": "white-balanced RGB uint8 / 255",
    "mean": list(MEAN),
    "std": list(STD),
}

log = logging.getLogger("train_glomeruli")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA / "glomeruli-pas-bueno")
    parser.add_argument("--out", type=Path, default=REPO / "models" / "glomeruli-unet-pas")
    parser.add_argument("--iterations", type=int, default=TrainingConfig.iterations)
    parser.add_argument("--time-limit", type=float, default=1500.0, help="seconds (default 1500)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--val-tiles", type=int, default=4, help="train tiles held out")
    parser.add_argument("--lr", type=float, default=TrainingConfig.lr)
    parser.add_argument("--width", type=int, default=8)
    parser.add_argument("--patch", type=int, default=TrainingConfig.patch, help="crop px at --mpp")
    parser.add_argument("--batch-size", type=int, default=TrainingConfig.batch_size)
    parser.add_argument("--norm", default="batch", choices=["batch", "instance"])
    parser.add_argument("--mpp", type=float, default=1.0)
    parser.add_argument("--stain-strength", type=float, default=TrainingConfig.stain_strength)
    for option, default in (
        ("--saturation-range", TrainingConfig.saturation_range),
        ("--density-range", TrainingConfig.density_range),
    ):
        parser.add_argument(option, type=float, nargs=2, default=default, metavar=("LOW", "HIGH"))
    parser.add_argument("--hue-shift", type=float, default=TrainingConfig.hue_shift)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--val-every", type=int, default=TrainingConfig.val_every)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--overwrite", action="store_true")
    parser.add_argument(
        "--init", type=Path, help="start from this model folder's weights (a warm restart)"
    )
    parser.add_argument(
        "--distill-from", type=Path, help="teacher model folder: train a student to match its TTA"
    )
    parser.add_argument(
        "--distill-weight", type=float, default=0.5, help="teacher share of the target (0.5)"
    )
    parser.add_argument("--evaluate-only", type=Path, help="re-evaluate a saved model folder")
    parser.add_argument(
        "--by-orientation",
        type=Path,
        help="print a saved model's validation dice with one pass in each of the four flips, "
        "with two flips and with four",
    )
    parser.add_argument(
        "--reselect-threshold",
        action="store_true",
        help="with --evaluate-only: choose the probability cut again on the validation tiles",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stdout)
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    split = json.loads((args.data / "split.json").read_text())

    if args.by_orientation:
        model = load_model(args.by_orientation)
        val = load_labelled_tiles(args.data, model.card["training"]["validation_tiles"], BUENO_MPP)
        cut = model.card["postprocess"]["threshold"]
        dice = single_pass_by_orientation(model.network, val, model.mpp, device, cut)
        ensembles = flip_ensembles(model.network, val, model.mpp, device, cut)
        print(
            json.dumps(
                {
                    "model": str(args.by_orientation),
                    "threshold": cut,
                    "dice": dice,
                    "flip_ensembles": ensembles,
                }
            )
        )
        return 0

    if args.evaluate_only:
        model = load_model(args.evaluate_only)
        card = dict(model.card)
        card["normalisation"] = NORMALISATION
        card["notes"] = NOTES
        if args.reselect_threshold:
            val = load_labelled_tiles(args.data, card["training"]["validation_tiles"], BUENO_MPP)
            threshold, table = select_threshold(
                model.network, val, model.mpp, device, tta=bool(card.get("tta", True))
            )
            card["postprocess"] = {**card["postprocess"], "threshold": threshold}
            card["training"]["threshold_selection"] = {"selected": threshold, "validation": table}
        card["metrics"] = report(
            model.network,
            args.data,
            split,
            model.mpp,
            device,
            card["postprocess"]["threshold"],
            tta=bool(card.get("tta", True)),
        )
        save_model(args.evaluate_only, model.network, card, overwrite=True)
        print(json.dumps(card["metrics"], indent=2))
        return 0

    fit_names, val_names = fit_and_validation(split, args.seed, args.val_tiles)
    config = TrainingConfig(
        mpp=args.mpp,
        patch=args.patch,
        batch_size=args.batch_size,
        iterations=args.iterations,
        seed=args.seed,
        time_limit_s=args.time_limit,
        val_every=args.val_every,
        lr=args.lr,
        stain_strength=args.stain_strength,
        saturation_range=tuple(args.saturation_range),
        hue_shift=args.hue_shift,
        density_range=tuple(args.density_range),
        distill=args.distill_weight if args.distill_from else 0.0,
        unet=TrainingConfig().unet.__class__(width=args.width, depth=4, norm=args.norm),
    )
    fit = load_labelled_tiles(args.data, fit_names, BUENO_MPP)
    val = load_labelled_tiles(args.data, val_names, BUENO_MPP)
    teacher = load_model(args.distill_from) if args.distill_from else None
    tta = teacher is None
    if teacher is not None:
        fit = with_teacher(fit, teacher.network, teacher.mpp, device)
    log.info("train %s | validation %s | device %s", fit_names, val_names, device)

    def on_step(step: int, loss: float) -> None:
        if step % 25 == 0:
            log.info("step %d loss %.4f", step, loss)

    args.out.parent.mkdir(parents=True, exist_ok=True)
    checkpoint = args.out.parent / f".{args.out.name}.best.pt"
    init = load_model(args.init) if args.init else teacher
    result = train(
        fit,
        val,
        config,
        device,
        init_state=init.network.state_dict() if init else None,
        on_step=on_step,
        checkpoint=checkpoint,
    )
    log.info(
        "trained %d steps in %.0f s; best step %d %s",
        result.iterations_run,
        result.seconds,
        result.best_iteration,
        result.best_validation,
    )
    threshold, thresholds = select_threshold(result.model, val, args.mpp, device, tta=tta)
    log.info("validation threshold %.2f: %s", threshold, thresholds[f"{threshold:g}"])
    orientations = None
    if teacher is not None:  # the fair comparison for a single-pass student (see NOTES)
        orientations = {
            "student": single_pass_by_orientation(result.model, val, args.mpp, device, threshold),
            "teacher_without_flips": single_pass_by_orientation(
                teacher.network, val, teacher.mpp, device, teacher.card["postprocess"]["threshold"]
            ),
        }
        log.info("validation dice by orientation: %s", orientations)
    card: dict[str, Any] = {
        "task": "glomerulus segmentation (binary: glomerular tuft + Bowman's capsule as drawn)",
        "stain": "PAS",
        "classes": ["background", "glomerulus"],
        "mpp": args.mpp,
        "inference": INFERENCE,
        "normalisation": NORMALISATION,
        "tta": tta,
        "test_time_augmentation": "mean of 4 flips" if tta else "none: one forward pass",
        "postprocess": {
            "threshold": threshold,
            "min_area_um2": MIN_AREA_UM2,
            "split_depth_um": SPLIT_DEPTH_UM,
            "steps": "fill holes, 3 µm opening, distance watershed, drop small",
        },
        "training": {
            "config": config.to_dict(),
            "data": "glomeruli-pas-bueno train split (split.json), 0.5 µm/px",
            "train_tiles": fit_names,
            "validation_tiles": val_names,
            "initialised_from": (
                {"weights": init.card["sha256"], "training": init.card["training"]}
                if init
                else None
            ),
            "selection": "best validation dice + recall, checked every val_every steps",
            "distilled_from": (
                {
                    "weights": teacher.card["sha256"],
                    "target": f"{1 - args.distill_weight:g} x mask + {args.distill_weight:g} x "
                    "the teacher's mean of 4 flips on each training tile",
                }
                if teacher
                else None
            ),
            "iterations_run": result.iterations_run,
            "best_iteration": result.best_iteration,
            "validation": result.best_validation,
            "threshold_selection": {"selected": threshold, "validation": thresholds},
            "validation_by_orientation": orientations,
            "seconds": round(result.seconds, 1),
            "wall_seconds": round(result.wall_seconds, 1),
            "seconds_note": "seconds = process CPU time / threads (dedicated-core equivalent); "
            "wall_seconds on a machine shared with other jobs",
            "device": str(device),
            "threads": args.threads,
            "torch": torch.__version__,
            "history": result.history,
        },
        "data_licence": (
            "Training tiles: Bueno G., Gonzalez-Lopez L., Garcia-Rojo M., Laurinavicius A., "
            "'Data for glomeruli characterization in histopathological images', Mendeley Data "
            "10.17632/k7nvtgn2x6.3, CC BY 4.0 (Bueno et al., Comput Methods Programs Biomed 2020, "
            "doi:10.1016/j.cmpb.2019.105273); tiled and masked by the Kaggle 'Glomeruli (HuBMAP "
            "external) 1024x1024' dataset, obtained via github.com/sarah-antillia/"
            "TensorFlow-FlexUNet-Tiled-Image-Segmentation-Glomeruli (Apache-2.0)."
        ),
        "licence": "Apache-2.0 (weights), with the CC BY 4.0 attribution above",
        "seed": args.seed,
        "notes": NOTES,
        "intended_use": "research; every output is a proposal until a pathologist confirms it",
    }
    card["metrics"] = report(result.model, args.data, split, args.mpp, device, threshold, tta)
    save_model(args.out, result.model, card, overwrite=args.overwrite)
    log.info("wrote %s", args.out)
    print(json.dumps(card["metrics"], indent=2))
    return 0


#: Train tiles holding half of a test glomerulus (10102|10103, 10165|10164 are neighbours on
#: their source slide): never fitted on, whatever the seed.
TEST_NEIGHBOURS = ("10102", "10165")


def fit_and_validation(
    split: dict[str, list[str]], seed: int, val_tiles: int
) -> tuple[list[str], list[str]]:
    """Fit and validation tiles, both from ``train``; a train tile that shares a glomerulus with a
    test tile always goes to validation (with seed 0 the draw already puts both there, so the
    shipped recipe is unchanged; another seed would have trained on half a test glomerulus)."""
    rng = np.random.default_rng(seed)
    names = sorted(split["train"])
    drawn = set(rng.choice(names, size=val_tiles, replace=False).tolist())
    val_names = sorted(drawn | {n for n in TEST_NEIGHBOURS if n in names})
    return [n for n in names if n not in val_names], val_names


def report(
    network: torch.nn.Module,
    data: Path,
    split: dict[str, list[str]],
    mpp: float,
    device: torch.device,
    threshold: float,
    tta: bool = True,
) -> dict[str, Any]:
    """Test-split metrics, the eval-only generalisation check and the stain domain-shift note."""
    start = time.monotonic()
    test = load_labelled_tiles(data, split["test"], BUENO_MPP)
    metrics: dict[str, Any] = {
        "iou_threshold": 0.5,
        "test": {
            "data": "glomeruli-pas-bueno test split",
            **_score(network, test, mpp, device, threshold, tta),
        },
    }
    bupt = DATA / "eval-only" / "bupt-multistain-glomeruli"
    if bupt.is_dir():
        items = _bupt_pas(bupt)
        metrics["bupt_pas"] = {
            "data": f"eval-only/bupt-multistain-glomeruli, {len(items)} PAS snapshots (no "
            f"licence: read at evaluation time only, never trained or tuned on); µm/px not "
            f"recorded: {BUPT_MPP_200X} assumed at 200x, half that for the snapshots whose file "
            "name says 400x",
            **_score(network, items, mpp, device, threshold, tta),
        }
    shift = DATA / "multistain-kidney-tiles"
    if shift.is_dir():
        metrics["domain_shift_multistain"] = _domain_shift(
            network, shift, mpp, device, threshold, tta
        )
    log.info("evaluation took %.0f s", time.monotonic() - start)
    return metrics


def _score(
    network: torch.nn.Module,
    items: list[LabelledImage],
    mpp: float,
    device: torch.device,
    threshold: float,
    tta: bool,
) -> dict[str, Any]:
    score = evaluate(network, items, mpp, device, tta=tta, threshold=threshold)
    out = score.to_dict()
    return {
        k: out[k]
        for k in (
            "dice",
            "precision",
            "recall",
            "f1",
            "true_objects",
            "predicted_objects",
            "true_positives",
            "images",
        )
    }


def _bupt_pas(folder: Path) -> list[LabelledImage]:
    items = []
    for path in sorted((folder / "images").iterdir()):
        if "-PAS" not in path.name.upper() or "PASM" in path.name.upper():
            continue
        image = normalise_white(np.asarray(Image.open(path).convert("RGB")))
        mask = np.asarray(Image.open(folder / "masks" / f"{path.stem}.png")) > 0
        items.append(LabelledImage(path.stem, image, mask, bupt_mpp(path.stem)))
    return items


def _domain_shift(
    network: torch.nn.Module,
    folder: Path,
    mpp: float,
    device: torch.device,
    threshold: float,
    tta: bool,
) -> dict[str, Any]:
    found: dict[str, int] = {}
    for path in sorted(folder.glob("orig_patch_stain_*.png")):
        code = path.stem.rsplit("_", 1)[-1]
        image = normalise_white(np.asarray(Image.open(path).convert("RGB")))
        item = resample(
            LabelledImage(path.stem, image, np.zeros(image.shape[:2], bool), MULTISTAIN_MPP), mpp
        )
        prob = predict_batch(network, item.image[None], device, tta=tta)[0]
        labels = label_glomeruli(prob, mpp, threshold=threshold)
        found[f"{code} ({MULTISTAIN_STAINS.get(code, 'undocumented stain')})"] = int(labels.max())
    return {
        "data": "multistain-kidney-tiles (Nisar et al., MIT), unlabelled 1000 px tiles, assumed "
        f"{MULTISTAIN_MPP} µm/px; glomeruli found per stain (no ground truth: a smoke test of "
        "behaviour off the training stain)",
        "glomeruli_found": found,
    }


if __name__ == "__main__":
    raise SystemExit(main())
