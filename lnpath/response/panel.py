"""The endpoint panel of one pair: every field, decided from totals, bounds or components.

A total-based field whose index is incomplete is still decided when every value the unassessed
components allow gives the same answer (spec §3.3); the class-based response is the Zickert
component-level rule (:mod:`lnpath.response.rules`), which reads components, not totals.
"""

from __future__ import annotations

from collections.abc import Mapping
from itertools import product
from typing import Any

from lnpath.response.presets import (
    PROLIFERATIVE_BASELINE,
    TOTAL_VARS,
    class_outcomes,
    panel_rules,
    zickert_rule,
)
from lnpath.response.rules import PairFields, evaluate, rule_text
from lnpath.response.sides import BiopsySide, SideIndex, class_name

__all__ = ["index_deltas", "panel_fields", "rule_record"]


def index_deltas(bl: BiopsySide, fu: BiopsySide) -> dict[str, Any]:
    """Follow-up minus baseline per index and component; None where either is unassessed."""
    out: dict[str, Any] = {}
    for key, a, b in (
        ("activity_index", bl.activity, fu.activity),
        ("chronicity_index", bl.chronicity, fu.chronicity),
    ):
        comps = {}
        for name, ca in a.components.items():
            cb = b.components[name]
            both = ca.score is not None and cb.score is not None
            comps[name] = {
                "baseline": ca.score,
                "followup": cb.score,
                "delta_score": cb.score - ca.score if both else None,  # type: ignore[operator]
                "delta_weighted": (cb.weighted - ca.weighted) if both else None,  # type: ignore[operator]
            }
        total = None if a.total is None or b.total is None else b.total - a.total
        out[key] = {
            "baseline": a.total,
            "followup": b.total,
            "delta": total,
            "evaluable": total is not None,
            "reason": None if total is not None else _incomplete_reason(a, b),
            "components": comps,
        }
    return out


def _incomplete_reason(a: SideIndex, b: SideIndex) -> str:
    parts = []
    for label, idx in (("baseline", a), ("follow-up", b)):
        if not idx.complete:
            parts.append(f"{label} not assessed: {', '.join(idx.not_assessed) or 'total missing'}")
    return "incomplete index (" + "; ".join(parts) + ")"


def panel_fields(
    bl: BiopsySide,
    fu: BiopsySide,
    params: Mapping[str, Any],
    endpoint: str,
    fields: PairFields,
) -> dict[str, dict]:
    """Every panel field; one whose totals are incomplete is decided from their bounds when
    every value the missing components allow gives the same answer (spec §3.3).

    Long because it computes one panel field of spec §3.3 after the other.
    """
    totals = {
        "ai_bl": bl.activity.total,
        "ai_fu": fu.activity.total,
        "ci_bl": bl.chronicity.total,
        "ci_fu": fu.chronicity.total,
    }
    reasons = {
        "ai": f"activity endpoints not evaluable: {_incomplete_reason(bl.activity, fu.activity)}",
        "ci": "not evaluable for chronicity: " + _incomplete_reason(bl.chronicity, fu.chronicity),
    }
    panel: dict[str, dict[str, Any]] = {}
    for name, rule in panel_rules(params).items():
        if name == "relative_response" and endpoint != name:
            continue  # not validated: shown only when asked for by name
        flags = []
        missing = [v for v in rule.needs if totals[v] is None]
        if missing:
            values = _values_over_bounds(rule, params, totals, fields)
            if len(values) != 1:
                reason = (
                    reasons["ai"] if any(v.startswith("ai") for v in missing) else reasons["ci"]
                )
                panel[name] = _na(rule.rule, reason)
                continue
            value = values.pop()
            bounds = ", ".join(
                f"{v.upper()} {'-'.join(map(str, fields.numbers[v]))}" for v in missing
            )
            flags.append(
                f"decided from bounds ({bounds}): every value the unassessed components "
                "allow gives this"
            )
        else:
            value = rule.fn(tuple(totals[v] for v in TOTAL_VARS), params)  # type: ignore[arg-type]
        if name == "histologic_response" and value == "partial":
            flags.append("non-validated analogy")
        if name == "relative_response":
            flags.append("not validated")
        panel[name] = {
            "value": "not_applicable" if value is None else value,
            "evaluable": True,
            "rule": rule.rule,
            "reason": None,
            "flags": flags,
        }
    co = class_outcomes(bl, fu)
    panel["class_transition"] = {
        "value": co["class_transition"],
        "evaluable": True,
        "rule": "baseline class → follow-up class (LM proposals)",
        "reason": None,
        "flags": [],
        "proliferative_resolved": co["proliferative_resolved"],
    }
    applies = evaluate(PROLIFERATIVE_BASELINE, fields)
    response = zickert_rule(params["class_response_includes_pure_v"])
    if applies is None:
        record = _na(
            rule_text(response),
            f"baseline class {class_name(bl)}: not determinable (its lesions were not all "
            "assessed, so it could be III/IV)",
        )
    elif not applies:
        record = {
            "value": "not_applicable",
            "evaluable": True,
            "rule": rule_text(response),
            "reason": "baseline is not class III/IV",
            "flags": [],
        }
    else:
        record = rule_record(response, fields, [])
    panel["class_response"] = {**record, "proliferative_resolved": co["proliferative_resolved"]}
    return panel


def _values_over_bounds(
    rule: Any, params: Mapping[str, Any], totals: Mapping[str, int | None], fields: PairFields
) -> set[Any]:
    """Every value a total-based rule takes over the bounds of its incomplete totals."""
    ranges = [
        range(fields.numbers[v][0], fields.numbers[v][1] + 1) if totals[v] is None else (totals[v],)
        for v in rule.needs
    ]
    fixed = {v: totals[v] or 0 for v in TOTAL_VARS}
    values = set()
    for combo in product(*ranges):
        t = {**fixed, **dict(zip(rule.needs, combo, strict=True))}
        values.add(rule.fn(tuple(t[v] for v in TOTAL_VARS), params))
        if len(values) > 1:
            break
    return values


def rule_record(rule: Mapping[str, Any], fields: PairFields, flags: list[str]) -> dict[str, Any]:
    """A component-level rule evaluated on the pair's bounds."""
    open_: list[str] = []
    value = evaluate(rule, fields, open_)
    if value is None:
        return {**_na(rule_text(rule), "not decided: " + "; ".join(open_)), "flags": flags}
    if open_:
        flags = [*flags, "decided from bounds (" + "; ".join(open_) + " does not change it)"]
    return {
        "value": value,
        "evaluable": True,
        "rule": rule_text(rule),
        "reason": None,
        "flags": flags,
    }


def _na(rule: str, reason: str) -> dict[str, Any]:
    return {"value": None, "evaluable": False, "rule": rule, "reason": reason, "flags": []}
