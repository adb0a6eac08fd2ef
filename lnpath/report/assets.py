"""The slide images a report needs (thumbnail, one crop per glomerulus), kept with the result.

Stored in the result folder so a report re-renders after review without the slide file.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from shapely.geometry.base import BaseGeometry

from lnpath.core.errors import ResultError
from lnpath.io.atomic import write_json

THUMBNAIL_MAX_PX = 1600  # long side of the overview image in the report
CROP_MPP = 1.0  # µm/px of the glomerulus crops in the gallery
CROP_MARGIN_UM = 20.0


def _jpeg(image: np.ndarray, quality: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(image)).convert("RGB").save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def _decode(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


@dataclass
class Crop:
    """A glomerulus crop (JPEG), top-left at level-0 (x, y), ``scale`` level-0 px per pixel.

    Kept encoded so that re-writing a result (review, confirmation) copies the bytes unchanged:
    no generation loss, and an unchanged crop keeps its hash.
    """

    jpeg: bytes
    x: float
    y: float
    scale: float

    @property
    def image(self) -> np.ndarray:
        """The decoded RGB crop."""
        return _decode(self.jpeg)


@dataclass
class Assets:
    """The slide images the report needs, stored with the result so it renders without the slide."""

    thumbnail_jpeg: bytes
    thumbnail_scale: float  # level-0 px per thumbnail px
    crops: dict[int, Crop]

    @property
    def thumbnail(self) -> np.ndarray:
        """The decoded RGB thumbnail."""
        return _decode(self.thumbnail_jpeg)

    @classmethod
    def from_slide(cls, slide: Any, polygons: Mapping[int, BaseGeometry]) -> Assets:
        """Read the thumbnail and one crop per glomerulus from the slide."""
        width, height = slide.dimensions
        thumb_mpp = max(slide.mpp * max(width, height) / THUMBNAIL_MAX_PX, slide.mpp)
        thumbnail = np.asarray(slide.thumbnail(thumb_mpp))
        assets = cls(_jpeg(thumbnail, 90), width / thumbnail.shape[1], {})
        assets.add_crops(slide, polygons)
        return assets

    def add_crops(self, slide: Any, polygons: Mapping[int, BaseGeometry]) -> None:
        """Crop each glomerulus (with a margin) at :data:`CROP_MPP`."""
        margin = CROP_MARGIN_UM / slide.mpp
        for gid, poly in polygons.items():
            x0, y0, x1, y1 = poly.bounds
            x, y = int(x0 - margin), int(y0 - margin)
            w, h = int(x1 - x0 + 2 * margin), int(y1 - y0 + 2 * margin)
            image = np.asarray(slide.read(x, y, w, h, mpp=max(CROP_MPP, slide.mpp)))
            self.crops[gid] = Crop(_jpeg(image, 88), x, y, w / image.shape[1])

    def save(self, folder: Path, keep: Iterable[int]) -> None:
        """Write the JPEGs of the glomeruli in ``keep`` and an index under ``folder/assets``."""
        root = folder / "assets"
        (root / "crops").mkdir(parents=True, exist_ok=True)
        (root / "thumbnail.jpg").write_bytes(self.thumbnail_jpeg)
        index: dict[str, Any] = {"thumbnail_scale": self.thumbnail_scale, "crops": {}}
        for gid in sorted(set(keep) & set(self.crops)):
            crop = self.crops[gid]
            name = f"crops/g{gid:04d}.jpg"
            (root / name).write_bytes(crop.jpeg)
            index["crops"][str(gid)] = {"file": name, "x": crop.x, "y": crop.y, "scale": crop.scale}
        write_json(root / "index.json", index)

    @classmethod
    def load(cls, folder: Path) -> Assets:
        """Read what :meth:`save` wrote."""
        root = folder / "assets"
        try:
            index = json.loads((root / "index.json").read_text(encoding="utf-8"))
            crops = {
                int(gid): Crop((root / c["file"]).read_bytes(), c["x"], c["y"], c["scale"])
                for gid, c in index["crops"].items()
            }
            thumbnail = (root / "thumbnail.jpg").read_bytes()
            return cls(thumbnail, float(index["thumbnail_scale"]), crops)
        except (OSError, KeyError, ValueError) as exc:
            raise ResultError(f"{root}: result images missing or unreadable ({exc})") from None
