"""How far a biopsy score can be trusted: sampling and lesion-calling uncertainty, computed exactly.

Two sources of doubt are kept apart:

* **Sampling** - a core holds a handful of glomeruli out of a million. For a component with ``n`` of
  ``N`` glomeruli involved we give the Wilson 95 % interval of the fraction and the probability that
  a second core of the same size from the same kidney would land in each band (posterior predictive
  under binomial sampling, Jeffreys prior Beta(1/2, 1/2): a beta-binomial).
* **Calling** - when each glomerulus carries a lesion probability, the number of involved glomeruli
  is a Poisson-binomial variable; its exact distribution (dynamic-programming convolution), hence
  the band distribution, and the exact distribution of the AI/CI totals (convolution of the
  component distributions) follow. This assumes glomeruli and components are independent given
  their probabilities, which the report states.

Everything is vectorised with numpy: 100 glomeruli take well under a millisecond per component.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.special import gammaln

__all__ = [
    "JEFFREYS",
    "Z95",
    "band",
    "band_distribution",
    "bands",
    "count_distribution",
    "count_distributions",
    "interval_95",
    "near_band_edge",
    "replicate_band_probabilities",
    "replicate_count_distribution",
    "total_distribution",
    "wilson_interval",
]

#: Two-sided 95 % standard-normal quantile.
Z95 = 1.959963984540054
#: Jeffreys prior Beta(a, b) for a binomial proportion.
JEFFREYS = (0.5, 0.5)


def band(n: int, total: int) -> int:
    """NIH band (0-3) of ``n`` involved out of ``total``, by exact integer arithmetic (spec §1.3).

    ``0`` if absent; ``1`` if under 25 %; ``2`` from 25 % to 50 % inclusive; ``3`` above 50 %.
    """
    if n < 0 or total < 0 or n > total:
        raise ValueError(f"need 0 <= n <= N, got n={n}, N={total}")
    if n == 0:
        return 0
    if 4 * n < total:
        return 1
    if 2 * n <= total:
        return 2
    return 3


PERCENT_EDGES = (0.0, 25.0, 50.0, 90.0, 100.0)
"""Where a percentage changes what it means: the NIH bands (none, under 25 %, 25-50 %, over 50 %),
class VI (90 % globally sclerosed) and all glomeruli."""


def band_pct(fraction: float) -> str:
    """``fraction`` as a percentage a reader cannot put in the wrong band: whole percent, with
    as many decimals (up to 3) as it takes to stay on the same side of every edge in
    :data:`PERCENT_EDGES` as the exact value. 49/197 reads "24.9%" (band 1), never "25%" (band
    2); 1/400 reads "0.2%", never "0%"."""
    exact = 100.0 * float(fraction)

    def side(value: float, edge: float) -> int:
        return (value > edge) - (value < edge)

    for decimals in range(4):
        text = f"{exact:.{decimals}f}"
        if all(side(float(text), e) == side(exact, e) for e in PERCENT_EDGES):
            break
    return f"{text}%"


def bands(counts: ArrayLike, total: int) -> NDArray[np.int64]:
    """:func:`band` for every count in ``counts`` (same denominator), vectorised."""
    k = np.asarray(counts, dtype=np.int64)
    return np.where(k == 0, 0, np.where(4 * k < total, 1, np.where(2 * k <= total, 2, 3)))


def near_band_edge(n: int, total: int) -> bool:
    """True when one glomerulus more or fewer would change the band (spec §8 guard)."""
    here = band(n, total)
    return (n > 0 and band(n - 1, total) != here) or (n < total and band(n + 1, total) != here)


def wilson_interval(n: int, total: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of the proportion ``n/total``; ``(0, 1)`` when ``total`` is 0.

    Chosen over the normal approximation because it stays inside [0, 1] and behaves at n = 0 and
    n = N, which small biopsies hit all the time.
    """
    if total == 0:
        return (0.0, 1.0)
    p = n / total
    z2 = z * z
    centre = (p + z2 / (2 * total)) / (1 + z2 / total)
    half = z * math.sqrt(p * (1 - p) / total + z2 / (4 * total * total)) / (1 + z2 / total)
    low = 0.0 if n == 0 else max(0.0, centre - half)
    high = 1.0 if n == total else min(1.0, centre + half)
    return (low, high)


