"""The review queue: which glomerulus a pathologist should look at next.

With a trained model's ``p_<lesion>`` columns the most informative glomerulus is the one the model
is least sure of: the smallest ``|p - 0.5|`` over its lesions. Reviewing those first corrects the
calls most likely to be wrong, and, once confirmed, teaches the next model the most (uncertainty
sampling). Glomeruli without probabilities (rules, or a model that could not read them) follow:
first those with a lesion the machine left undecided (not assessed), which only the pathologist
can call, then the rest in table order. A glomerulus marked "not a glomerulus" is not in the
queue; an ischemic one is (it still counts in the indices).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import pandas as pd

from lnpath.core.errors import InputError
from lnpath.core.findings import LESIONS, is_missing

EXCLUSION_COLUMN = "exclusion"
NOT_COUNTED = "not_glomerulus"
"""The one exclusion that takes a glomerulus out of every count, and so out of the queue; an
ischemic glomerulus stays in the indices' N, so its lesion calls still decide sign-out."""


def _uncertainty(row: pd.Series, p_columns: list[str]) -> float:
    """Smallest distance from 0.5 over the row's probabilities (NaN when it has none)."""
    values = [float(row[c]) for c in p_columns if not is_missing(row[c])]
    return min((abs(v - 0.5) for v in values), default=math.nan)


def review_order(findings: pd.DataFrame, reviewed: Iterable[int] = ()) -> list[int]:
    """Glomerulus ids still to look at, most uncertain first.

    ``len(review_order(findings, reviewed))`` is how many glomeruli the pathologist must still
    look at.

    Args:
        findings: a result's findings table (``glomerulus_id``, lesion columns, ``p_<lesion>``,
            optionally ``exclusion``).
        reviewed: glomeruli the pathologist has already looked at (left out).
    """
    table = isinstance(findings, pd.DataFrame)
    if not table or (len(findings) and "glomerulus_id" not in findings):
        raise InputError("review_order: findings must be a findings table (with glomerulus_id)")
    try:
        done = {int(g) for g in reviewed}
    except (TypeError, ValueError):
        raise InputError(
            f"review_order: reviewed must be glomerulus ids (whole numbers), got {reviewed!r}"
        ) from None
    p_columns = [f"p_{lesion}" for lesion in LESIONS if f"p_{lesion}" in findings]
    lesions = [lesion for lesion in LESIONS if lesion in findings]
    keyed: list[tuple[int, float, int, int]] = []
    for position, (_, row) in enumerate(findings.iterrows()):
        gid = int(row["glomerulus_id"])
        exclusion = row.get(EXCLUSION_COLUMN)
        if gid in done or (not is_missing(exclusion) and str(exclusion).strip() == NOT_COUNTED):
            continue
        distance = _uncertainty(row, p_columns)
        if not math.isnan(distance):
            keyed.append((0, distance, position, gid))
            continue
        undecided = any(is_missing(row[lesion]) for lesion in lesions) or not lesions
        keyed.append((1 if undecided else 2, 0.0, position, gid))
    return [gid for *_, gid in sorted(keyed)]
