"""Response presets and the §3.3 rules they apply to the AI/CI totals and the class proposals.

Each preset names its headline endpoint, its literature source and the thresholds it sets on top
of ``lnhr_default``; every threshold can be overridden by name. The rules are pure functions of the
four totals (AI and CI at baseline and follow-up), so the same code gives the observed call, the
probability of each call under uncertainty, and the sampling view.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import numpy as np

from lnpath.core.errors import InputError
from lnpath.response.sides import (
    AI_MAX,
    CI_MAX,
    BiopsySide,
    class_name,
    classes,
    parse_alternatives,
)

#: Every threshold a preset sets, with the lnhr_default value; any can be overridden by name.
DEFAULT_PARAMS: dict[str, Any] = {
    "quiescent_max_ai": 0,
    "remission_max_ai": 2,
    "active_above_ai": 2,
    "partial_max_fraction": 0.5,
    "progression_min_delta_ci": 2,
    "high_chronicity_above_ci": 4,
    "class_response_includes_pure_v": False,
    "accept_limited_adequacy": False,
    "require_same_software_version": True,
    "require_stain_panel": False,
}

PARAM_HELP: dict[str, str] = {
    "quiescent_max_ai": "activity_status_fu is 'quiescent' when AI_fu <= this",
    "remission_max_ai": "histologic_remission (and a 'complete' response) when AI_fu <= this",
    "active_above_ai": "activity_status_fu is 'active' when AI_fu > this",
    "partial_max_fraction": "'partial' response when AI_fu <= this x AI_bl (not validated)",
    "progression_min_delta_ci": "chronic 'progression' when CI_fu - CI_bl >= this",
    "high_chronicity_above_ci": "high_chronicity_fu when CI_fu > this",
    "class_response_includes_pure_v": "class response also counts III/IV -> pure V",
    "accept_limited_adequacy": "accept 'limited' (8-9 glomeruli) biopsies as adequate",
    "require_same_software_version": "refuse biopsies scored by different lnpath versions",
    "require_stain_panel": "refuse biopsies without PAS plus trichrome or silver (§3.3 minimum); "
    "off by default because a one-slide PAS result would never qualify, so it is a caveat",
}


#: How a preset is supported: ``validated`` only for a rule taken verbatim from its source;
#: ``proposed`` for lnpath's own composites or adaptations; ``not validated`` for analogies.
LABELS = ("validated", "proposed", "not validated")

#: The index version every rule here is written for; a source scored with another gets a caveat.
SCORED_VERSION = "bajema2018"


def zickert_rule(include_pure_v: bool) -> dict[str, Any]:
    """Zickert 2014 [V abstract]: "Class I, II or III/IV-C on repeat biopsies" is a response;
    III/IV-C = every glomerular activity item absent (spec §3.3). Pure V counts on request."""
    targets = ["I", "II", *(["V"] if include_pure_v else [])]
    return {
        "any": [
            {"field": "class_fu", "op": "in", "value": targets},
            {
                "all": [
                    {"field": "class_fu", "op": "has", "value": ["III", "IV"]},
                    {"field": "glomerular_activity_fu", "op": "==", "value": 0},
                ]
            },
        ]
    }


#: The class-based response applies to a class III/IV(+/-V) baseline only.
PROLIFERATIVE_BASELINE: dict[str, Any] = {"field": "class_bl", "op": "has", "value": ["III", "IV"]}


@dataclass(frozen=True)
class Preset:
    """A named response definition: its headline endpoint, thresholds and literature source.

    ``label`` says how it is supported (:data:`LABELS`); ``nih_version`` is the index its source
    scored (LuFla, Malvar, Parodis, Pineiro and Zickert predate the 2018 revision); ``rule``, where
    the endpoint needs components and not only totals, builds its component-level rule
    (:mod:`lnpath.response.rules`) from the effective thresholds.
    """

    name: str
    endpoint: str
    description: str
    source: str
    label: str = "validated"
    nih_version: str = SCORED_VERSION
    params: Mapping[str, Any] = field(default_factory=dict)
    rule: Callable[[Mapping[str, Any]], dict[str, Any]] | None = None

    @property
    def validated(self) -> bool:
        """Taken verbatim from its source."""
        return self.label == "validated"

    def rule_for(self, params: Mapping[str, Any]) -> dict[str, Any] | None:
        """The component-level rule under ``params``, or None for a rule over totals."""
        return None if self.rule is None else self.rule(params)

    def effective_params(self, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The lnhr_default thresholds, then this preset's, then the caller's (validated)."""
        merged = {**DEFAULT_PARAMS, **self.params}
        for key, value in (overrides or {}).items():
            if key not in DEFAULT_PARAMS:
                raise InputError(
                    f"unknown response threshold {key!r} (known: {', '.join(DEFAULT_PARAMS)})"
                )
            merged[key] = _coerce_param(key, value)
        _check_params(merged)
        return merged


