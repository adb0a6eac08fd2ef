"""Build ``examples/demo_biopsy.tiff`` and its ground-truth glomeruli from the real Bueno PAS tiles.

The shipped demo must be a real slide file that OpenSlide opens the way it opens a scanner's output
(tiled, JPEG-compressed, pyramidal, µm/px in the TIFF resolution tags), small enough to live in the
repository, and made of real PAS pixels so that the end-to-end test exercises the real models. The
24 public tiles (Bueno et al. 2020, CC BY 4.0) are laid out as two needle-biopsy cores on
glass; the hand-drawn masks become the ground truth in QuPath GeoJSON (level-0 px).

Run ``python scripts/make_demo_slide.py`` from the repository root; the output is deterministic.
The demo holds the *test* split too (scoring on it is fine; training is not), so anything that
trains on demo-like slides builds one from the train tiles alone:
``python scripts/make_demo_slide.py --split train --out DIR/demo_train.tiff``. The tile map
(``*_tiles.json``: each tile's place and split) says which pixels of the demo are which split.
"""

from __future__ import annotations

import argparse
import json
import logging
import uuid
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image
from shapely.geometry import Polygon
from shapely.ops import unary_union
from skimage.measure import find_contours, label, regionprops

from lnpath.io.qupath import QuPathFeature, write_qupath

LOG = logging.getLogger("make_demo_slide")
REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "glomeruli-pas-bueno"
MPP = 0.5  # nominal µm/px of the Bueno tiles (Aperio ScanScope CS at 20x)
TILE = 1024  # size of each source tile
MARGIN = 512  # white glass around and between the cores, level-0 px
CORE_SHIFT = 384  # second core starts a little to the right, as on a real slide
TIFF_TILE = 256
DOWNSAMPLE = 4  # between pyramid levels
SEAM_PX = 3.0  # outlines closer than this across a tile seam are one glomerulus
MIN_GLOM_PX = 2000  # mask components smaller than this are annotation specks, not glomeruli
GT_NAMESPACE = uuid.UUID("6f0f3c64-6a43-4f0e-9d7f-3c1d4c9b2e10")


def layout(names: list[str]) -> dict[str, tuple[int, int]]:
    """Top-left level-0 position of each tile: half the tiles per core, one core per row."""
    per_core = (len(names) + 1) // 2
    pos = {}
    for i, name in enumerate(names):
        core, k = divmod(i, per_core)
        x = MARGIN + core * CORE_SHIFT + k * TILE
        y = MARGIN + core * (TILE + MARGIN)
        pos[name] = (x, y)
    return pos


def mask_polygons(mask: np.ndarray) -> list[Polygon]:
    """Outer outlines of the glomeruli in a binary mask, in the tile's pixel coordinates."""
    polygons = []
    labels = label(mask)
    for region in regionprops(labels):
        if region.area < MIN_GLOM_PX:
            continue
        padded = np.pad(labels == region.label, 1)
        contour = max(find_contours(padded.astype(np.uint8), 0.5), key=len)
        ring = [(float(c) - 1, float(r) - 1) for r, c in contour]
        poly = Polygon(ring).buffer(0).simplify(0.75)
        polygons.append(poly)
    return polygons


def glass_colour(tiles: list[np.ndarray]) -> np.ndarray:
    """Median colour of the bright background in the tiles, so the glass around them matches."""
    bright = np.concatenate([t[t.mean(axis=-1) > 225] for t in tiles])
    return np.median(bright, axis=0).astype(np.uint8)


def merge_across_seams(outlines: list[tuple[str, Polygon]]) -> list[list[tuple[str, Polygon]]]:
    """Group outlines that touch across a tile seam: consecutive Bueno tiles are neighbours on
    the source slide, so a glomerulus cut by a tile edge is reassembled when the tiles are laid
    side by side, and must count once."""
    groups: list[list[tuple[str, Polygon]]] = []
    for item in outlines:
        touching = [g for g in groups if any(p.distance(item[1]) <= SEAM_PX for _, p in g)]
        merged = [item] + [x for g in touching for x in g]
        groups = [g for g in groups if g not in touching] + [merged]
    return groups


def pyramid(base: np.ndarray) -> list[np.ndarray]:
    """Level 0 plus box-filtered levels down to a thumbnail-sized image."""
    levels = [base]
    while max(levels[-1].shape[:2]) > 1024:
        img = Image.fromarray(levels[-1])
        w, h = img.size
        levels.append(np.asarray(img.reduce(DOWNSAMPLE)))
        LOG.info("level %d: %dx%d -> %s", len(levels) - 1, w, h, levels[-1].shape[:2])
    return levels


