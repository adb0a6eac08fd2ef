"""QuPath GeoJSON import/export on real QuPath exports."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import lnpath
from lnpath.io.qupath import QuPathFeature, feature_collection, read_qupath, write_qupath

EXPECTED = {  # file -> (features, unclassified, multipolygons)
    "TPATH012": (32, 0, 0),
    "TPATH065": (77, 0, 2),
    "TPATH081": (20, 10, 0),
    "TPATH129": (81, 0, 0),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_reads_real_exports(qupath_dir: Path, name: str) -> None:
    feats = lnpath.read_qupath(qupath_dir / f"{name}.geojson")
    n, unclassified, multi = EXPECTED[name]
    assert len(feats) == n
    assert sum(f.classification is None for f in feats) == unclassified
    assert sum(f.geometry.geom_type == "MultiPolygon" for f in feats) == multi
    assert all(f.object_type == "annotation" and f.geometry.area > 0 for f in feats)


def test_round_trip_preserves_geometry_class_and_measurements(
    qupath_dir: Path, tmp_path: Path
) -> None:
    feats = read_qupath(qupath_dir / "TPATH065.geojson")
    feats[0].measurements = {"Area µm^2": 1234.5, "nan value": float("nan")}
    out = write_qupath(feats, tmp_path / "out.geojson")
    back = read_qupath(out)
    assert [f.id for f in back] == [f.id for f in feats]
    assert [f.classification for f in back] == [f.classification for f in feats]
    assert all(a.geometry.equals(b.geometry) for a, b in zip(feats, back, strict=True))
    assert back[0].measurements == {"Area µm^2": 1234.5, "nan value": None}


def test_old_qupath_flavour_colorrgb_and_measurement_list() -> None:
    raw = {
        "type": "Feature",
        "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [10, 0], [10, 10], [0, 0]]]},
        "properties": {
            "objectType": "detection",
            "classification": {"name": "Sclerotic", "colorRGB": -65536},
            "measurements": [{"name": "Area", "value": 50.0}],
        },
    }
    (feat,) = read_qupath(raw)
    assert feat.color == (255, 0, 0)
    assert feat.object_type == "detection"
    assert feat.measurements == {"Area": 50.0}
    assert feature_collection([feat])["features"][0]["properties"]["classification"] == {
        "name": "Sclerotic",
        "color": [255, 0, 0],
    }


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("not json", "not valid JSON"),
        (json.dumps({"type": "Point"}), "not a GeoJSON"),
        (
            json.dumps(
                {
                    "type": "FeatureCollection",
                    "features": [
                        {
                            "type": "Feature",
                            "geometry": {"type": "Point", "coordinates": [1, 2]},
                            "properties": {},
                        }
                    ],
                }
            ),
            "none of its 1 feature(s) is an area outline (1 Point)",
        ),
    ],
)
def test_malformed_geojson_is_one_line_error(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad.geojson"
    path.write_text(content)
    with pytest.raises(lnpath.InputError, match=r"bad\.geojson") as info:
        read_qupath(path)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_feature_defaults_are_qupath_annotation() -> None:
    from shapely.geometry import box

    feat = QuPathFeature(geometry=box(0, 0, 5, 5), classification="Normal", color=(0, 128, 0))
    props = feat.to_geojson()["properties"]
    assert props["objectType"] == "annotation"
    assert props["classification"]["name"] == "Normal"