def _coerce_param(key: str, value: Any) -> Any:
    default = DEFAULT_PARAMS[key]
    try:
        if isinstance(default, bool):
            if isinstance(value, str):
                lowered = value.strip().lower()
                if lowered not in {"true", "false", "1", "0", "yes", "no"}:
                    raise ValueError(value)
                return lowered in {"true", "1", "yes"}
            if not isinstance(value, bool | int):
                raise ValueError(value)
            return bool(value)
        if isinstance(default, int):
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError(value)
            return int(str(value).strip()) if isinstance(value, str) else int(value)
        number = float(value)
        if not np.isfinite(number):
            raise ValueError(value)
        return number
    except (TypeError, ValueError):
        kind = type(default).__name__
        raise InputError(f"response threshold {key}={value!r} is not a valid {kind}") from None


def _check_params(p: Mapping[str, Any]) -> None:
    for key in ("quiescent_max_ai", "remission_max_ai", "active_above_ai"):
        if not 0 <= p[key] <= AI_MAX:
            raise InputError(f"response threshold {key}={p[key]} is outside 0..{AI_MAX}")
    if p["quiescent_max_ai"] > p["active_above_ai"]:
        raise InputError(
            f"response thresholds: quiescent_max_ai={p['quiescent_max_ai']} exceeds "
            f"active_above_ai={p['active_above_ai']}"
        )
    if not 0 < p["partial_max_fraction"] <= 1:
        raise InputError(f"partial_max_fraction={p['partial_max_fraction']} is not in (0, 1]")
    if not 1 <= p["progression_min_delta_ci"] <= CI_MAX:
        raise InputError(
            f"progression_min_delta_ci={p['progression_min_delta_ci']} is outside 1..{CI_MAX}"
        )
    if not 0 <= p["high_chronicity_above_ci"] <= CI_MAX:
        raise InputError(
            f"high_chronicity_above_ci={p['high_chronicity_above_ci']} is outside 0..{CI_MAX}"
        )


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset(
            "lnhr_default",
            "composite_histologic_responder",
            "Composite responder: histologic remission (AI_fu <= 2) and no chronic progression "
            "(CI_fu - CI_bl >= 2); a CI rise of +1 is 'possible' progression inside reader error. "
            "PROPOSED: lnpath's own composite, not a published definition.",
            "clinical-scoring.md §3.3: LuFla AI threshold (De Rosa 2018 [V]) with a noise-aware CI "
            "rule (Wernick 1993 [V])",
            label="proposed",
        ),
        Preset(
            "lufla_AI2",
            "histologic_remission",
            "Remission if AI_fu <= 2; every LuFla patient with AI > 2 flared after withdrawal.",
            "De Rosa M et al. Kidney Int 2018;94:788-794 (LuFla, NCT02313974) [V]",
            nih_version="austin1984",
        ),
        Preset(
            "malvar_AI0",
            "histologic_remission",
            "Quiescent (remission) only if AI_fu = 0; AI 1-5 was continued activity, so "
            "maintenance immunosuppression continued.",
            "Malvar A et al. Kidney Int 2020;97:156-162 [V]",
            nih_version="austin1984",
            params={"remission_max_ai": 0, "active_above_ai": 0},
        ),
        Preset(
            "parodis_rebiolup_AI3",
            "persistent_activity_fu",
            "High activity if AI_fu > 3 (REBIOLUP intensifies immunosuppression); CI_fu is "
            "reported as a continuous value.",
            "Parodis I et al. Rheumatology 2020;59:3424-3434; REBIOLUP NCT04449991 [V]",
            nih_version="austin1984",
            params={"remission_max_ai": 3, "active_above_ai": 3},
        ),
        Preset(
            "moroni2022",
            "chronic_progression",
            "Any CI increase (CI_fu > CI_bl) is progression; AI_fu > 3 and CI_fu > 4 are the "
            "repeat-biopsy risk markers for a >=30% eGFR decline.",
            "Moroni G et al. Lupus Sci Med 2022;9:e000721 [V]",
            params={
                "progression_min_delta_ci": 1,
                "remission_max_ai": 3,
                "active_above_ai": 3,
                "high_chronicity_above_ci": 4,
            },
        ),
        Preset(
            "pineiro_any_activity",
            "persistent_activity_fu",
            "Active if the follow-up shows any active lesion (AI_fu >= 1); flares were 77.8% with "
            "active lesions vs 34.5% without.",
            "Pineiro GJ et al. Am J Nephrol 2016;44:439-446 [V]",
            nih_version="austin1984",
            params={"remission_max_ai": 0, "active_above_ai": 0},
        ),
        Preset(
            "class_transition",
            "class_response",
            "Response if a class III/IV(+/-V) baseline is class I or II at follow-up, or III/IV "
            "with no active glomerular lesion (III/IV-C: endocapillary hypercellularity, "
            "neutrophils/karyorrhexis, fibrinoid necrosis, hyaline deposits and cellular/"
            "fibrocellular crescents all absent); pure V counts when "
            "class_response_includes_pure_v=true.",
            'Zickert A et al. Lupus Sci Med 2014;1:e000018 [V: abstract, "Class I, II or III/IV-C '
            'on repeat biopsies"]',
            nih_version="austin1984",
            rule=lambda p: zickert_rule(p["class_response_includes_pure_v"]),
        ),
        Preset(
            "relative_AI50",
            "relative_response",
            "Partial response if AI_fu <= 0.5 x AI_bl. NOT VALIDATED: an analogy to the "
            "clinical >=50% proteinuria reduction; no source defines a histologic partial "
            "response this way.",
            "analogy to clinical partial response; not validated (clinical-scoring.md §3.1)",
            label="not validated",
        ),
        Preset(
            "strict_chronicity_CI1",
            "chronic_progression",
            "Progression if CI rises by >= 1; note that +1 lies within human reading error. "
            "PROPOSED: in the style of Moroni 2022, not its definition.",
            "Moroni 2022 style [V]; reader noise caveat Wernick 1993 [V]",
            label="proposed",
            params={"progression_min_delta_ci": 1},
        ),
    )
}


