"""Exports that know where they came from, and a three-way merge for stale ones.

Every ``findings.csv`` and ``glomeruli.geojson`` lnpath writes carries the revision it shows and a
content sha256 of that revision's glomeruli (:func:`export_stamp`; in QuPath the per-feature
``lnpath revision`` measurement survives a re-export). A file exported from an older revision must
not silently undo what was decided since (a QuPath export of revision 1 carries revision 1's
``call:`` measurements, which would revert revision 2's calls): :func:`check_stamp` refuses it,
and :func:`merge_stale` applies only what the file changed relative to its own revision, refusing
(or, when told, overriding) edits to anything changed since.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from lnpath.core.errors import InputError, ResultError
from lnpath.core.findings import LESION_EXTENT, LESIONS, OPTIONAL_FLAGS, is_missing
from lnpath.results.edits import Edit, _add, _apply_outline, as_text, same_value

MERGE_POLICIES = ("keep-current", "take-export")
_COLUMNS = (*LESIONS, *OPTIONAL_FLAGS, LESION_EXTENT, "exclusion", "exclusion_reason")


def check_stamp(
    path: Path,
    stamp: Mapping[str, Any] | None,
    result: Mapping[str, Any],
    folder: Path,
    last_change: str,
    merge: str | None,
) -> int | None:
    """The older revision a stale export came from (to merge against), or None if current.

    Raises:
        ResultError: stale with no merge policy, from a later revision, or from another copy.
        InputError: an unknown merge policy.
    """
    if merge is not None and merge not in MERGE_POLICIES:
        raise InputError(f"merge: {merge!r} is not one of {', '.join(MERGE_POLICIES)}")
    if stamp is None:
        return None
    current = int(result["revision"])
    base = int(stamp["revision"])
    if base > current:
        raise ResultError(
            f"{path}: exported from revision {base}, but this result is at revision {current}; "
            "is it from another copy of the result?"
        )
    own = (result.get("export_stamp") or {}) if base == current else _snapshot_stamp(folder, base)
    sha = stamp.get("content_sha256")
    if sha and own.get("content_sha256") and sha != own["content_sha256"]:
        raise ResultError(
            f"{path}: its revision {base} stamp does not match revision {base} of this result; "
            "is it from another copy of the result?"
        )
    if base == current:
        return None
    if merge is None:
        raise ResultError(
            f"{path}: exported from revision {base}, but the result is now at revision {current} "
            f"({last_change}); applying it would undo those changes. Export again, or merge: "
            "--merge keep-current (apply only what the file changed; keep later changes) or "
            "--merge take-export (the file wins where both changed)"
        )
    return base


def _snapshot_stamp(folder: Path, revision: int) -> dict[str, Any]:
    path = folder / "revisions" / f"r{revision:03d}" / "result.json"
    try:
        return dict(json.loads(path.read_text(encoding="utf-8")).get("export_stamp") or {})
    except (OSError, ValueError):
        raise ResultError(f"{path}: revision {revision} is not in the result's history") from None


def _row(table: pd.DataFrame, gid: int) -> dict[str, Any] | None:
    rows = table[table["glomerulus_id"] == gid]
    return None if rows.empty else {str(k): v for k, v in rows.iloc[0].items()}


def _value(row: Mapping[str, Any] | None, column: str) -> Any:
    value = None if row is None else row.get(column)
    return None if is_missing(value) else value


def _same_row(a: Mapping[str, Any] | None, b: Mapping[str, Any] | None) -> bool:
    return all(same_value(_value(a, c), _value(b, c)) for c in _COLUMNS)


def merge_stale(
    edit: Edit, base: Edit, revision: int, apply: Callable[[Edit], None], policy: str
) -> dict[str, Any]:
    """Apply to ``edit`` (the current revision) what an export changed relative to ``base``
    (the content of ``revision``, the one the export was made from).

    ``apply`` replays the export on a copy of the base revision, which gives exactly the export's
    own edits. A cell, outline or deletion the current revision also changed since is a conflict:
    ``keep-current`` keeps the current value and lists it as refused, ``take-export`` takes the
    export's and lists it as overridden.

    Returns:
        ``{"base_revision", "policy", "applied": [...], "refused": [...]}`` for result.json.
    """
    theirs = copy.deepcopy(base)
    theirs.changes = []
    apply(theirs)
    source = f"merge:{policy}"
    start = len(edit.changes)
    refused: list[dict[str, Any]] = []

    def conflict(gid: int, field: str, export: Any, current: Any) -> bool:
        take = policy == "take-export"
        entry = {
            "glomerulus": gid,
            "field": field,
            "export": as_text(export),
            "current": as_text(current),
            "resolution": "export" if take else "current",
        }
        refused.append(entry)
        return take

    for gid in sorted(base.polygons):
        old, new, now = _row(base.table, gid), _row(theirs.table, gid), _row(edit.table, gid)
        if now is None:
            if new is not None and not _same_row(old, new):
                refused.append(
                    {
                        "glomerulus": gid,
                        "field": "glomerulus",
                        "export": "edited",
                        "current": "deleted",
                        "resolution": "current",
                    }
                )
            continue
        if new is None:
            if _same_row(old, now) or conflict(gid, "glomerulus", "deleted", "present"):
                edit.log(gid, "glomerulus", "present", "deleted", source)
                edit.table = edit.table[edit.table["glomerulus_id"] != gid].reset_index(drop=True)
                del edit.polygons[gid]
            continue
        for column in _COLUMNS:
            was, wants, has = _value(old, column), _value(new, column), _value(now, column)
            if same_value(was, wants) or same_value(has, wants):
                continue
            if same_value(has, was) or conflict(gid, column.replace("_", " "), wants, has):
                edit.set(gid, column, wants, source)
        drawn, mine = theirs.polygons[gid], edit.polygons[gid]
        redrawn = not drawn.equals(base.polygons[gid]) and not drawn.equals(mine)
        if redrawn and (
            mine.equals(base.polygons[gid]) or conflict(gid, "outline", "redrawn", "redrawn")
        ):
            _apply_outline(edit, gid, drawn, source)
    next_id = int(max(edit.table["glomerulus_id"], default=0)) + 1
    for gid in sorted(set(theirs.polygons) - set(base.polygons)):
        values = {
            k: v
            for k, v in (_row(theirs.table, gid) or {}).items()
            if k in LESIONS and not is_missing(v)
        }
        _add(edit, next_id, theirs.polygons[gid], values, source)
        next_id += 1
    applied = [
        {k: c[k] for k in ("glomerulus", "field", "before", "after")} for c in edit.changes[start:]
    ]
    return {"base_revision": revision, "policy": policy, "applied": applied, "refused": refused}