def write_tiff(levels: list[np.ndarray], path: Path, quality: int) -> None:
    """A generic pyramidal TIFF: one tiled JPEG main IFD per level, resolution in px/cm."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.tiff")
    with tifffile.TiffWriter(tmp) as tif:
        for i, arr in enumerate(levels):
            px_per_cm = 1e4 / (MPP * DOWNSAMPLE**i)
            tif.write(
                arr,
                photometric="rgb",
                tile=(TIFF_TILE, TIFF_TILE),
                compression="jpeg",
                compressionargs={"level": quality},
                resolution=(px_per_cm, px_per_cm),
                resolutionunit="CENTIMETER",
                subfiletype=0 if i == 0 else 1,
                description="lnpath demo biopsy: Bueno et al. 2020 PAS tiles, CC BY 4.0"
                if i == 0
                else None,
                metadata=None,
                software="lnpath scripts/make_demo_slide.py",
            )
    tmp.replace(path)


def tile_map(pos: dict[str, tuple[int, int]], split_of: dict[str, str]) -> list[dict[str, object]]:
    """Each tile's level-0 box and split: which pixels of the demo must never be trained on."""
    return [
        {"tile": n, "split": split_of.get(n, "unknown"), "x": x, "y": y, "size": TILE}
        for n, (x, y) in sorted(pos.items())
    ]


def build(
    data: Path, out_tiff: Path, out_geojson: Path, quality: int = 80, split: str | None = None
) -> dict[str, object]:
    """Compose the slide and its ground truth; return a summary for the log.

    ``split`` ("train") keeps only that split's tiles, each where it sits on the full demo and the
    others left glass, so that a test or notebook can train on a demo-like slide and its outlines
    without a test-split pixel (a training window reaches past its outline into the next tile).
    """
    splits = json.loads((data / "split.json").read_text())
    split_of = {n: s for s in ("train", "test") for n in splits[s]}
    names = sorted(p.stem for p in (data / "images").glob("*.png"))
    pos = layout(names)  # of all tiles: a one-split slide keeps the demo's coordinates
    kept = names if split is None else [n for n in names if split_of.get(n) == split]
    if not kept:
        raise ValueError(f"no {split!r} tiles in {data / 'split.json'}")
    width = max(x for x, _ in pos.values()) + TILE + MARGIN
    height = max(y for _, y in pos.values()) + TILE + MARGIN
    tiles = {n: np.asarray(Image.open(data / "images" / f"{n}.png").convert("RGB")) for n in kept}
    canvas = np.empty((height, width, 3), np.uint8)
    canvas[:] = glass_colour(list(tiles.values()))
    outlines: list[tuple[str, Polygon]] = []
    for name in kept:
        x, y = pos[name]
        canvas[y : y + TILE, x : x + TILE] = tiles[name]
        mask = np.asarray(Image.open(data / "masks" / f"{name}.png").convert("RGB"))[..., 0] > 127
        for poly in mask_polygons(mask):
            outlines.append((name, Polygon([(px + x, py + y) for px, py in poly.exterior.coords])))
    features = []
    for group in merge_across_seams(outlines):
        tile_names = sorted({n for n, _ in group})
        splits = {split_of.get(n, "unknown") for n in tile_names}
        merged = unary_union([p.buffer(SEAM_PX) for _, p in group]).buffer(-SEAM_PX)
        key = "+".join(tile_names) + f"@{int(merged.bounds[0])},{int(merged.bounds[1])}"
        features.append(
            QuPathFeature(
                geometry=merged.simplify(0.75),
                classification="Glomerulus",
                color=(0, 160, 0),
                object_type="annotation",
                id=str(uuid.uuid5(GT_NAMESPACE, key)),
                name=key,
                properties={
                    "source_tile": "+".join(tile_names),
                    "split": splits.pop() if len(splits) == 1 else "mixed",
                },
            )
        )
    write_tiff(pyramid(canvas), out_tiff, quality)
    write_qupath(features, out_geojson)
    tiles_json = out_geojson.with_name(out_tiff.stem + "_tiles.json")
    tiles_json.write_text(json.dumps(tile_map(pos, split_of), indent=1) + "\n")
    return {
        "tiff": str(out_tiff),
        "split": split or "all",
        "bytes": out_tiff.stat().st_size,
        "dimensions": [width, height],
        "mpp": MPP,
        "glomeruli": len(features),
        "glomeruli_test_split": sum(f.properties["split"] == "test" for f in features),
        "glomeruli_by_split": {
            k: sum(f.properties["split"] == k for f in features) for k in ("train", "test", "mixed")
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--out", type=Path, help="default: examples/demo_biopsy.tiff")
    parser.add_argument("--quality", type=int, default=80, help="JPEG quality")
    parser.add_argument(
        "--split", choices=("train",), help="only this split's tiles (a slide to train on)"
    )
    args = parser.parse_args()
    if args.split and args.out is None:
        parser.error("--split needs --out: examples/demo_biopsy.tiff is the whole demo")
    out = args.out or REPO / "examples" / "demo_biopsy.tiff"
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    geojson = out.with_name(out.stem + "_glomeruli.geojson")
    summary = build(args.data, out, geojson, args.quality, args.split)
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
