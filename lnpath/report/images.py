"""The report's images: the outlined overview with links and a scale bar, and the gallery cards."""

from __future__ import annotations

import base64
import functools
import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
from PIL import Image, ImageDraw, ImageFont
from shapely.geometry import MultiPolygon, Polygon
from shapely.geometry.base import BaseGeometry

from lnpath.core.findings import is_missing
from lnpath.core.vocabulary import CLASS_COLOURS, LESION_LABELS, NOT_ASSESSED
from lnpath.report.assets import Assets
from lnpath.report.words import LESION_ORDER, LESION_SHORT
from lnpath.scoring.biopsy import EXCLUSIONS

SCALE_STEPS_UM = (50, 100, 200, 250, 500, 1000, 2000, 2500, 5000, 10000)


# --------------------------------------------------------------------------------------------
# Images


def _rings(geometry: BaseGeometry) -> list[Sequence[tuple[float, float]]]:
    parts = list(geometry.geoms) if isinstance(geometry, MultiPolygon) else [geometry]
    return [list(p.exterior.coords) for p in parts if isinstance(p, Polygon)]


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=size)


def _colour(call: Any) -> tuple[int, int, int]:
    return CLASS_COLOURS.get(str(call), CLASS_COLOURS[NOT_ASSESSED])


def _hex(call: Any) -> str:
    red, green, blue = _colour(call)
    return f"#{red:02x}{green:02x}{blue:02x}"


def overlay_image(
    findings: pd.DataFrame,
    polygons: Mapping[int, BaseGeometry],
    assets: Assets,
    numbers: bool = True,
) -> Image.Image:
    """The thumbnail with each glomerulus outlined in its call's colour (and numbered)."""
    image = Image.fromarray(assets.thumbnail).convert("RGB")
    draw = ImageDraw.Draw(image)
    scale = assets.thumbnail_scale
    width = max(2, round(max(image.size) / 800))
    font = _font(max(12, round(max(image.size) / 90)))
    for row in findings.to_dict("records"):
        gid = int(row["glomerulus_id"])
        colour = _colour(row["main_call"])
        geometry = polygons[gid]
        for ring in _rings(geometry):
            draw.line([(x / scale, y / scale) for x, y in ring], fill=colour, width=width)
        if numbers:
            x0, y0, _, _ = geometry.bounds
            draw.text((x0 / scale, y0 / scale - font.size), str(gid), fill=colour, font=font)  # type: ignore[union-attr]
    return image


def render_overlay(
    result: Mapping[str, Any],
    findings: pd.DataFrame,
    polygons: Mapping[int, BaseGeometry],
    assets: Assets,
) -> bytes:
    """``overlay.png``: the outlined, numbered thumbnail as PNG bytes.

    zlib level 3, not ``optimize``: the file is 0.5 % larger and written in a sixth of the time
    (0.05 s against 0.27 s on the demo), which every workstation save pays.
    """
    buffer = io.BytesIO()
    overlay_image(findings, polygons, assets).save(buffer, format="PNG", compress_level=3)
    return buffer.getvalue()


def _data_uri(image: Image.Image, fmt: str = "JPEG") -> str:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, quality=85)
    mime = "image/jpeg" if fmt == "JPEG" else "image/png"
    return f"data:{mime};base64,{base64.b64encode(buffer.getvalue()).decode('ascii')}"


@dataclass(frozen=True)
class CardImage:
    """A gallery card's picture as a JPEG data URI, with its size in pixels."""

    uri: str
    width: int
    height: int


def _card_image(gid: int, call: Any, geometry: BaseGeometry, assets: Assets) -> CardImage | None:
    """The gallery picture of one glomerulus: its crop with the outline in its call's colour."""
    crop = assets.crops.get(gid)
    if crop is None:
        return None
    origin = (crop.x, crop.y, crop.scale)
    rings = tuple(tuple(ring) for ring in _rings(geometry))
    return _outlined_crop(crop.jpeg, origin, rings, _colour(call))


