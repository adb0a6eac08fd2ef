"""Per-preset summaries of a cohort's pairs, the unpaired patients, and the clinical cross-tab.

The responder proportion of each preset comes with its exact (Clopper-Pearson) 95 % interval,
computed among the evaluable pairs only; the not evaluable ones are counted beside it, so a
statistician sees the whole denominator.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
from scipy.stats import beta

from lnpath.response.presets import get_preset

__all__ = ["SUMMARY_COLUMNS", "clopper_pearson", "crosstab", "summarise_pairs", "unpaired"]

SUMMARY_COLUMNS = (
    "preset",
    "endpoint",
    "label",
    "nih_version",
    "n_pairs",
    "n_evaluable",
    "n_not_evaluable",
    "n_final",
    "n_endpoint_holds",
    "proportion",
    "ci95_low",
    "ci95_high",
)


def clopper_pearson(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Exact binomial interval of ``k`` of ``n``; NaN for no trials."""
    if n == 0:
        return float("nan"), float("nan")
    tail = (1.0 - level) / 2
    low = 0.0 if k == 0 else float(beta.ppf(tail, k, n - k + 1))
    high = 1.0 if k == n else float(beta.ppf(1.0 - tail, k + 1, n - k))
    return low, high


def summarise_pairs(pairs: pd.DataFrame, names: Sequence[str]) -> pd.DataFrame:
    """Per preset: evaluable pairs, how many meet the endpoint, its exact 95 % interval."""
    rows = []
    for name in names:
        chosen = get_preset(name)
        group = pairs[pairs["preset"] == name]
        evaluable = group[group["status"].isin(["provisional", "final"])]
        k = int(sum(v is True for v in evaluable["endpoint_holds"]))
        n = len(evaluable)
        low, high = clopper_pearson(k, n)
        rows.append(
            {
                "preset": name,
                "endpoint": chosen.endpoint,
                "label": chosen.label,
                "nih_version": chosen.nih_version,
                "n_pairs": len(group),
                "n_evaluable": n,
                "n_not_evaluable": len(group) - n,
                "n_final": int((group["status"] == "final").sum()),
                "n_endpoint_holds": k,
                "proportion": k / n if n else float("nan"),
                "ci95_low": low,
                "ci95_high": high,
            }
        )
    return pd.DataFrame(rows, columns=list(SUMMARY_COLUMNS))


def unpaired(cohort: pd.DataFrame) -> pd.DataFrame:
    """Patients with no baseline/follow-up pair, and why."""
    rows = []
    for patient, group in cohort.groupby("patient_id", sort=False, dropna=False):
        scored = group[group["status"] != "failed"]
        if len(scored) >= 2:
            continue
        failed = group[group["status"] == "failed"]
        reasons = [
            f"{s} failed: {e}" for s, e in zip(failed["slide_id"], failed["error"], strict=True)
        ]
        if len(scored) == 1:
            reasons.insert(0, "no follow-up biopsy scored")
        rows.append(
            {
                "patient_id": patient,
                "slide_ids": " ".join(map(str, group["slide_id"])),
                "reason": "; ".join(reasons) or "no biopsy scored",
            }
        )
    return pd.DataFrame(rows, columns=["patient_id", "slide_ids", "reason"])


def crosstab(pairs: pd.DataFrame) -> pd.DataFrame:
    """Counts of clinical response x endpoint value, per preset (pairs with a clinical response)."""
    known = pairs[pairs["clinical_response"].notna()].copy()
    known["endpoint_value"] = [
        "not evaluable" if s not in ("provisional", "final") else v
        for s, v in zip(known["status"], known["endpoint_value"], strict=True)
    ]
    counts = (
        known.groupby(["preset", "clinical_response", "endpoint_value"], sort=False, dropna=False)
        .size()
        .reset_index(name="n")
    )
    return counts
