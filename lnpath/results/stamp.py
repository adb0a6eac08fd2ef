"""The revision stamp on every findings.csv and glomeruli.geojson lnpath writes.

A file a pathologist edits elsewhere (QuPath, a spreadsheet) comes back long after it was exported;
the stamp says which revision it shows, so review can tell a stale export from a current one
(:mod:`lnpath.results.merge`). The CSV carries it in two columns on every row (a copied row keeps
it), the GeoJSON as a top-level ``lnpath`` member and, because QuPath re-exports only an object's
measurements, as the ``lnpath revision`` measurement of every feature.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from lnpath.core.errors import InputError
from lnpath.io.tables import check_row_lengths

STAMP_REVISION = "lnpath_revision"
STAMP_SHA = "lnpath_content_sha256"
STAMP_COLUMNS = (STAMP_REVISION, STAMP_SHA)
STAMP_MEASUREMENT = "lnpath revision"


def export_stamp(findings: pd.DataFrame, polygons: Mapping[int, Any], revision: int) -> dict:
    """``{"revision", "content_sha256"}``: the revision and a hash of its glomeruli (table and
    outlines), written into every export so a returning file names the revision it shows."""
    table = findings.drop(columns=[c for c in STAMP_COLUMNS if c in findings])
    digest = hashlib.sha256(table.to_csv(index=False).encode())
    for gid in sorted(polygons):
        digest.update(f"{gid}:".encode() + polygons[gid].wkb)
    return {"revision": int(revision), "content_sha256": digest.hexdigest()}


def stamped(findings: pd.DataFrame, stamp: Mapping[str, Any]) -> pd.DataFrame:
    """The findings table with the stamp columns (every row, so any row copied carries it)."""
    table = findings.drop(columns=[c for c in STAMP_COLUMNS if c in findings])
    table[STAMP_REVISION] = stamp["revision"]
    table[STAMP_SHA] = stamp["content_sha256"]
    return table


def read_stamp(path: Path) -> dict[str, Any] | None:
    """The revision stamp an export carries (None: not written by lnpath, or stripped).

    Raises:
        InputError: a stamp that names no revision, or a table row of the wrong length: read on,
            either would apply the export as the wrong revision's, or crash.
    """
    if path.suffix.lower() in (".geojson", ".json"):
        return _geojson_stamp(path)
    try:
        check_row_lengths(path)
        table = pd.read_csv(
            path, dtype=str, keep_default_na=False, usecols=lambda c: c in STAMP_COLUMNS
        )
    except (OSError, ValueError, csv.Error):
        return None  # the edit reader names what is wrong with the file
    if STAMP_REVISION not in table or table.empty:
        return None
    revisions = {_revision(v, path, STAMP_REVISION) for v in table[STAMP_REVISION] if v.strip()}
    if not revisions:
        return None
    shas = set(table[STAMP_SHA]) if STAMP_SHA in table else set()
    return {"revision": min(revisions), "content_sha256": shas.pop() if len(shas) == 1 else None}


def _geojson_stamp(path: Path) -> dict[str, Any] | None:
    """The top-level stamp, else the lowest ``lnpath revision`` measurement (what QuPath keeps).

    Only the stamp is read here: a malformed feature is left for the GeoJSON reader to name.
    """
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # the edit reader names what is wrong with the file
    if not isinstance(data, dict):
        return None
    head = data.get("lnpath")
    if isinstance(head, dict) and "revision" in head:
        return {
            "revision": _revision(head["revision"], path, "lnpath stamp revision"),
            "content_sha256": head.get("content_sha256"),
        }
    features = data.get("features")
    found = {
        _revision(value, path, f"feature {i} measurement {STAMP_MEASUREMENT!r}")
        for i, f in enumerate(features if isinstance(features, list) else [])
        if isinstance(f, dict)
        and isinstance(props := f.get("properties"), dict)
        and isinstance(m := props.get("measurements"), dict)
        and (value := m.get(STAMP_MEASUREMENT)) is not None
        and not (isinstance(value, float) and math.isnan(value))  # QuPath's "no value"
    }
    return {"revision": min(found), "content_sha256": None} if found else None


def _revision(value: Any, path: Path, where: str) -> int:
    """A stamp's revision number; anything else was edited by hand and would misplace the edit."""
    number: float | None = None
    if isinstance(value, int | float) and not isinstance(value, bool):
        number = float(value)
    elif isinstance(value, str):
        with contextlib.suppress(ValueError):
            number = float(value)
    if number is None or not math.isfinite(number) or number < 1 or number != int(number):
        shown = json.dumps(value, ensure_ascii=False, default=str)
        shown = shown if len(shown) <= 40 else shown[:40] + "…"
        raise InputError(
            f"{path}: {where} {shown} is not a revision number (edited by hand?); "
            "export the result again, or remove the stamp to apply the file as it is"
        )
    return int(number)
