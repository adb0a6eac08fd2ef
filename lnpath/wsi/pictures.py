"""Inline pictures for Jupyter views: thumbnails as PNG ``data:`` URIs, outlines drawn on them.

A view embeds its image rather than linking to a file, so a notebook served by JupyterLab from
another machine, or saved and reopened, still shows it.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Iterable, Sequence
from html import escape
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image, ImageDraw

from lnpath.core import views

if TYPE_CHECKING:
    from lnpath.wsi.slide import Slide
    from lnpath.wsi.tiling import TileGrid
    from lnpath.wsi.tissue import TissueMask

THUMBNAIL_PX = 480
"""Longest side of an inline thumbnail: enough to see the cores, small enough for a notebook."""


def png_data_uri(image: np.ndarray | Image.Image, max_side: int = THUMBNAIL_PX) -> str:
    """A PNG ``data:`` URI of an RGB array or PIL image, shrunk to ``max_side`` px."""
    picture = image if isinstance(image, Image.Image) else Image.fromarray(_uint8(image))
    picture = picture.convert("RGB")
    picture.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def img(image: np.ndarray | Image.Image, alt: str, max_side: int = THUMBNAIL_PX) -> str:
    """An inline ``<img>`` of ``image``."""
    return (
        f'<img src="{png_data_uri(image, max_side)}" alt="{escape(alt)}" '
        'style="max-width:100%;height:auto;border:1px solid #ddd">'
    )


def thumbnail_mpp(size_px: tuple[int, int], mpp: float, max_side: int = THUMBNAIL_PX) -> float:
    """µm/px at which a level-0 extent of ``size_px`` fits ``max_side`` pixels."""
    return max(mpp, max(size_px) * mpp / max_side)


def draw_outlines(
    picture: np.ndarray,
    rings: Iterable[np.ndarray],
    scale: float,
    colour: tuple[int, int, int] = (0, 160, 80),
    width: int = 2,
) -> np.ndarray:
    """``picture`` with closed polylines drawn on it (level-0 coordinates times ``scale``)."""
    canvas = Image.fromarray(_uint8(picture)).convert("RGB")
    pen = ImageDraw.Draw(canvas)
    for ring in rings:
        points = [(float(x) * scale, float(y) * scale) for x, y in np.asarray(ring)[:, :2]]
        if len(points) >= 2:
            pen.line([*points, points[0]], fill=colour, width=width)
    return np.asarray(canvas)


def _uint8(array: np.ndarray) -> np.ndarray:
    array = np.asarray(array)
    if array.dtype == bool:
        return np.where(array, 255, 0).astype(np.uint8)
    return array.astype(np.uint8, copy=False)


def draw_boxes(
    picture: np.ndarray,
    boxes: Iterable[tuple[float, float, float, float]],
    scale: float,
    colour: tuple[int, int, int] = (30, 90, 200),
) -> np.ndarray:
    """``picture`` with rectangles ``(x, y, width, height)`` (level-0 px times ``scale``)."""
    canvas = Image.fromarray(_uint8(picture)).convert("RGB")
    pen = ImageDraw.Draw(canvas)
    for x, y, w, h in boxes:
        pen.rectangle([x * scale, y * scale, (x + w) * scale, (y + h) * scale], outline=colour)
    return np.asarray(canvas)


def overview(slide: Slide, max_side: int = THUMBNAIL_PX) -> tuple[np.ndarray, float]:
    """The whole slide fitted to ``max_side`` px, and its scale (thumbnail px per level-0 px)."""
    mpp = thumbnail_mpp(slide.dimensions, slide.mpp, max_side)
    picture = slide.thumbnail(mpp)
    return picture, picture.shape[1] / slide.dimensions[0]


def slide_html(slide: Slide) -> str:
    """A slide's Jupyter view: its overview and what lnpath knows of its scale."""
    picture, _ = overview(slide)
    width, height = slide.dimensions
    text = f"{slide.path.name}: {width} × {height} px at {slide.mpp:.4g} µm/px ({slide.mpp_source})"
    return views.block(img(picture, slide.path.name), views.para(text))


