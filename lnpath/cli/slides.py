"""``lnpath info SLIDE`` and ``lnpath tiles SLIDE``: look at a slide, cut it into tiles.

``info`` prints what lnpath will rely on — levels, µm/px *and where it came from*, tissue area —
so a wrong or missing µm/px is seen before anything is measured. ``tiles`` writes PNG tiles, a
CSV index and a ``tiles.json`` provenance record into a new folder, atomically.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from lnpath.cli._rich import new_console, new_table
from lnpath.core.errors import InputError, SlideError


def register(subparsers: Any) -> None:
    """Add the ``info`` and ``tiles`` sub-commands."""
    info = subparsers.add_parser(
        "info",
        help="slide metadata, pyramid levels, µm/px and its source, tissue area",
        description="Show a slide's metadata, pyramid levels with µm/px, where the µm/px came "
        "from (file metadata, TIFF resolution tags or --mpp) and the detected tissue area.",
    )
    info.add_argument("slide", type=Path, help="slide or image file")
    info.add_argument("--mpp", type=float, help="level-0 µm/px (required if the file has none)")
    info.add_argument("--json", action="store_true", help="print JSON instead of a table")
    info.set_defaults(func=run_info)

    tiles = subparsers.add_parser(
        "tiles",
        help="write PNG tiles at a given µm/px and a CSV index",
        description="Cut the slide into SIZE x SIZE tiles at MPP µm/px (snapped to a pyramid "
        "level within 5 %, else resampled) and write PNGs, tiles.csv and tiles.json into OUT.",
    )
    tiles.add_argument("slide", type=Path, help="slide or image file")
    tiles.add_argument(
        "--mpp", type=float, required=True, help="µm/px of the tiles (the scan's or coarser)"
    )
    tiles.add_argument(
        "--size", "--tile-size", type=int, default=512, help="tile size in pixels (default 512)"
    )
    tiles.add_argument("--overlap", type=int, default=0, help="pixels shared by neighbours")
    tiles.add_argument(
        "--min-tissue",
        type=float,
        default=0.1,  # lnpath.wsi.tiling.DEFAULT_MIN_TISSUE, not imported: the CLI loads light
        help="keep tiles with at least this tissue fraction (default 0.1; 0 keeps all)",
    )
    tiles.add_argument(
        "--slide-mpp", type=float, help="level-0 µm/px of the slide (required if the file has none)"
    )
    tiles.add_argument("--workers", type=int, default=1, help="reader processes (default 1)")
    tiles.add_argument("--out", type=Path, required=True, help="new output folder")
    tiles.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    tiles.set_defaults(func=run_tiles)


def open_with_option(path: Path | str, mpp: float | None, option: str) -> Any:
    """Open a slide for a command: a bad µm/px and a missing one name the command's option
    (``--mpp`` or ``--slide-mpp``), not the API's ``mpp=``."""
    from lnpath.wsi.slide import MissingMppError, check_mpp, open_slide

    if mpp is not None:
        check_mpp(mpp, option)
    try:
        return open_slide(path, mpp=mpp)
    except MissingMppError as exc:
        raise missing_mpp(exc, option) from None


def missing_mpp(exc: Any, option: str) -> SlideError:
    """A :class:`~lnpath.wsi.slide.MissingMppError` with the command's own option as advice."""
    return SlideError(f"{exc.path}: {exc.reason}; pass the scanner's value with {option}")


def run_info(args: argparse.Namespace) -> int:
    """Print the slide description as a rich table (or JSON)."""
    from lnpath.wsi.describe import describe_slide

    with open_with_option(args.slide, args.mpp, "--mpp") as slide:
        info = describe_slide(slide)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    console = new_console()
    meta = new_table(title=f"{args.slide.name}", show_header=False)
    meta.add_column("field", style="bold")
    meta.add_column("value")
    w, h = info["dimensions"]
    rows = [
        ("path", info["path"]),
        ("vendor", info["vendor"] or "-"),
        ("dimensions (level 0)", f"{w} x {h} px"),
        ("µm/px (level 0)", f"{info['mpp']:.4g} (source: {info['mpp_source']})"),
        *(
            [("note", "µm/px from TIFF resolution tags: check it against the scanner")]
            if info["mpp_source"] == "tiff-resolution"
            else []
        ),
        ("objective power", info["objective_power"] or "-"),
        ("bounds (x, y, w, h)", ", ".join(map(str, info["bounds"])) if info["bounds"] else "-"),
        ("associated images", ", ".join(info["associated_images"]) or "-"),
        (
            "tissue",
            f"{info['tissue']['area_mm2']:.3f} mm² in {info['tissue']['pieces']} piece(s)",
        ),
        ("sha256 (whole file)", info["fingerprint"]["sha256"][:16] + "…"),
    ]
    for key, value in rows:
        meta.add_row(key, str(value))
    levels = new_table(title="pyramid levels")
    for column in ("level", "width x height", "downsample", "µm/px", "file tile"):
        levels.add_column(column, justify="right")
    for lv in info["levels"]:
        tile_size = "x".join(map(str, lv["tile_size"])) if lv["tile_size"] else "-"
        levels.add_row(
            str(lv["level"]),
            "{} x {}".format(*lv["dimensions"]),
            f"{lv['downsample']:.4g}",
            f"{lv['mpp']:.4g}",
            tile_size,
        )
    console.print(meta)
    console.print(levels)
    return 0


def run_tiles(args: argparse.Namespace) -> int:
    """Write PNG tiles, ``tiles.csv`` and ``tiles.json`` into a new folder."""
    from lnpath.wsi.slide import check_mpp
    from lnpath.wsi.tiling import tile

    mpp = check_mpp(args.mpp, "--mpp")
    if args.workers < 1:
        raise InputError(f"--workers must be >= 1, got {args.workers}")
    with open_with_option(args.slide, args.slide_mpp, "--slide-mpp") as slide:
        grid = tile(slide, mpp, args.size, args.overlap, min_tissue=args.min_tissue)
        grid.save(args.out, workers=args.workers, overwrite=args.overwrite)
    print(f"{len(grid)} tiles of {args.size} px at {mpp:g} µm/px -> {args.out}")
    return 0
