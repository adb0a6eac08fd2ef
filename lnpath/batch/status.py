"""``batch_status.csv``: one row per slide of a batch folder, merged in as each slide finishes."""

from __future__ import annotations

import contextlib
import csv
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd

from lnpath.batch.manifest import STATUS_FILE
from lnpath.core.args import as_path
from lnpath.core.errors import InputError, OutputError
from lnpath.io.atomic import atomic_path
from lnpath.io.tables import check_row_lengths

STATUS_COLUMNS = (
    "slide_id",
    "patient_id",
    "timepoint",
    "biopsy_date",
    "path",
    "outcome",
    "error",
    "seconds",
    "worker",
    "result",
)


def status_rows(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """A status table of record dicts, missing values as None."""
    status = pd.DataFrame(rows, columns=list(STATUS_COLUMNS)).astype(object)
    return status.where(status.notna(), None)


@contextlib.contextmanager
def _locked(out: Path) -> Iterator[None]:
    """Serialise status updates from concurrent array tasks writing into one batch folder.

    The same ``filelock`` mechanism as the result-folder lock (:mod:`lnpath.results.integrity`),
    so it also works where ``fcntl`` does not (Windows). A merge takes milliseconds: wait for it.

    Raises:
        OutputError: the lock file cannot be created in ``out``.
    """
    from filelock import FileLock

    lock = FileLock(str(out / ".batch_status.lock"))
    try:
        lock.acquire()
    except OSError as exc:
        raise OutputError(
            f"{out / STATUS_FILE}: cannot write ({exc.strerror or exc})", exc.strerror or ""
        ) from None
    try:
        yield
    finally:
        lock.release()


def merge_status(out: Path, status: pd.DataFrame) -> None:
    """Merge ``status`` rows into ``out/batch_status.csv`` (rows stay in place), atomically."""
    target = out / STATUS_FILE
    with _locked(out):
        if target.is_file():
            old = _read(target)
            order = [
                *old["slide_id"],
                *(s for s in status["slide_id"] if s not in set(old["slide_id"])),
            ]
            ours = set(status["slide_id"])
            in_turn = iter(status["slide_id"])  # this batch's rows in its order, in their slots
            order = [next(in_turn) if s in ours else s for s in order]
            old = old[~old["slide_id"].isin(set(status["slide_id"]))]
            merged = pd.concat([old, status.astype(object)], ignore_index=True)
            merged = merged.set_index("slide_id").loc[order].reset_index()  # rows stay in place
        else:
            merged = status
        with atomic_path(target) as tmp:
            merged.to_csv(tmp, index=False)


def check_status(out: Path) -> None:
    """Refuse to start a batch into a folder whose status table cannot be merged into: found only
    after the first slide is scored, the error would stop the batch there, or worse, a garbled
    table would be merged, its shifted rows kept as slides of their own.

    Raises:
        InputError: ``out/batch_status.csv`` is there but unreadable or malformed.
    """
    target = out / STATUS_FILE
    if target.exists() or target.is_symlink():
        try:
            _read(target)
        except InputError as exc:
            raise InputError(
                f"{exc}; move it aside to rerun the batch (finished slides are skipped)"
            ) from None


def read_status(out_dir: str | os.PathLike[str]) -> pd.DataFrame:
    """The batch folder's ``batch_status.csv``, every column as text (empty = none).

    Raises:
        InputError: no such folder, no status table in it, or one that is unreadable, malformed
            or without rows (a cohort of nothing).
    """
    folder = as_path(out_dir, "out_dir")
    if not folder.is_dir():
        kind = "not a folder" if folder.exists() else "no such folder"
        raise InputError(f"{out_dir}: {kind} (a batch folder from `lnpath batch`)")
    target = folder / STATUS_FILE
    if not target.exists():
        raise InputError(f"{out_dir}: no {STATUS_FILE} (not a batch folder from `lnpath batch`)")
    table = _read(target)
    if table.empty:
        raise InputError(f"{target}: no slides in it (a header only: cut short?); rerun the batch")
    return table.replace({"": None})


def _read(target: Path) -> pd.DataFrame:
    """``batch_status.csv`` as text, or one line naming what is wrong with it."""
    if not target.is_file():
        raise InputError(f"{target}: not a file (a status table lnpath batch writes)")
    try:
        check_row_lengths(target)
        table = pd.read_csv(target, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, csv.Error) as exc:
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"{target}: unreadable status table ({detail})") from None
    missing = [c for c in ("slide_id", "patient_id", "outcome") if c not in table.columns]
    if missing:
        raise InputError(f"{target}: malformed (no column {', '.join(missing)})")
    return table


def summarise(status: pd.DataFrame) -> dict[str, int]:
    """Counts of ``scored``, ``skipped`` and ``failed`` slides in a status table."""
    counts = status["outcome"].value_counts()
    return {k: int(counts.get(k, 0)) for k in ("scored", "skipped", "failed")}
