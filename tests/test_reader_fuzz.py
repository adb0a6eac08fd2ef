"""The file readers take anything: an LnpathError with one line, or a result (issue #20).

Hypothesis writes GeoJSON, CSV, JSON and YAML files of arbitrary structure (NaN, infinities,
wrong types, odd nesting, broken syntax) and hands them to the public readers.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hypothesis.strategies as st
from hypothesis import HealthCheck, given, settings

import lnpath

SETTINGS = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=25,
)
coordinates = st.recursive(
    st.floats(allow_nan=True, allow_infinity=True) | st.integers(-5, 2000),
    lambda inner: st.lists(inner, max_size=6),
    max_leaves=40,
)
geometry = st.fixed_dictionaries(
    {
        "type": st.sampled_from(["Polygon", "MultiPolygon", "Point", "LineString", "Nonsense", 3]),
        "coordinates": coordinates,
    }
)
feature = st.fixed_dictionaries(
    {
        "type": st.sampled_from(["Feature", "feature", None]),
        "geometry": geometry | json_values,
        "properties": st.fixed_dictionaries(
            {},
            optional={
                "objectType": st.sampled_from(["annotation", "detection", 7]),
                "classification": st.fixed_dictionaries(
                    {"name": st.sampled_from(["Normal", "Sclerotic", "Global sclerosis", ""])},
                    optional={"color": json_values},
                )
                | json_values,
                "measurements": st.dictionaries(
                    st.sampled_from(["call: global_sclerosis", "area_um2", "m_area_px", "x"]),
                    json_values,
                    max_size=3,
                )
                | json_values,
                "lnpath_glomerulus": json_values,
            },
        ),
    }
)
geojson_documents = st.one_of(
    st.fixed_dictionaries(
        {"type": st.just("FeatureCollection"), "features": st.lists(feature, max_size=4)}
    ),
    st.lists(feature, max_size=4),
    feature,
    json_values,
)


def _dump(value: Any) -> str:
    return json.dumps(value, allow_nan=True)


def _check(read: Callable[[Path], Any], text: str | bytes, suffix: str) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"input{suffix}"
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(text, encoding="utf-8", errors="surrogatepass")
        try:
            read(path)
        except lnpath.LnpathError as exc:
            message = str(exc)
            assert message.strip() and "\n" not in message.strip(), message


def _score_geojson(path: Path) -> None:
    lnpath.score_findings(lnpath.findings_from_geojson(path))


def _score_table(path: Path) -> None:
    lnpath.score_findings(lnpath.read_findings(path))


@SETTINGS
@given(geojson_documents)
def test_read_qupath_fuzz(document: Any) -> None:
    _check(lnpath.read_qupath, _dump(document), ".geojson")


@SETTINGS
@given(geojson_documents)
def test_findings_from_geojson_fuzz(document: Any) -> None:
    _check(_score_geojson, _dump(document), ".geojson")


@SETTINGS
@given(st.binary(max_size=300))
def test_geojson_bytes_fuzz(data: bytes) -> None:
    _check(lnpath.read_qupath, data, ".geojson")


CSV_COLUMNS = [
    "glomerulus_id",
    "global_sclerosis",
    "cellular_crescent",
    "fibrinoid_necrosis",
    "endocapillary_hypercellularity",
    "m_area_px",
    "area_um2",
    "feature_id",
    "exclusion",
    "unknown",
]
cells = st.one_of(
    st.sampled_from(["", "true", "false", "1", "0", "nan", "inf", "-1", "yes", "NA", '"', "1e400"]),
    st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=6),
)


@st.composite
def csv_documents(draw: st.DrawFn) -> str:
    columns = draw(st.lists(st.sampled_from(CSV_COLUMNS), min_size=0, max_size=6))
    rows = draw(st.lists(st.lists(cells, min_size=0, max_size=len(columns) + 1), max_size=5))
    sep = draw(st.sampled_from([",", ";", "\t"]))
    return "\n".join([sep.join(columns), *(sep.join(r) for r in rows)]) + "\n"


@SETTINGS
@given(csv_documents())
def test_read_findings_csv_fuzz(text: str) -> None:
    _check(_score_table, text, ".csv")


@SETTINGS
@given(csv_documents())
def test_read_manifest_fuzz(text: str) -> None:
    text = text.replace("glomerulus_id", "slide_id").replace("m_area_px", "path")
    text = text.replace("area_um2", "patient_id").replace("feature_id", "timepoint")
    _check(lnpath.read_manifest, text, ".csv")


config_keys = st.sampled_from(
    ["adequacy", "min_glomeruli", "activity", "chronicity", "thresholds", "version", "x", "classes"]
)
config_documents = st.recursive(
    scalars,
    lambda inner: st.dictionaries(config_keys, inner, max_size=4) | st.lists(inner, max_size=3),
    max_leaves=20,
)


@SETTINGS
@given(config_documents)
def test_load_config_json_fuzz(document: Any) -> None:
    _check(lnpath.load_config, _dump(document), ".json")


@SETTINGS
@given(
    config_documents,
    st.sampled_from(["", "!!python/object:os.system ['true']\n", ":\n- [", "a: *b\n"]),
)
def test_load_config_yaml_fuzz(document: Any, junk: str) -> None:
    import yaml

    _check(lnpath.load_config, yaml.safe_dump(document) + junk, ".yaml")
