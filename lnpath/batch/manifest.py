"""The batch manifest (one line per slide) and the names of the files in a batch folder.

A manifest CSV names each slide's ``slide_id``, ``path``, ``patient_id`` and ``timepoint`` (and
optionally ``mpp``, ``stain``, ``biopsy_date``, ``glomeruli``); paths resolve against the
manifest's folder. Every problem is one line naming the manifest line.
"""

from __future__ import annotations

import csv
import datetime as dt
import os
from collections import Counter
from pathlib import Path
from typing import Any

import pandas as pd

from lnpath.core.args import as_path
from lnpath.core.errors import InputError, ResultError
from lnpath.core.text import check_patient_id
from lnpath.io.jsonfile import not_a_file
from lnpath.io.tables import check_row_lengths
from lnpath.results.folder import load_result_json

REQUIRED_COLUMNS = ("slide_id", "path", "patient_id", "timepoint")
OPTIONAL_COLUMNS = ("mpp", "stain", "biopsy_date", "glomeruli")
STATUS_FILE = "batch_status.csv"
COHORT_FILE = "cohort.csv"
PAIRS_FILE = "cohort_pairs.csv"
_UNSAFE_ID_CHARS = frozenset("/\\\0")


def read_manifest(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read and validate a manifest CSV.

    Columns ``slide_id, path, patient_id, timepoint`` are required; ``mpp, stain, biopsy_date,
    glomeruli`` (a QuPath GeoJSON of outlines to score instead of segmenting) are optional.
    Relative ``path`` and ``glomeruli`` entries resolve against the manifest's folder, so a
    manifest can travel with its slides. Missing slide files are not an error here: they become
    per-slide failures so that one absent file does not block a cohort.

    Raises:
        InputError: unreadable file, no rows, missing column, empty or duplicate ``slide_id``, a
            ``slide_id`` that is not a safe folder name, or a non-numeric ``mpp``.
    """
    path = as_path(path, "manifest")
    return validate_manifest(_read_manifest_csv(path), str(path), path.absolute().parent)


def _read_manifest_csv(path: Path) -> pd.DataFrame:
    """A manifest CSV as text (empty cells ''); a missing or unreadable file is one line."""
    if not path.is_file():
        raise not_a_file(path, "manifest file")  # a folder is named a folder, not "no such"
    try:
        # one field too many would shift a row's values a column right; a short row leaves its
        # optional trailing cells empty, as a hand-written manifest may
        check_row_lengths(path, short_ok=True)
        return pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, csv.Error) as exc:
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"{path}: not a readable CSV manifest ({detail})") from None


def validate_manifest(table: pd.DataFrame, where: str, base: Path) -> pd.DataFrame:
    table = table.rename(columns=lambda c: str(c).strip())
    missing = [c for c in REQUIRED_COLUMNS if c not in table.columns]
    if missing:
        raise InputError(
            f"{where}: missing column(s) {', '.join(missing)} "
            f"(a manifest needs {', '.join(REQUIRED_COLUMNS)})"
        )
    if table.empty:  # a batch of nothing "succeeds" and writes an empty status table
        raise InputError(f"{where}: no slides (the manifest has a header but no rows)")
    cols = {c: _column(table, c) for c in (*REQUIRED_COLUMNS, *OPTIONAL_COLUMNS)}
    if "biopsy_date" in table.columns:  # as score_slide records it, so every reader agrees
        cols["biopsy_date"] = [iso_date(v) for v in table["biopsy_date"]]
    for column in REQUIRED_COLUMNS:  # a blank patient would pair unrelated biopsies
        empty = [str(i + 2) for i, v in enumerate(cols[column]) if v is None]
        if empty:
            raise InputError(f"{where}: empty {column} on line(s) {', '.join(empty[:5])}")
    for line, patient in enumerate(cols["patient_id"], start=2):
        check_patient_id(str(patient), f"{where}: line {line}")
    unsafe = [s for s in cols["slide_id"] if _unsafe_id(str(s))]
    if unsafe:
        raise InputError(
            f"{where}: slide_id {unsafe[0]!r} is not a safe folder name "
            "(no path separators, control characters or leading dot)"
        )
    long = [
        s for s in cols["slide_id"] if len(str(s).encode("utf-8", "surrogatepass")) > MAX_ID_BYTES
    ]
    if long:
        raise InputError(
            f"{where}: slide_id {long[0][:40]!r}… is too long "
            f"({len(str(long[0]).encode('utf-8', 'surrogatepass'))} bytes; a slide_id names a "
            f"folder and may have at most {MAX_ID_BYTES} bytes)"
        )
    counts = Counter(cols["slide_id"])
    dupes = sorted(s for s, n in counts.items() if n > 1)
    if dupes:
        raise InputError(f"{where}: duplicate slide_id {', '.join(map(repr, dupes[:5]))}")
    cols["path"] = [str(_resolve(p, base)) for p in cols["path"]]
    cols["mpp"] = [_float(v, where, i + 2) for i, v in enumerate(cols["mpp"])]
    cols["stain"] = [v or "PAS" for v in cols["stain"]]
    cols["glomeruli"] = [None if g is None else str(_resolve(g, base)) for g in cols["glomeruli"]]
    return pd.DataFrame({c: pd.Series(v, dtype=object) for c, v in cols.items()})


def _column(table: pd.DataFrame, column: str) -> list[Any]:
    if column not in table.columns:
        return [None] * len(table)
    return [_text(v) for v in table[column]]


def manifest_records(table: pd.DataFrame) -> list[dict[str, Any]]:
    return [{str(k): v for k, v in row.items()} for row in table.to_dict("records")]


def iso_date(value: Any) -> str | None:
    """A biopsy date as the ``YYYY-MM-DD`` that result.json records.

    ``20240102`` or a pandas Timestamp (``read_csv(parse_dates=...)``) would otherwise differ
    from the stored date: a re-run would call the finished slide stale and the cohort would call
    it tampered. Text that is no date is kept as written; scoring then refuses that slide alone.
    """
    if value is pd.NaT:  # a datetime subclass without a time
        return None
    if isinstance(value, dt.datetime) and value.time() == dt.time(0) and value.tzinfo is None:
        return value.date().isoformat()
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        return value.isoformat()
    text = _text(value)
    if text is None:
        return None
    try:
        return dt.date.fromisoformat(text).isoformat()
    except ValueError:
        return text


def _text(value: Any) -> str | None:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return None
    text = str(value).strip()
    return text or None


MAX_ID_BYTES = 200
"""Longest slide_id in bytes: file names hold 255, and ``.<id>.XXXXXXXX.tmp``, ``.<id>.lock``
and ``<id>.superseded-<time>`` need room beside it."""


def _unsafe_id(slide_id: str) -> bool:
    return (
        slide_id.startswith(".")
        or any(c in _UNSAFE_ID_CHARS or ord(c) < 32 for c in slide_id)
        or slide_id in {STATUS_FILE, COHORT_FILE, PAIRS_FILE, "cohort.parquet"}
    )


def _resolve(value: str, base: Path) -> Path:
    path = Path(value).expanduser()
    return Path(os.path.abspath(path if path.is_absolute() else base / path))


def _float(value: str | None, where: str, line: int) -> float | None:
    if value is None:
        return None
    try:
        number = float(value)
    except ValueError:
        raise InputError(f"{where}: line {line}: mpp {value!r} is not a number") from None
    if not number > 0:
        raise InputError(f"{where}: line {line}: mpp {value!r} must be positive")
    return number


def read_clinical_manifest(manifest: str | os.PathLike[str] | None) -> pd.DataFrame | None:
    """The manifest as text (empty cells ''), checked for the columns the cross-tab needs."""
    if manifest is None:
        return None
    path = Path(manifest)
    table = _read_manifest_csv(path)
    table = table.rename(columns=lambda c: str(c).strip())
    missing = [c for c in ("slide_id", "clinical_response") if c not in table]
    if missing:
        raise InputError(
            f"{path}: no {' or '.join(missing)} column (the cross-tab needs slide_id and "
            "clinical_response)"
        )
    return table.map(lambda v: str(v).strip())


def clinical_responses(
    manifest: str | os.PathLike[str] | None, table: pd.DataFrame | None, status: pd.DataFrame
) -> dict[str, str]:
    """slide_id -> clinical_response from the manifest (empty cells left out).

    Each row must name a slide of the batch, once, with the batch's patient and a real date:
    a typo would otherwise drop that response from the cross-tab, or pair it with another
    patient's biopsy, without a word.

    Raises:
        InputError: an empty or duplicate slide_id, one the batch does not hold, a patient_id
            that differs from the batch's, or a biopsy_date that is not a YYYY-MM-DD date.
    """
    if table is None:
        return {}
    where = str(manifest)
    batch = {str(r["slide_id"]): r for r in manifest_records(status)}
    seen: dict[str, int] = {}
    out: dict[str, str] = {}
    for i, row in enumerate(manifest_records(table)):
        line = i + 2
        slide = row["slide_id"]
        if not slide:
            raise InputError(f"{where}: line {line}: empty slide_id")
        if slide in seen:
            raise InputError(
                f"{where}: line {line}: duplicate slide_id {slide!r} (also line {seen[slide]})"
            )
        seen[slide] = line
        if slide not in batch:
            raise InputError(
                f"{where}: line {line}: slide_id {slide!r} is not in this batch folder's "
                "batch_status.csv (another batch's manifest, or a typo?)"
            )
        patient = row.get("patient_id") or ""
        known = str(batch[slide].get("patient_id") or "")
        if patient and known and patient != known:
            raise InputError(
                f"{where}: line {line}: slide_id {slide!r} has patient_id {patient!r} here but "
                f"{known!r} in the batch"
            )
        date = row.get("biopsy_date") or ""
        if date:
            try:
                dt.date.fromisoformat(date)
            except ValueError:
                raise InputError(
                    f"{where}: line {line}: biopsy_date {date!r} is not a date (YYYY-MM-DD)"
                ) from None
        if row["clinical_response"]:
            out[slide] = row["clinical_response"]
    return out


def shard_rows(table: pd.DataFrame, shard: tuple[int, int] | None) -> pd.DataFrame:
    """Rows ``i::n`` of the manifest, so array task ``i`` of ``n`` takes every n-th slide.

    Striding (not blocks) keeps shards balanced when a manifest is sorted by size or site.

    Raises:
        InputError: ``n < 1`` or ``i`` outside ``0..n-1``.
    """
    if shard is None:
        return table
    pair = isinstance(shard, tuple | list) and len(shard) == 2
    if not pair or not all(isinstance(v, int) and not isinstance(v, bool) for v in shard):
        raise InputError(f"shard {shard!r}: expected a pair (I, N) of whole numbers")
    index, count = shard
    if count < 1 or not 0 <= index < count:
        raise InputError(f"shard {index}/{count}: expected I/N with 0 <= I < N")
    return table.iloc[index::count]


def read_result(folder: Path) -> dict[str, Any] | None:
    """The folder's result.json, or None where there is no readable lnpath result."""
    try:
        return load_result_json(folder)
    except ResultError:
        return None
