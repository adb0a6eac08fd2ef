"""QuPath GeoJSON in and out: the annotation exchange format between lnpath and pathologists.

Coordinates are level-0 pixels of the full (uncropped) slide, origin top-left, exactly as QuPath
exports them. Every QuPath flavour (0.2-0.5) is read: ``classification`` as ``{name, color}``,
``{names: [...]}`` (a derived class, 0.4+), the older packed ``colorRGB`` or a bare string;
``measurements`` as a dict (new) or a list of ``{name, value}`` (old); the 0.2 ``id`` that names the
object type (``PathAnnotationObject``) instead of a UUID.

An export often holds more than glomeruli: a ruler line, a point, a cell detection, a TMA core.
Those are skipped with a warning that counts them, because refusing the file would throw away
every outline the pathologist drew; a file in which *nothing* is an outline is refused.
"""

from __future__ import annotations

import json
import logging
import numbers
import os
import uuid
import warnings
import zlib
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import shapely
from shapely.geometry import GeometryCollection, MultiPolygon, Polygon, mapping, shape
from shapely.geometry.base import BaseGeometry

from lnpath.core.args import as_path
from lnpath.core.errors import InputError, one_line
from lnpath.core.vocabulary import CLASS_COLOURS
from lnpath.io.atomic import write_text
from lnpath.io.jsonfile import not_a_file

logger = logging.getLogger(__name__)

OBJECT_TYPES = ("annotation", "detection")
#: QuPath object types that are never a glomerulus outline (a cell, a tile, a TMA core, the root).
NOT_OUTLINES = ("cell", "tile", "tma_core", "root")
#: QuPath 0.2 wrote the Java class as the feature ``id`` and no ``objectType``.
_V02_TYPES = {
    "PathAnnotationObject": "annotation",
    "PathDetectionObject": "detection",
    "PathCellObject": "cell",
    "PathTileObject": "tile",
    "TMACoreObject": "tma_core",
    "PathRootObject": "root",
}
#: No image QuPath opens is wider than 2^31 px; beyond that a coordinate is not level-0 pixels.
MAX_COORDINATE = 2.0**31
#: Written coordinates are rounded to 1/100 px: sub-pixel outlines stay, float noise goes.
COORDINATE_DECIMALS = 2


