"""``lnpath segment`` (glomeruli of one slide → QuPath GeoJSON) and ``lnpath train-glomeruli``."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def register(subparsers: Any) -> None:
    """Add the ``segment`` and ``train-glomeruli`` sub-commands."""
    p = subparsers.add_parser(
        "segment",
        help="find glomeruli in a slide and write QuPath GeoJSON",
        description="Segment every glomerulus of a slide with the U-Net and write one polygon per "
        "glomerulus (level-0 px) as a QuPath GeoJSON FeatureCollection.",
    )
    p.add_argument("slide", help="slide or image file")
    p.add_argument("--out", required=True, help="GeoJSON file to write")
    p.add_argument("--mpp", type=float, help="level-0 µm/px (required when the file has none)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (default auto)")
    p.add_argument("--batch-size", type=int, help="tiles per forward pass")
    p.add_argument("--model", default="glomeruli-unet-pas", help="model name or folder")
    p.add_argument(
        "--object-type",
        choices=("detection", "annotation"),
        default="detection",
        help="QuPath object type (annotation = editable outlines)",
    )
    p.add_argument(
        "--no-tta",
        action="store_true",
        help="skip flip averaging (one forward pass: 1.5-2x faster on CPU)",
    )
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    p.set_defaults(func=run_segment)

    t = subparsers.add_parser(
        "train-glomeruli",
        help="fine-tune the glomerulus U-Net on your own slides + QuPath outlines",
        description="Start from a shipped model and fine-tune it on windows around the glomeruli "
        "outlined in QuPath GeoJSON exports (one per slide, same order); writes a new model folder "
        "(weights.pt + card.json with sha256 and validation metrics).",
    )
    t.add_argument("--slides", nargs="+", required=True, metavar="SLIDE")
    t.add_argument("--annotations", nargs="+", required=True, metavar="GEOJSON")
    t.add_argument("--out", required=True, help="model folder to write, e.g. models/my-lab")
    t.add_argument("--base", default="glomeruli-unet-pas", help="model to start from")
    t.add_argument("--mpp", type=float, help="level-0 µm/px for slides lacking it")
    t.add_argument("--iterations", type=int, default=300)
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--val-fraction", type=float, default=0.2)
    t.add_argument("--device", default="auto")
    t.add_argument("--threads", type=int, help="torch CPU threads")
    t.add_argument("--overwrite", action="store_true", help="replace an existing model folder")
    t.set_defaults(func=run_train)


def run_segment(args: argparse.Namespace) -> int:
    """Segment one slide and write its GeoJSON."""
    from lnpath.analysis.segment import segment_glomeruli
    from lnpath.cli.slides import open_with_option
    from lnpath.core.errors import InputError
    from lnpath.io.atomic import check_output_file
    from lnpath.io.tables import GEOJSON_SUFFIXES

    suffix = Path(args.out).suffix
    if suffix and suffix.lower() not in GEOJSON_SUFFIXES:  # GeoJSON in a .csv reads as neither
        raise InputError(
            f"{args.out}: segment writes QuPath GeoJSON, not {suffix}; "
            "give a .geojson (or .json) file name"
        )
    check_output_file(args.out, args.overwrite)  # before the slow part, never over a QuPath edit
    if args.batch_size is not None and args.batch_size < 1:
        raise InputError(f"--batch-size must be >= 1, got {args.batch_size}")
    with open_with_option(args.slide, args.mpp, "--mpp") as slide:
        glomeruli = segment_glomeruli(
            slide,
            model=args.model,
            device=args.device,
            batch_size=args.batch_size,
            progress=False if args.no_progress else None,
            tta=False if args.no_tta else None,
        )
    out = glomeruli.write_geojson(args.out, object_type=args.object_type)
    timings = glomeruli.metadata.get("timings", {})
    print(f"{len(glomeruli)} glomeruli -> {out} ({timings.get('tiles', 0)} tiles)")
    return 0


def run_train(args: argparse.Namespace) -> int:
    """Fine-tune and write the new model folder."""

    import torch

    from lnpath.core.errors import InputError
    from lnpath.models.store import load_model
    from lnpath.training.fine_tuning import fine_tune, fine_tune_config
    from lnpath.wsi.slide import open_slide

    if len(args.slides) != len(args.annotations):
        raise InputError(
            f"--slides has {len(args.slides)} files but --annotations {len(args.annotations)}"
        )
    if args.threads is not None and args.threads < 1:  # 0 was taken as "not given"
        raise InputError(f"--threads must be >= 1, got {args.threads}")
    if args.threads:
        torch.set_num_threads(args.threads)
    base = load_model(args.base)
    config = fine_tune_config(base, iterations=args.iterations, lr=args.lr, seed=args.seed)
    slides = [open_slide(path, mpp=args.mpp) for path in args.slides]
    out = fine_tune(
        slides,
        [Path(a) for a in args.annotations],
        args.out,
        base=base.path,
        config=config,
        device=args.device,
        val_fraction=args.val_fraction,
        overwrite=args.overwrite,
        progress=None,
    )
    card = load_model(out).card
    val = card.get("metrics", {}).get("validation")
    print(
        f"wrote {out}"
        + (f" (validation dice {val['dice']}, recall {val['recall']})" if val else "")
    )
    return 0
