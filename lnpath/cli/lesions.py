"""``lnpath train-lesions``: train the lesion CNN, or calibrate the morphometry, on a lab's own
labels and print cross-validated metrics."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from lnpath.core.args import check_seed
from lnpath.core.errors import InputError

log = logging.getLogger(__name__)


def register(subparsers: Any) -> None:
    """Add the ``train-lesions`` sub-command."""
    p = subparsers.add_parser(
        "train-lesions",
        help="train a lesion classifier on your own labelled glomeruli",
        description="Train a multi-label lesion CNN (--method cnn) or calibrate the morphometry "
        "caller (--method morphometry: a logistic regression per lesion on the m_* measurements) "
        "from QuPath annotations + slides, a folder of crops + CSV (columns image, "
        "class[, group, mask]) or confirmed lnpath results (--from-results); print grouped "
        "cross-validated metrics and write a model folder.",
    )
    p.add_argument(
        "--method",
        choices=("cnn", "morphometry"),
        default="cnn",
        help="cnn: train a lesion CNN (default); morphometry: fit logistic models on the "
        "interpretable measurements (no GPU, few labels)",
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument(
        "--qupath",
        nargs=2,
        action="append",
        metavar=("GEOJSON", "SLIDE"),
        help="a QuPath GeoJSON export and the slide it annotates (repeat for more slides)",
    )
    src.add_argument("--crops", metavar="DIR", help="folder of glomerulus crop images")
    src.add_argument(
        "--from-results",
        nargs="+",
        metavar="DIR",
        help="learn from your own sign-outs: result folders (or folders of them) that a "
        "pathologist confirmed; their confirmed calls are the labels, provisional or tampered "
        "folders are ignored and counted, a slide is counted once",
    )
    p.add_argument(
        "--slide-root",
        metavar="DIR",
        help="with --from-results: folder holding slides that moved since they were scored",
    )
    p.add_argument(
        "--skip-missing-slides",
        action="store_true",
        help="with --from-results: leave out (and count) results whose slide is not found or is "
        "another file than the one scored (fingerprint differs), instead of stopping",
    )
    p.add_argument("--labels", metavar="CSV", help="label table for --crops")
    p.add_argument(
        "--map",
        action="append",
        default=[],
        metavar="CLASS=LESION[,LESION]",
        help="class name -> lesion columns ('CLASS=' = negative); default for QuPath: "
        "Sclerotic=global_sclerosis, Partially_sclerotic=segmental_sclerosis, Normal=",
    )
    p.add_argument("--out", required=True, help="model folder to write")
    p.add_argument("--arch", choices=("small", "resnet18"), default="small")
    p.add_argument("--size", type=int, default=64, help="network input side in px (default 64)")
    p.add_argument(
        "--mpp",
        type=float,
        help="µm/px to read slide crops at (default 1.0); with --crops, the crops' own µm/px, "
        "recorded in the card so that slides are later read at the same scale",
    )
    p.add_argument(
        "--crop-mpp",
        type=float,
        help="µm/px of the images in --crops (required with --method morphometry, which measures "
        "at 0.5 µm/px; crops without a mask column use the inscribed ellipse shrunk to 90 %%)",
    )
    p.add_argument("--slide-mpp", type=float, help="level-0 µm/px for slides lacking it")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--overwrite", action="store_true", help="replace an existing model folder")
    p.set_defaults(func=run_train)


def _interval(m: dict[str, Any], name: str) -> str:
    ci = m.get(f"{name}_ci")
    return f"{ci[0]:.2f}-{ci[1]:.2f}" if ci else "-"


def _format_metrics(card: dict[str, Any]) -> str:
    cv = card["cross_validation"]
    lines = [
        f"cross-validated metrics ({cv['folds']} folds grouped by {cv['grouped_by']}, "
        f"calibrated p >= {card.get('threshold', 0.5)}; 95 % cluster-bootstrap intervals):",
        f"{'lesion':32} {'n':>5} {'pos':>5} {'AUC':>6} {'sens':>6} {'spec':>6} {'kappa':>6}"
        f" {'kappa 95 %':>11} {'Brier':>6} {'(prev)':>6}",
    ]
    for name, m in cv["metrics"].items():
        lines.append(
            f"{name:32} {m['n']:>5} {m['positives']:>5} {m['auc']:>6.3f} "
            f"{m['sensitivity']:>6.3f} {m['specificity']:>6.3f} {m['kappa']:>6.3f}"
            f" {_interval(m, 'kappa'):>11} {m['brier']:>6.3f} {m['brier_prevalence']:>6.3f}"
        )
    for name, why in (card.get("refused_labels") or {}).items():
        lines.append(f"{name}: refused, not in the model ({why})")
    return "\n".join(lines)


def _names(folders: list[str], most: int = 5) -> str:
    """`` (a, b, +3 more)``: which folders, by name, so the lab can look at them."""
    if not folders:
        return ""
    names = [Path(f).name for f in folders[:most]]
    more = f", +{len(folders) - most} more" if len(folders) > most else ""
    return f" ({', '.join(names)}{more})"


def _format_sources(card: dict[str, Any]) -> str:
    info = card["training_results"]
    ignored = info["ignored"]
    why = (
        ("provisional", "provisional"),
        ("unverified", "failing their seal"),
        ("superseded", "superseded by a re-scoring"),
        ("duplicate_slide", "second results of one slide"),
        ("missing_slide", "with their slide missing"),
        ("changed_slide", "whose slide file is another (fingerprint differs)"),
    )
    lines = [
        f"labels from {info['biopsies']} confirmed biopsies ({info['groups']} patients/slides); "
        "ignored: "
        + ", ".join(
            f"{len(ignored.get(key, []))} {words}{_names(ignored.get(key, []))}"
            for key, words in why
        )
    ]
    skipped = info["skipped_glomeruli"]
    if skipped["excluded"] or skipped["unreadable"]:
        lines.append(
            f"glomeruli skipped: {skipped['excluded']} excluded by the pathologist, "
            f"{skipped['unreadable']} unreadable on their slide"
        )
    if len(info["lnpath_versions"]) > 1 or len(info["lesion_models"]) > 1:
        lines.append(
            f"confirmed under lnpath {', '.join(info['lnpath_versions'])} with lesion callers "
            f"{', '.join(info['lesion_models'])} (recorded in the card)"
        )
    return "\n".join(lines)


def run_from_results(args: argparse.Namespace) -> int:
    """Train on the confirmed calls of confirmed result folders."""
    import torch

    from lnpath.training.learning import train_lesions_from_results

    if args.qupath or args.crops or args.labels or args.map or args.crop_mpp:
        raise InputError("--from-results takes no --labels, --map or --crop-mpp")
    if args.method == "morphometry" and args.mpp is not None:
        raise InputError("--mpp is for --method cnn; --method morphometry measures at 0.5 µm/px")
    if args.epochs < 1 or args.size < 16:
        raise InputError("--epochs must be >= 1 and --size >= 16")
    torch.set_num_threads(args.threads)
    replaced = _current_sha256(Path(args.out)) if args.overwrite else None
    card = train_lesions_from_results(
        args.from_results,
        args.out,
        method=args.method,
        slide_root=args.slide_root,
        mpp=args.mpp or 1.0,
        size=args.size,
        arch=args.arch,
        folds=args.folds,
        epochs=args.epochs,
        seed=args.seed,
        overwrite=args.overwrite,
        progress=None,
        skip_missing_slides=args.skip_missing_slides,
    )
    print(_format_sources(card))
    print(_format_metrics(card))
    print(f"model written to {args.out} (sha256 {card['sha256']})")
    if replaced:
        print(f"it replaces the model that was there (sha256 {replaced})")
    return 0


def _current_sha256(folder: Path) -> str | None:
    """The sha256 an existing model card records: what ``--overwrite`` is about to replace."""
    from lnpath.core.errors import ModelError
    from lnpath.models.store import read_card

    if not (folder / "card.json").is_file():
        return None
    try:
        return str(read_card(folder).get("sha256") or "") or None
    except ModelError:
        return None


def run_calibrate(args: argparse.Namespace) -> int:
    """Measure the labelled glomeruli, cross-validate and write a morphometry-logistic model."""
    from lnpath.training.calibration import calibrate_morphometry, measure_folder, measure_qupath
    from lnpath.training.lesion_data import QUPATH_MAPPING, parse_mapping

    if args.folds < 2:
        raise InputError("--folds must be >= 2")
    if args.mpp is not None:
        raise InputError(
            "--mpp is for --method cnn; --method morphometry measures at 0.5 µm/px "
            "(give the crops' own scale with --crop-mpp)"
        )
    mapping = parse_mapping(args.map)
    if args.crops:
        if not args.labels:
            raise InputError("--crops needs --labels CSV (columns image, class[, group, mask])")
        if not mapping:
            raise InputError("--crops needs at least one --map CLASS=lesion")
        if args.crop_mpp is None:
            raise InputError(
                "--method morphometry with --crops needs --crop-mpp (the crops' µm/px): "
                "measurements are in µm"
            )
        data = measure_folder(args.crops, args.labels, mapping, args.crop_mpp, progress=None)
    else:
        pairs = [(g, s) for g, s in args.qupath]
        data = measure_qupath(pairs, mapping or QUPATH_MAPPING, args.slide_mpp, progress=None)
    replaced = _current_sha256(Path(args.out)) if args.overwrite else None
    card = calibrate_morphometry(
        data, args.out, folds=args.folds, seed=args.seed, overwrite=args.overwrite
    )
    print(_format_metrics(card))
    if data.skipped:
        print(f"{data.skipped} labelled glomeruli could not be measured and were skipped")
    print(f"model written to {args.out} (parameters sha256 {card['sha256']})")
    if replaced:
        print(f"it replaces the model that was there (sha256 {replaced})")
    return 0


def run_train(args: argparse.Namespace) -> int:
    """Build the labelled set, cross-validate, train and write the model folder."""
    from lnpath.training.learning import MAX_SIZE
    from lnpath.wsi.slide import check_mpp

    for option in ("mpp", "crop_mpp", "slide_mpp"):  # a card with mpp -1 or NaN would load later
        if getattr(args, option) is not None:
            check_mpp(getattr(args, option), "--" + option.replace("_", "-"))
    if args.threads < 1:
        raise InputError(f"--threads must be >= 1, got {args.threads}")
    check_seed(args.seed, "--seed")
    if args.size > MAX_SIZE:  # a MemoryError after reading every slide
        raise InputError(f"--size must be at most {MAX_SIZE} px, got {args.size}")
    if (args.slide_root or args.skip_missing_slides) and not args.from_results:
        raise InputError("--slide-root and --skip-missing-slides are for --from-results")
    if args.from_results:
        return run_from_results(args)
    if args.method == "morphometry":
        return run_calibrate(args)
    import torch

    from lnpath.training.lesion_data import (
        QUPATH_MAPPING,
        crops_from_folder,
        crops_from_qupath,
        parse_mapping,
    )
    from lnpath.training.lesions import train_lesion_model

    if args.folds < 2 or args.epochs < 1 or args.size < 16:
        raise InputError("--folds must be >= 2, --epochs >= 1 and --size >= 16")
    torch.set_num_threads(max(1, args.threads))
    mapping = parse_mapping(args.map)
    if args.crops:
        if not args.labels:
            raise InputError("--crops needs --labels CSV (columns image, class[, group])")
        if not mapping:
            raise InputError("--crops needs at least one --map CLASS=lesion")
        data = crops_from_folder(args.crops, args.labels, mapping, size=args.size)
        data.mpp = args.mpp if args.mpp is not None else args.crop_mpp
    else:
        pairs = [(g, s) for g, s in args.qupath]
        data = crops_from_qupath(
            pairs,
            mapping or QUPATH_MAPPING,
            mpp=args.mpp or 1.0,
            size=args.size,
            slide_mpp=args.slide_mpp,
        )
    replaced = _current_sha256(Path(args.out)) if args.overwrite else None
    card = train_lesion_model(
        data,
        args.out,
        arch=args.arch,
        folds=args.folds,
        epochs=args.epochs,
        seed=args.seed,
        overwrite=args.overwrite,
        progress=None,
    )
    print(_format_metrics(card))
    print(f"model written to {args.out} (sha256 {card['sha256']})")
    if replaced:
        print(f"it replaces the model that was there (sha256 {replaced})")
    return 0
