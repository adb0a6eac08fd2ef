"""A tile folder: PNG tiles, ``tiles.csv`` (level-0 rectangles) and ``tiles.json`` (provenance).

Written atomically, so an interrupted export never leaves a half folder that looks complete.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image

from lnpath import __version__
from lnpath.core.args import check_count
from lnpath.core.errors import InputError
from lnpath.io.atomic import atomic_dir, check_output_dir

if TYPE_CHECKING:
    from lnpath.wsi.tiling import TileGrid

MARKER = "tiles.csv"
COLUMNS = ("x", "y", "width", "height", "row", "col", "tissue_fraction")


def save_tiles(
    grid: TileGrid,
    out: str | Path,
    workers: int = 1,
    overwrite: bool = False,
    progress: bool | None = None,
) -> Path:
    """Write every tile of ``grid`` as PNG under ``out/tiles`` with its index and provenance.

    An existing ``out`` is replaced only with ``overwrite`` (and only if it is a tile folder) or
    when it is empty; that is checked before any tile is read.

    ``progress`` None shows a bar in Jupyter or on a terminal unless ``LNPATH_PROGRESS=0``.

    Raises:
        InputError: ``out`` is not a path, exists and may not be replaced, or cannot be written.
    """
    if not isinstance(out, str | os.PathLike):
        raise InputError(f"out: expected a folder path, got {type(out).__name__}")
    workers = check_count(workers, "workers")
    out = Path(out)
    replace = overwrite or (out.is_dir() and not any(out.iterdir()))
    check_output_dir(out, replace, marker=MARKER)  # also refuses a file at ``out``
    slide = grid.slide
    with atomic_dir(out, overwrite=replace, marker=MARKER) as tmp:
        (tmp / "tiles").mkdir()
        with (tmp / MARKER).open("w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["file", *COLUMNS])
            for info, arr in grid.iter(workers=workers, progress=progress):
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
            "min_tissue": grid.min_tissue,
            "n_tiles": len(grid),
        }
        (tmp / "tiles.json").write_text(json.dumps(record, indent=2) + "\n")
    return out
