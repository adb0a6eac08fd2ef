"""The findings table: one row per glomerulus, one nullable boolean column per lesion.

This is the hand-over point between whoever calls lesions (a model, morphometry, a pathologist in
a spreadsheet or in QuPath) and the scoring engine. ``<NA>`` means *not assessed*, which is the
normal state for lesions a machine cannot call from the stain at hand; scoring then marks the
component "not assessed" instead of silently treating it as absent.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from lnpath.core.errors import InputError

__all__ = [
    "DEFAULT_CLASS_MAP",
    "EXTENTS",
    "LESIONS",
    "LESION_EXTENT",
    "OPTIONAL_FLAGS",
    "is_missing",
    "read_findings",
]

logger = logging.getLogger(__name__)

#: The nine per-glomerulus lesions of the 2018 modified NIH index, in table order.
LESIONS: tuple[str, ...] = (
    "endocapillary_hypercellularity",
    "neutrophils_karyorrhexis",
    "fibrinoid_necrosis",
    "hyaline_deposits",
    "cellular_crescent",
    "fibrocellular_crescent",
    "fibrous_crescent",
    "global_sclerosis",
    "segmental_sclerosis",
)

#: Optional per-glomerulus flags: ``ischemic`` (left out of the class fraction), ``adhesion``
#: (counted as sclerosis only with ``adhesion_as_sclerosis``), ``mesangial_hypercellularity``
#: (supports class II). Missing or ``<NA>`` means not flagged.
OPTIONAL_FLAGS: tuple[str, ...] = ("ischemic", "adhesion", "mesangial_hypercellularity")

#: Optional per-glomerulus column for the legacy ISN/RPS 2003 IV-S / IV-G split: whether the
#: glomerulus's LN lesions involve less (``segmental``) or more (``global``) than half of the tuft.
LESION_EXTENT = "lesion_extent"
EXTENTS: tuple[str, ...] = ("segmental", "global")

#: The measuring mask's pixel count in µm²: the outline's own area (``area_um2``, exact from the
#: polygon) counted in pixels at the measuring resolution, so a little off it. ``area_um2`` is the
#: glomerulus's area wherever one is shown; this stays in findings.csv as the fractions' base.
MASK_AREA = "m_area_um2"

#: QuPath class -> the lesion values it asserts; lesions it does not mention stay not assessed.
#: ``Glomerulus`` (what ``lnpath segment`` and QuPath's own glomerulus class write) asserts
#: nothing: the glomerulus counts, every lesion not assessed.
DEFAULT_CLASS_MAP: dict[str, dict[str, bool]] = {
    "Sclerotic": {"global_sclerosis": True, "segmental_sclerosis": False},
    "Partially_sclerotic": {"global_sclerosis": False, "segmental_sclerosis": True},
    "Normal": {"global_sclerosis": False, "segmental_sclerosis": False},
    "Glomerulus": {},
}

_TRUE = {"true", "1", "yes", "1.0"}
_FALSE = {"false", "0", "no", "0.0"}
_MISSING = {"", "na", "n/a", "nan", "null", "none", "<na>"}
_BOOLEAN_COLUMNS = (*LESIONS, *OPTIONAL_FLAGS)
_PROBABILITY_COLUMNS = tuple(f"p_{lesion}" for lesion in LESIONS)
#: Columns of a result's findings.csv that scoring does not use but that are not misspellings.
_RESULT_COLUMNS = (
    LESION_EXTENT,
    "source",
    "feature_id",
    "main_call",
    "x",
    "y",
    "area_um2",
    "probability",
    "exclusion",
    "exclusion_reason",
    "lnpath_revision",
    "lnpath_content_sha256",
)


def read_findings(
    source: pd.DataFrame | Sequence[Mapping[str, Any]], where: str | None = None
) -> pd.DataFrame:
    """Read and validate a findings table.

    Booleans may be written true/false, 1/0 or yes/no in any case; an empty cell is ``<NA>``
    (not assessed). Columns ``m_*`` (measurements) are carried through; other unknown columns are
    kept but logged as a warning, because a misspelt lesion column would otherwise vanish silently.

    Args:
        source: a DataFrame or a list of row dicts (files: :func:`lnpath.io.tables.read_findings`).
        where: how errors name the source (a file name).

    Returns:
        A new DataFrame: ``glomerulus_id``, the nine :data:`LESIONS` and any optional flags as
        pandas ``"boolean"``, ``p_*`` as float64 (NaN = none), ``source`` as string.

    Raises:
        InputError: a required column is missing, a value is not a boolean / not in [0, 1],
            or glomerulus ids are missing or duplicated.
    """
    if isinstance(source, pd.DataFrame):
        frame = source
    elif isinstance(source, Sequence) and not isinstance(source, str) and not source:
        # no rows: an empty table (inadequate when scored), as an empty file with its header is
        frame = pd.DataFrame(columns=["glomerulus_id", *LESIONS])
    elif isinstance(source, Sequence) and all(isinstance(r, Mapping) for r in source):
        frame = pd.DataFrame(list(source))
    else:
        raise InputError("findings: expected a DataFrame or a list of row dicts")
    where = where or "findings table"
    frame = frame.copy()
    frame.columns = [str(c).strip() for c in frame.columns]
    required = ("glomerulus_id", *LESIONS)
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise InputError(f"{where}: missing required column(s): {', '.join(missing)}")
    known = {*required, *OPTIONAL_FLAGS, *_PROBABILITY_COLUMNS, *_RESULT_COLUMNS}
    unknown = [c for c in frame.columns if c not in known and not c.startswith("m_")]
    if unknown and not frame.attrs.get("validated"):  # warned once, when first read
        logger.warning("%s: ignoring unknown column(s): %s", where, ", ".join(unknown))
    frame = frame.reset_index(drop=True)
    frame["glomerulus_id"] = _ids(frame["glomerulus_id"], where)
    for column in _BOOLEAN_COLUMNS:
        if column in frame.columns:
            frame[column] = _booleans(frame[column], column, frame["glomerulus_id"], where)
    for column in _PROBABILITY_COLUMNS:
        if column in frame.columns:
            frame[column] = _unit_floats(frame[column], column, frame["glomerulus_id"], where)
    for column in (c for c in frame.columns if c.startswith("m_")):
        frame[column] = pd.to_numeric(frame[column], errors="coerce").astype("float64")
    if LESION_EXTENT in frame.columns:
        frame[LESION_EXTENT] = _extents(frame[LESION_EXTENT], frame["glomerulus_id"], where)
    if "source" in frame.columns:
        frame["source"] = frame["source"].astype("string")
    frame.attrs["validated"] = True
    return frame


def _extents(column: pd.Series, ids: pd.Series, where: str) -> pd.Series:
    """``segmental`` / ``global`` / ``<NA>`` (not recorded), case and spaces ignored."""
    out: list[Any] = []
    for position, value in enumerate(column):
        text = "" if is_missing(value) else str(value).strip().lower()
        if text and text not in EXTENTS:
            raise InputError(
                f"{where}: {_row(ids, position)}, column {LESION_EXTENT}: {_plain(value)!r} is "
                "not segmental or global (leave empty when not recorded)"
            )
        out.append(text or pd.NA)
    return pd.Series(out, index=column.index, dtype="string")


def _plain(value: Any) -> Any:
    """A numpy scalar as the Python value, so messages read ``1`` not ``np.int64(1)``."""
    return value.item() if isinstance(value, np.generic) else value


def _row(ids: pd.Series, position: int) -> str:
    return f"row {position + 1} (glomerulus_id {_plain(ids.iloc[position])!r})"


def is_missing(value: Any) -> bool:
    """A missing cell: None, pd.NA or NaN (a lesion not assessed, a measurement not taken)."""
    return value is None or value is pd.NA or (isinstance(value, float) and np.isnan(value))


def _ids(column: pd.Series, where: str) -> pd.Series:
    """Ids must be present and unique; integer-looking text ids become integers."""
    values = list(column)
    for position, value in enumerate(values):
        if is_missing(value) or (isinstance(value, str) and not value.strip()):
            raise InputError(f"{where}: row {position + 1}: glomerulus_id is empty")
    if all(isinstance(v, str) for v in values):
        stripped = [v.strip() for v in values]
        if all(v.lstrip("-").isdigit() for v in stripped):
            column = pd.Series([int(v) for v in stripped], dtype="int64")
        else:
            column = pd.Series(stripped, dtype=object)
    duplicated = column[column.duplicated()]
    if len(duplicated):
        raise InputError(f"{where}: duplicate glomerulus_id {_plain(duplicated.iloc[0])!r}")
    return column


def _booleans(column: pd.Series, name: str, ids: pd.Series, where: str) -> pd.Series:
    if isinstance(column.dtype, pd.BooleanDtype):
        return column
    out: list[Any] = []
    for position, value in enumerate(column):
        parsed = _boolean(value)
        if parsed is None:
            raise InputError(
                f"{where}: {_row(ids, position)}, column {name}: {_plain(value)!r} is not a "
                "boolean (use true/false, 1/0, yes/no, or leave empty for not assessed)"
            )
        out.append(parsed)
    return pd.Series(out, index=column.index, dtype="boolean")


def _boolean(value: Any) -> Any:
    """True/False/pd.NA for a readable value, None for an unreadable one."""
    if is_missing(value):
        return pd.NA
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, int | float | np.integer | np.floating):
        return bool(value) if value in (0, 1) else None
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        if text in _MISSING:
            return pd.NA
    return None


def _unit_floats(column: pd.Series, name: str, ids: pd.Series, where: str) -> pd.Series:
    if not pd.api.types.is_numeric_dtype(column):
        column = column.astype(object).map(
            lambda v: np.nan if isinstance(v, str) and v.strip().lower() in _MISSING else v
        )
    numbers = pd.to_numeric(column, errors="coerce").astype("float64")
    values = numbers.to_numpy()
    unreadable = np.isnan(values) & ~column.map(is_missing).to_numpy(dtype=bool)
    outside = ~np.isnan(values) & ((values < 0.0) | (values > 1.0))
    if unreadable.any():
        position = int(np.argmax(unreadable))
        raw = _plain(column.iloc[position])
        raise InputError(f"{where}: {_row(ids, position)}, column {name}: {raw!r} is not a number")
    if outside.any():
        position = int(np.argmax(outside))
        raise InputError(
            f"{where}: {_row(ids, position)}, column {name}: {values[position]} is outside [0, 1]"
        )
    return numbers
