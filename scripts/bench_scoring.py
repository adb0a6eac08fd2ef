"""Benchmark the scoring engine's uncertainty: exact distributions vs Monte Carlo, in one run.

Prints JSON: median milliseconds of ``lnpath.score_findings`` on a findings table with
``p_<lesion>`` columns for all nine lesions (goal: ≤ 50 ms for 100 glomeruli), of the exact
Poisson-binomial count distributions alone, and of a Monte Carlo estimate of the same
distributions (10,000 draws, the usual alternative) side by side, with the Monte Carlo's largest
absolute error against the exact answer. Synthetic probabilities (seeded), because speed does not
depend on what they mean.

Usage: python scripts/bench_scoring.py [--glomeruli 100] [--repeats 50]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

import numpy as np
import pandas as pd

import lnpath
from lnpath.core.findings import LESIONS
from lnpath.scoring.uncertainty import count_distributions

MONTE_CARLO_DRAWS = 10_000


def findings_table(n: int, rng: np.random.Generator) -> pd.DataFrame:
    probabilities = rng.beta(0.5, 2.0, size=(n, len(LESIONS)))
    table = pd.DataFrame({"glomerulus_id": np.arange(1, n + 1)})
    for j, lesion in enumerate(LESIONS):
        table[lesion] = pd.array(probabilities[:, j] >= 0.5, dtype="boolean")
        table[f"p_{lesion}"] = probabilities[:, j]
    return table


def monte_carlo(probabilities: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Count distributions per column estimated from random draws."""
    n, k = probabilities.shape
    draws = rng.random((MONTE_CARLO_DRAWS, n, k)) < probabilities
    counts = draws.sum(axis=1)
    return np.stack([np.bincount(counts[:, j], minlength=n + 1) for j in range(k)]) / len(counts)


def median_ms(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return round(statistics.median(times), 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--glomeruli", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=50)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    table = findings_table(args.glomeruli, rng)
    probabilities = table[[f"p_{lesion}" for lesion in LESIONS]].to_numpy()
    cortex = {
        "interstitial_inflammation": 0.1,
        "interstitial_fibrosis": 0.2,
        "tubular_atrophy": 0.1,
    }
    lnpath.score_findings(table, cortex=cortex)  # warm up imports and caches

    exact = count_distributions(probabilities.T)
    estimate = monte_carlo(probabilities, np.random.default_rng(1))
    exact_ms = median_ms(lambda: count_distributions(probabilities.T), args.repeats)
    mc_repeats = max(3, args.repeats // 10)
    mc_ms = median_ms(lambda: monte_carlo(probabilities, rng), mc_repeats)
    score_ms = median_ms(lambda: lnpath.score_findings(table, cortex=cortex), args.repeats)
    print(
        json.dumps(
            {
                "benchmark": "score_findings with p_ columns; exact vs Monte Carlo distributions",
                "glomeruli": args.glomeruli,
                "lesions_with_probabilities": len(LESIONS),
                "statistic": "median",
                "repeats": args.repeats,
                "score_findings_ms": score_ms,
                "goal_ms": 50.0,
                "goal_met": score_ms <= 50.0,
                "exact_count_distributions_ms": exact_ms,
                "monte_carlo_ms": mc_ms,
                "monte_carlo_draws": MONTE_CARLO_DRAWS,
                "monte_carlo_max_abs_error": round(float(np.abs(exact - estimate).max()), 5),
                "speedup_exact_vs_monte_carlo": round(mc_ms / exact_ms, 1),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