def list_presets() -> list[dict[str, Any]]:
    """Each preset's name, endpoint, description, source, label, index version, thresholds and
    component-level rule (None for a rule over the totals)."""
    return [
        {
            "name": p.name,
            "endpoint": p.endpoint,
            "description": p.description,
            "source": p.source,
            "label": p.label,
            "validated": p.validated,
            "nih_version": p.nih_version,
            "params": p.effective_params(),
            "rule": p.rule_for(p.effective_params()),
        }
        for p in PRESETS.values()
    ]


def get_preset(name: str) -> Preset:
    """Look a preset up by name; an unknown name is a one-line :class:`InputError`."""
    try:
        return PRESETS[name]
    except KeyError:
        raise InputError(
            f"unknown response preset {name!r} (known: {', '.join(PRESETS)})"
        ) from None


Totals = tuple[int, int, int, int]  # ai_bl, ai_fu, ci_bl, ci_fu

TOTAL_VARS = ("ai_bl", "ai_fu", "ci_bl", "ci_fu")


def activity_status(ai_fu: int, p: Mapping[str, Any]) -> str:
    """quiescent / low_residual / active at follow-up (§3.3)."""
    if ai_fu <= p["quiescent_max_ai"]:
        return "quiescent"
    return "active" if ai_fu > p["active_above_ai"] else "low_residual"


def histologic_response(ai_bl: int, ai_fu: int, p: Mapping[str, Any]) -> str:
    """complete / partial / none / not_applicable (§3.3); 'partial' is a non-validated analogy."""
    if ai_bl <= p["remission_max_ai"]:
        return "not_applicable"
    if ai_fu <= p["remission_max_ai"]:
        return "complete"
    if ai_fu <= _fraction(p["partial_max_fraction"]) * ai_bl:
        return "partial"
    return "none"


def chronic_progression(ci_bl: int, ci_fu: int, p: Mapping[str, Any]) -> str:
    """progression / possible (inside reader error) / stable (§3.3)."""
    delta = ci_fu - ci_bl
    if delta >= p["progression_min_delta_ci"]:
        return "progression"
    return "possible" if delta >= 1 else "stable"