def tissue_picture(mask: TissueMask) -> np.ndarray:
    """The mask as an image: tissue purple on white."""
    rgb = np.full((*mask.mask.shape, 3), 255, np.uint8)
    rgb[mask.mask] = (120, 60, 140)
    return rgb


def tissue_html(mask: TissueMask) -> str:
    """A tissue mask's Jupyter view: the mask and its summary."""
    return views.block(img(tissue_picture(mask), "tissue mask"), views.para(repr(mask)))


def plot_tissue(mask: TissueMask, slide: Slide | None = None, ax: Any = None) -> Any:
    """The mask's outline over the slide at the mask's resolution, or the mask alone.

    Returns:
        The matplotlib Axes (level-0 pixel coordinates).
    """
    ax = views.axes(ax, figsize=(10.0, 4.0))
    f = mask.factor
    h, w = mask.mask.shape
    extent = (0.0, w * f, h * f, 0.0)
    if slide is None:
        ax.imshow(tissue_picture(mask), extent=extent)
    else:
        ax.imshow(slide.thumbnail(mask.mpp), extent=extent)
        xs, ys = (np.arange(w) + 0.5) * f, (np.arange(h) + 0.5) * f
        if mask.mask.any():
            ax.contour(xs, ys, mask.mask.astype(float), levels=[0.5], colors="lime")
    ax.set_title(repr(mask), fontsize=9)
    ax.set_axis_off()
    return ax


def grid_html(grid: TileGrid) -> str:
    """A tile grid's Jupyter view: the tiles drawn over the slide's overview."""
    picture, scale = overview(grid.slide)
    boxes = grid.table[["x", "y", "width", "height"]].itertuples(index=False)
    return views.block(img(draw_boxes(picture, boxes, scale), "tiles"), views.para(repr(grid)))


def plot_grid(grid: TileGrid, ax: Any = None, max_side: int = 1600) -> Any:
    """Every tile as a rectangle over the slide, coloured by its tissue fraction.

    Returns:
        The matplotlib Axes (level-0 pixel coordinates; one patch per tile).
    """
    from matplotlib.patches import Rectangle

    ax = views.axes(ax, figsize=(10.0, 4.0))
    picture, _ = overview(grid.slide, max_side)
    width, height = grid.slide.dimensions
    ax.imshow(picture, extent=(0.0, width, height, 0.0))
    cmap = views.pyplot().get_cmap("viridis")
    for x, y, w, h, fraction in grid.table[
        ["x", "y", "width", "height", "tissue_fraction"]
    ].itertuples(index=False):
        colour = "tab:blue" if np.isnan(fraction) else cmap(float(fraction))
        ax.add_patch(Rectangle((x, y), w, h, fill=False, edgecolor=colour, linewidth=0.8))
    ax.set_title(f"{grid!r}; colour: tissue fraction", fontsize=9)
    ax.set_axis_off()
    return ax


def plot_outlines(
    slide: Slide,
    rings: Sequence[np.ndarray],
    labels: Sequence[str],
    ax: Any = None,
    max_side: int = 1600,
) -> Any:
    """Outlines (level-0 px) over the slide, labelled when there are few.

    Returns:
        The matplotlib Axes (one patch per outline).
    """
    from matplotlib.patches import Polygon as Patch

    ax = views.axes(ax, figsize=(10.0, 4.0))
    picture, _ = overview(slide, max_side)
    width, height = slide.dimensions
    ax.imshow(picture, extent=(0.0, width, height, 0.0))
    for ring, label in zip(rings, labels, strict=True):
        ax.add_patch(Patch(ring[:, :2], closed=True, fill=False, edgecolor="lime", linewidth=1))
        if len(rings) <= 60:
            x, y = ring[:, 0].mean(), ring[:, 1].min()
            ax.annotate(label, (x, y), color="yellow", fontsize=7, ha="center", va="bottom")
    ax.set_axis_off()
    return ax
