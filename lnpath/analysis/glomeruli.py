"""Glomerulus records: one polygon per glomerulus in level-0 pixels, with area and probability.

:class:`Glomeruli` is what segmentation returns and what measurement, lesion calling, scoring and
review consume. It converts to a DataFrame and to QuPath GeoJSON (the exchange format with
pathologists) and reads back from it, so corrected annotations re-enter the pipeline unchanged.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, overload

import numpy as np
import pandas as pd
from shapely.geometry import MultiPolygon, Polygon
from shapely.geometry.base import BaseGeometry

from lnpath.core.errors import InputError
from lnpath.io.qupath import OBJECT_TYPES, QuPathFeature, read_qupath, write_qupath
from lnpath.wsi.slide import check_mpp

if TYPE_CHECKING:
    from lnpath.wsi.slide import Slide

DEFAULT_CLASS = "Glomerulus"
GLOMERULUS_COLOR = (0, 160, 80)
# Measurement names written to GeoJSON and recognised when reading it back.
AREA_KEY = "Area µm^2"
PROBABILITY_KEY = "Probability"


@dataclass
class Glomerulus:
    """One glomerulus.

    Attributes:
        id: 1-based identifier, stable within one :class:`Glomeruli`.
        polygon: Outline in level-0 pixels of the full slide (QuPath's frame).
        area_um2: Polygon area in µm².
        centroid: (x, y) in level-0 pixels.
        probability: Mean foreground probability inside the outline (NaN for hand-drawn ones).
        classification: Class name (e.g. a pathologist's "Sclerotic"); ``None`` = plain glomerulus.
        measurements: Any further named numbers (carried through GeoJSON round trips).
    """

    id: int
    polygon: Polygon
    area_um2: float
    centroid: tuple[float, float]
    probability: float
    classification: str | None = None
    measurements: dict[str, float] = field(default_factory=dict)

    @classmethod
    def from_polygon(
        cls,
        id: int,
        polygon: Polygon,
        mpp: float,
        probability: float = math.nan,
        classification: str | None = None,
        measurements: Mapping[str, float] | None = None,
    ) -> Glomerulus:
        """Build a record, deriving area (with the slide's level-0 ``mpp``) and centroid."""
        c = polygon.centroid
        return cls(
            id=id,
            polygon=polygon,
            area_um2=float(polygon.area) * mpp**2,
            centroid=(float(c.x), float(c.y)),
            probability=float(probability),
            classification=classification,
            measurements=dict(measurements or {}),
        )


class Glomeruli(Sequence[Glomerulus]):
    """An ordered collection of :class:`Glomerulus` from one slide.

    Args:
        items: The glomeruli.
        mpp: The slide's level-0 µm/px (areas are in µm² at this scale).
        source: What produced them, e.g. the model name or ``"annotations"``.
        metadata: Provenance of a segmentation run (model sha256, tiles, timings).
    """

    def __init__(
        self,
        items: Iterable[Glomerulus],
        mpp: float,
        source: str,
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        self._items = list(items)
        self.mpp = float(mpp)
        self.source = source
        self.metadata: dict[str, Any] = dict(metadata or {})

    @overload
    def __getitem__(self, index: int) -> Glomerulus: ...
    @overload
    def __getitem__(self, index: slice) -> Glomeruli: ...
    def __getitem__(self, index: int | slice) -> Glomerulus | Glomeruli:
        if isinstance(index, slice):
            return Glomeruli(self._items[index], self.mpp, self.source, self.metadata)
        return self._items[index]

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[Glomerulus]:
        return iter(self._items)

    def __repr__(self) -> str:
        return f"Glomeruli({len(self)} from {self.source!r}, mpp={self.mpp:g})"

    def _rings(self) -> list[np.ndarray]:
        """Every outline's exterior ring (level-0 px), the largest part of a multipolygon."""
        rings = []
        for g in self._items:
            shape = g.polygon
            if isinstance(shape, MultiPolygon):
                shape = max(shape.geoms, key=lambda p: p.area)
            rings.append(np.asarray(shape.exterior.coords))
        return rings

    def _repr_html_(self) -> str:
        """The outlines as they lie on the slide (no slide needed) and a summary."""
        from lnpath.core import views
        from lnpath.wsi.pictures import THUMBNAIL_PX, draw_outlines, img

        parts = [views.para(repr(self))]
        if self._items:
            rings = self._rings()
            x0, y0 = (min(float(r[:, i].min()) for r in rings) for i in (0, 1))
            x1, y1 = (max(float(r[:, i].max()) for r in rings) for i in (0, 1))
            scale = THUMBNAIL_PX / max(x1 - x0, y1 - y0, 1.0)
            canvas = np.full((int((y1 - y0) * scale) + 5, int((x1 - x0) * scale) + 5, 3), 255)
            shifted = [r[:, :2] - (x0 - 2 / scale, y0 - 2 / scale) for r in rings]
            parts.insert(0, img(draw_outlines(canvas, shifted, scale), "glomerulus outlines"))
            table = self.to_dataframe()
            parts.append(
                views.para(
                    f"median area {table['area_um2'].median():,.0f} µm²; median probability "
                    f"{table['probability'].median():.2f}"
                )
            )
        return views.block(*parts)

    def plot(self, slide: Slide, ax: Any = None) -> Any:
        """Every outline over ``slide``, numbered by id; returns the matplotlib Axes."""
        from lnpath.wsi.pictures import plot_outlines

        ax = plot_outlines(slide, self._rings(), [str(g.id) for g in self._items], ax)
        ax.set_title(repr(self), fontsize=9)
        return ax

    def to_dataframe(self) -> pd.DataFrame:
        """One row per glomerulus: ``glomerulus_id``, geometry and measurements.

        Columns: ``glomerulus_id, area_um2, centroid_x, centroid_y, probability, classification,
        polygon`` (shapely, level-0 px), then one column per measurement name.
        """
        rows = [
            {
                "glomerulus_id": g.id,
                "area_um2": g.area_um2,
                "centroid_x": g.centroid[0],
                "centroid_y": g.centroid[1],
                "probability": g.probability,
                "classification": g.classification,
                "polygon": g.polygon,
                **g.measurements,
            }
            for g in self._items
        ]
        columns = [
            "glomerulus_id",
            "area_um2",
            "centroid_x",
            "centroid_y",
            "probability",
            "classification",
            "polygon",
        ]
        return pd.DataFrame(rows, columns=columns if not rows else None)

    def to_features(self, object_type: str = "detection") -> list[QuPathFeature]:
        """QuPath features (``detection`` by default; ``annotation`` for editable outlines).

        Raises:
            InputError: ``object_type`` is neither (QuPath would not read the file back as
                outlines).
        """
        if object_type not in OBJECT_TYPES:
            raise InputError(
                f"object_type must be one of {', '.join(OBJECT_TYPES)}, got {object_type!r}"
            )
        features = []
        for g in self._items:
            measurements = {AREA_KEY: round(g.area_um2, 2), **g.measurements}
            if not math.isnan(g.probability):
                measurements[PROBABILITY_KEY] = round(g.probability, 4)
            features.append(
                QuPathFeature(
                    geometry=g.polygon,
                    classification=g.classification or DEFAULT_CLASS,
                    color=GLOMERULUS_COLOR if g.classification is None else None,
                    object_type=object_type,
                    measurements=measurements,
                    name=f"glomerulus {g.id}",
                    properties={"lnpath_id": g.id, "lnpath_source": self.source},
                )
            )
        return features

    def write_geojson(self, path: str | os.PathLike[str], object_type: str = "detection") -> Path:
        """Write a QuPath FeatureCollection atomically and return its path."""
        write_qupath(self.to_features(object_type), path)
        return Path(path)

    @classmethod
    def from_geojson(
        cls,
        source: str | os.PathLike[str] | Mapping[str, Any] | list[Any] | Sequence[QuPathFeature],
        mpp: float,
        source_name: str | None = None,
    ) -> Glomeruli:
        """Read glomeruli from QuPath GeoJSON (a file, parsed JSON, or features).

        A MultiPolygon keeps its largest part (a glomerulus is one connected outline). The
        class ``Glomerulus`` reads back as ``None``; area is recomputed from the outline.

        Args:
            source: GeoJSON path, dict/list, or :class:`~lnpath.io.qupath.QuPathFeature` objects.
            mpp: The slide's level-0 µm/px.
            source_name: Overrides the ``lnpath_source`` recorded in the features.

        Raises:
            InputError: the GeoJSON is malformed, or ``mpp`` is not a plausible µm/px (areas
                would silently be wrong by its square).
        """
        mpp = check_mpp(mpp, "Glomeruli.from_geojson: mpp")
        if isinstance(source, Sequence) and all(isinstance(f, QuPathFeature) for f in source):
            features = list(source)
        else:
            features = read_qupath(source)  # type: ignore[arg-type]
        items, used, names = [], set(), set()
        for index, feature in enumerate(features, start=1):
            polygon = _largest_polygon(feature.geometry)
            if polygon is None:
                continue
            raw_id = feature.properties.get("lnpath_id")
            gid = (
                int(raw_id)
                if isinstance(raw_id, int | float) and int(raw_id) not in used
                else index
            )
            while gid in used:
                gid += 1
            used.add(gid)
            measurements = {
                k: float(v)
                for k, v in feature.measurements.items()
                if k not in (AREA_KEY, PROBABILITY_KEY) and _is_number(v)
            }
            probability = feature.measurements.get(PROBABILITY_KEY)
            cls_name = feature.classification
            items.append(
                Glomerulus.from_polygon(
                    gid,
                    polygon,
                    mpp,
                    probability=float(probability) if _is_number(probability) else math.nan,
                    classification=None if cls_name == DEFAULT_CLASS else cls_name,
                    measurements=measurements,
                )
            )
            names.add(str(feature.properties.get("lnpath_source", "annotations")))
        name = source_name or (names.pop() if len(names) == 1 else "annotations")
        return cls(items, mpp, name)


def outlines(glomeruli: Any, who: str) -> list[tuple[int, Polygon]]:
    """(id, polygon) of every glomerulus; a path, or arguments in the wrong order, get the fix
    instead of ``AttributeError: 'str' object has no attribute 'id'``."""
    if isinstance(glomeruli, str | os.PathLike):
        raise InputError(
            f"{who}: {os.fspath(glomeruli)!s} is a path; read the outlines first: "
            "lnpath.Glomeruli.from_geojson(path, mpp=slide.mpp)"
        )
    try:
        return [(g.id, g.polygon) for g in glomeruli]
    except (TypeError, AttributeError):
        raise InputError(
            f"{who}: expected Glomeruli (lnpath.segment_glomeruli(slide)), "
            f"got {type(glomeruli).__name__}"
        ) from None


def _largest_polygon(geometry: BaseGeometry) -> Polygon | None:
    if isinstance(geometry, Polygon):
        return geometry if not geometry.is_empty else None
    if isinstance(geometry, MultiPolygon) and not geometry.is_empty:
        return max(geometry.geoms, key=lambda g: g.area)
    parts = [g for g in getattr(geometry, "geoms", []) if isinstance(g, Polygon | MultiPolygon)]
    if parts:
        return _largest_polygon(max(parts, key=lambda g: g.area))
    if geometry.is_empty:
        return None
    raise InputError(f"glomerulus geometry {geometry.geom_type} is not a polygon")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
