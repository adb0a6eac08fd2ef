"""Findings tables from files: CSV/TSV/Parquet spreadsheets and QuPath GeoJSON.

The table's rules live in :mod:`lnpath.core.findings`; this module only turns a file into the
DataFrame those rules validate, so that the scoring floor never touches a file.
"""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from lnpath.core.errors import InputError
from lnpath.core.findings import (
    _BOOLEAN_COLUMNS,
    DEFAULT_CLASS_MAP,
    LESIONS,
    is_missing,
)
from lnpath.core.findings import read_findings as validate_findings
from lnpath.io.jsonfile import not_a_file
from lnpath.io.qupath import QuPathFeature, read_qupath

logger = logging.getLogger(__name__)

GEOJSON_SUFFIXES = (".geojson", ".json")


def read_findings(
    source: pd.DataFrame | Sequence[Mapping[str, Any]] | str | os.PathLike[str],
) -> pd.DataFrame:
    """Read and validate a findings table from a DataFrame, row dicts, a table file or GeoJSON.

    ``.csv``/``.tsv``/``.parquet`` are read as tables; ``.geojson``/``.json`` as QuPath
    annotations (:func:`findings_from_geojson`). See :func:`lnpath.core.findings.read_findings`
    for the rules every table is held to.

    Raises:
        InputError: the file is missing, unreadable or of another kind, or the table is malformed.
    """
    if not isinstance(source, str | os.PathLike):
        return validate_findings(source)
    path = Path(source)
    if path.suffix.lower() in GEOJSON_SUFFIXES:
        return findings_from_geojson(path)
    where, frame = _load(path)
    return validate_findings(frame, where)


def findings_from_geojson(
    source: str | os.PathLike[str] | Mapping[str, Any] | list[Any],
    class_map: Mapping[str, Mapping[str, bool]] | None = None,
) -> pd.DataFrame:
    """Turn QuPath glomerulus annotations into a findings table.

    Each feature is one glomerulus. lnpath's own GeoJSON carries every call as a ``call: <lesion>``
    measurement, which is read as written (with the default map). Otherwise its class sets the
    lesions ``class_map`` lists for it; every
    other lesion is ``<NA>`` (not assessed), because a QuPath class such as ``Sclerotic`` says
    nothing about crescents or necrosis. Features with no class, or a class not in the map, are
    **excluded, not guessed**: they are logged as a warning and listed in
    ``table.attrs["excluded"]`` (``[{"feature": index, "id": ..., "classification": ...}]``).

    ``glomerulus_id`` is the feature's position in the file (0-based, as QuPath lists objects),
    so a reviewer can find it. ``m_area_px`` carries the polygon area in level-0 px².

    Args:
        source: a QuPath GeoJSON path, FeatureCollection dict or list of features.
        class_map: QuPath class name -> ``{lesion: bool}``; default :data:`DEFAULT_CLASS_MAP`.

    Returns:
        The validated findings table with ``source`` = ``"qupath:<file name>"``.

    Raises:
        InputError: the GeoJSON is malformed or the class map names an unknown lesion.
    """
    mapping = DEFAULT_CLASS_MAP if class_map is None else class_map
    nested = isinstance(mapping, Mapping) and all(isinstance(v, Mapping) for v in mapping.values())
    if not nested:
        raise InputError("class_map: expected {QuPath class name: {lesion: true/false}}")
    for cls, asserted in mapping.items():
        bad = [k for k in asserted if k not in _BOOLEAN_COLUMNS]
        if bad:
            raise InputError(f"class_map[{cls!r}]: unknown lesion(s) {', '.join(bad)}")
    where = str(source) if isinstance(source, str | os.PathLike) else "GeoJSON"
    label = f"qupath:{Path(source).name}" if isinstance(source, str | os.PathLike) else "qupath"
    features = read_qupath(source)
    rows: list[dict[str, Any]] = []
    excluded: list[dict[str, Any]] = []
    for index, feature in enumerate(features):
        values: Mapping[str, Any] | None = measured_calls(feature) if class_map is None else None
        if not values:
            values = _mapped(mapping, feature.classification)
        if values is None:
            excluded.append(_excluded(index, feature))
            continue
        row: dict[str, Any] = {"glomerulus_id": index}
        row.update({lesion: pd.NA for lesion in LESIONS})
        row.update(values)
        row["source"] = label
        row["m_area_px"] = float(feature.geometry.area)
        rows.append(row)
    if excluded:
        classes = sorted({e["classification"] or "unclassified" for e in excluded})
        logger.warning(
            "%s: %d of %d feature(s) excluded, class not mapped to findings: %s",
            where,
            len(excluded),
            len(features),
            ", ".join(classes),
        )
    if features and not rows:  # scoring "no glomeruli" would hide every outline drawn
        found = ", ".join(sorted({e["classification"] or "unclassified" for e in excluded}))
        raise InputError(
            f"{where}: none of its {len(features)} glomerulus outline(s) has a class the findings "
            f"map knows (found: {found}; known: {', '.join(mapping)}); classify them in QuPath "
            "or give a class map"
        )
    columns = ["glomerulus_id", *LESIONS, "source", "m_area_px"]
    table = validate_findings(pd.DataFrame(rows, columns=columns), where)
    table.attrs["excluded"] = excluded
    table.attrs["source_file"] = where
    return table