@functools.lru_cache(maxsize=512)
def _outlined_crop(
    jpeg: bytes,
    origin: tuple[float, float, float],
    rings: tuple[tuple[tuple[float, float], ...], ...],
    colour: tuple[int, int, int],
) -> CardImage:
    """Decode, outline and re-encode one crop; cached, because a workstation save re-renders the
    report with all but the edited glomeruli unchanged (65-75 ms for 100 cards)."""
    x0, y0, scale = origin
    image = Image.open(io.BytesIO(jpeg)).convert("RGB")
    draw = ImageDraw.Draw(image)
    for ring in rings:
        draw.line([((x - x0) / scale, (y - y0) / scale) for x, y in ring], fill=colour, width=2)
    return CardImage(_data_uri(image), image.width, image.height)


def _scale_bar(width_um: float) -> dict[str, Any] | None:
    """A round length near a fifth of the image width, as a % of it."""
    if not width_um or not math.isfinite(width_um):
        return None
    fitting = [s for s in SCALE_STEPS_UM if s <= width_um / 5] or [SCALE_STEPS_UM[0]]
    length = fitting[-1]
    label = f"{length // 1000} mm" if length >= 1000 and length % 1000 == 0 else f"{length} µm"
    return {"width": round(100 * length / width_um, 2), "label": label}


def _overview(
    result: Mapping[str, Any],
    findings: pd.DataFrame,
    polygons: Mapping[int, BaseGeometry],
    assets: Assets,
) -> dict[str, Any]:
    image = overlay_image(findings, polygons, assets, numbers=False)
    full_w = image.width * assets.thumbnail_scale
    full_h = image.height * assets.thumbnail_scale
    markers = []
    for row in findings.to_dict("records"):
        centroid = polygons[int(row["glomerulus_id"])].centroid
        markers.append(
            {
                "id": int(row["glomerulus_id"]),
                "left": round(100 * centroid.x / full_w, 2),
                "top": round(100 * centroid.y / full_h, 2),
                "colour": _hex(row["main_call"]),
                "call": _card_call(row),
            }
        )
    mpp = float(result["slide"].get("mpp") or 0)
    return {
        "uri": _data_uri(image),
        "width": image.width,
        "height": image.height,
        "markers": markers,
        "scale": _scale_bar(full_w * mpp),
    }


def _card_call(row: Mapping[Any, Any]) -> str:
    kind = row.get("exclusion")
    if isinstance(kind, str) and kind in EXCLUSIONS:
        return f"excluded ({EXCLUSIONS[kind]})"
    return str(row["main_call"])


_LESION_OF = {label: lesion for lesion, label in LESION_LABELS.items()}


def never_assessed(findings: pd.DataFrame) -> list[str]:
    """Lesions assessed in no glomerulus: said once above the gallery, not on every card."""
    if findings.empty:
        return []
    return [k for k in LESION_ORDER if k not in findings or findings[k].isna().all()]


def _gallery(
    findings: pd.DataFrame, polygons: Mapping[int, BaseGeometry], assets: Assets
) -> list[dict[str, Any]]:
    """Compact cards: the crop, the calls present, then what was not assessed on one line."""
    everywhere = set(never_assessed(findings))
    entries = []
    for row in findings.to_dict("records"):
        gid = int(row["glomerulus_id"])
        main = _LESION_OF.get(str(row["main_call"]))
        present = [LESION_SHORT[k] for k in LESION_ORDER if row.get(k) is True and k != main]
        unassessed = [
            LESION_SHORT[k] for k in LESION_ORDER if k not in everywhere and is_missing(row.get(k))
        ]
        image = _card_image(gid, row["main_call"], polygons[gid], assets)
        kind = row.get("exclusion")
        excluded = None
        if isinstance(kind, str) and kind in EXCLUSIONS:
            reason = row.get("exclusion_reason")
            extra = isinstance(reason, str) and reason and reason != EXCLUSIONS[kind]
            excluded = EXCLUSIONS[kind] + (f" ({reason})" if extra else "")
        entries.append(
            {
                "id": gid,
                "call": str(row["main_call"]),
                "colour": _hex(row["main_call"]),
                "image": image.uri if image is not None else None,
                "image_width": image.width if image is not None else 0,
                "image_height": image.height if image is not None else 0,
                "excluded": excluded,
                "present": present,
                "not_assessed": unassessed,
            }
        )
    return entries
