"""``lnpath info SLIDE`` and ``lnpath tiles SLIDE``: look at a slide, cut it into tiles.

``info`` prints what lnpath will rely on — levels, µm/px *and where it came from*, tissue area —
so a wrong or missing µm/px is seen before anything is measured. ``tiles`` writes PNG tiles, a
CSV index and a ``tiles.json`` provenance record into a new folder, atomically.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
from pathlib import Path
from typing import Any

from PIL import Image
from rich.console import Console
from rich.table import Table

from .. import __version__
from .._io import atomic_dir, check_output_dir
from ..errors import InputError, SlideError
from ..slide import MissingMppError, Slide, check_mpp, open_slide
from ..tiling import tile
from ..tissue import detect_tissue


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
        "level within 5 %%, else resampled) and write PNGs, tiles.csv and tiles.json into OUT.",
    )
    tiles.add_argument("slide", type=Path, help="slide or image file")
    tiles.add_argument("--mpp", type=float, required=True, help="µm/px of the tiles")
    tiles.add_argument("--size", type=int, default=512, help="tile size in pixels (default 512)")
    tiles.add_argument("--overlap", type=int, default=0, help="pixels shared by neighbours")
    tiles.add_argument(
        "--min-tissue",
        type=float,
        default=0.1,
        help="keep tiles with at least this tissue fraction (default 0.1; 0 keeps all)",
    )
    tiles.add_argument(
        "--slide-mpp", type=float, help="level-0 µm/px of the slide (required if the file has none)"
    )
    tiles.add_argument("--workers", type=int, default=1, help="reader processes (default 1)")
    tiles.add_argument("--out", type=Path, required=True, help="new output folder")
    tiles.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    tiles.set_defaults(func=run_tiles)


def _open(path: Path, mpp: float | None, option: str) -> Slide:
    if mpp is not None:
        check_mpp(mpp, option)
    try:
        return open_slide(path, mpp=mpp)
    except MissingMppError as exc:
        raise SlideError(
            f"{exc.path}: {exc.reason}; pass the scanner's value with {option}"
        ) from None


def describe(slide: Slide) -> dict[str, Any]:
    """Everything ``info`` shows, as plain data (also the ``--json`` output)."""
    tissue = detect_tissue(slide)
    props = slide.properties
    return {
        "path": str(slide.path),
        "vendor": slide.vendor,
        "dimensions": list(slide.dimensions),
        "mpp": slide.mpp,
        "mpp_source": slide.mpp_source,
        "objective_power": props.get("openslide.objective-power"),
        "bounds": list(slide.bounds) if slide.bounds else None,
        "associated_images": slide.associated_images,
        "levels": [
            {
                "level": i,
                "dimensions": list(slide.level_dimensions[i]),
                "downsample": slide.level_downsamples[i],
                "mpp": slide.level_mpp(i),
                "tile_size": list(t) if (t := slide.native_tile_size(i)) else None,
            }
            for i in range(slide.level_count)
        ],
        "tissue": {
            "area_mm2": round(tissue.area_mm2, 4),
            "pieces": tissue.n_components,
            "detection_mpp": tissue.mpp,
        },
        "fingerprint": slide.fingerprint(),
    }


def run_info(args: argparse.Namespace) -> int:
    """Print the slide description as a rich table (or JSON)."""
    with _open(args.slide, args.mpp, "--mpp") as slide:
        info = describe(slide)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    console = Console()
    meta = Table(title=f"{args.slide.name}", show_header=False)
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
        ("sha256 (first+last MiB)", info["fingerprint"]["sha256"][:16] + "…"),
    ]
    for key, value in rows:
        meta.add_row(key, str(value))
    levels = Table(title="pyramid levels")
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


_TILE_COLUMNS = ("x", "y", "width", "height", "row", "col", "tissue_fraction")


def _output_folder(out: Path, overwrite: bool) -> bool:
    """Whether to let ``atomic_dir`` replace ``out``: only if asked, or if it is an empty folder;
    checked before any tile is read."""
    replace = overwrite or (out.is_dir() and not any(out.iterdir()))
    check_output_dir(out, replace, marker="tiles.csv")  # also refuses a file at ``out``
    return replace


def run_tiles(args: argparse.Namespace) -> int:
    """Write PNG tiles, ``tiles.csv`` and ``tiles.json`` into a new folder."""
    mpp = check_mpp(args.mpp, "--mpp")
    if args.workers < 1:
        raise InputError(f"--workers must be >= 1, got {args.workers}")
    replace = _output_folder(args.out, args.overwrite)
    with _open(args.slide, args.slide_mpp, "--slide-mpp") as slide:
        tissue = detect_tissue(slide)
        grid = tile(slide, mpp, args.size, args.overlap, min_tissue=args.min_tissue, tissue=tissue)
        with atomic_dir(args.out, overwrite=replace, marker="tiles.csv") as tmp:
            (tmp / "tiles").mkdir()
            with (tmp / "tiles.csv").open("w", newline="") as fh:
                writer = csv.writer(fh)
                writer.writerow(["file", *_TILE_COLUMNS])
                for info, arr in grid.iter(workers=args.workers, progress=True):
                    name = f"tiles/r{info.row:05d}_c{info.col:05d}.png"
                    Image.fromarray(arr).save(tmp / name, compress_level=1)
                    rect = [info.x, info.y, info.width, info.height, info.row, info.col]
                    writer.writerow([name, *rect, f"{info.tissue_fraction:.4f}"])
            record = {
                "lnpath_version": __version__,
                "slide": {
                    "path": str(slide.path),
                    "fingerprint": slide.fingerprint(),
                    "mpp": slide.mpp,
                    "mpp_source": slide.mpp_source,
                    "dimensions": list(slide.dimensions),
                },
                "spec": dataclasses.asdict(grid.spec),
                "min_tissue": args.min_tissue,
                "tissue_area_mm2": tissue.area_mm2,
                "n_tiles": len(grid),
            }
            (tmp / "tiles.json").write_text(json.dumps(record, indent=2) + "\n")
    print(f"{len(grid)} tiles of {args.size} px at {mpp:g} µm/px -> {args.out}")
    return 0
