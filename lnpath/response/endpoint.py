"""Baseline vs follow-up biopsy: the histological response endpoint (clinical-scoring.md §3).

A trial reads a response endpoint off two biopsies of one patient. This module normalises both sides
(a :class:`~lnpath.scoring.score.BiopsyScore`, a ``SlideResult``, a result folder, or a plain dict)
to a
small typed record, checks the §3.3 pre-conditions, and then applies one named preset's rules to
the two activity (AI) and chronicity (CI) totals. It never answers silently: a failed
pre-condition gives ``status == "not_evaluable"`` with the reasons, and an incomplete index makes
the endpoints that need it "not evaluable" rather than a wrong delta.

Two uncertainty views come with every evaluable answer (§2.3, §3.2): the probability that each
endpoint holds, summed exactly over the two biopsies' AI/CI total distributions when the scores
carry them, and a sampling view of how many glomeruli read the other way would flip the call.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from lnpath import __version__
from lnpath.response.html import render_fragment, render_html
from lnpath.response.preconditions import (
    Check,
    _has_stain_panel,
    check_preconditions,
)
from lnpath.response.presets import (
    ACTIVITY_FIELDS,
    CHRONICITY_FIELDS,
    DEFAULT_PARAMS,
    PARAM_HELP,
    PRESETS,
    TOTAL_VARS,
    Preset,
    class_outcomes,
    get_preset,
    holds,
    list_presets,
    panel_rules,
)
from lnpath.response.sides import (
    AI_COMPONENTS,
    CI_COMPONENTS,
    BiopsySide,
    SideIndex,
    load_side,
)
from lnpath.response.uncertainty import endpoint_uncertainty

__all__ = [
    "AI_COMPONENTS",
    "CI_COMPONENTS",
    "DEFAULT_PARAMS",
    "PARAM_HELP",
    "PRESETS",
    "BiopsySide",
    "Check",
    "Preset",
    "ResponseResult",
    "check_preconditions",
    "compare",
    "get_preset",
    "list_presets",
    "load_side",
]

logger = logging.getLogger(__name__)

READER_NOISE_CAVEAT = (
    "Repeat reads by the same pathologist differ by more than 2 AI points in 43% of cases and by "
    "more than 1 CI point in 45% (Wernick 1993); a CI change of +1 or an AI change of ±2 is within "
    "human reading error. A fixed algorithm removes reader variance, not the sampling variance "
    "between two cores."
)


@dataclass(frozen=True)
class ResponseResult:
    """The response endpoint of one baseline/follow-up pair under one preset.

    ``status`` is ``final`` only when both biopsies are pathologist-confirmed, ``provisional``
    when the endpoint was evaluated on machine proposals, and ``not_evaluable`` (with
    ``reasons``) when a pre-condition fails or the endpoint needs an incomplete index.
    """

    preset: str
    preset_description: str
    preset_source: str
    validated: bool
    params: dict[str, Any]
    status: str
    reasons: list[str]
    checks: list[Check]
    baseline: BiopsySide
    followup: BiopsySide
    endpoint: dict[str, Any]
    panel: dict[str, dict[str, Any]]
    deltas: dict[str, Any]
    uncertainty: dict[str, Any]
    caveats: list[str]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (the response.json schema)."""

        return {
            "schema": "lnpath.response/1",
            "lnpath_version": __version__,
            "status": self.status,
            "reasons": list(self.reasons),
            "preset": {
                "name": self.preset,
                "description": self.preset_description,
                "source": self.preset_source,
                "validated": self.validated,
                "params": dict(self.params),
            },
            "endpoint": self.endpoint,
            "preconditions": [c.to_dict() for c in self.checks],
            "panel": self.panel,
            "deltas": self.deltas,
            "uncertainty": self.uncertainty,
            "caveats": list(self.caveats),
            "baseline": self.baseline.to_dict(),
            "followup": self.followup.to_dict(),
        }

    def to_json(self, indent: int = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, ensure_ascii=False)

    def to_html(self) -> str:
        """A self-contained HTML report."""

        return render_html(self.to_dict())

    def _repr_html_(self) -> str:

        return render_fragment(self.to_dict())

    def __repr__(self) -> str:
        from lnpath.response.views import response_repr

        return response_repr(self)

    def plot(self) -> Any:
        """Baseline and follow-up AI and CI with their ranges and the preset's threshold;
        returns the matplotlib Figure."""
        from lnpath.response.views import plot_response

        return plot_response(self)


