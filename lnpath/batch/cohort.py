"""The cohort a trial statistician analyses: one row per slide, per pair and preset, and summaries.

``cohort_table(DIR)`` reads a batch folder and writes, atomically:

* ``cohort.csv`` / ``cohort.parquet``: one row per slide (provenance, AI/CI and their ranges);
* ``cohort_pairs.csv``: one row per baseline/follow-up pair **and** response preset. Pairs are
  anchored on each patient's first biopsy (``consecutive=True``: each on the one before);
* ``cohort_summary.csv``: per preset, how many pairs meet the endpoint, with the exact
  (Clopper-Pearson) 95 % interval of that proportion among the evaluable pairs;
* ``cohort_unpaired.csv``: patients with no pair, and why (a trial's denominator needs them);
* ``cohort_crosstab.csv``: with a manifest ``clinical_response`` column, its cross-tabulation
  against each preset's histological endpoint.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from lnpath.batch.manifest import (
    COHORT_FILE,
    PAIRS_FILE,
    clinical_responses,
    iso_date,
    manifest_records,
    read_clinical_manifest,
    read_result,
)
from lnpath.batch.status import read_status
from lnpath.batch.summary import crosstab, summarise_pairs, unpaired
from lnpath.core.args import check_flag
from lnpath.core.errors import LnpathError, ResultError, one_line
from lnpath.io.atomic import atomic_path
from lnpath.response.endpoint import compare
from lnpath.response.presets import PRESETS, get_preset
from lnpath.response.sides import BiopsySide, class_name
from lnpath.results.seal import verify
from lnpath.workflow.compare import load_folder_side

__all__ = ["PAIR_COLUMNS", "cohort_pairs", "cohort_table"]

LOG = logging.getLogger(__name__)

SUMMARY_FILE = "cohort_summary.csv"
UNPAIRED_FILE = "cohort_unpaired.csv"
CROSSTAB_FILE = "cohort_crosstab.csv"

UNUSABLE = ("failed", "tampered")
"""Cohort statuses that carry no scores: never a baseline, never paired."""

#: Panel fields carried per pair beside the preset's own endpoint.
PANEL_COLUMNS = (
    "activity_status_fu",
    "histologic_remission",
    "persistent_activity_fu",
    "histologic_response",
    "chronic_progression",
    "high_chronicity_fu",
    "composite_histologic_responder",
    "class_response",
)
_SIDE_COLUMNS = tuple(
    f"{index}_{side}{bound}"
    for side in ("bl", "fu")
    for index in ("ai", "ci")
    for bound in ("", "_min", "_max")
)
PAIR_COLUMNS = (
    "patient_id",
    "pairing",
    "baseline_slide_id",
    "followup_slide_id",
    "baseline_timepoint",
    "followup_timepoint",
    "baseline_date",
    "followup_date",
    "days_between",
    "clinical_response",
    "preset",
    "primary",
    "preset_label",
    "preset_nih_version",
    "preset_params",
    "status",
    "endpoint",
    "endpoint_value",
    "endpoint_holds",
    "endpoint_probability",
    "decided_from_bounds",
    *_SIDE_COLUMNS,
    "delta_ai",
    "delta_ci",
    "n_glomeruli_bl",
    "n_glomeruli_fu",
    "adequacy_bl",
    "adequacy_fu",
    "confirmed_bl",
    "confirmed_fu",
    "class_bl",
    "class_fu",
    *PANEL_COLUMNS,
    "reasons",
)


def _presets(preset: str | Sequence[str] | None) -> list[str]:
    names = list(PRESETS) if preset is None else [preset] if isinstance(preset, str) else preset
    for name in names:
        get_preset(name)  # an unknown name fails before anything is rewritten
    return list(dict.fromkeys(names))


def cohort_pairs(
    cohort: pd.DataFrame,
    preset: str | Sequence[str] | None = None,
    consecutive: bool = False,
    clinical: Mapping[str, str] | None = None,
) -> pd.DataFrame:
    """One row per baseline/follow-up pair and preset (see :data:`PAIR_COLUMNS`).

    Args:
        cohort: the per-slide table of :func:`cohort_table` (``visit`` gives the order).
        preset: one preset, a list, or None for every preset in one run.
        consecutive: pair each biopsy with the one before it instead of the first one.
        clinical: slide_id -> clinical response of that (follow-up) biopsy.
    """
    names = _presets(preset)
    scored = cohort[cohort["status"] != "failed"].sort_values(["patient_id", "visit"])
    sides: dict[str, BiopsySide | str] = {}
    rows: list[dict[str, Any]] = []
    for patient, group in scored.groupby("patient_id", sort=False):
        slides = manifest_records(group)
        for i, follow in enumerate(slides[1:], start=1):
            base = slides[i - 1] if consecutive else slides[0]
            record = _pair_record(patient, base, follow, consecutive, clinical or {})
            pair = [_side(sides, s) for s in (base, follow)]
            for name in names:
                rows.append({**record, **_response(pair, name)})
    return pd.DataFrame(rows, columns=list(PAIR_COLUMNS))


def _side(cache: dict[str, BiopsySide | str], slide: Mapping[str, Any]) -> BiopsySide | str:
    """Each result folder read (and its seal checked) once for every preset; a folder that
    cannot be read keeps its one-line error."""
    key = str(slide["result"])
    if slide.get("status") == "tampered":  # its scores are withheld from the slide table too
        cache[key] = str(slide.get("integrity"))
    elif key not in cache:
        try:
            cache[key] = load_folder_side(key, str(slide["slide_id"]))
        except LnpathError as exc:
            cache[key] = one_line(str(exc))
    return cache[key]


def _pair_record(
    patient: Any,
    base: Mapping[str, Any],
    follow: Mapping[str, Any],
    consecutive: bool,
    clinical: Mapping[str, str],
) -> dict[str, Any]:
    d0 = pd.to_datetime(str(base.get("biopsy_date") or ""), errors="coerce")
    d1 = pd.to_datetime(str(follow.get("biopsy_date") or ""), errors="coerce")
    return {
        "patient_id": patient,
        "pairing": "consecutive" if consecutive else "baseline",
        "baseline_slide_id": base["slide_id"],
        "followup_slide_id": follow["slide_id"],
        "baseline_timepoint": base.get("timepoint"),
        "followup_timepoint": follow.get("timepoint"),
        "baseline_date": base.get("biopsy_date"),
        "followup_date": follow.get("biopsy_date"),
        "days_between": None if pd.isna(d0) or pd.isna(d1) else int((d1 - d0).days),
        "clinical_response": clinical.get(str(follow["slide_id"])),
    }


def _response(pair: list[BiopsySide | str], name: str) -> dict[str, Any]:
    chosen = get_preset(name)
    out: dict[str, Any] = {
        "preset": name,
        "primary": False,
        "preset_label": chosen.label,
        "preset_nih_version": chosen.nih_version,
        "preset_params": json.dumps(chosen.effective_params(), sort_keys=True),
    }
    errors = [p for p in pair if isinstance(p, str)]
    if errors:
        return {**out, "status": "error", "reasons": "; ".join(errors)}
    bl, fu = pair
    assert isinstance(bl, BiopsySide) and isinstance(fu, BiopsySide)
    try:
        r = compare(bl, fu, preset=name)
    except LnpathError as exc:
        return {**out, "status": "error", "reasons": one_line(str(exc))}
    configured = {side.config.get("response_preset") or "lnhr_default" for side in (bl, fu)}
    deltas = r.deltas
    out.update(
        primary=configured == {name},
        status=r.status,
        endpoint=r.endpoint["name"],
        endpoint_value=r.endpoint["value"],
        endpoint_holds=r.endpoint["holds"],
        endpoint_probability=(r.uncertainty or {}).get("endpoint_probability"),
        decided_from_bounds=any(
            "bounds" in f for f in (r.panel.get(r.endpoint["name"]) or {}).get("flags", [])
        ),
        delta_ai=(deltas.get("activity_index") or {}).get("delta"),
        delta_ci=(deltas.get("chronicity_index") or {}).get("delta"),
        reasons="; ".join(r.reasons) or None,
    )
    for suffix, side in (("bl", bl), ("fu", fu)):
        for key, index in (("ai", side.activity), ("ci", side.chronicity)):
            low, high = r.fields[f"{key}_{suffix}"]["range"]
            out.update({f"{key}_{suffix}": index.total, f"{key}_{suffix}_min": low})
            out[f"{key}_{suffix}_max"] = high
        out[f"n_glomeruli_{suffix}"] = side.n_glomeruli
        out[f"adequacy_{suffix}"] = side.adequacy_status
        out[f"confirmed_{suffix}"] = side.sealed
        out[f"class_{suffix}"] = class_name(side)
    for field in PANEL_COLUMNS:
        rec = r.panel.get(field)
        out[field] = None if rec is None or not rec.get("evaluable") else rec.get("value")
    return out


def cohort_table(
    out_dir: str | os.PathLike[str],
    pairs: bool = True,
    preset: str | Sequence[str] | None = None,
    consecutive: bool = False,
    manifest: str | os.PathLike[str] | None = None,
) -> pd.DataFrame:
    """One row per slide of a batch folder, with provenance and baseline/follow-up order.

    Writes ``cohort.csv`` and ``cohort.parquet`` into ``out_dir``; with ``pairs`` also the pair,
    summary, unpaired and (given a manifest with ``clinical_response``) cross-tab tables of this
    module's docstring. ``visit`` numbers each patient's slides in time order and
    ``previous_slide_id`` names the biopsy before. ``ai_total`` counts the assessed components
    only; ``ai_min``/``ai_max`` (and ``ci_*``) are the range the full index can still take.

    Args:
        out_dir: a batch folder written by :func:`lnpath.score_batch`.
        pairs: also write the pair tables.
        preset: one response preset, a list, or None for every preset in one run; the preset
            the biopsies were configured with (``response_preset``) is marked ``primary``.
        consecutive: pair each biopsy with the one before it, not with the patient's first.
        manifest: the batch manifest, read for an optional ``clinical_response`` column (the
            clinical response judged at each follow-up biopsy).

    Raises:
        InputError: ``out_dir`` holds no readable ``batch_status.csv``, a preset is unknown, or
            the manifest has no ``clinical_response`` column.
    """
    pairs = check_flag(pairs, "cohort_table: pairs")
    consecutive = check_flag(consecutive, "cohort_table: consecutive")
    names = _presets(preset) if pairs else []
    manifest_table = read_clinical_manifest(manifest)
    status = read_status(out_dir)
    clinical = clinical_responses(manifest, manifest_table, status)
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
            if table.loc[index, "status"] not in UNUSABLE:
                previous = table.loc[index, "slide_id"]
    integer_columns = ("revision", "n_glomeruli", "ai_total", "ai_min", "ai_max")
    for column in (*integer_columns, "ci_total", "ci_min", "ci_max"):
        if column in table.columns:
            table[column] = table[column].astype("Int64")
    out = Path(out_dir)
    _write_table(table, out / COHORT_FILE)
    if pairs:
        pair_table = cohort_pairs(table, names, consecutive=consecutive, clinical=clinical)
        _write_csv(pair_table, out / PAIRS_FILE)
        _write_csv(summarise_pairs(pair_table, names), out / SUMMARY_FILE)
        _write_csv(unpaired(table), out / UNPAIRED_FILE)
        if clinical:
            _write_csv(crosstab(pair_table), out / CROSSTAB_FILE)
        else:  # a cross-tab from an earlier run would no longer match these pairs
            (out / CROSSTAB_FILE).unlink(missing_ok=True)
        LOG.info("cohort %s: %d slides, %d pair rows", out, len(table), len(pair_table))
    return table


def _write_csv(table: pd.DataFrame, target: Path) -> None:
    with atomic_path(target) as tmp:
        table.to_csv(tmp, index=False)


def _check_identity(folder: Path, result: Mapping[str, Any], status: Mapping[str, Any]) -> None:
    """The result is of the biopsy the batch scored under this slide id: a signed folder copied
    or renamed onto another slide's still verifies, but names its own patient and date.

    Raises:
        ResultError: result.json's patient_id or biopsy_date is not batch_status.csv's.
    """

    def stated(name: str, value: Any) -> str | None:
        if name == "biopsy_date":  # a folder batched before dates were read as YYYY-MM-DD
            return iso_date(value)
        return None if value is None or str(value) == "" else str(value)

    for name in ("patient_id", "biopsy_date"):
        expected, found = stated(name, status.get(name)), stated(name, result.get(name))
        if expected is not None and found != expected:
            raise ResultError(
                f"{folder}: result.json is of {name} {found!r}, batch_status.csv scored "
                f"{status['slide_id']} as {expected!r} (a result folder copied or renamed?)"
            )


def _cohort_row(out: Path, status: Mapping[str, Any]) -> dict[str, Any]:
    row: dict[str, Any] = {
        "slide_id": status["slide_id"],
        "patient_id": status.get("patient_id"),
        "timepoint": status.get("timepoint"),
        "biopsy_date": status.get("biopsy_date"),
        "status": "failed",
        "error": status.get("error"),
        "integrity": None,
    }
    folder = (out / str(status["slide_id"])).resolve()
    if status.get("outcome") == "failed":
        return row
    result = read_result(folder)
    if result is None:  # scored, then moved, deleted or broken: say so, not "failed: None"
        why = "is missing" if not folder.exists() else "holds no readable result.json"
        row["error"] = f"result folder {folder} {why} (moved or deleted after scoring?)"
        LOG.warning("%s: %s", status["slide_id"], row["error"])
        return row
    try:  # nothing is published as lnpath's, least of all as confirmed, unless it verifies
        verify(folder)
        _check_identity(folder, result, status)
    except LnpathError as exc:
        why = one_line(str(exc))
        LOG.warning("%s", why if why.startswith(str(folder)) else f"{folder}: {why}")  # once
        row.update(
            status="tampered",
            integrity=f"FAILED: {why}",
            revision=result.get("revision"),
            result=str(folder),
        )
        return row
    row["integrity"] = "ok"
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
