"""Glomeruli records: DataFrame and QuPath GeoJSON round trips on real QuPath exports."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from shapely.geometry import MultiPolygon, Polygon, box

from lnpath.analysis.glomeruli import Glomeruli, Glomerulus
from lnpath.io.qupath import QuPathFeature


def _exports(qupath_dir: Path) -> list[Path]:
    files = sorted(qupath_dir.glob("*.geojson")) + sorted(qupath_dir.glob("*.json"))
    if not files:
        pytest.skip("no QuPath exports found")
    return files


def test_real_qupath_export_round_trips(qupath_dir: Path, tmp_path: Path) -> None:
    source = _exports(qupath_dir)[0]
    gloms = Glomeruli.from_geojson(source, mpp=0.25)
    assert len(gloms) > 10
    assert {g.classification for g in gloms} - {None}  # real classes (Normal, Sclerotic, ...)
    out = gloms.write_geojson(tmp_path / "g.geojson", object_type="annotation")
    back = Glomeruli.from_geojson(out, mpp=0.25)
    assert len(back) == len(gloms)
    for a, b in zip(gloms, back, strict=True):
        assert a.id == b.id and a.classification == b.classification
        assert a.polygon.equals_exact(b.polygon, 1e-6)
        assert math.isclose(a.area_um2, b.area_um2, rel_tol=1e-9)
        assert a.measurements == b.measurements
    raw = json.loads(out.read_text())
    assert raw["type"] == "FeatureCollection"
    assert {f["properties"]["objectType"] for f in raw["features"]} == {"annotation"}


def test_detections_keep_probability_area_and_measurements(tmp_path: Path) -> None:
    poly = box(100, 200, 300, 360)
    g = Glomerulus.from_polygon(7, poly, mpp=0.5, probability=0.87, measurements={"m_x": 1.5})
    assert g.area_um2 == pytest.approx(200 * 160 * 0.25)
    assert g.centroid == (200.0, 280.0)
    gloms = Glomeruli([g], mpp=0.5, source="glomeruli-unet-pas")
    path = gloms.write_geojson(tmp_path / "d.geojson")
    feature = json.loads(path.read_text())["features"][0]
    assert feature["properties"]["objectType"] == "detection"
    assert feature["properties"]["classification"]["name"] == "Glomerulus"
    back = Glomeruli.from_geojson(path, mpp=0.5)
    assert back.source == "glomeruli-unet-pas"
    (h,) = back
    assert (h.id, h.classification, h.measurements) == (7, None, {"m_x": 1.5})
    assert h.probability == pytest.approx(0.87)
    frame = back.to_dataframe()
    assert list(frame.columns[:7]) == [
        "glomerulus_id",
        "area_um2",
        "centroid_x",
        "centroid_y",
        "probability",
        "classification",
        "polygon",
    ]
    assert frame["m_x"].tolist() == [1.5]


def test_empty_collection_and_multipolygon_input() -> None:
    assert Glomeruli([], 0.5, "x").to_dataframe().empty
    big, small = box(0, 0, 100, 100), box(200, 200, 210, 210)
    feature = QuPathFeature(MultiPolygon([big, small]), classification="Sclerotic")
    (g,) = Glomeruli.from_geojson([feature], mpp=1.0)
    assert isinstance(g.polygon, Polygon) and g.polygon.equals(big)
    assert g.classification == "Sclerotic" and math.isnan(g.probability)
    assert len(Glomeruli([g, g], 1.0, "x")[1:]) == 1


def test_write_geojson_names_a_path_that_is_not_one() -> None:
    """None reached pathlib (``TypeError: expected str, bytes or os.PathLike``)."""
    from lnpath.core.errors import InputError

    glomeruli = Glomeruli([Glomerulus.from_polygon(1, box(0, 0, 100, 100), 0.5)], 0.5, "test")
    with pytest.raises(InputError, match=r"^GeoJSON output: expected a file or folder path"):
        glomeruli.write_geojson(None)  # type: ignore[arg-type]