#: Keys that change no score: labels, and ``presets`` (a record of how the values were set; the
#: values themselves are compared). Two biopsies may differ in them and still be compared.


def compare(
    baseline: Any, followup: Any, preset: str = "lnhr_default", **overrides: Any
) -> ResponseResult:
    """Compare a baseline and a follow-up biopsy under a named response preset.

    Args:
        baseline: the earlier biopsy: a ``BiopsyScore``, a ``SlideResult``, a result folder
            (or its result.json), or a dict in ``BiopsyScore.to_dict()`` / result.json form.
        followup: the repeat biopsy, in any of the same forms.
        preset: a name from :data:`PRESETS` (``lnpath compare --list-presets`` explains each).
        **overrides: thresholds replacing the preset's, by name (see :data:`DEFAULT_PARAMS`).

    Returns:
        The :class:`ResponseResult`; check ``status`` before reading ``endpoint``.

    Raises:
        InputError: unknown preset or threshold, or malformed scores.
        ResultError: a result folder is missing or malformed.
    """
    chosen = get_preset(preset)
    params = chosen.effective_params(overrides)
    bl, fu = load_side(baseline, "baseline"), load_side(followup, "follow-up")
    checks = check_preconditions(bl, fu, params)
    reasons = [f"{c.name}: {c.message}" for c in checks if c.status == "fail"]
    caveats = [READER_NOISE_CAVEAT]
    if not chosen.validated:
        caveats.insert(0, f"preset {chosen.name} is NOT VALIDATED: {chosen.description}")
    for side, label in ((bl, "baseline"), (fu, "follow-up")):
        if side.stain and not _has_stain_panel(side.stain) and not params["require_stain_panel"]:
            caveats.append(
                f"{label} rests on {side.stain}; §3.3 asks for at least PAS and trichrome or "
                "silver, so fibrinoid necrosis and fibrosis calls carry more error "
                "(require_stain_panel=true makes this a pre-condition)"
            )

    panel: dict[str, dict[str, Any]] = {}
    deltas: dict[str, Any] = {}
    uncertainty: dict[str, Any] = {}
    if reasons:
        endpoint = _endpoint_record(chosen, None, None, "not evaluable: pre-conditions failed")
        status = "not_evaluable"
    else:
        deltas = _deltas(bl, fu)
        panel = _panel(bl, fu, params, chosen.endpoint)
        if panel.get("chronic_progression", {}).get("value") in {"possible", "progression"} or (
            params["progression_min_delta_ci"] < 2
        ):
            caveats.append("a CI rise of +1 counts here but lies within human reading error")
        rec = panel[chosen.endpoint]
        endpoint = _endpoint_record(chosen, rec.get("value"), rec.get("rule"), rec.get("reason"))
        if rec["evaluable"]:
            status = "final" if bl.confirmed and fu.confirmed else "provisional"
        else:
            status = "not_evaluable"
            reasons.append(f"{chosen.endpoint}: {rec['reason']}")
        uncertainty = endpoint_uncertainty(bl, fu, params, chosen.endpoint, panel)
    logger.info("compare %s vs %s under %s: %s", bl.source, fu.source, chosen.name, status)
    return ResponseResult(
        preset=chosen.name,
        preset_description=chosen.description,
        preset_source=chosen.source,
        validated=chosen.validated,
        params=params,
        status=status,
        reasons=reasons,
        checks=checks,
        baseline=bl,
        followup=fu,
        endpoint=endpoint,
        panel=panel,
        deltas=deltas,
        uncertainty=uncertainty,
        caveats=caveats,
    )


