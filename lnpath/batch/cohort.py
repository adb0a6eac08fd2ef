"""The cohort table: one row per scored slide of a batch folder, and baseline/follow-up pairs."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from lnpath.batch.manifest import (
    COHORT_FILE,
    PAIRS_FILE,
    manifest_records,
    read_result,
    read_status,
)
from lnpath.core.errors import LnpathError, one_line
from lnpath.io.atomic import atomic_path
from lnpath.response.presets import get_preset
from lnpath.workflow.compare import compare

LOG = logging.getLogger(__name__)


def cohort_table(
    out_dir: str | os.PathLike[str], pairs: bool = True, preset: str = "lnhr_default"
) -> pd.DataFrame:
    """One row per slide of a batch folder, with provenance and baseline/follow-up order.

    Writes ``cohort.csv`` and ``cohort.parquet`` (atomically) into ``out_dir``; with ``pairs``,
    also ``cohort_pairs.csv`` from :func:`cohort_pairs`. ``visit`` numbers each patient's slides
    in time order and ``previous_slide_id`` names the biopsy each one is compared against.
    ``ai_total`` counts the assessed components only; ``ai_min``/``ai_max`` (and ``ci_*``) are
    the range the full index can still take, which is what an incomplete index can be compared by.

    Raises:
        InputError: ``out_dir`` holds no readable ``batch_status.csv``, or ``preset`` is unknown.
    """

    if pairs:
        get_preset(preset)  # an unknown name fails here, before any table is rewritten
    status = read_status(out_dir)
    rows = [_cohort_row(Path(out_dir), r) for r in manifest_records(status)]
    table = pd.DataFrame(rows)
    table["visit"] = pd.array([pd.NA] * len(table), dtype="Int64")
    table["previous_slide_id"] = None
    for _, group in table.groupby("patient_id", sort=False, dropna=False):
        ordered = _in_time_order(group)
        previous = None
        for visit, index in enumerate(ordered.index, start=1):
            table.loc[index, "visit"] = visit
            table.loc[index, "previous_slide_id"] = previous
            if table.loc[index, "status"] != "failed":
                previous = table.loc[index, "slide_id"]
    integer_columns = ("revision", "n_glomeruli", "ai_total", "ai_min", "ai_max")
    for column in (*integer_columns, "ci_total", "ci_min", "ci_max"):
        if column in table.columns:
            table[column] = table[column].astype("Int64")
    _write_table(table, Path(out_dir) / COHORT_FILE)
    if pairs:
        pair_table = cohort_pairs(table, preset=preset)
        with atomic_path(Path(out_dir) / PAIRS_FILE) as tmp:
            pair_table.to_csv(tmp, index=False)
    return table


def _cohort_row(out: Path, status: Mapping[str, Any]) -> dict[str, Any]:
    row: dict[str, Any] = {
        "slide_id": status["slide_id"],
        "patient_id": status.get("patient_id"),
        "timepoint": status.get("timepoint"),
        "biopsy_date": status.get("biopsy_date"),
        "status": "failed",
        "error": status.get("error"),
    }
    folder = (out / str(status["slide_id"])).resolve()
    result = read_result(folder) if status.get("outcome") != "failed" else None
    if result is None:
        return row
    scores = result.get("scores") or {}
    ai = scores.get("activity_index") or {}
    ci = scores.get("chronicity_index") or {}
    adequacy = scores.get("adequacy") or {}
    slide = result.get("slide") or {}
    models = result.get("models") or []
    row.update(
        status=result.get("status"),
        revision=result.get("revision"),
        n_glomeruli=adequacy.get("n_glomeruli"),
        adequacy=adequacy.get("status"),
        ai_total=ai.get("total"),
        ai_complete=ai.get("complete"),
        ai_min=(ai.get("total_range") or [None, None])[0],
        ai_max=(ai.get("total_range") or [None, None])[1],
        ci_total=ci.get("total"),
        ci_complete=ci.get("complete"),
        ci_min=(ci.get("total_range") or [None, None])[0],
        ci_max=(ci.get("total_range") or [None, None])[1],
        isn_rps_class=(scores.get("isn_rps_class") or {}).get("proposal"),
        mpp=slide.get("mpp"),
        mpp_source=slide.get("mpp_source"),
        stain=result.get("stain"),
        outline_source=(models[0] or {}).get("name") if models else None,
        model_sha256=(models[0] or {}).get("sha256") if models else None,
        slide_sha256=(slide.get("fingerprint") or {}).get("sha256"),
        lnpath_version=result.get("lnpath_version"),
        warnings="; ".join(result.get("warnings") or []) or None,
        result=str(folder),
    )
    return row


def _in_time_order(group: pd.DataFrame) -> pd.DataFrame:
    """Numeric timepoints in order, else by biopsy date when all have one, else as listed."""
    numbers = pd.to_numeric(group["timepoint"], errors="coerce")
    if numbers.notna().all():
        return group.assign(_key=numbers).sort_values("_key", kind="stable")
    dates = pd.to_datetime(group["biopsy_date"], errors="coerce")
    if dates.notna().all():
        return group.assign(_key=dates).sort_values("_key", kind="stable")
    return group


def cohort_pairs(cohort: pd.DataFrame, preset: str = "lnhr_default") -> pd.DataFrame:
    """The response endpoint of each patient's consecutive biopsies (baseline → follow-up).

    Each scored slide with a ``previous_slide_id`` is compared with that earlier slide through
    :func:`lnpath.compare`; a pair that cannot be compared keeps its row with the reason.
    """

    by_id = cohort.set_index("slide_id")
    rows = []
    for follow in cohort.to_dict("records"):
        base_id = follow.get("previous_slide_id")
        if not base_id or follow["status"] == "failed":
            continue
        record: dict[str, Any] = {
            "patient_id": follow["patient_id"],
            "baseline_slide_id": base_id,
            "followup_slide_id": follow["slide_id"],
            "baseline_timepoint": by_id.loc[base_id, "timepoint"],
            "followup_timepoint": follow["timepoint"],
            "preset": preset,
        }
        try:
            response = compare(by_id.loc[base_id, "result"], follow["result"], preset=preset)
        except LnpathError as exc:
            rows.append({**record, "status": "error", "reasons": one_line(str(exc))})
            continue
        data = response.to_dict()
        deltas = data["deltas"]
        rows.append(
            {
                **record,
                "status": data["status"],
                "endpoint": data["endpoint"]["name"],
                "endpoint_value": data["endpoint"]["value"],
                "delta_ai": (deltas.get("activity_index") or {}).get("delta"),
                "delta_ci": (deltas.get("chronicity_index") or {}).get("delta"),
                "reasons": "; ".join(data["reasons"]) or None,
            }
        )
    return pd.DataFrame(rows, columns=_PAIR_COLUMNS)


_PAIR_COLUMNS = (
    "patient_id",
    "baseline_slide_id",
    "followup_slide_id",
    "baseline_timepoint",
    "followup_timepoint",
    "preset",
    "status",
    "endpoint",
    "endpoint_value",
    "delta_ai",
    "delta_ci",
    "reasons",
)


def _write_table(table: pd.DataFrame, csv_target: Path) -> None:
    with atomic_path(csv_target) as tmp:
        table.to_csv(tmp, index=False)
    parquet = table.copy()
    for column in parquet.columns:  # object columns hold None plus one type; Parquet needs one
        if parquet[column].dtype == object:
            values = parquet[column].dropna()
            if len(values) and all(isinstance(v, bool) for v in values):
                parquet[column] = parquet[column].astype("boolean")
            else:
                parquet[column] = parquet[column].map(lambda v: None if v is None else str(v))
    with atomic_path(csv_target.with_suffix(".parquet")) as tmp:
        parquet.to_parquet(tmp, index=False)
