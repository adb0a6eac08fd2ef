"""Uncertainty of a response endpoint: exact probabilities and the sampling view (§2.3, §3.3).

When both biopsies carry AI/CI total distributions (from lesion-call probabilities), the
probability of each endpoint value is an exact sum over the product of the independent
distributions. Independently of that, the sampling view counts how many of the sampled glomeruli,
read the other way, would move a component's band far enough to change the endpoint.
"""

from __future__ import annotations

from collections.abc import Mapping
from itertools import product
from typing import Any

import numpy as np

from lnpath.response.presets import TOTAL_VARS, Totals, panel_rules
from lnpath.response.sides import GLOMERULAR_COMPONENTS, BiopsySide, as_count
from lnpath.scoring.uncertainty import band

INDEPENDENCE_ASSUMPTION = (
    "The baseline and follow-up biopsies are separate samples, so their AI and CI total "
    "distributions are treated as independent; where one endpoint combines the activity and the "
    "chronicity of the same biopsy, its AI and CI distributions are also treated as independent "
    "(the scores carry only these marginal distributions). Probabilities are exact sums over the "
    "product of those distributions; each distribution itself rests on the scorer's own assumption."
)

SAMPLING_ASSUMPTION = (
    "One glomerular component at a time, with the number of glomeruli N held fixed: the smallest "
    "number k of the sampled glomeruli that, read the other way, would move the component's band "
    "(0 if n == 0; 1 if 4n < N; 2 if 4n >= N and 2n <= N; 3 if 2n > N) far enough to change the "
    "endpoint."
)


def outcome_probabilities(
    name: str, params: Mapping[str, Any], dists: Mapping[str, tuple[float, ...] | None]
) -> dict[str, float] | None:
    """P(each value of a panel field) by exact summation over independent total distributions.

    Returns None when a distribution the field needs is missing.
    """
    rule = panel_rules(params)[name]
    needed = [dists.get(v) for v in rule.needs]
    if any(d is None for d in needed):
        return None
    fixed = dict.fromkeys(TOTAL_VARS, 0)
    probs: dict[str, float] = {}
    supports = [np.flatnonzero(np.asarray(d) > 0) for d in needed]
    for combo in product(*supports):
        w = 1.0
        for d, k in zip(needed, combo, strict=True):
            w *= d[k]  # type: ignore[index]
        values = {**fixed, **dict(zip(rule.needs, (int(k) for k in combo), strict=True))}
        out = rule.fn(tuple(values[v] for v in TOTAL_VARS), params)  # type: ignore[arg-type]
        key = "not_applicable" if out is None else str(out).lower()
        probs[key] = probs.get(key, 0.0) + w
    return {k: round(v, 12) for k, v in sorted(probs.items())}


def _point_mass(total: int | None, maximum: int) -> tuple[float, ...] | None:
    if total is None:
        return None
    return tuple(1.0 if k == total else 0.0 for k in range(maximum + 1))


def delta_distribution(p_bl: tuple[float, ...], p_fu: tuple[float, ...]) -> dict[str, Any]:
    """P(total_fu - total_bl = d) by convolution of the two independent distributions."""
    conv = np.convolve(np.asarray(p_fu), np.asarray(p_bl)[::-1])
    lo = -(len(p_bl) - 1)
    return {"min": lo, "max": len(p_fu) - 1, "p": [round(float(x), 12) for x in conv]}


def endpoint_uncertainty(
    bl: BiopsySide,
    fu: BiopsySide,
    params: Mapping[str, Any],
    endpoint: str,
    panel: Mapping[str, Mapping[str, Any]],
) -> dict[str, Any]:
    given = {
        "ai_bl": bl.activity.distribution,
        "ai_fu": fu.activity.distribution,
        "ci_bl": bl.chronicity.distribution,
        "ci_fu": fu.chronicity.distribution,
    }
    indices = {
        "ai_bl": bl.activity,
        "ai_fu": fu.activity,
        "ci_bl": bl.chronicity,
        "ci_fu": fu.chronicity,
    }
    # A complete index without lesion probabilities is taken as exact (a point mass), so an
    # endpoint mixing an uncertain AI with a certain CI still gets its probability.
    dists = {v: given[v] or _point_mass(indices[v].total, indices[v].maximum) for v in given}
    exact = [v for v in TOTAL_VARS if given[v] is None and indices[v].total is not None]
    out: dict[str, Any] = {"assumption": INDEPENDENCE_ASSUMPTION, "treated_as_exact": exact}
    rules = panel_rules(params)
    probs: dict[str, Any] = {}
    for name, rule in rules.items():
        if panel.get(name, {}).get("evaluable"):
            informative = any(given[v] is not None for v in rule.needs)
            probs[name] = outcome_probabilities(name, params, dists) if informative else None
    out["outcome_probabilities"] = probs
    ep = probs.get(endpoint)
    if ep is None:
        out["endpoint_probability"] = None
        out["endpoint_probability_note"] = (
            "class-based endpoint: no distribution over classes is available"
            if endpoint == "class_response"
            else "the scores carry no AI/CI total distributions (no lesion probabilities), or "
            "the endpoint is not evaluable"
        )
    else:
        key = "progression" if endpoint == "chronic_progression" else "true"
        out["endpoint_probability"] = ep.get(key, 0.0)
    for key, a, b in (("delta_ai", "ai_bl", "ai_fu"), ("delta_ci", "ci_bl", "ci_fu")):
        da, db = dists[a], dists[b]
        informative = given[a] is not None or given[b] is not None
        out[key] = delta_distribution(da, db) if informative and da and db else None
    out["sampling"] = sampling_view(bl, fu, params, endpoint)
    out["band_edges"] = band_edges(bl, fu)
    out["component_bands"] = component_band_changes(bl, fu)
    return out


