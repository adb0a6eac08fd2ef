"""The §7 options that act on per-glomerulus measurements, applied before anything is counted.

``global_threshold``, the three crescent thresholds and ``mesangial_hypercellularity_min_cells``
are definitions of a call from a measured quantity (spec §1.5). Where the findings carry the
measurement (``m_sclerosed_fraction``, ``m_crescent_circumference`` with
``m_crescent_cell_fraction``, ``m_mesangial_cells``), the configured threshold makes the call. A
call that contradicts its own measurement under the default (2018 / ISN/RPS 2003) threshold was
set by a person, not derived, so it stands and is listed. An option set away from its default
with no measurement to act on is refused: it would otherwise change nothing, silently.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from lnpath.core.errors import InputError
from lnpath.scoring.config import MEASURED_OPTIONS, ScoringConfig, as_written

__all__ = ["apply_measurements"]

_CRESCENTS = ("cellular_crescent", "fibrocellular_crescent", "fibrous_crescent")
#: Optional flags whose empty cell means "not flagged" (findings.OPTIONAL_FLAGS).
_FLAGS = ("ischemic", "adhesion", "mesangial_hypercellularity")

Derive = Callable[[pd.DataFrame, ScoringConfig], dict[str, np.ndarray]]


def _sclerosis(table: pd.DataFrame, cfg: ScoringConfig) -> dict[str, np.ndarray]:
    """Global iff the sclerosed tuft fraction exceeds ``global_threshold`` (a sclerosed one)."""
    fraction = table["m_sclerosed_fraction"].to_numpy(dtype=float)
    with np.errstate(invalid="ignore"):
        is_global = fraction > cfg.global_threshold
    return {"global_sclerosis": is_global, "segmental_sclerosis": ~is_global}


def _crescents(table: pd.DataFrame, cfg: ScoringConfig) -> dict[str, np.ndarray]:
    """Crescent iff it covers more than ``crescent_min_circumference`` of the capsule; cellular
    above the cell share, fibrous above the matrix share (matrix = 1 - cells), else
    fibrocellular."""
    extent = table["m_crescent_circumference"].to_numpy(dtype=float)
    cells = table["m_crescent_cell_fraction"].to_numpy(dtype=float)
    # matrix > t  <=>  cells < 1 - t, with 1 - t taken exactly (as the decimal t was written):
    # 1.0 - cells in floats puts a matrix share equal to t above it (1 - 0.18 > 0.82)
    max_cells = float(1 - as_written(cfg.crescent_fibrous_min_matrix_fraction))
    with np.errstate(invalid="ignore"):
        present = extent > cfg.crescent_min_circumference
        cellular = present & (cells > cfg.crescent_cellular_min_cell_fraction)
        fibrous = present & (cells < max_cells)
    return {
        "cellular_crescent": cellular,
        "fibrocellular_crescent": present & ~cellular & ~fibrous,
        "fibrous_crescent": fibrous,
    }


def _mesangial(table: pd.DataFrame, cfg: ScoringConfig) -> dict[str, np.ndarray]:
    """Hypercellular iff a mesangial area holds at least the configured number of nuclei."""
    cells = table["m_mesangial_cells"].to_numpy(dtype=float)
    with np.errstate(invalid="ignore"):
        return {"mesangial_hypercellularity": cells >= cfg.mesangial_hypercellularity_min_cells}


def _sclerosed_rows(table: pd.DataFrame) -> np.ndarray:
    called = table["global_sclerosis"].fillna(False) | table["segmental_sclerosis"].fillna(False)
    return called.to_numpy(dtype=bool) & table["m_sclerosed_fraction"].notna().to_numpy()


def _crescent_rows(table: pd.DataFrame) -> np.ndarray:
    extent = table["m_crescent_circumference"].notna().to_numpy()
    composition = table["m_crescent_cell_fraction"].notna().to_numpy()
    # no crescent at all needs no composition; one that is there needs it to be typed
    return extent & (composition | (table["m_crescent_circumference"].to_numpy(float) <= 0))


def _mesangial_rows(table: pd.DataFrame) -> np.ndarray:
    return table["m_mesangial_cells"].notna().to_numpy()


#: measurement columns -> (rows it decides, the calls it gives)
_RULES: tuple[tuple[tuple[str, ...], Callable[[pd.DataFrame], np.ndarray], Derive], ...] = (
    (("m_sclerosed_fraction",), _sclerosed_rows, _sclerosis),
    (("m_crescent_circumference", "m_crescent_cell_fraction"), _crescent_rows, _crescents),
    (("m_mesangial_cells",), _mesangial_rows, _mesangial),
)


def apply_measurements(table: pd.DataFrame, cfg: ScoringConfig) -> tuple[pd.DataFrame, list[str]]:
    """The findings with measurement-defined calls made under ``cfg``, and what was done.

    Also reads the optional flags (``adhesion``, ``ischemic``, ``mesangial_hypercellularity``)
    as documented: an empty cell is "not flagged", so it cannot make a component unassessed.

    Raises:
        InputError: an option is set away from its default and the findings carry no
            measurement it could act on.
    """
    _refuse_inert(table, cfg)
    out = table.copy()
    for flag in _FLAGS:
        if flag in out:
            out[flag] = out[flag].fillna(False).astype("boolean")
    notes: list[str] = []
    default = ScoringConfig()
    for columns, rows_of, derive in _RULES:
        if not all(c in out for c in columns):
            continue
        rows = rows_of(out)
        if not rows.any():
            continue
        wanted, usual = derive(out, cfg), derive(out, default)
        for name in wanted:
            if name not in out:
                out[name] = pd.array([pd.NA] * len(out), dtype="boolean")
        given = {name: [None if v is pd.NA else bool(v) for v in out[name]] for name in wanted}
        kept: list[Any] = []
        moved: list[Any] = []
        for i in (int(k) for k in np.flatnonzero(rows)):
            calls = {name: given[name][i] for name in wanted}
            derived = all(v is None or bool(v) == bool(usual[name][i]) for name, v in calls.items())
            if not derived:  # contradicts its own measurement: set by a person, it stands
                kept.append(_plain(out["glomerulus_id"].iloc[i]))
                continue
            new = {name: bool(wanted[name][i]) for name in wanted}
            if any(calls[name] is None or bool(calls[name]) != new[name] for name in wanted):
                moved.append(_plain(out["glomerulus_id"].iloc[i]))
            for name, value in new.items():
                out.loc[out.index[i], name] = value
        label = " + ".join(columns)
        if moved:
            notes.append(
                f"{label}: calls of glomeruli {_ids(moved)} made by the configured threshold"
            )
        if kept:
            notes.append(
                f"{label}: calls of glomeruli {_ids(kept)} contradict the measurement and were "
                "kept as given"
            )
    return out, notes


def _refuse_inert(table: pd.DataFrame, cfg: ScoringConfig) -> None:
    default = ScoringConfig()
    for option, columns in MEASURED_OPTIONS.items():
        value = getattr(cfg, option)
        if value == getattr(default, option):
            continue
        if all(c in table and table[c].notna().any() for c in columns):
            continue
        raise InputError(
            f"configuration: {option}={value} has nothing to act on: the findings carry no "
            f"{' / '.join(columns)} measurement (their calls were made upstream); leave it at "
            f"{getattr(default, option)} or supply the measurement"
        )


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def _ids(ids: list[Any]) -> str:
    shown = ", ".join(str(i) for i in ids[:10])
    return shown + (f" and {len(ids) - 10} more" if len(ids) > 10 else "")