def _endpoint_record(preset: Preset, value: Any, rule: str | None, reason: str | None) -> dict:
    return {
        "name": preset.endpoint,
        "value": value,
        "holds": holds(preset.endpoint, value),
        "rule": rule,
        "basis": preset.source,
        "validated": preset.validated,
        "reason": reason,
    }


def _deltas(bl: BiopsySide, fu: BiopsySide) -> dict[str, Any]:
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


def _panel(
    bl: BiopsySide, fu: BiopsySide, params: Mapping[str, Any], endpoint: str
) -> dict[str, dict]:
    totals = {
        "ai_bl": bl.activity.total,
        "ai_fu": fu.activity.total,
        "ci_bl": bl.chronicity.total,
        "ci_fu": fu.chronicity.total,
    }
    ai_reason = _incomplete_reason(bl.activity, fu.activity)
    ci_reason = _incomplete_reason(bl.chronicity, fu.chronicity)
    ai_ok = bl.activity.complete and fu.activity.complete
    ci_ok = bl.chronicity.complete and fu.chronicity.complete
    panel: dict[str, dict[str, Any]] = {}
    for name, rule in panel_rules(params).items():
        if name == "relative_response" and endpoint != name:
            continue  # not validated: shown only when asked for by name
        if name in ACTIVITY_FIELDS and not ai_ok:
            panel[name] = _na(rule.rule, f"activity endpoints not evaluable: {ai_reason}")
        elif name in CHRONICITY_FIELDS and not ci_ok:
            panel[name] = _na(rule.rule, f"not evaluable for chronicity: {ci_reason}")
        elif name == "composite_histologic_responder" and not (ai_ok and ci_ok):
            panel[name] = _composite_partial(rule.rule, ai_ok, totals, params, ai_reason, ci_reason)
        else:
            t = tuple(totals[v] for v in TOTAL_VARS)
            value = rule.fn(t, params)  # type: ignore[arg-type]
            flags = []
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
    co = class_outcomes(bl, fu, params["class_response_includes_pure_v"])
    panel["class_transition"] = {
        "value": co["class_transition"],
        "evaluable": True,
        "rule": "baseline class → follow-up class (LM proposals)",
        "reason": None,
        "flags": [],
        "proliferative_resolved": co["proliferative_resolved"],
    }
    cr = co["class_response"]
    panel["class_response"] = {
        "value": cr,
        "evaluable": cr is not None,
        "rule": "III/IV(±V) → I/II"
        + (" or pure V" if params["class_response_includes_pure_v"] else ""),
        "reason": co["reason"],
        "flags": [],
        "proliferative_resolved": co["proliferative_resolved"],
    }
    return panel


def _na(rule: str, reason: str) -> dict[str, Any]:
    return {"value": None, "evaluable": False, "rule": rule, "reason": reason, "flags": []}


def _composite_partial(
    rule: str,
    ai_ok: bool,
    totals: Mapping[str, int | None],
    params: Mapping[str, Any],
    ai_reason: str,
    ci_reason: str,
) -> dict:
    # Kleene logic: a follow-up not in remission is not a responder whatever the chronicity.
    if ai_ok and totals["ai_fu"] is not None and totals["ai_fu"] > params["remission_max_ai"]:
        return {
            "value": False,
            "evaluable": True,
            "rule": rule,
            "flags": [],
            "reason": f"not in remission, so not a responder whatever the chronicity ({ci_reason})",
        }
    reason = (
        f"activity endpoints not evaluable: {ai_reason}"
        if not ai_ok
        else f"not evaluable for chronicity: {ci_reason}"
    )
    return _na(rule, reason)
