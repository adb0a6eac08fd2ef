"""Band rule and uncertainty maths, checked against exact rationals and brute-force enumeration."""

from __future__ import annotations

import itertools
import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import integrate, stats

from lnpath.scoring.uncertainty import (
    band,
    band_distribution,
    bands,
    count_distribution,
    count_distributions,
    interval_95,
    near_band_edge,
    replicate_band_probabilities,
    total_distribution,
    wilson_interval,
)


def band_by_percent(n: int, total: int) -> int:
    """The spec's table read literally on the exact fraction: 0 | <25% | 25-50% | >50%."""
    f = Fraction(n, total)
    if f == 0:
        return 0
    if f < Fraction(1, 4):
        return 1
    if f <= Fraction(1, 2):
        return 2
    return 3


def test_band_rule_exhaustive_up_to_200() -> None:
    for total in range(1, 201):
        expected = [band_by_percent(n, total) for n in range(total + 1)]
        assert [band(n, total) for n in range(total + 1)] == expected
        assert bands(np.arange(total + 1), total).tolist() == expected


@given(st.integers(1, 200).flatmap(lambda t: st.tuples(st.integers(0, t), st.just(t))))
def test_band_rule_property(case: tuple[int, int]) -> None:
    n, total = case
    rule = 0 if n == 0 else 1 if 4 * n < total else 2 if 2 * n <= total else 3
    assert band(n, total) == rule == band_by_percent(n, total)


@pytest.mark.parametrize(
    ("n", "total", "score"),
    [(3, 12, 2), (6, 12, 2), (7, 12, 3), (2, 12, 1), (1, 4, 2), (1, 2, 2), (0, 5, 0), (5, 5, 3)],
)
def test_band_edges_exact(n: int, total: int, score: int) -> None:
    assert band(n, total) == score


def test_band_rejects_impossible_counts() -> None:
    with pytest.raises(ValueError):
        band(5, 4)


def test_wilson_spec_example_10_glomeruli_3_involved() -> None:
    lo, hi = wilson_interval(3, 10)
    assert 0.10 < lo < 0.12 and 0.59 < hi < 0.61  # spec §2.3: "about 11-60%"
    assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(10, 10)[1] == 1.0
    lo2, hi2 = wilson_interval(7, 10)
    assert math.isclose(lo2, 1 - hi) and math.isclose(hi2, 1 - lo)


def test_near_band_edge() -> None:
    assert near_band_edge(3, 12)  # 2/12 scores 1
    assert near_band_edge(6, 12)  # 7/12 scores 3
    assert not near_band_edge(4, 12)  # 3/12 and 5/12 both score 2
    assert near_band_edge(0, 10)  # one glomerulus more gives a score


@pytest.mark.parametrize("size", [1, 2, 5, 9])
def test_count_distribution_matches_enumeration(size: int) -> None:
    p = np.random.default_rng(size).uniform(0, 1, size)
    brute = np.zeros(size + 1)
    for outcome in itertools.product((0, 1), repeat=size):
        brute[sum(outcome)] += math.prod(
            pi if o else 1 - pi for pi, o in zip(p, outcome, strict=True)
        )
    dist = count_distribution(p)
    assert np.allclose(dist, brute, atol=1e-14)
    assert math.isclose(dist.sum(), 1.0)


@given(st.lists(st.floats(0, 1), min_size=0, max_size=60))
def test_count_distribution_sums_to_one_with_the_right_mean(p: list[float]) -> None:
    dist = count_distribution(p)
    assert dist.shape == (len(p) + 1,)
    assert math.isclose(dist.sum(), 1.0, rel_tol=1e-9)
    assert math.isclose(float(np.arange(len(p) + 1) @ dist), sum(p), abs_tol=1e-9)
    assert (dist >= -1e-15).all()


def test_count_distribution_of_certain_calls_is_a_point_mass() -> None:
    assert count_distribution([1, 0, 1, 1]).tolist() == [0, 0, 0, 1, 0]
    with pytest.raises(ValueError):
        count_distribution([0.5, 1.5])


def test_band_distribution_folds_counts() -> None:
    dist = count_distribution([0.5] * 4)  # counts 0..4 of 4: bands 0,2,2,3,3
    folded = band_distribution(dist, 4)
    assert np.allclose(folded, [1 / 16, 0, 4 / 16 + 6 / 16, 4 / 16 + 1 / 16])


@pytest.mark.parametrize(("n", "total"), [(0, 10), (3, 10), (10, 10), (5, 23), (1, 1)])
def test_replicate_band_probabilities_match_beta_binomial_integral(n: int, total: int) -> None:
    probs = replicate_band_probabilities(n, total)
    assert math.isclose(sum(probs), 1.0)
    posterior = stats.beta(n + 0.5, total - n + 0.5)
    expected = np.zeros(4)
    for k in range(total + 1):
        pmf, _ = integrate.quad(
            lambda p, k=k: stats.binom.pmf(k, total, p) * posterior.pdf(p), 0, 1, limit=200
        )
        expected[band(k, total)] += pmf
    assert np.allclose(probs, expected, atol=1e-6)


def test_small_core_with_no_lesion_is_weak_evidence_of_absence() -> None:
    small, large = replicate_band_probabilities(0, 5), replicate_band_probabilities(0, 50)
    # a 5-glomerulus core with no lesion leaves a real chance of score >= 2 elsewhere; 50 do not
    assert small[2] + small[3] > 0.05 > 1e-4 > large[2] + large[3]
    assert wilson_interval(0, 5)[1] > 0.4 > 0.1 > wilson_interval(0, 50)[1]


def test_total_distribution_matches_enumeration() -> None:
    rng = np.random.default_rng(7)
    parts = [(w, list(rng.dirichlet(np.ones(4)))) for w in (1, 2, 1, 2, 1)]
    brute = np.zeros(25)
    for combo in itertools.product(range(4), repeat=len(parts)):
        total = sum(s * w for s, (w, _) in zip(combo, parts, strict=True))
        brute[total] += math.prod(probs[s] for s, (_, probs) in zip(combo, parts, strict=True))
    dist = total_distribution(parts, 24)
    assert len(dist) == 25
    assert np.allclose(dist, brute, atol=1e-14)
    assert math.isclose(sum(dist), 1.0)


def test_interval_95() -> None:
    assert interval_95([0, 0, 1.0, 0]) == [2, 2]
    assert interval_95([0.02, 0.48, 0.48, 0.02]) == [1, 2]
    assert interval_95([0.025, 0.95, 0.025]) == [0, 1]  # each tail holds exactly 2.5%


def test_batched_count_distributions_equal_one_at_a_time() -> None:
    matrix = np.random.default_rng(11).uniform(0, 1, (7, 30))
    matrix[2, 10:] = 0.0  # glomeruli outside a component's denominator carry p = 0
    batched = count_distributions(matrix)
    for row in range(7):
        assert np.allclose(batched[row], count_distribution(matrix[row]), atol=1e-15)
    assert np.allclose(batched[2, 11:], 0.0)