def measured_calls(feature: QuPathFeature) -> dict[str, Any]:
    """The ``call: <lesion>`` measurements lnpath writes into its own GeoJSON: True / False, None
    for not assessed (NaN or null); empty when the feature has none (not lnpath's)."""
    out: dict[str, bool | None] = {}
    for lesion in LESIONS:
        key = f"call: {lesion}"
        if key in feature.measurements:
            value = feature.measurements[key]
            if is_missing(value):
                out[lesion] = None
                continue
            try:
                out[lesion] = bool(float(value) >= 0.5)
            except (TypeError, ValueError):
                raise InputError(
                    f"feature {feature.name or feature.id}: measurement {key!r} = {value!r} "
                    "is not a number (1 present, 0 absent)"
                ) from None
    return out


def _mapped(
    mapping: Mapping[str, Mapping[str, bool]], name: str | None
) -> Mapping[str, bool] | None:
    """What a class asserts; a derived QuPath class (``Sclerotic: Partially_sclerotic``) asserts
    what each of its parts does, when the map knows every part."""
    if not name:
        return None
    if name in mapping:
        return mapping[name]
    parts = [p.strip() for p in name.split(":")]
    if len(parts) < 2 or not all(p in mapping for p in parts):
        return None
    merged: dict[str, bool] = {}
    for part in parts:
        merged.update(mapping[part])
    return merged


def _excluded(index: int, feature: QuPathFeature) -> dict[str, Any]:
    return {"feature": index, "id": feature.id, "classification": feature.classification}


def _load(path: Path) -> tuple[str, pd.DataFrame]:
    if not path.is_file():
        raise not_a_file(path, "findings file")
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            return str(path), pd.read_parquet(path)
        if suffix in (".csv", ".tsv", ".txt"):
            sep = "\t" if suffix == ".tsv" else ","
            check_row_lengths(path, sep)
            return str(path), pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False)
    except (ValueError, OSError, UnicodeDecodeError, csv.Error) as exc:
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(f"{path}: cannot read findings table ({detail})") from None
    raise InputError(
        f"{path}: findings must be .csv, .tsv, .parquet or QuPath .geojson (got {suffix!r})"
    )


def check_row_lengths(path: Path, sep: str = ",", short_ok: bool = False) -> None:
    """Refuse a row whose field count is not the header's. pandas would fill a short row's missing
    cells as "not assessed", so a cut-short line (a truncated copy, a stray edit) would score
    silently; and one field too many in the first row makes pandas take the first column as the
    index, every value then sitting under the next column's name. ``short_ok`` lets a short row
    through, for tables whose trailing columns are optional and checked for emptiness later.

    Raises:
        InputError: the line, its field count and the header's.
        UnicodeDecodeError, csv.Error: the file is no text table (the caller names it).
    """
    with path.open(newline="", encoding="utf-8-sig") as handle:
        rows = csv.reader(handle, delimiter=sep)
        header = next(rows, None)
        if header is None:
            return
        if sep == "," and len(header) == 1 and header[0].count(";") > 0:
            raise InputError(
                f"{path}: its columns are separated by ';', not ',' (a spreadsheet's regional "
                "setting); save it as comma-separated CSV"
            )
        for row in rows:
            if row and len(row) < len(header) and not short_ok:
                raise InputError(
                    f"{path}: line {rows.line_num} has {len(row)} field(s) but the header has "
                    f"{len(header)}; complete the row (an empty field is fine) or remove it"
                )
            if len(row) > len(header):
                raise InputError(
                    f"{path}: line {rows.line_num} has {len(row)} fields but the header has "
                    f"{len(header)} (a stray {sep!r}, or a column without a name?); fix that line"
                )