class NotAnOutline(InputError):
    """A feature that is no area outline (a line, a point, an empty geometry, a cell object)."""

    def __init__(self, message: str, kind: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass
class QuPathFeature:
    """One QuPath object: a geometry in level-0 px with its class and measurements."""

    geometry: BaseGeometry
    classification: str | None = None
    color: tuple[int, int, int] | None = None
    object_type: str = "annotation"
    measurements: dict[str, Any] = field(default_factory=dict)
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    name: str | None = None
    properties: dict[str, Any] = field(default_factory=dict)

    def to_geojson(self) -> dict[str, Any]:
        """The feature as QuPath writes it."""
        props: dict[str, Any] = {k: v for k, v in self.properties.items()}
        props["objectType"] = self.object_type
        if self.name is not None:
            props["name"] = self.name
        if self.classification is not None:
            color = self.color if self.color is not None else class_colour(self.classification)
            props["classification"] = {"name": self.classification, "color": list(color)}
        if self.measurements:
            props["measurements"] = {k: _finite(v) for k, v in self.measurements.items()}
        return {
            "type": "Feature",
            "id": self.id,
            "geometry": geometry_json(self.geometry),
            "properties": props,
        }


def geometry_json(geometry: BaseGeometry) -> dict[str, Any]:
    """GeoJSON of a geometry with closed rings and coordinates at 1/100 px, whole pixels as
    integers, as QuPath writes them; the unrounded geometry if rounding would make it invalid."""
    rounded = shapely.transform(geometry, lambda xy: np.round(xy, COORDINATE_DECIMALS))
    plain: dict[str, Any] = _plain(mapping(rounded if rounded.is_valid else geometry))
    return plain


def _plain(value: Any) -> Any:
    """Nested coordinate tuples as lists; 5065.0 as 5065 (JSON has one number type)."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def class_colour(name: str) -> tuple[int, int, int]:
    """The colour written with a class that has none: lnpath's own for its classes, otherwise
    one fixed by the name, so that QuPath shows the same class in the same colour every time."""
    if name in CLASS_COLOURS:
        return CLASS_COLOURS[name]
    if name == "Glomerulus":
        return (0, 160, 80)
    digest = zlib.crc32(name.encode("utf-8"))
    return (64 + digest % 192, 64 + (digest >> 8) % 192, 64 + (digest >> 16) % 192)


def _finite(value: Any) -> Any:
    """QuPath reads NaN as missing; JSON has no NaN, so write null."""
    try:
        f = float(value)
    except (TypeError, ValueError):
        return value
    return None if f != f or f in (float("inf"), float("-inf")) else f


def _unpack_color(packed: int) -> tuple[int, int, int]:
    packed &= 0xFFFFFF
    return ((packed >> 16) & 255, (packed >> 8) & 255, packed & 255)


def _color(values: Any) -> tuple[int, int, int] | None:
    """An RGB colour, or None for one that is not three numbers (a colour is decoration only)."""
    try:
        r, g, b = (int(v) for v in values)
    except (TypeError, ValueError, OverflowError):
        return None
    return (r, g, b)


def _measurements(raw: Any, where: str) -> dict[str, Any]:
    if raw is None:
        return {}
    if isinstance(raw, Mapping):
        return {str(k): v for k, v in raw.items()}
    if isinstance(raw, list):
        out: dict[str, Any] = {}
        for item in raw:
            if not isinstance(item, Mapping) or "name" not in item:
                raise InputError(f"{where}: measurement list entries need 'name' and 'value'")
            out[str(item["name"])] = item.get("value")
        return out
    raise InputError(f"{where}: 'measurements' must be a dict or a list of {{name, value}}")


def parse_feature(raw: Any, where: str = "GeoJSON") -> QuPathFeature:
    """Turn one GeoJSON Feature dict into a :class:`QuPathFeature`.

    Raises:
        NotAnOutline: a line, a point, an empty geometry or a cell/tile/TMA-core object.
        InputError: the feature is malformed.
    """
    if not isinstance(raw, Mapping) or raw.get("type") != "Feature":
        raise InputError(f"{where}: expected a GeoJSON Feature")
    props = raw.get("properties") or {}
    if not isinstance(props, Mapping):
        raise InputError(f"{where}: 'properties' must be an object")
    raw_id = raw.get("id") if raw.get("id") is not None else props.get("id")
    object_type = props.get("objectType") or _V02_TYPES.get(str(raw_id), "annotation")
    object_type = str(object_type).strip().lower().replace(" ", "_")
    if object_type in NOT_OUTLINES:
        raise NotAnOutline(f"{where}: a {object_type} object, not a glomerulus", object_type)
    geometry = _geometry(raw.get("geometry"), where)
    name, color = _classification(props.get("classification"), where)
    known = {"objectType", "classification", "measurements", "name"}
    return QuPathFeature(
        geometry=geometry,
        classification=name,
        color=color,
        object_type=object_type,
        measurements=_measurements(props.get("measurements"), where),
        id=str(uuid.uuid4()) if raw_id is None or str(raw_id) in _V02_TYPES else str(raw_id),
        name=None if props.get("name") is None else str(props["name"]),
        properties={k: v for k, v in props.items() if k not in known},
    )


def _geometry(raw: Any, where: str) -> BaseGeometry:
    """A valid (Multi)Polygon in level-0 px; a GeometryCollection keeps its polygonal parts."""
    if raw is None:
        raise NotAnOutline(f"{where}: has no geometry", "no geometry")
    if not isinstance(raw, Mapping):
        raise InputError(f"{where}: 'geometry' must be a GeoJSON geometry object")
    kind = str(raw.get("type", "geometry"))[:40]
    if "coordinates" not in raw and "geometries" not in raw:
        raise InputError(f"{where}: {kind} geometry has no 'coordinates'")
    _numbers_only(raw, where)
    try:
        with warnings.catch_warnings():  # NaN coordinates: refused below, not warned about
            warnings.simplefilter("ignore", RuntimeWarning)
            geometry = shape(raw)
    except Exception as exc:  # shapely/numpy words for a malformed ring: name the fault, not them
        detail = one_line(str(exc))[:120] or type(exc).__name__
        if "inhomogeneous" in detail or "sequence" in detail:
            detail = "coordinates are not all [x, y] number pairs"
        raise InputError(f"{where}: invalid {kind} ({detail})") from None
    if isinstance(geometry, GeometryCollection) and not geometry.is_empty:
        parts = [g for g in geometry.geoms if isinstance(g, Polygon | MultiPolygon)]
        kinds = sorted({g.geom_type for g in geometry.geoms})
        if not parts:
            raise NotAnOutline(f"{where}: a collection of {', '.join(kinds)}", "no area")
        geometry = shapely.union_all(parts)
    if geometry.is_empty:
        raise NotAnOutline(f"{where}: empty geometry", "empty geometry")
    if not isinstance(geometry, Polygon | MultiPolygon):
        raise NotAnOutline(
            f"{where}: geometry {geometry.geom_type} is not a (Multi)Polygon", geometry.geom_type
        )
    coords = shapely.get_coordinates(geometry)
    if not np.isfinite(coords).all():
        raise InputError(f"{where}: coordinates must be finite numbers (found NaN or Infinity)")
    if np.abs(coords).max() > MAX_COORDINATE:
        raise InputError(
            f"{where}: coordinate {np.abs(coords).max():.3g} lies beyond any slide; QuPath exports "
            "level-0 pixels"
        )
    if not geometry.is_valid:
        geometry = shapely.make_valid(geometry)
        if isinstance(geometry, GeometryCollection):  # a self-touching ring: keep its areas
            geometry = shapely.union_all(
                [g for g in geometry.geoms if isinstance(g, Polygon | MultiPolygon)]
            )
    if geometry.is_empty or geometry.area <= 0:
        raise NotAnOutline(f"{where}: outline encloses no area", "no area")
    return geometry


def _numbers_only(raw: Mapping[str, Any], where: str) -> None:
    """Refuse a coordinate that is not a number: shapely reads ``true`` as 1 and ``"10"`` as 10,
    so a hand-edited or mis-exported outline would be silently moved. A loop, not recursion: the
    nesting is the file's, however deep."""
    stack: list[Any] = [raw]
    while stack:
        value = stack.pop()
        if isinstance(value, Mapping):
            stack.extend(value.get(k) for k in ("coordinates", "geometries") if k in value)
        elif isinstance(value, list | tuple):
            stack.extend(value)
        elif isinstance(value, np.ndarray) and value.dtype.kind in "iuf":
            continue
        elif isinstance(value, bool) or not isinstance(value, numbers.Real):
            shown = json.dumps(value, default=lambda v: type(v).__name__)[:40]
            raise InputError(f"{where}: coordinates must be numbers, not {shown}")


def _classification(cls: Any, where: str) -> tuple[str | None, tuple[int, int, int] | None]:
    """(class name, colour) from every form QuPath writes; a derived class (0.4+ ``names``)
    joins its parts with ': ', as QuPath shows it."""
    name: Any = None
    color: tuple[int, int, int] | None = None
    if isinstance(cls, Mapping):
        name = cls.get("name")
        names = cls.get("names")
        if name is None and isinstance(names, list) and names:
            if not all(isinstance(n, str) for n in names):
                raise InputError(f"{where}: classification names must be text")
            name = ": ".join(n.strip() for n in names)
        raw_color = cls.get("color", cls.get("colorRGB"))
        if isinstance(raw_color, list | tuple) and len(raw_color) >= 3:
            color = _color(raw_color[:3])
        elif isinstance(raw_color, int) and not isinstance(raw_color, bool):
            color = _unpack_color(raw_color)
    elif isinstance(cls, str):
        name = cls
    if name is not None and not isinstance(name, str):
        raise InputError(f"{where}: classification name must be text (got {type(name).__name__})")
    return (name.strip() or None if isinstance(name, str) else None), color


def _decode(path: Path) -> Any:
    """The parsed file, or one line saying why not: empty, cut short, not UTF-8, not JSON."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if not data.strip():
        raise InputError(f"{path}: is empty (no GeoJSON in it); export the annotations again")
    try:
        text = data.decode("utf-8-sig")  # a BOM: Windows editors
    except UnicodeDecodeError as exc:
        raise InputError(
            f"{path}: not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start}); "
            "QuPath writes UTF-8, so export it again or re-save it as UTF-8"
        ) from None
    try:
        return json.loads(text)  # NaN/Infinity tokens are read: QuPath (Java) writes them
    except json.JSONDecodeError as exc:
        if exc.pos >= len(text.rstrip()) - 1:
            raise InputError(
                f"{path}: JSON ends early at line {exc.lineno} (file cut short?); export it again"
            ) from None
        raise InputError(f"{path}: not valid JSON ({exc.msg}: line {exc.lineno})") from None
    except RecursionError:
        raise InputError(f"{path}: JSON nested too deeply to be a GeoJSON export") from None


def read_qupath(
    source: str | os.PathLike[str] | Mapping[str, Any] | list[Any],
) -> list[QuPathFeature]:
    """Read the outlines of a QuPath GeoJSON export (FeatureCollection, a list, or one Feature).

    Lines, points, empty geometries and cell/tile/TMA-core objects are skipped with one warning
    that counts them (they are not glomeruli); an empty collection reads as no features.

    Raises:
        InputError: the file is missing, not JSON or not GeoJSON, a feature is malformed, or
            there are features but none is an area outline.
    """
    where = "GeoJSON"
    data: Any
    if isinstance(source, str | os.PathLike):
        path = Path(source)
        where = str(path)
        if not path.is_file():
            raise not_a_file(path, "file")
        data = _decode(path)
    else:
        data = source
    if isinstance(data, Mapping) and data.get("type") == "FeatureCollection":
        raw_features = data.get("features")
    elif isinstance(data, Mapping) and data.get("type") == "Feature":
        raw_features = [data]
    elif isinstance(data, list):
        raw_features = data
    else:
        if isinstance(data, Mapping):
            found = f"type {str(data['type'])[:40]!r}" if "type" in data else "an object, no 'type'"
        else:
            found = f"a JSON {type(data).__name__}"
        raise InputError(
            f"{where}: not a GeoJSON FeatureCollection, Feature or list of Features ({found})"
        )
    if not isinstance(raw_features, list):
        raise InputError(f"{where}: 'features' must be a list")
    features: list[QuPathFeature] = []
    skipped: Counter[str] = Counter()
    for i, raw in enumerate(raw_features):
        try:
            features.append(parse_feature(raw, f"{where} feature {i}"))
        except NotAnOutline as exc:
            skipped[exc.kind] += 1
    if skipped:
        counts = ", ".join(f"{n} {kind}" for kind, n in sorted(skipped.items()))
        if not features:
            raise InputError(
                f"{where}: none of its {len(raw_features)} feature(s) is an area outline "
                f"({counts}); export the glomerulus annotations (polygons)"
            )
        logger.warning(
            "%s: skipped %d of %d feature(s) that are not glomerulus outlines: %s",
            where,
            sum(skipped.values()),
            len(raw_features),
            counts,
        )
    return features


def feature_collection(features: Iterable[QuPathFeature]) -> dict[str, Any]:
    """A GeoJSON FeatureCollection that QuPath imports unchanged."""
    return {"type": "FeatureCollection", "features": [f.to_geojson() for f in features]}


def geojson_text(collection: Mapping[str, Any]) -> str:
    """A FeatureCollection as JSON text with one compact feature per line.

    Indented JSON goes through Python's pure-Python encoder: 30 ms and 685 KB for 100 outlines,
    stored again in every revision's snapshot. One line per feature is C-encoded (6 ms, 300 KB)
    and a changed glomerulus is still one changed line in a diff.
    """

    def dump(value: Any) -> str:
        return json.dumps(value, ensure_ascii=False, default=str)

    lines = [f'{{"type": {dump(collection.get("type", "FeatureCollection"))}, "features": [']
    features = list(collection.get("features") or [])
    lines += [dump(f) + ("," if i < len(features) - 1 else "") for i, f in enumerate(features)]
    rest = {k: v for k, v in collection.items() if k not in ("type", "features")}
    lines.append("]" + "".join(f", {dump(k)}: {dump(v)}" for k, v in rest.items()) + "}")
    return "\n".join(lines) + "\n"


def write_qupath(features: Iterable[QuPathFeature], path: str | os.PathLike[str]) -> Path:
    """Write features as a QuPath GeoJSON FeatureCollection, atomically."""
    return write_text(as_path(path, "GeoJSON output"), geojson_text(feature_collection(features)))
