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
from lnpath.core.errors import InputError
from lnpath.response.html import render_fragment, render_html
from lnpath.response.panel import index_deltas, panel_fields, rule_record
from lnpath.response.preconditions import (
    Check,
    check_preconditions,
    has_stain_panel,
)
from lnpath.response.presets import (
    DEFAULT_PARAMS,
    PARAM_HELP,
    PRESETS,
    SCORED_VERSION,
    Preset,
    get_preset,
    holds,
    list_presets,
)
from lnpath.response.rules import check_rule, pair_fields
from lnpath.response.sides import (
    AI_COMPONENTS,
    CI_COMPONENTS,
    BiopsySide,
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

    ``status`` is ``final`` only when both biopsies are pathologist-confirmed with a verified
    seal, ``provisional``
    when the endpoint was evaluated on machine proposals, and ``not_evaluable`` (with
    ``reasons``) when a pre-condition fails or the endpoint needs an incomplete index.
    """

    preset: str
    preset_description: str
    preset_source: str
    validated: bool
    preset_label: str
    preset_nih_version: str
    preset_rule: dict[str, Any] | None
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
    fields: dict[str, Any]

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
                "label": self.preset_label,
                "nih_version": self.preset_nih_version,
                "rule": self.preset_rule,
                "params": dict(self.params),
            },
            "endpoint": self.endpoint,
            "fields": self.fields,
            "preconditions": [c.to_dict() for c in self.checks],
            "panel": self.panel,
            "deltas": self.deltas,
            "uncertainty": self.uncertainty,
            "caveats": list(self.caveats),
            "baseline": self.baseline.to_dict(),
            "followup": self.followup.to_dict(),
        }

    def to_json(self, indent: int = 2) -> str:
        """:meth:`to_dict` as JSON text (the response.json a trial's analysis reads)."""
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


#: The endpoint name of a caller's own rule (``compare(..., rule=...)``).
CUSTOM_RULE = "custom_rule"


def compare(
    baseline: Any,
    followup: Any,
    preset: str | None = None,
    rule: Mapping[str, Any] | None = None,
    **overrides: Any,
) -> ResponseResult:
    """Compare a baseline and a follow-up biopsy under a named response preset.

    Long because the endpoint's steps (pre-conditions, panel, preset rule, uncertainty, record)
    read as one sequence.

    Args:
        baseline: the earlier biopsy: a ``BiopsyScore``, a ``SlideResult``, a result folder
            (or its result.json), or a dict in ``BiopsyScore.to_dict()`` / result.json form.
        followup: the repeat biopsy, in any of the same forms.
        preset: a name from :data:`PRESETS` (``lnpath compare --list-presets`` explains each);
            None applies the ``response_preset`` both biopsies were scored with (spec §7).
        rule: a component-level rule (:mod:`lnpath.response.rules`) evaluated as the endpoint
            ``custom_rule``, labelled not validated, on top of the preset's panel.
        **overrides: thresholds replacing the preset's, by name (see :data:`DEFAULT_PARAMS`).

    Returns:
        The :class:`ResponseResult`; check ``status`` before reading ``endpoint``.

    Raises:
        InputError: unknown preset, threshold or rule field, the two biopsies name different
            response presets and none is given, or malformed scores.
        ResultError: a result folder is missing or malformed.
    """
    if preset is not None:
        get_preset(preset)  # an unknown name fails before any folder is read
    if rule is not None:
        check_rule(rule)
    bl, fu = load_side(baseline, "baseline"), load_side(followup, "follow-up")
    chosen = get_preset(preset if preset is not None else _configured_preset(bl, fu))
    params = chosen.effective_params(overrides)
    checks = check_preconditions(bl, fu, params)
    reasons = [f"{c.name}: {c.message}" for c in checks if c.status == "fail"]
    caveats = _caveats(chosen, bl, fu, params, rule)
    fields = pair_fields(bl, fu)
    preset_rule = chosen.rule_for(params)
    endpoint_name = CUSTOM_RULE if rule is not None else chosen.endpoint

    panel: dict[str, dict[str, Any]] = {}
    deltas: dict[str, Any] = {}
    uncertainty: dict[str, Any] = {}
    if reasons:
        endpoint = _endpoint_record(
            chosen, endpoint_name, None, None, "not evaluable: pre-conditions failed", rule
        )
        status = "not_evaluable"
    else:
        deltas = index_deltas(bl, fu)
        panel = panel_fields(bl, fu, params, endpoint_name, fields)
        if rule is not None:
            panel[CUSTOM_RULE] = rule_record(rule, fields, ["user-defined rule, not validated"])
        if panel.get("chronic_progression", {}).get("value") in {"possible", "progression"} or (
            params["progression_min_delta_ci"] < 2
        ):
            caveats.append("a CI rise of +1 counts here but lies within human reading error")
        rec = panel[endpoint_name]
        endpoint = _endpoint_record(
            chosen, endpoint_name, rec.get("value"), rec.get("rule"), rec.get("reason"), rule
        )
        if rec["evaluable"]:
            status = "final" if bl.sealed and fu.sealed else "provisional"
        else:
            status = "not_evaluable"
            reasons.append(f"{endpoint_name}: {rec['reason']}")
        uncertainty = endpoint_uncertainty(bl, fu, params, endpoint_name, panel)
    logger.info("compare %s vs %s under %s: %s", bl.source, fu.source, chosen.name, status)
    custom = rule is not None
    return ResponseResult(
        preset=chosen.name,
        preset_description=chosen.description,
        preset_source=chosen.source,
        validated=chosen.validated and not custom,
        preset_label="not validated" if custom else chosen.label,
        preset_nih_version=chosen.nih_version,
        preset_rule=dict(rule) if rule is not None else preset_rule,
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
        fields=fields.to_dict(),
    )


def _configured_preset(bl: BiopsySide, fu: BiopsySide) -> str:
    """The ``response_preset`` the two biopsies were scored with (spec §7); they must agree."""
    named = {
        label: side.config.get("response_preset")
        for label, side in (("baseline", bl), ("follow-up", fu))
        if side.config.get("response_preset")
    }
    if len(set(named.values())) > 1:
        raise InputError(
            f"the baseline is configured for response preset {named['baseline']!r} and the "
            f"follow-up for {named['follow-up']!r}; name the preset to apply"
        )
    return str(next(iter(named.values()), "lnhr_default"))


def _caveats(
    chosen: Preset,
    bl: BiopsySide,
    fu: BiopsySide,
    params: Mapping[str, Any],
    rule: Mapping[str, Any] | None,
) -> list[str]:
    caveats = [READER_NOISE_CAVEAT]
    if rule is not None:
        caveats.insert(0, f"endpoint {CUSTOM_RULE} is a user-defined rule, NOT VALIDATED")
    if chosen.label == "not validated":
        caveats.insert(0, f"preset {chosen.name} is NOT VALIDATED: {chosen.description}")
    elif chosen.label == "proposed":
        caveats.insert(0, f"preset {chosen.name} is PROPOSED, not a published definition")
    scored = {side.nih_version for side in (bl, fu)}
    if chosen.nih_version != SCORED_VERSION and SCORED_VERSION in scored:
        caveats.append(
            f"preset {chosen.name}: its source scored the original NIH index "
            f"({chosen.nih_version}), which predates the 2018 revision; these biopsies are scored "
            "by the 2018 modified index (fibrinoid necrosis alone x2, karyorrhexis with "
            "neutrophils x1, fibrocellular crescents counted as active), so its thresholds may "
            "not transfer exactly"
        )
    for side, label in ((bl, "baseline"), (fu, "follow-up")):
        if side.confirmed and not side.sealed:
            caveats.append(
                f"{label} says it was confirmed by {side.confirmed_by or 'unknown'} but its "
                f"confirmation seal was not verified ({side.seal_message or 'not a result folder'}"
                "); the endpoint stays provisional"
            )
        unrecorded = side.stains_examined is None and not has_stain_panel(side)
        if unrecorded and not params["require_stain_panel"]:
            caveats.append(
                f"{label}: the stains examined are not recorded (slide: "
                f"{side.stain or 'stain not recorded'}); §3.3 asks for at least PAS and "
                "trichrome or silver, without which fibrinoid necrosis and fibrosis calls "
                "carry more error. Record them at sign-out (stains examined), or "
                "require_stain_panel=true makes the panel a pre-condition"
            )
    return caveats


def _endpoint_record(
    preset: Preset,
    name: str,
    value: Any,
    text: str | None,
    reason: str | None,
    rule: Mapping[str, Any] | None,
) -> dict:
    custom = rule is not None
    return {
        "name": name,
        "value": value,
        "holds": holds(name, value),
        "rule": text,
        "basis": "user-defined rule" if custom else preset.source,
        "validated": preset.validated and not custom,
        "reason": reason,
    }
