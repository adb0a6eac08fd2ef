"""The review queue and the validation figures behind a lab-trained model (pure, fast)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import lnpath
from lnpath.training.evaluation import (
    bootstrap_intervals,
    evaluate,
    label_counts,
    reliability_table,
    thin_labels,
)


def _table(**columns: list) -> pd.DataFrame:
    return pd.DataFrame({"glomerulus_id": [1, 2, 3, 4, 5], **columns})


def test_most_uncertain_first_then_undecided_then_the_rest() -> None:
    findings = _table(
        p_global_sclerosis=[0.9, 0.45, np.nan, 0.7, np.nan],
        p_cellular_crescent=[0.05, 0.2, np.nan, 0.52, np.nan],
        global_sclerosis=pd.array([True, False, False, True, pd.NA], dtype="boolean"),
    )
    # G4 (0.52: 0.02 from 0.5) before G2 (0.45), G1 (0.9 / 0.05: 0.4, 0.45) last of those;
    # then G5, which the machine left undecided, then G3
    assert lnpath.review_order(findings) == [4, 2, 1, 5, 3]


def test_reviewed_and_excluded_glomeruli_leave_the_queue() -> None:
    findings = _table(
        p_global_sclerosis=[0.5, 0.6, 0.7, 0.8, 0.9],
        global_sclerosis=[True] * 5,
        exclusion=["", "not_glomerulus", np.nan, "ischemic", ""],
    )
    order = lnpath.review_order(findings, reviewed=[1])
    assert order == [3, 4, 5]  # 1 reviewed; 2 is not a glomerulus; 4 (ischemic) stays in N
    assert len(order) == 3  # glomeruli still to look at


def test_without_probabilities_table_order_is_kept() -> None:
    findings = _table(global_sclerosis=[False, pd.NA, False, pd.NA, False])
    assert lnpath.review_order(findings) == [2, 4, 1, 3, 5]


def test_not_assessed_labels_are_counted_as_missing() -> None:
    y = np.array([[1.0, np.nan], [0.0, 1.0], [np.nan, 0.0]])
    assert label_counts(y, ["a", "b"]) == {
        "a": {"positive": 1, "negative": 1, "not_assessed": 1},
        "b": {"positive": 1, "negative": 1, "not_assessed": 1},
    }
    assert set(thin_labels(label_counts(y, ["a", "b"]))) == {"a", "b"}


def test_reliability_table_bins() -> None:
    rows = reliability_table(np.array([0.0, 1.0, 1.0, 0.0]), np.array([0.05, 0.95, 0.91, 0.15]))
    assert [(r["from"], r["n"], r["observed"]) for r in rows] == [
        (0.0, 1, 0.0),
        (0.1, 1, 0.0),
        (0.9, 2, 1.0),
    ]


def test_bootstrap_interval_brackets_the_estimate_and_narrows_with_data() -> None:
    rng = np.random.default_rng(1)

    def widths(n_groups: int) -> tuple[dict, float]:
        groups = np.repeat(np.arange(n_groups), 10)
        y = rng.random(len(groups)) < 0.3
        p = np.clip(y * 0.3 + rng.random(len(groups)) * 0.6, 0, 1)
        m = evaluate(y.astype(float), p, groups)
        lo, hi = m["kappa_ci"]
        assert lo <= m["kappa"] <= hi
        return m, hi - lo

    _, small = widths(6)
    _, large = widths(60)
    assert large < small


def test_one_group_has_no_interval() -> None:
    out = bootstrap_intervals(np.array([True, False] * 5), np.linspace(0, 1, 10), np.zeros(10))
    assert out["kappa"] is None


@pytest.mark.parametrize("missing", [0, 3])
def test_evaluate_leaves_not_assessed_out(missing: int) -> None:
    y = np.array([1.0, 0.0] * 10)
    y[:missing] = np.nan
    p = np.where(np.nan_to_num(y) > 0, 0.8, 0.2)
    m = evaluate(y, p, np.arange(20) % 4)
    assert m["n"] == 20 - missing and m["kappa"] == pytest.approx(1.0)


def test_confirmed_labels_skip_excluded_glomeruli_and_keep_not_assessed_missing() -> None:
    from lnpath.training.from_results import confirmed_labels

    findings = pd.DataFrame(
        {
            "glomerulus_id": [1, 2, 3, 4],
            "global_sclerosis": pd.array([True, False, pd.NA, True], dtype="boolean"),
            "exclusion": ["", "not_glomerulus", np.nan, "ischemic"],
        }
    )
    labels = confirmed_labels(findings)
    assert labels["glomerulus_id"].tolist() == [1, 3]
    assert labels["global_sclerosis"].tolist()[0] == 1.0
    assert np.isnan(labels["global_sclerosis"].tolist()[1])  # not assessed: no label
    assert labels["cellular_crescent"].isna().all()  # a lesion column the folder lacks
    # an older folder: no exclusion column, only the ischemic flag
    old = pd.DataFrame({"glomerulus_id": [1, 2], "ischemic": pd.array([pd.NA, True], "boolean")})
    assert confirmed_labels(old)["glomerulus_id"].tolist() == [1]