def endpoint_at(endpoint: str, t: list[int | None], params: Mapping[str, Any]) -> Any:
    totals: Totals = (t[0] or 0, t[1] or 0, t[2] or 0, t[3] or 0)
    return panel_rules(params)[endpoint].fn(totals, params)


def sampling_view(
    bl: BiopsySide, fu: BiopsySide, params: Mapping[str, Any], endpoint: str
) -> dict[str, Any]:
    """For each glomerular component, the glomeruli that would flip its band and the endpoint.

    See :data:`SAMPLING_ASSUMPTION`. Only components counted as n/N glomeruli take part; the
    endpoint is re-evaluated only when the totals it needs are complete.
    """
    rules = panel_rules(params)
    base: list[int | None] = [
        bl.activity.total,
        fu.activity.total,
        bl.chronicity.total,
        fu.chronicity.total,
    ]
    rule = rules.get(endpoint)
    evaluable = rule is not None and all(base[TOTAL_VARS.index(v)] is not None for v in rule.needs)
    now = endpoint_at(endpoint, base, params) if evaluable else None
    rows = []
    for side_i, side in ((0, bl), (1, fu)):
        for idx_off, index in ((0, side.activity), (2, side.chronicity)):
            for name, c in index.components.items():
                if name not in GLOMERULAR_COMPONENTS or c.score is None:
                    continue
                n, total = as_count(c.n), as_count(c.N)
                if n is None or total is None or not 0 <= n <= total or total == 0:
                    continue
                if band(n, total) != c.score:
                    continue
                row: dict[str, Any] = {
                    "side": "baseline" if side_i == 0 else "follow-up",
                    "component": name,
                    "n": n,
                    "N": total,
                    "score": c.score,
                    "weight": c.weight,
                }
                for direction, step in (("up", 1), ("down", -1)):
                    k_band, k_flip, new_value = None, None, None
                    for k in range(1, (total - n if step > 0 else n) + 1):
                        s = band(n + step * k, total)
                        if s == c.score:
                            continue
                        if k_band is None:
                            k_band = k
                        if not evaluable:
                            break
                        t = list(base)
                        pos = idx_off + side_i
                        t[pos] = (t[pos] or 0) + (s - c.score) * c.weight
                        value = endpoint_at(endpoint, t, params)
                        if value != now:
                            k_flip, new_value = k, value
                            break
                    row["more_to_next_band" if step > 0 else "fewer_to_lower_band"] = k_band
                    row[f"flip_{direction}"] = k_flip
                    row[f"flip_{direction}_value"] = new_value
                rows.append(row)
    flips = [
        (r[f"flip_{d}"], r, d) for r in rows for d in ("up", "down") if r[f"flip_{d}"] is not None
    ]
    k_min = min((f[0] for f in flips), default=None)
    return {
        "assumption": SAMPLING_ASSUMPTION,
        "endpoint": endpoint,
        "endpoint_value": now,
        "components": rows,
        "min_glomeruli_to_flip": k_min,
        "closest_flips": [
            {
                "side": r["side"],
                "component": r["component"],
                "direction": "more" if d == "up" else "fewer",
                "new_value": r[f"flip_{d}_value"],
            }
            for k, r, d in flips
            if k == k_min
        ],
    }


def band_edges(bl: BiopsySide, fu: BiopsySide) -> list[dict[str, Any]]:
    """Components one glomerulus from a band edge; doubled AI components are flagged (§3.3)."""
    out = []
    for label, side in (("baseline", bl), ("follow-up", fu)):
        for index in (side.activity, side.chronicity):
            for name, c in index.components.items():
                given = side.component_uncertainty.get(name) or {}
                near = given.get("near_band_edge")
                n, total = as_count(c.n), as_count(c.N)
                if near is None and name in GLOMERULAR_COMPONENTS and n and total:
                    # An absent lesion is not flagged here: the sampling view covers 0 -> 1.
                    near = band(min(n + 1, total), total) != band(n, total) or band(
                        n - 1, total
                    ) != band(n, total)
                if near:
                    out.append(
                        {
                            "side": label,
                            "component": name,
                            "weight": c.weight,
                            "doubled": c.weight == 2,
                            "band_probabilities": given.get("band_probabilities"),
                        }
                    )
    return out


def component_band_changes(bl: BiopsySide, fu: BiopsySide) -> list[dict[str, Any]]:
    """Per component and biopsy: the probability that its band differs from the observed one.

    Two views from the scorer, passed through: ``p_other_band_resampled`` (a second core of the
    same size from the same kidney, beta-binomial) and ``p_other_band_calls`` (uncertain lesion
    calls on these glomeruli), each ``1 - p(observed band)``; None where the scorer gives none.
    """
    out = []
    for label, side in (("baseline", bl), ("follow-up", fu)):
        for index in (side.activity, side.chronicity):
            for name, c in index.components.items():
                given = side.component_uncertainty.get(name) or {}
                if c.score is None or not given:
                    continue
                row: dict[str, Any] = {
                    "side": label,
                    "component": name,
                    "score": c.score,
                    "weight": c.weight,
                }
                for key, source in (
                    ("resampled", "band_probabilities"),
                    ("calls", "call_band_probabilities"),
                ):
                    probs = given.get(source)
                    valid = isinstance(probs, list) and len(probs) == 4
                    row[f"p_other_band_{key}"] = (
                        round(1.0 - float(probs[c.score]), 12) if valid else None  # type: ignore[index]
                    )
                out.append(row)
    return out