def replicate_count_distribution(n: int, total: int) -> NDArray[np.float64]:
    """Distribution of the involved count in a second core of ``total`` glomeruli.

    The involved fraction is unknown; given ``n`` of ``total`` and a Jeffreys prior its posterior
    is Beta(n + 1/2, N - n + 1/2), and the count in a new core of the same size is beta-binomial.
    Unlike plugging in n/N, this does not claim certainty at n = 0 or n = N.
    """
    if total == 0:
        return np.ones(1)
    a = n + JEFFREYS[0]
    b = total - n + JEFFREYS[1]
    k = np.arange(total + 1)
    log_pmf = (
        gammaln(total + 1)
        - gammaln(k + 1)
        - gammaln(total - k + 1)
        + _log_beta(k + a, total - k + b)
        - _log_beta(np.float64(a), np.float64(b))
    )
    pmf = np.exp(log_pmf)
    return np.asarray(pmf / pmf.sum(), dtype=np.float64)


def replicate_band_probabilities(n: int, total: int) -> list[float]:
    """Probability of each band for a second core of ``total`` glomeruli from the same kidney."""
    if total == 0:
        return [1.0, 0.0, 0.0, 0.0]
    return band_distribution(replicate_count_distribution(n, total), total)


def _log_beta(a: ArrayLike, b: ArrayLike) -> NDArray[np.float64]:
    a_ = np.asarray(a, dtype=np.float64)
    b_ = np.asarray(b, dtype=np.float64)
    return np.asarray(gammaln(a_) + gammaln(b_) - gammaln(a_ + b_), dtype=np.float64)


def count_distribution(probabilities: ArrayLike) -> NDArray[np.float64]:
    """Exact distribution of the number of successes among independent Bernoulli(p_i) trials.

    Poisson-binomial by dynamic programming: adding a glomerulus convolves the current
    distribution with ``[1 - p, p]``. Exact up to floating point.

    Returns:
        Array of length ``len(probabilities) + 1``; entry k is P(count = k).
    """
    p = np.asarray(probabilities, dtype=np.float64).ravel()
    return count_distributions(p[None, :])[0]


def count_distributions(probabilities: ArrayLike) -> NDArray[np.float64]:
    """:func:`count_distribution` for every row of a (components, glomeruli) matrix at once.

    One pass over the glomeruli updates all rows together, so scoring every component of a
    100-glomerulus biopsy costs about 100 small numpy operations, not 100 per component.
    A glomerulus outside a component's denominator simply carries p = 0.
    """
    p = np.atleast_2d(np.asarray(probabilities, dtype=np.float64))
    if np.any(np.isnan(p)) or np.any((p < 0) | (p > 1)):
        raise ValueError("probabilities must lie in [0, 1]")
    rows, size = p.shape
    dist = np.zeros((rows, size + 1))
    dist[:, 0] = 1.0
    for i in range(size):
        pi = p[:, i : i + 1]
        # only the first i + 2 entries can be non-zero after i + 1 glomeruli
        head = dist[:, : i + 2].copy()
        dist[:, 1 : i + 2] = head[:, 1:] * (1.0 - pi) + head[:, :-1] * pi
        dist[:, 0] = head[:, 0] * (1.0 - pi[:, 0])
    return dist


def band_distribution(count_dist: ArrayLike, total: int) -> list[float]:
    """Fold a count distribution over 0..total into band probabilities [p0, p1, p2, p3]."""
    dist = np.asarray(count_dist, dtype=np.float64)
    if dist.size != total + 1:
        raise ValueError(f"count distribution has {dist.size} entries, expected {total + 1}")
    folded = np.bincount(bands(np.arange(total + 1), total), weights=dist, minlength=4)
    return [float(x) for x in folded]


def total_distribution(parts: Sequence[tuple[int, Sequence[float]]], maximum: int) -> list[float]:
    """Exact distribution of an index total from independent component band distributions.

    Args:
        parts: ``(weight, [p0, p1, p2, p3])`` per component; a component known exactly is a point
            mass at its score.
        maximum: the index maximum (24 for AI, 12 for CI); the result has ``maximum + 1`` entries.

    Returns:
        ``[P(total = 0), ..., P(total = maximum)]``.
    """
    dist = np.zeros(maximum + 1)
    dist[0] = 1.0
    for weight, probs in parts:
        spread = np.zeros(3 * weight + 1)
        spread[::weight] = np.asarray(probs, dtype=np.float64)
        dist = np.convolve(dist, spread)[: maximum + 1]
    return [float(x) for x in dist]


def interval_95(distribution: Sequence[float]) -> list[int]:
    """Equal-tailed 95 % interval ``[lo, hi]`` of a distribution over 0, 1, 2, ..."""
    cdf = np.cumsum(np.asarray(distribution, dtype=np.float64))
    eps = 1e-12
    lo = int(np.searchsorted(cdf, 0.025 - eps))
    hi = int(np.searchsorted(cdf, 0.975 - eps))
    return [lo, min(hi, len(cdf) - 1)]
