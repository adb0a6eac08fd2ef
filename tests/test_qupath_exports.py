"""Every form QuPath 0.2-0.5 writes, derived from real exports: what lnpath reads, skips, refuses
and writes back."""

from __future__ import annotations

import copy
import json
import logging
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from shapely import affinity
from shapely.geometry import Point, Polygon, mapping, shape

import lnpath
from lnpath.analysis.glomeruli import Glomeruli
from lnpath.cli import main
from lnpath.io.qupath import read_qupath, write_qupath
from lnpath.io.tables import findings_from_geojson

Edit = Callable[[list[dict[str, Any]]], Any]


def _load(qupath_dir: Path, name: str) -> dict[str, Any]:
    return json.loads((qupath_dir / f"{name}.geojson").read_text())


def _classes(features: list[Any]) -> Counter[str | None]:
    return Counter(f.classification for f in features)


def _qp02(features: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """QuPath 0.2: the Java class as id, no objectType, packed colour, measurements as a list."""
    for f in features:
        f["id"] = "PathAnnotationObject"
        props = f["properties"]
        props.pop("objectType", None)
        props["isLocked"] = False
        if "classification" in props:
            props["classification"] = {
                "name": props["classification"]["name"],
                "colorRGB": -3670016,
            }
        props["measurements"] = [{"name": "Area px^2", "value": 1.0}]
    return features


def _names(features: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """QuPath 0.4+: a class as the list of its names."""
    for f in features:
        cls = f["properties"].get("classification")
        if cls:
            f["properties"]["classification"] = {"names": [cls["name"]], "color": [200, 0, 0]}
    return features


def _plain_string(features: list[dict[str, Any]]) -> list[dict[str, Any]]:
    for f in features:
        cls = f["properties"].get("classification")
        if cls:
            f["properties"]["classification"] = cls["name"]
    return features


def _plane_and_lock(features: list[dict[str, Any]]) -> list[dict[str, Any]]:
    for f in features:
        f["properties"].update({"isLocked": True, "plane": {"c": -1, "z": 0, "t": 0}})
        f["properties"]["measurements"] = {"Area µm^2": float("nan"), "Perimeter": 10.0}
    return features


FORMS: dict[str, Edit] = {
    "qupath 0.2": _qp02,
    "classification names (0.4+)": _names,
    "classification as a string": _plain_string,
    "plane, isLocked, NaN measurement": _plane_and_lock,
}


@pytest.mark.parametrize("form", sorted(FORMS))
@pytest.mark.parametrize("name", ["TPATH081", "TPATH065"])
def test_every_qupath_flavour_reads_the_same_glomeruli(
    qupath_dir: Path, tmp_path: Path, form: str, name: str
) -> None:
    original = read_qupath(qupath_dir / f"{name}.geojson")
    data = _load(qupath_dir, name)
    data["features"] = FORMS[form](data["features"])
    path = tmp_path / "export.geojson"
    path.write_text(json.dumps(data))  # json.dumps writes NaN as Java does
    back = read_qupath(path)
    assert len(back) == len(original)
    assert _classes(back) == _classes(original)
    assert [f.geometry.area for f in back] == [f.geometry.area for f in original]
    assert len({f.id for f in back}) == len(back)  # 0.2's shared "PathAnnotationObject" is no id
    assert {f.object_type for f in back} == {"annotation"}
    table = findings_from_geojson(path)
    assert len(table) == len(findings_from_geojson(qupath_dir / f"{name}.geojson"))


def test_bare_list_single_feature_and_bom(qupath_dir: Path, tmp_path: Path) -> None:
    data = _load(qupath_dir, "TPATH081")
    (tmp_path / "list.geojson").write_text(json.dumps(data["features"]))
    (tmp_path / "one.geojson").write_text(json.dumps(data["features"][3]))
    bom = b"\xef\xbb\xbf" + (qupath_dir / "TPATH081.geojson").read_bytes()
    (tmp_path / "bom.geojson").write_bytes(bom)
    assert len(read_qupath(tmp_path / "list.geojson")) == 20
    assert len(read_qupath(tmp_path / "one.geojson")) == 1
    expected = Counter({None: 10, "Normal": 8, "Sclerotic": 2})
    assert _classes(read_qupath(tmp_path / "bom.geojson")) == expected


def test_a_derived_class_and_a_qupath_02_detection(qupath_dir: Path) -> None:
    data = _load(qupath_dir, "TPATH012")
    first, second = copy.deepcopy(data["features"][:2])
    first["properties"]["classification"] = {"names": ["Sclerotic", "Partially_sclerotic"]}
    second["id"] = "PathDetectionObject"
    second["properties"].pop("objectType")
    a, b = read_qupath([first, second])
    assert a.classification == "Sclerotic: Partially_sclerotic"
    assert b.object_type == "detection"
    table = findings_from_geojson([first])
    assert bool(table.loc[0, "segmental_sclerosis"]) and len(table) == 1


def _extras(polygon: dict[str, Any]) -> list[dict[str, Any]]:
    """What a pathologist's export holds besides glomeruli."""

    def feature(geometry: Any, object_type: str = "annotation", **props: Any) -> dict[str, Any]:
        return {
            "type": "Feature",
            "geometry": geometry,
            "properties": {"objectType": object_type, **props},
        }

    line = {"type": "LineString", "coordinates": [[100, 100], [900, 100]]}
    return [
        feature(line, name="ruler"),
        feature({"type": "Point", "coordinates": [500, 500]}),
        feature({"type": "MultiPoint", "coordinates": [[5, 5], [6, 6]]}, classification="Normal"),
        feature({"type": "Polygon", "coordinates": []}),
        feature(None),
        feature(polygon, "cell", nucleusGeometry=polygon, classification={"name": "Normal"}),
        feature(polygon, "tile"),
        feature(mapping(Point(0, 0).buffer(3000)), "tma_core", name="A-1", isMissing=False),
    ]


def test_lines_points_cells_and_empty_shapes_are_skipped_and_counted(
    qupath_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data = _load(qupath_dir, "TPATH065")
    extras = _extras(data["features"][0]["geometry"])
    data["features"][5:5] = extras
    path = tmp_path / "mixed.geojson"
    path.write_text(json.dumps(data))
    with caplog.at_level(logging.WARNING):
        features = read_qupath(path)
    assert len(features) == 77
    assert "skipped 8 of 85 feature(s) that are not glomerulus outlines" in caplog.text
    assert "1 LineString" in caplog.text and "1 cell" in caplog.text
    table = findings_from_geojson(path)
    assert int(table["global_sclerosis"].sum()) == 65 and len(table) == 77
    assert len(Glomeruli.from_geojson(path, mpp=0.25)) == 77


def test_a_collection_keeps_its_area_and_a_hole_is_not_glomerulus(
    qupath_dir: Path, tmp_path: Path
) -> None:
    data = _load(qupath_dir, "TPATH081")
    polygon = shape(data["features"][0]["geometry"])
    hole = polygon.centroid.buffer(40)
    holed = Polygon(polygon.exterior.coords, [hole.exterior.coords])
    data["features"][0]["geometry"] = {
        "type": "GeometryCollection",
        "geometries": [mapping(holed), {"type": "LineString", "coordinates": [[0, 0], [9, 9]]}],
    }
    path = tmp_path / "holed.geojson"
    path.write_text(json.dumps(data))
    (first, *_) = read_qupath(path)
    assert first.geometry.area == pytest.approx(polygon.area - hole.area)
    glomeruli = Glomeruli.from_geojson(path, mpp=0.25)
    assert glomeruli[0].area_um2 == pytest.approx((polygon.area - hole.area) * 0.0625)


def _refusals(qupath_dir: Path, tmp_path: Path) -> dict[str, tuple[Path, str]]:
    text = (qupath_dir / "TPATH081.geojson").read_text()
    data = _load(qupath_dir, "TPATH081")
    cases: dict[str, tuple[Path, str]] = {}

    def put(name: str, content: str | bytes, message: str) -> None:
        path = tmp_path / f"{name}.geojson"
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
        cases[name] = (path, message)

    def edited(change: Callable[[dict[str, Any]], None]) -> str:
        copy_ = copy.deepcopy(data)
        change(copy_["features"][2])
        return json.dumps(copy_)

    put("empty", "", "is empty")
    put("blank", " \n\t", "is empty")
    put("truncated", text[: len(text) // 2], "ends early")
    put("latin1", text.replace("Normal", "Normal\u00e4").encode("latin-1"), "not UTF-8 text")
    put("garbage", text.replace('"features"', "features", 1), "not valid JSON")
    put("not-geojson", json.dumps({"images": [1, 2]}), "an object, no 'type'")
    put("a-number", "42", "a JSON int")
    points = {"type": "FeatureCollection", "features": _extras(data["features"][0]["geometry"])}
    put("only-points", json.dumps(points), "none of its 8 feature(s) is an area outline")

    def huge(f: dict[str, Any]) -> None:
        f["geometry"]["coordinates"][0][1] = [1e300, 1e300]

    def nan(f: dict[str, Any]) -> None:
        f["geometry"]["coordinates"][0][1] = [float("nan"), 5]

    def mixed_dims(f: dict[str, Any]) -> None:
        f["geometry"]["coordinates"][0][1] = [1, 2, 3]

    put("huge", edited(huge), "feature 2: coordinate 1e+300 lies beyond any slide")
    put("nan", edited(nan), "feature 2: coordinates must be finite")

    def boolean(f: dict[str, Any]) -> None:  # bool is an int in Python: true read as 1
        f["geometry"]["coordinates"][0][1] = [True, 5]

    def text_number(f: dict[str, Any]) -> None:
        f["geometry"]["coordinates"][0][1] = ["40", 5]

    def infinite(f: dict[str, Any]) -> None:  # json.dumps writes the Infinity literal
        f["geometry"]["coordinates"][0][1] = [5, float("-inf")]

    put("inf", edited(infinite), "feature 2: coordinates must be finite")
    put("bool", edited(boolean), "feature 2: coordinates must be numbers, not true")
    put("text", edited(text_number), 'feature 2: coordinates must be numbers, not "40"')
    put("dims", edited(mixed_dims), "feature 2: invalid Polygon (coordinates are not all [x, y]")
    put("nocoords", edited(lambda f: f["geometry"].pop("coordinates")), "has no 'coordinates'")
    put("names", edited(lambda f: f["properties"].update(classification={"names": [1]})), "text")
    folder = tmp_path / "folder.geojson"
    folder.mkdir()
    cases["folder"] = (folder, "is a folder, not a file")
    return cases


def test_broken_exports_are_one_line_naming_the_file(
    qupath_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for name, (path, message) in _refusals(qupath_dir, tmp_path).items():
        with pytest.raises(lnpath.InputError) as info:
            read_qupath(path)
        text = str(info.value)
        assert text.startswith(str(path)) and message in text and "\n" not in text, name
        assert main(["score-findings", str(path)]) == 2, name
        _, err = capsys.readouterr()
        assert message in err and "Traceback" not in err, name


def test_outlines_no_class_knows_are_refused_not_scored_as_none(
    qupath_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = _load(qupath_dir, "TPATH081")
    for f in data["features"]:
        f["properties"]["classification"] = {"name": "Glomerulus?"}
    path = tmp_path / "unknown-class.geojson"
    path.write_text(json.dumps(data))
    assert main(["score-findings", str(path)]) == 2
    _, err = capsys.readouterr()
    assert "none of its 20 glomerulus outline(s) has a class the findings map knows" in err
    assert "Glomerulus?" in err


def test_what_lnpath_writes_follows_qupath_and_reads_back(qupath_dir: Path, tmp_path: Path) -> None:
    source = read_qupath(qupath_dir / "TPATH129.geojson")
    source[0].properties["isLocked"] = True
    # a segmentation outline: level-0 px from a 1 µm/px mask, so float noise in every vertex
    scaled = affinity.scale(source[1].geometry, 1 / 0.2527, 1 / 0.2527, origin=(0, 0))
    source[1].geometry = scaled
    out = write_qupath(source, tmp_path / "out.geojson")
    raw = json.loads(out.read_text())
    assert raw["type"] == "FeatureCollection" and len(raw["features"]) == 81
    for feature in raw["features"]:
        props = feature["properties"]
        assert props["objectType"] == "annotation"
        assert isinstance(props["classification"]["name"], str)
        assert len(props["classification"]["color"]) == 3
        rings = [r for poly in _polygons(feature["geometry"]) for r in poly]
        assert all(ring[0] == ring[-1] and len(ring) >= 4 for ring in rings)
        for x, y in (xy for ring in rings for xy in ring):
            assert round(x, 2) == x and round(y, 2) == y
    assert all(isinstance(v, int) for v in raw["features"][0]["geometry"]["coordinates"][0][0])
    assert raw["features"][0]["properties"]["isLocked"] is True
    back = read_qupath(out)
    assert [f.id for f in back] == [f.id for f in source]
    assert all(f.geometry.is_valid for f in back)
    assert back[1].geometry.symmetric_difference(scaled).area < 1e-3 * scaled.area
    assert all(a.geometry.equals(b.geometry) for a, b in zip(source[2:], back[2:], strict=True))


def test_segment_style_output_reimports_as_the_same_glomeruli(
    qupath_dir: Path, tmp_path: Path
) -> None:
    gloms = Glomeruli.from_geojson(qupath_dir / "TPATH087.geojson", mpp=0.25)
    for object_type in ("detection", "annotation"):
        out = gloms.write_geojson(tmp_path / f"{object_type}.geojson", object_type=object_type)
        raw = json.loads(out.read_text())
        assert {f["properties"]["objectType"] for f in raw["features"]} == {object_type}
        assert all("color" in f["properties"]["classification"] for f in raw["features"])
        back = Glomeruli.from_geojson(out, mpp=0.25)
        assert [g.classification for g in back] == [g.classification for g in gloms]
        assert [g.id for g in back] == [g.id for g in gloms]


def _polygons(geometry: dict[str, Any]) -> list[Any]:
    if geometry["type"] == "Polygon":
        return [geometry["coordinates"]]
    return list(geometry["coordinates"])
