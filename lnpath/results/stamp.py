"""The revision stamp on every findings.csv and glomeruli.geojson lnpath writes.

A file a pathologist edits elsewhere (QuPath, a spreadsheet) comes back long after it was exported;
the stamp says which revision it shows, so review can tell a stale export from a current one
(:mod:`lnpath.results.merge`). The CSV carries it in two columns on every row (a copied row keeps
it), the GeoJSON as a top-level ``lnpath`` member and, because QuPath re-exports only an object's
measurements, as the ``lnpath revision`` measurement of every feature.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

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
    """The revision stamp an export carries (None: not written by lnpath, or stripped)."""
    try:
        if path.suffix.lower() in (".geojson", ".json"):
            data = json.loads(path.read_text(encoding="utf-8"))
            head = data.get("lnpath") if isinstance(data, dict) else None
            if isinstance(head, dict) and "revision" in head:
                return {
                    "revision": int(head["revision"]),
                    "content_sha256": head.get("content_sha256"),
                }
            features = data.get("features", []) if isinstance(data, dict) else []
            found = {
                int(m[STAMP_MEASUREMENT])
                for f in features
                if isinstance(m := (f.get("properties") or {}).get("measurements"), dict)
                and isinstance(m.get(STAMP_MEASUREMENT), int | float)
            }
            return {"revision": min(found), "content_sha256": None} if found else None
        table = pd.read_csv(
            path, dtype=str, keep_default_na=False, usecols=lambda c: c in STAMP_COLUMNS
        )
    except (OSError, ValueError, UnicodeDecodeError):
        return None  # the edit reader names what is wrong with the file
    if STAMP_REVISION not in table or table.empty:
        return None
    revisions = {int(float(v)) for v in table[STAMP_REVISION] if v.strip()}
    if not revisions:
        return None
    shas = set(table[STAMP_SHA]) if STAMP_SHA in table else set()
    return {"revision": min(revisions), "content_sha256": shas.pop() if len(shas) == 1 else None}