def _fraction(x: float) -> Fraction:
    # Exact: AI_fu == 0.5 x AI_bl must compare equal, never lose to float rounding.
    return Fraction(str(x))


@dataclass(frozen=True)
class Rule:
    """One panel field as a pure function of the four totals, plus what it needs."""

    needs: tuple[str, ...]
    fn: Callable[[Totals, Mapping[str, Any]], Any]
    rule: str


def panel_rules(p: Mapping[str, Any]) -> dict[str, Rule]:
    r, q, a = p["remission_max_ai"], p["quiescent_max_ai"], p["active_above_ai"]
    f, d, h = (
        p["partial_max_fraction"],
        p["progression_min_delta_ci"],
        p["high_chronicity_above_ci"],
    )

    def composite(t: Totals, p: Mapping[str, Any]) -> bool:
        return t[1] <= r and chronic_progression(t[2], t[3], p) != "progression"

    def relative(t: Totals, p: Mapping[str, Any]) -> bool | None:
        return None if t[0] == 0 else t[1] <= _fraction(f) * t[0]

    return {
        "activity_status_fu": Rule(
            ("ai_fu",),
            lambda t, p: activity_status(t[1], p),
            f"quiescent if AI_fu <= {q}; active if AI_fu > {a}; low_residual otherwise",
        ),
        "histologic_remission": Rule(("ai_fu",), lambda t, p: t[1] <= r, f"AI_fu <= {r}"),
        "persistent_activity_fu": Rule(("ai_fu",), lambda t, p: t[1] > a, f"AI_fu > {a}"),
        "histologic_response": Rule(
            ("ai_bl", "ai_fu"),
            lambda t, p: histologic_response(t[0], t[1], p),
            f"not_applicable if AI_bl <= {r}; complete if AI_fu <= {r}; partial if AI_fu <= "
            f"{f} x AI_bl (non-validated analogy); none otherwise",
        ),
        "relative_response": Rule(
            ("ai_bl", "ai_fu"),
            relative,
            f"AI_fu <= {f} x AI_bl (not validated); not_applicable if AI_bl = 0",
        ),
        "chronic_progression": Rule(
            ("ci_bl", "ci_fu"),
            lambda t, p: chronic_progression(t[2], t[3], p),
            f"progression if CI_fu - CI_bl >= {d}; possible if it is "
            f"{'+1' if d == 2 else f'+1..+{d - 1}'} (within reader error); stable if <= 0"
            if d > 1
            else "progression if CI_fu - CI_bl >= 1 (+1 is within reader error); stable if <= 0",
        ),
        "high_chronicity_fu": Rule(("ci_fu",), lambda t, p: t[3] > h, f"CI_fu > {h}"),
        "composite_histologic_responder": Rule(
            ("ai_fu", "ci_bl", "ci_fu"),
            composite,
            f"histologic_remission (AI_fu <= {r}) and not chronic progression "
            f"(CI_fu - CI_bl >= {d})",
        ),
    }


def holds(endpoint: str, value: Any) -> bool | None:
    """Whether the headline proposition is true: a category endpoint holds at 'progression'."""
    if endpoint == "chronic_progression":
        return value == "progression"
    return value if isinstance(value, bool) or value is None else None


#: Panel fields that need both activity indices complete.
ACTIVITY_FIELDS = (
    "activity_status_fu",
    "histologic_remission",
    "persistent_activity_fu",
    "histologic_response",
    "relative_response",
)

#: Panel fields that need both chronicity indices complete.
CHRONICITY_FIELDS = ("chronic_progression", "high_chronicity_fu")


def class_outcomes(bl: BiopsySide, fu: BiopsySide) -> dict[str, Any]:
    """The class_transition label and whether the proliferative lesions resolved (§3.3); the
    class-based response itself is a component-level rule (:func:`zickert_rule`)."""
    a, b = classes(bl), classes(fu)
    prolif = {"III", "IV"}
    resolved: Any = None
    if a is not None and not a & prolif:
        resolved = "not_applicable"
    elif a is not None and b is not None:
        # decided only when the proposal and every class its unassessed calls allow agree
        options = [b, *parse_alternatives(fu.class_alternative)]
        outcomes = {not option & prolif for option in options}
        resolved = outcomes.pop() if len(outcomes) == 1 else None
    return {
        "class_transition": f"{class_name(bl)} → {class_name(fu)}",
        "proliferative_resolved": resolved,
    }
