"""Baseline vs follow-up response endpoint (clinical-scoring.md §3): presets, edges, checks."""

from __future__ import annotations

import json
from itertools import product
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

import lnpath
from lnpath.core.errors import InputError, ResultError
from lnpath.response.endpoint import (
    AI_COMPONENTS,
    CI_COMPONENTS,
    PRESETS,
    list_presets,
)
from lnpath.scoring.uncertainty import band
from lnpath.workflow.compare import compare
from tests.conftest import sealed_result

WEIGHTS = {"fibrinoid_necrosis": 2, "cellular_fibrocellular_crescents": 2}
N = 20
N_FOR_SCORE = {0: 0, 1: 1, 2: 5, 3: 11}  # n of 20 glomeruli giving each band
# Fill order for a wanted AI total: the four x1 components first, then the two doubled ones.
AI_FILL = (
    "endocapillary_hypercellularity",
    "neutrophils_karyorrhexis",
    "hyaline_deposits",
    "interstitial_inflammation",
    "fibrinoid_necrosis",
    "cellular_fibrocellular_crescents",
)


def component(name: str, value: int | tuple[int, int] | None) -> dict[str, Any]:
    """A component in to_dict() form from a band score or an exact (n, N) count."""
    weight = WEIGHTS.get(name, 1)
    if value is None:
        return {
            "n": None,
            "N": None,
            "fraction": None,
            "score": None,
            "weight": weight,
            "weighted": None,
            "assessed": False,
        }
    n, total = value if isinstance(value, tuple) else (N_FOR_SCORE[value], N)
    score = band(n, total)
    return {
        "n": n,
        "N": total,
        "fraction": n / total,
        "score": score,
        "weight": weight,
        "weighted": score * weight,
        "assessed": True,
    }


def index(names: tuple[str, ...], values: dict[str, Any], maximum: int) -> dict[str, Any]:
    comps = {name: component(name, values.get(name, 0)) for name in names}
    missing = [name for name, c in comps.items() if not c["assessed"]]
    partial = sum(c["weighted"] or 0 for c in comps.values())
    return {
        "total": None if missing else partial,
        "max": maximum,
        "complete": not missing,
        "not_assessed": missing,
        "components": comps,
    }


def ai_scores(total: int) -> dict[str, int]:
    """Component scores reaching an AI total (x1 components first)."""
    out, left = {}, total
    for name in AI_FILL:
        w = WEIGHTS.get(name, 1)
        out[name] = min(3, left // w)
        left -= out[name] * w
    assert left == 0, total
    return out


def ci_scores(total: int) -> dict[str, int]:
    out, left = {}, total
    for name in CI_COMPONENTS:
        out[name] = min(3, left)
        left -= out[name]
    return out


def score(
    ai: int | dict[str, Any] = 0,
    ci: int | dict[str, Any] = 0,
    *,
    proposal: str | None = "IV",
    label: str | None = None,
    alternative: str | None = None,
    adequacy: str = "adequate",
    nih: str = "bajema2018",
    config: dict[str, Any] | None = None,
    version: str = "0.1.0",
    ai_dist: list[float] | None = None,
    ci_dist: list[float] | None = None,
) -> dict[str, Any]:
    """A BiopsyScore.to_dict()-shaped dict."""
    ai_values = ai_scores(ai) if isinstance(ai, int) else ai
    ci_values = ci_scores(ci) if isinstance(ci, int) else ci
    return {
        "nih_version": nih,
        "lnpath_version": version,
        "config": config or {"nih_version": nih, "glomerular_denominator": "all"},
        "status": "provisional",
        "activity_index": index(AI_COMPONENTS, ai_values, 24),
        "chronicity_index": index(CI_COMPONENTS, ci_values, 12),
        "isn_rps_class": {
            "proposal": proposal,
            "label": label or f"Class {proposal}, proposal",
            "alternative": alternative,
            "needs_if_em": [],
        },
        "adequacy": {"n_glomeruli": N, "status": adequacy, "message": ""},
        "uncertainty": {
            "assumption": "test",
            "components": {},
            "activity_index": {"distribution": ai_dist, "interval_95": None},
            "chronicity_index": {"distribution": ci_dist, "interval_95": None},
        },
    }


def result(scores: dict[str, Any], **meta: Any) -> dict[str, Any]:
    """A result.json-shaped dict around ``scores``."""
    data = {
        "schema_version": 1,
        "status": "provisional",
        "revision": 0,
        "slide": {"path": "x.svs", "name": "x.svs"},
        "stain": "PAS",
        "patient_id": "P1",
        "biopsy_date": None,
        "lnpath_version": "0.1.0",
        "models": [{"name": "glomeruli-unet-pas", "sha256": "ab" * 32}],
        "config": scores.get("config"),
        "scores": scores,
        "confirmation": None,
        "changes": [],
    }
    data.update(meta)
    return data


# --------------------------------------------------------------------------- lnhr_default


@pytest.mark.parametrize(
    ("ai_fu", "status", "remission"),
    [
        (0, "quiescent", True),
        (1, "low_residual", True),
        (2, "low_residual", True),
        (3, "active", False),
        (4, "active", False),
    ],
)
def test_default_activity_status_and_remission_edges(ai_fu: int, status: str, remission: bool):
    r = compare(score(10), score(ai_fu))
    assert r.status == "provisional"
    assert r.panel["activity_status_fu"]["value"] == status
    assert r.panel["histologic_remission"]["value"] is remission


@pytest.mark.parametrize(
    ("ai_bl", "ai_fu", "category"),
    [
        (2, 0, "not_applicable"),  # AI_bl <= 2: nothing to respond
        (3, 2, "complete"),
        (10, 2, "complete"),
        (10, 5, "partial"),  # exactly 0.5 x AI_bl
        (10, 6, "none"),
        (6, 3, "partial"),  # exactly 0.5 x 6
        (7, 3, "partial"),
        (5, 3, "none"),  # 3 > 2.5
        (3, 3, "none"),
    ],
)
def test_default_histologic_response_edges(ai_bl: int, ai_fu: int, category: str):
    r = compare(score(ai_bl), score(ai_fu))
    rec = r.panel["histologic_response"]
    assert rec["value"] == category
    assert ("non-validated analogy" in rec["flags"]) is (category == "partial")


@pytest.mark.parametrize(
    ("ci_bl", "ci_fu", "call"),
    [
        (3, 1, "stable"),
        (3, 3, "stable"),
        (3, 4, "possible"),
        (3, 5, "progression"),
        (0, 12, "progression"),
    ],
)
def test_default_chronic_progression_edges(ci_bl: int, ci_fu: int, call: str):
    r = compare(score(0, ci_bl), score(0, ci_fu))
    assert r.panel["chronic_progression"]["value"] == call
    assert any("reading error" in c for c in r.caveats)


@pytest.mark.parametrize(("ci_fu", "high"), [(4, False), (5, True)])
def test_default_high_chronicity_edge(ci_fu: int, high: bool):
    assert compare(score(0, 4), score(0, ci_fu)).panel["high_chronicity_fu"]["value"] is high


@pytest.mark.parametrize(
    ("ai_fu", "ci_bl", "ci_fu", "responder"),
    [(2, 2, 3, True), (2, 2, 4, False), (3, 2, 2, False), (0, 5, 0, True)],
)
def test_default_composite_responder(ai_fu: int, ci_bl: int, ci_fu: int, responder: bool):
    r = compare(score(12, ci_bl), score(ai_fu, ci_fu))
    assert r.endpoint["name"] == "composite_histologic_responder"
    assert r.endpoint["value"] is responder
    assert r.endpoint["holds"] is responder


# --------------------------------------------------------------------------- named presets


@pytest.mark.parametrize(("ai_fu", "holds"), [(2, True), (3, False)])
def test_lufla_ai2(ai_fu: int, holds: bool):
    r = compare(score(8), score(ai_fu, 6), preset="lufla_AI2")
    assert (r.endpoint["name"], r.endpoint["value"]) == ("histologic_remission", holds)
    assert "De Rosa" in r.endpoint["basis"]


@pytest.mark.parametrize(
    ("ai_fu", "holds", "status"), [(0, True, "quiescent"), (1, False, "active")]
)
def test_malvar_ai0(ai_fu: int, holds: bool, status: str):
    r = compare(score(8), score(ai_fu), preset="malvar_AI0")
    assert r.endpoint["value"] is holds
    assert r.panel["activity_status_fu"]["value"] == status


@pytest.mark.parametrize(("ai_fu", "active"), [(3, False), (4, True)])
def test_parodis_rebiolup_ai3(ai_fu: int, active: bool):
    r = compare(score(8), score(ai_fu), preset="parodis_rebiolup_AI3")
    assert (r.endpoint["name"], r.endpoint["value"]) == ("persistent_activity_fu", active)


@pytest.mark.parametrize(("ai_fu", "active"), [(0, False), (1, True)])
def test_pineiro_any_activity(ai_fu: int, active: bool):
    r = compare(score(8), score(ai_fu), preset="pineiro_any_activity")
    assert r.endpoint["value"] is active


@pytest.mark.parametrize(("ci_bl", "ci_fu", "call"), [(2, 2, "stable"), (2, 3, "progression")])
def test_moroni2022_any_ci_increase(ci_bl: int, ci_fu: int, call: str):
    r = compare(score(8, ci_bl), score(4, ci_fu), preset="moroni2022")
    assert r.endpoint["value"] == call
    assert r.endpoint["holds"] is (call == "progression")
    assert r.panel["persistent_activity_fu"]["value"] is True  # AI_fu 4 > 3
    assert (
        compare(score(8), score(3), preset="moroni2022").panel["persistent_activity_fu"]["value"]
        is False
    )


@pytest.mark.parametrize(("ci_fu", "holds"), [(3, False), (4, True)])
def test_strict_chronicity_ci1(ci_fu: int, holds: bool):
    r = compare(score(0, 3), score(0, ci_fu), preset="strict_chronicity_CI1")
    assert r.endpoint["holds"] is holds
    assert any("+1 counts here" in c for c in r.caveats)


@pytest.mark.parametrize(
    ("ai_bl", "ai_fu", "value"),
    [(6, 3, True), (6, 4, False), (7, 3, True), (0, 0, "not_applicable")],
)
def test_relative_ai50_is_flagged_not_validated(ai_bl: int, ai_fu: int, value: Any):
    r = compare(score(ai_bl), score(ai_fu), preset="relative_AI50")
    assert r.endpoint["value"] == value
    assert r.validated is False and r.endpoint["validated"] is False
    assert "NOT VALIDATED" in r.caveats[0]
    assert r.to_dict()["preset"]["validated"] is False
    assert "relative_response" not in compare(score(6), score(3)).panel  # only on request


@pytest.mark.parametrize(
    ("bl", "fu", "pure_v", "resolved", "response"),
    [
        ("IV", "II", False, True, True),
        ("III+V", "I", False, True, True),
        ("IV+V", "V", False, True, False),
        ("IV+V", "V", True, True, True),
        ("IV", "III", False, False, False),
        ("IV", "VI", False, True, False),
        ("II", "II", False, "not_applicable", "not_applicable"),
    ],
)
def test_class_transition(bl: str, fu: str, pure_v: bool, resolved: Any, response: Any):
    r = compare(
        score(8, proposal=bl),
        score(1, proposal=fu),
        preset="class_transition",
        class_response_includes_pure_v=pure_v,
    )
    assert r.endpoint["value"] == response
    assert r.panel["class_transition"]["value"] == f"{bl} → {fu}"
    assert r.panel["class_transition"]["proliferative_resolved"] == resolved


def test_class_transition_lm_only_needs_if_em():
    """No LN lesion by light microscopy: proliferative resolved, but I/II vs V needs IF/EM."""
    fu = score(0, proposal=None, label="No LN lesion identified by light microscopy")
    r = compare(score(8, proposal="IV"), fu, preset="class_transition")
    assert r.status == "not_evaluable"
    assert r.panel["class_response"]["proliferative_resolved"] is True
    assert "IF/EM" in r.panel["class_response"]["reason"]
    assert r.panel["class_transition"]["value"] == "IV → no LN lesion by LM"
    pure_v = compare(score(8), fu, preset="class_transition", class_response_includes_pure_v=True)
    assert pure_v.endpoint["value"] is True and pure_v.status == "provisional"
    # The follow-up could still be proliferative if its unassessed glomeruli were involved.
    unsure = score(0, proposal="II", alternative="III")
    r = compare(score(8), unsure, preset="class_transition")
    assert r.panel["class_response"]["proliferative_resolved"] is None
    assert "unassessed" in r.panel["class_response"]["reason"]


# --------------------------------------------------------------------------- overrides


def test_overrides_change_thresholds_and_are_validated():
    assert compare(score(8), score(3), preset="lufla_AI2").endpoint["value"] is False
    r = compare(score(8), score(3), preset="lufla_AI2", remission_max_ai=3)
    assert r.endpoint["value"] is True and r.params["remission_max_ai"] == 3
    # CLI-style strings are coerced to the threshold's type
    r = compare(score(0, 2), score(0, 3), progression_min_delta_ci="1")
    assert r.panel["chronic_progression"]["value"] == "progression"
    r = compare(score(10), score(6), partial_max_fraction="0.6")
    assert r.panel["histologic_response"]["value"] == "partial"
    with pytest.raises(InputError, match="unknown response threshold 'remision_max_ai'"):
        compare(score(), score(), remision_max_ai=3)
    with pytest.raises(InputError, match="not a valid int"):
        compare(score(), score(), remission_max_ai="two")
    with pytest.raises(InputError, match="not a valid int"):
        compare(score(), score(), remission_max_ai=2.5)
    with pytest.raises(InputError, match="partial_max_fraction"):
        compare(score(), score(), partial_max_fraction=1.5)
    with pytest.raises(InputError, match="not a valid bool"):
        compare(score(), score(), accept_limited_adequacy="maybe")
    with pytest.raises(InputError, match="unknown response preset 'lufla'"):
        compare(score(), score(), preset="lufla")


def test_every_preset_is_listed_with_description_and_source():
    names = {p["name"] for p in list_presets()}
    assert names == {
        "lnhr_default",
        "lufla_AI2",
        "malvar_AI0",
        "parodis_rebiolup_AI3",
        "moroni2022",
        "pineiro_any_activity",
        "class_transition",
        "relative_AI50",
        "strict_chronicity_CI1",
    }
    for p in list_presets():
        assert p["description"] and p["source"]
    labels = {p["name"]: p["label"] for p in list_presets()}
    assert labels["relative_AI50"] == "not validated"
    assert {n for n, label in labels.items() if label == "proposed"} == {
        "lnhr_default",
        "strict_chronicity_CI1",
    }
    assert [p.name for p in PRESETS.values() if p.validated] == [
        n for n, label in labels.items() if label == "validated"
    ]


# --------------------------------------------------------------------------- pre-conditions


def _failed(r: lnpath.ResponseResult) -> set[str]:
    return {c.name for c in r.checks if c.status == "fail"}


def test_preconditions_pass_and_not_checked_are_reported():
    r = compare(score(8), score(2))
    status = {c.name: c.status for c in r.checks}
    assert status["same_patient"] == "not_checked"  # no ids on plain score dicts
    assert status["baseline_adequate"] == status["same_nih_version"] == "pass"
    assert r.reasons == []


@pytest.mark.parametrize(
    ("bl_meta", "fu_meta", "failed", "text"),
    [
        ({"patient_id": "P1"}, {"patient_id": "P2"}, "same_patient", "'P1' vs 'P2'"),
        (
            {"biopsy_date": "2024-05-01"},
            {"biopsy_date": "2023-05-01"},
            "followup_after_baseline",
            "swapped",
        ),
        (
            {"biopsy_date": "2024-05-01"},
            {"biopsy_date": "2024-05-01"},
            "followup_after_baseline",
            "both biopsies are dated",
        ),
        ({"stain": "PAS"}, {"stain": "H&E"}, "comparable_stains", "PAS vs H&E"),
        (
            {"lnpath_version": "0.1.0"},
            {"lnpath_version": "0.2.0"},
            "same_software_version",
            "0.1.0 vs 0.2.0",
        ),
        (
            {},
            {"models": [{"name": "glomeruli-unet-pas", "sha256": "cd" * 32}]},
            "same_models",
            "models differ",
        ),
    ],
)
def test_each_precondition_on_result_dicts(bl_meta, fu_meta, failed, text):
    bl = result(score(10), **{"biopsy_date": "2023-01-01", **bl_meta})
    fu = result(score(2), **{"biopsy_date": "2024-01-01", **fu_meta})
    r = compare(bl, fu)
    assert r.status == "not_evaluable"
    assert _failed(r) == {failed}
    assert any(text in reason for reason in r.reasons)
    assert r.endpoint["value"] is None and r.panel == {} and r.deltas == {}


def test_per_biopsy_annotation_files_are_inputs_not_models():
    def outlines(name: str) -> list[dict[str, Any]]:
        return [
            {"name": f"annotations:{name}", "sha256": name * 8},
            {"name": "MorphometryCaller", "sha256": None},
        ]

    bl = result(score(10), models=outlines("a.geojson"))
    fu = result(score(2), models=outlines("b.geojson"))
    assert "same_models" not in _failed(compare(bl, fu))
    segmented = result(
        score(2),
        models=[
            {"name": "glomeruli-unet-pas", "sha256": "ab" * 32},
            {"name": "MorphometryCaller", "sha256": None},
        ],
    )
    assert "same_models" in _failed(compare(bl, segmented))


def test_correct_order_and_same_patient_pass():
    bl = result(score(10), biopsy_date="2023-01-01")
    fu = result(score(2), biopsy_date="2024-01-01")
    r = compare(bl, fu)
    assert r.status == "provisional" and not _failed(r)
    assert "365 days" in next(c.message for c in r.checks if c.name == "followup_after_baseline")


@pytest.mark.parametrize(
    ("bl", "fu", "failed"),
    [
        (score(adequacy="inadequate"), score(), "baseline_adequate"),
        (score(), score(adequacy="limited"), "followup_adequate"),
        (score(nih="austin1984"), score(), "same_nih_version"),
        (
            score(config={"glomerular_denominator": "non_globally_sclerosed"}),
            score(),
            "same_scoring_config",
        ),
    ],
)
def test_precondition_adequacy_version_config(bl, fu, failed):
    r = compare(bl, fu)
    assert r.status == "not_evaluable" and failed in _failed(r)


def test_stain_panel_is_a_caveat_unless_required():
    pas = compare(result(score(8), stain="PAS"), result(score(2), stain="PAS"))
    assert pas.status == "provisional"
    assert any("trichrome or silver" in c for c in pas.caveats)
    strict = compare(
        result(score(8), stain="PAS"), result(score(2), stain="PAS"), require_stain_panel=True
    )
    assert strict.status == "not_evaluable"
    assert _failed(strict) == {"baseline_stain_panel", "followup_stain_panel"}
    full = compare(
        result(score(8), stain="PAS+trichrome"),
        result(score(2), stain="pas, Trichrome"),
        require_stain_panel="true",
    )
    assert full.status == "provisional" and not any("trichrome or" in c for c in full.caveats)


def _examined(*stains: str, **stated: bool) -> dict[str, Any]:
    return {"stains_examined": {**dict.fromkeys(stains, True), **stated}}


def test_recorded_stain_panel_is_a_precondition():
    """§3.3: staining comparable, at minimum PAS and trichrome or silver, otherwise not_evaluable.
    The pathologist's record of the stains examined decides it; the PAS slide is one of them."""
    full = compare(
        result(score(8), biopsy=_examined("trichrome")),
        result(score(2), biopsy=_examined("PAS", "silver", HE=True)),
    )
    assert full.status == "provisional"
    assert not any("stains examined" in c for c in full.caveats)
    passed = {c["name"] for c in full.to_dict()["preconditions"] if c["status"] == "pass"}
    assert {"baseline_stain_panel", "followup_stain_panel"} <= passed
    pas_only = compare(
        result(score(8), biopsy=_examined("trichrome")),
        result(score(2), biopsy=_examined(HE=True, trichrome=False, silver=False)),
    )
    assert pas_only.status == "not_evaluable"
    assert _failed(pas_only) == {"followup_stain_panel"}
    assert "stains examined H&E, PAS" in pas_only.to_dict()["reasons"][0]
    # a panel stated as nothing examined is a recorded panel, not a missing one
    none = compare(
        result(score(8), biopsy=_examined("trichrome")),
        result(score(2), stain=None, biopsy=_examined(PAS=False)),
    )
    assert _failed(none) == {"followup_stain_panel"}


def test_unrecorded_stain_panel_says_how_to_record_it():
    r = compare(result(score(8)), result(score(2), biopsy=_examined("silver")))
    assert r.status == "provisional"
    (caveat,) = [c for c in r.caveats if "stains examined" in c]
    assert caveat.startswith("baseline: the stains examined are not recorded (slide: PAS)")
    checks = {c["name"]: c["status"] for c in r.to_dict()["preconditions"]}
    assert checks["baseline_stain_panel"] == "not_checked"
    assert checks["followup_stain_panel"] == "pass"


def test_malformed_stain_panel_is_one_line():
    bad = result(score(2), biopsy={"stains_examined": {"PAS": "yes"}})
    with pytest.raises(InputError, match=r"stains_examined\.PAS must be true, false or null"):
        compare(result(score(8)), bad)
    with pytest.raises(InputError, match="unknown stains_examined field 'congo'"):
        compare(result(score(8)), result(score(2), biopsy={"stains_examined": {"congo": True}}))


def test_limited_adequacy_accepted_on_request():
    r = compare(score(8), score(2, adequacy="limited"), accept_limited_adequacy=True)
    assert r.status == "provisional"


def test_config_difference_names_the_key():
    r = compare(
        score(config={"a": 1, "global_threshold": 0.5}),
        score(config={"a": 1, "global_threshold": 0.6}),
    )
    assert any("global_threshold" in reason for reason in r.reasons)


def test_final_only_when_both_confirmed():
    confirmed = {
        "status": "confirmed",
        "confirmation": {"pathologist": "Dr A", "confirmed_at": "2024-02-01"},
    }
    # a dict saying "confirmed" has no seal to verify: provisional, and the caveat says why
    both = compare(result(score(8), **confirmed), result(score(2), **confirmed))
    assert both.status == "provisional"
    assert any("seal was not verified" in c for c in both.caveats)
    one = compare(result(score(8), **confirmed), result(score(2)))
    assert one.status == "provisional"
    # "confirmed" without a confirming pathologist is not trusted
    fake = {"status": "confirmed", "confirmation": None}
    assert compare(result(score(8), **fake), result(score(2), **fake)).status == "provisional"
    bare = {**score(8), "status": "confirmed"}  # a score dict cannot name its pathologist
    assert compare(bare, {**score(2), "status": "confirmed"}).status == "provisional"
    checks = {c.name: c.status for c in both.checks}
    assert checks["baseline_confirmation_sealed"] == "not_checked"  # a dict has no seal


# --------------------------------------------------------------------------- incomplete indices


def test_missing_cortex_makes_activity_not_evaluable():
    fu_ai = {**ai_scores(1), "interstitial_inflammation": None}
    r = compare(score(10), score(fu_ai))
    assert r.status == "not_evaluable"
    for name in (
        "activity_status_fu",
        "histologic_remission",
        "histologic_response",
        "composite_histologic_responder",
    ):
        assert r.panel[name]["evaluable"] is False and r.panel[name]["value"] is None
        assert "interstitial_inflammation" in r.panel[name]["reason"]
    assert r.deltas["activity_index"]["delta"] is None
    assert (
        r.deltas["activity_index"]["components"]["interstitial_inflammation"]["delta_score"] is None
    )
    assert (
        r.deltas["activity_index"]["components"]["endocapillary_hypercellularity"]["delta_score"]
        == -2
    )
    assert r.panel["chronic_progression"]["evaluable"] is True  # CI still complete
    assert any("composite_histologic_responder" in reason for reason in r.reasons)


def test_incomplete_baseline_activity_also_blocks_activity_endpoints():
    # AI_bl in 1..7 (necrosis unassessed): AI_fu 2 <= 0.5 x AI_bl holds only for AI_bl >= 4
    r = compare(
        score({**ai_scores(1), "fibrinoid_necrosis": None}), score(2), preset="relative_AI50"
    )
    assert r.status == "not_evaluable"
    assert "baseline not assessed: fibrinoid_necrosis" in r.panel["relative_response"]["reason"]
    # remission reads AI_fu only; AI_bl in 8..14 > 2 decides "complete" from its bounds
    r = compare(score({**ai_scores(8), "fibrinoid_necrosis": None}), score(0), preset="lufla_AI2")
    assert r.status == "provisional" and r.endpoint["value"] is True
    assert r.panel["histologic_response"]["value"] == "complete"
    assert any("bounds" in f for f in r.panel["histologic_response"]["flags"])


def test_missing_cortex_chronicity_not_evaluable_for_chronicity():
    fu_ci = {**ci_scores(2), "tubular_atrophy": None}
    r = compare(score(10, 1), score(2, fu_ci))
    assert r.panel["chronic_progression"]["value"] is None
    assert r.panel["chronic_progression"]["reason"].startswith("not evaluable for chronicity")
    assert r.panel["high_chronicity_fu"]["evaluable"] is False
    assert r.deltas["chronicity_index"]["delta"] is None
    assert r.status == "not_evaluable"  # remission holds, so the composite needs the CI
    # the activity endpoints stay evaluable
    assert compare(score(10, 1), score(2, fu_ci), preset="lufla_AI2").status == "provisional"
    # not in remission: not a responder whatever the chronicity (three-valued logic)
    r = compare(score(10, 1), score(5, fu_ci))
    assert r.status == "provisional" and r.endpoint["value"] is False


# --------------------------------------------------------------------------- uncertainty


def _total_dist(components: list[tuple[int, list[float]]], maximum: int) -> list[float]:
    """Brute force: enumerate every band combination of independent components."""
    dist = [0.0] * (maximum + 1)
    for combo in product(*(range(4) for _ in components)):
        p, total = 1.0, 0
        for (w, probs), s in zip(components, combo, strict=True):
            p *= probs[s]
            total += w * s
        dist[total] += p
    return dist


BL_AI = [(2, [0.0, 0.3, 0.5, 0.2]), (1, [0.1, 0.6, 0.3, 0.0])]  # fibrinoid x2, endocap x1
FU_AI = [(2, [0.6, 0.4, 0.0, 0.0]), (1, [0.3, 0.5, 0.2, 0.0])]
BL_CI = [(1, [0.2, 0.8, 0.0, 0.0])]
FU_CI = [(1, [0.0, 0.3, 0.4, 0.3])]


def _with_dists(ai: int, ci: int, ai_parts, ci_parts) -> dict[str, Any]:
    return score(ai, ci, ai_dist=_total_dist(ai_parts, 24), ci_dist=_total_dist(ci_parts, 12))


@pytest.mark.parametrize(
    ("preset", "holds"),
    [
        ("lnhr_default", lambda ab, af, cb, cf: af <= 2 and cf - cb < 2),
        ("lufla_AI2", lambda ab, af, cb, cf: af <= 2),
        ("parodis_rebiolup_AI3", lambda ab, af, cb, cf: af > 3),
        ("strict_chronicity_CI1", lambda ab, af, cb, cf: cf - cb >= 1),
        ("relative_AI50", lambda ab, af, cb, cf: ab > 0 and 2 * af <= ab),
    ],
)
def test_endpoint_probability_matches_enumeration(preset, holds):
    """P(endpoint) from the totals equals enumeration over every component band of both biopsies."""
    bl = _with_dists(5, 1, BL_AI, BL_CI)
    fu = _with_dists(2, 2, FU_AI, FU_CI)
    parts = [*BL_AI, *FU_AI, *BL_CI, *FU_CI]
    expected = 0.0
    for combo in product(*(range(4) for _ in parts)):
        p = np.prod([probs[s] for (_, probs), s in zip(parts, combo, strict=True)])
        w = [weight * s for (weight, _), s in zip(parts, combo, strict=True)]
        ai_bl, ai_fu, ci_bl, ci_fu = w[0] + w[1], w[2] + w[3], w[4], w[5]
        if holds(ai_bl, ai_fu, ci_bl, ci_fu):
            expected += p
    r = compare(bl, fu, preset=preset)
    assert r.uncertainty["endpoint_probability"] == pytest.approx(expected, abs=1e-9)
    assert "independent" in r.uncertainty["assumption"]


def test_category_probabilities_and_delta_distribution():
    bl = _with_dists(5, 1, BL_AI, BL_CI)
    fu = _with_dists(2, 2, FU_AI, FU_CI)
    r = compare(bl, fu)
    cats = r.uncertainty["outcome_probabilities"]["chronic_progression"]
    assert sum(cats.values()) == pytest.approx(1.0)
    # CI_bl in {0 (0.2), 1 (0.8)}, CI_fu in {1 (.3), 2 (.4), 3 (.3)}
    assert cats["progression"] == pytest.approx(0.2 * 0.7 + 0.8 * 0.3)
    assert cats["stable"] == pytest.approx(0.8 * 0.3)
    delta = r.uncertainty["delta_ci"]
    assert delta["min"] == -12 and len(delta["p"]) == 25
    assert delta["p"][12 + 2] == pytest.approx(0.2 * 0.4 + 0.8 * 0.3)
    response = r.uncertainty["outcome_probabilities"]["histologic_response"]
    assert sum(response.values()) == pytest.approx(1.0)


def test_certain_chronicity_with_uncertain_activity():
    """No CI probabilities: the CI is taken as exact, the AI distributions still count."""
    ai_fu = _total_dist(FU_AI, 24)
    r = compare(score(5, 1, ai_dist=_total_dist(BL_AI, 24)), score(2, 2, ai_dist=ai_fu))
    assert r.uncertainty["treated_as_exact"] == ["ci_bl", "ci_fu"]
    assert r.uncertainty["endpoint_probability"] == pytest.approx(sum(ai_fu[:3]))
    assert r.uncertainty["outcome_probabilities"]["chronic_progression"] is None
    assert r.uncertainty["delta_ci"] is None and r.uncertainty["delta_ai"] is not None
    r = compare(score(5, 1, ai_dist=_total_dist(BL_AI, 24)), score(2, 3, ai_dist=ai_fu))
    assert r.uncertainty["endpoint_probability"] == 0.0  # CI +2 is progression for sure


def test_no_distributions_no_probability():
    r = compare(score(8), score(2))
    assert r.uncertainty["endpoint_probability"] is None
    assert "no AI/CI total distributions" in r.uncertainty["endpoint_probability_note"]


def test_malformed_distribution_is_an_error():
    with pytest.raises(InputError, match="sums to"):
        compare(score(8, ai_dist=[0.5] * 25), score(2))
    with pytest.raises(InputError, match="must be 25"):
        compare(score(8, ai_dist=[1.0]), score(2))


def test_sampling_view_counts_glomeruli_that_flip_the_call():
    # Follow-up AI 2 (remission): endocapillary 1/12 and hyaline 1/12, fibrinoid 0/12.
    fu_ai = {name: (0, 12) for name in AI_COMPONENTS[:5]}
    fu_ai.update(
        {
            "endocapillary_hypercellularity": (1, 12),
            "hyaline_deposits": (1, 12),
            "interstitial_inflammation": 0,
        }
    )
    r = compare(score(10), score(fu_ai), preset="lufla_AI2")
    assert r.endpoint["value"] is True
    sampling = r.uncertainty["sampling"]
    rows = {(row["side"], row["component"]): row for row in sampling["components"]}
    necrosis = rows[("follow-up", "fibrinoid_necrosis")]
    assert (necrosis["more_to_next_band"], necrosis["flip_up"]) == (1, 1)
    assert necrosis["flip_up_value"] is False
    endocap = rows[("follow-up", "endocapillary_hypercellularity")]
    assert endocap["more_to_next_band"] == 2  # 3/12 = 25% scores 2
    assert endocap["flip_up"] == 2  # AI 2 -> 3
    assert endocap["fewer_to_lower_band"] == 1 and endocap["flip_down"] is None
    assert sampling["min_glomeruli_to_flip"] == 1
    assert {
        "side": "follow-up",
        "component": "fibrinoid_necrosis",
        "direction": "more",
        "new_value": False,
    } in sampling["closest_flips"]
    # 1 more glomerulus with neutrophils also gives AI 3; hyaline 1 -> 2 needs 2 more
    assert {c["component"] for c in sampling["closest_flips"]} == {
        "fibrinoid_necrosis",
        "neutrophils_karyorrhexis",
        "cellular_fibrocellular_crescents",
    }
    # The baseline cannot flip a remission endpoint (it depends on AI_fu only).
    assert all(
        row["flip_up"] is None for row in sampling["components"] if row["side"] == "baseline"
    )


def test_sampling_view_band_rule_at_exact_quarter_and_half():
    fu_ai = {name: (0, 12) for name in AI_COMPONENTS[:5]}
    fu_ai.update({"endocapillary_hypercellularity": (6, 12), "interstitial_inflammation": 0})
    r = compare(score(10), score(fu_ai))
    row = next(
        row
        for row in r.uncertainty["sampling"]["components"]
        if row["side"] == "follow-up" and row["component"] == "endocapillary_hypercellularity"
    )
    assert row["score"] == 2  # 6/12 = 50% scores 2
    assert row["more_to_next_band"] == 1  # 7/12 > 50%
    assert row["fewer_to_lower_band"] == 4  # 2/12 < 25%


def test_doubled_component_near_band_edge_is_flagged():
    bl_ai = {**ai_scores(0), "fibrinoid_necrosis": (3, 12)}  # 25% -> 2; 2/12 -> 1
    r = compare(score(bl_ai), score(0))
    edges = r.uncertainty["band_edges"]
    assert {
        "side": "baseline",
        "component": "fibrinoid_necrosis",
        "weight": 2,
        "doubled": True,
        "band_probabilities": None,
    } in edges
    assert "doubled component" in r.to_html()


# --------------------------------------------------------------------------- input forms


def test_folder_result_json_object_and_dict_inputs(demo_result_template: Path, tmp_path: Path):
    bl_dir, fu_dir = tmp_path / "bl", tmp_path / "fu"
    for folder, data in (
        (bl_dir, result(score(10), biopsy_date="2023-01-01")),
        (fu_dir, result(score(2), biopsy_date="2024-01-01")),
    ):
        sealed_result(demo_result_template, folder, data)
    by_folder = compare(bl_dir, str(fu_dir))
    assert by_folder.status == "provisional" and by_folder.baseline.source == str(bl_dir)
    assert by_folder.baseline.patient_id == "P1" and by_folder.followup.stain == "PAS"
    by_file = compare(bl_dir / "result.json", fu_dir / "result.json")
    assert by_file.endpoint == by_folder.endpoint

    class FakeSlideResult:
        def __init__(self, folder: Path) -> None:
            self.folder = folder

        def to_dict(self) -> dict[str, Any]:
            return json.loads((self.folder / "result.json").read_text())

    by_object = compare(FakeSlideResult(bl_dir), FakeSlideResult(fu_dir))
    assert by_object.endpoint == by_folder.endpoint
    assert by_object.baseline.source == str(bl_dir)


def test_bad_inputs_are_one_line_errors(tmp_path: Path):
    with pytest.raises(ResultError, match="result folder not found"):
        compare(tmp_path / "missing", tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ResultError, match=r"no result\.json"):
        compare(tmp_path / "empty", score())
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "result.json").write_text("{not json")
    with pytest.raises(ResultError, match=r"unreadable result\.json"):
        compare(bad, score())
    (bad / "result.json").write_text(json.dumps({"status": "provisional"}))
    with pytest.raises(ResultError, match="no 'scores'"):
        compare(bad, score())
    (bad / "result.json").write_text(json.dumps(result({"nih_version": "bajema2018"})))
    with pytest.raises(ResultError, match="missing 'activity_index'"):
        compare(bad, score())
    with pytest.raises(InputError, match="expected a BiopsyScore"):
        compare(42, score())
    with pytest.raises(InputError, match="not an ISO date"):
        compare(result(score(), biopsy_date="yesterday"), score())
    broken = score()
    broken["activity_index"]["components"]["fibrinoid_necrosis"]["score"] = 7
    with pytest.raises(InputError, match=r"not 0\.\.3"):
        compare(broken, score())


def test_json_and_html_are_self_contained_and_escaped():
    bl = result(score(10), patient_id="<script>alert(1)</script>", biopsy_date="2023-01-01")
    fu = result(score(2), patient_id="<script>alert(1)</script>", biopsy_date="2024-01-01")
    r = compare(bl, fu)
    data = json.loads(r.to_json())
    assert data["endpoint"]["name"] == "composite_histologic_responder"
    assert data["baseline"]["patient_id"] == "<script>alert(1)</script>"
    page = r.to_html()
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert page.startswith("<!DOCTYPE html>") and "http" not in page.split("</style>")[0]
    assert r._repr_html_().startswith('<div class="lnr">')


# --------------------------------------------------------------------------- real scorer


def _scoring() -> Any:
    return pytest.importorskip("lnpath.scoring.score")


CORTEX = {"interstitial_inflammation": 0.1, "interstitial_fibrosis": 0.2, "tubular_atrophy": 0.2}


def _class_map() -> dict[str, dict[str, bool]]:
    from lnpath.core.findings import LESIONS

    none = dict.fromkeys(LESIONS, False)
    return {
        "Normal": none,
        "Sclerotic": {**none, "global_sclerosis": True},
        "Partially_sclerotic": {**none, "segmental_sclerosis": True},
    }


def test_real_qupath_exports_through_score_findings(qupath_dir: Path):
    """Two real QuPath exports scored by lnpath.score_findings, then compared."""
    _scoring()
    scores = {}
    for name in ("TPATH012", "TPATH065"):
        table = lnpath.findings_from_geojson(qupath_dir / f"{name}.geojson", class_map=_class_map())
        scores[name] = lnpath.score_findings(table, cortex=CORTEX)
    r = compare(scores["TPATH012"], scores["TPATH065"], preset="strict_chronicity_CI1")
    gs = r.deltas["chronicity_index"]["components"]["glomerulosclerosis"]
    assert (gs["baseline"], gs["followup"]) == (1, 3)  # 1/32 vs 65/77 sclerosed
    assert r.endpoint["value"] == "progression" and r.status == "provisional"
    # No cortex measured: interstitial inflammation, fibrosis and atrophy are not assessed.
    no_cortex = {
        name: lnpath.score_findings(
            lnpath.findings_from_geojson(qupath_dir / f"{name}.geojson", class_map=_class_map())
        )
        for name in ("TPATH012", "TPATH065")
    }
    r = compare(no_cortex["TPATH012"], no_cortex["TPATH065"], preset="strict_chronicity_CI1")
    assert r.status == "not_evaluable" and r.deltas["chronicity_index"]["delta"] is None
    assert "tubular_atrophy" in r.panel["chronic_progression"]["reason"]
    assert r.deltas["chronicity_index"]["components"]["glomerulosclerosis"]["delta_score"] == 2
    assert "interstitial_inflammation" in r.panel["histologic_remission"]["reason"]
    # With the default class map the QuPath labels say nothing about activity lesions:
    partial = {
        name: lnpath.score_findings(
            lnpath.findings_from_geojson(qupath_dir / f"{name}.geojson"), cortex=CORTEX
        )
        for name in ("TPATH012", "TPATH065")
    }
    r = compare(partial["TPATH012"], partial["TPATH065"])
    assert r.status == "not_evaluable"
    assert r.panel["histologic_remission"]["evaluable"] is False
    assert r.panel["chronic_progression"]["reason"].startswith("not evaluable for chronicity")


def test_hand_built_findings_with_probabilities(tmp_path: Path):
    """Real score_findings distributions feed the endpoint probability; it matches enumeration."""
    _scoring()
    rng = np.random.default_rng(7)
    from lnpath.core.findings import LESIONS

    def table(n: int, p_necrosis: float, p_endo: float) -> pd.DataFrame:
        rows = []
        for i in range(n):
            row: dict[str, Any] = dict.fromkeys(LESIONS, False)
            pn, pe = rng.uniform(0, p_necrosis), rng.uniform(0, p_endo)
            row.update(
                glomerulus_id=i,
                fibrinoid_necrosis=bool(pn > 0.5),
                endocapillary_hypercellularity=bool(pe > 0.5),
                p_fibrinoid_necrosis=pn,
                p_endocapillary_hypercellularity=pe,
            )
            rows.append(row)
        return pd.DataFrame(rows)

    bl = lnpath.score_findings(table(14, 0.9, 1.0), cortex=CORTEX)
    fu = lnpath.score_findings(table(12, 0.3, 0.6), cortex=CORTEX)
    d_bl, d_fu = bl.to_dict(), fu.to_dict()
    ai_bl = d_bl["uncertainty"]["activity_index"]["distribution"]
    ai_fu = d_fu["uncertainty"]["activity_index"]["distribution"]
    assert ai_bl is not None and ai_fu is not None
    r = compare(bl, fu, preset="relative_AI50")
    expected = sum(
        ai_bl[a] * ai_fu[b] for a in range(25) for b in range(25) if a > 0 and 2 * b <= a
    )
    assert r.uncertainty["endpoint_probability"] == pytest.approx(expected, abs=1e-9)
    assert r.baseline.activity.total == d_bl["activity_index"]["total"]
    bands = {(b["side"], b["component"]): b for b in r.uncertainty["component_bands"]}
    necrosis = bands[("baseline", "fibrinoid_necrosis")]
    given = d_bl["uncertainty"]["components"]["fibrinoid_necrosis"]
    score_bl = d_bl["activity_index"]["components"]["fibrinoid_necrosis"]["score"]
    assert necrosis["p_other_band_resampled"] == pytest.approx(
        1 - given["band_probabilities"][score_bl]
    )
    assert necrosis["p_other_band_calls"] == pytest.approx(
        1 - given["call_band_probabilities"][score_bl]
    )
    assert "Component bands" in r.to_html()
    lufla = compare(bl, fu, preset="lufla_AI2")
    assert lufla.uncertainty["endpoint_probability"] == pytest.approx(sum(ai_fu[:3]), abs=1e-9)


def test_one_slide_file_is_not_a_baseline_and_a_follow_up():
    def scanned(sha: str) -> dict[str, Any]:
        return {"path": "x.svs", "name": "x.svs", "fingerprint": {"size": 1, "sha256": sha}}

    bl = result(score(10), biopsy_date="2023-01-01", slide=scanned("ab" * 32))
    same = compare(bl, result(score(2), biopsy_date="2024-01-01", slide=scanned("ab" * 32)))
    assert same.status == "not_evaluable" and _failed(same) == {"different_biopsies"}
    assert any("two readings of one biopsy" in reason for reason in same.reasons)
    other = compare(bl, result(score(2), biopsy_date="2024-01-01", slide=scanned("cd" * 32)))
    assert other.status == "provisional" and not _failed(other)


def test_report_charts_the_delta_distributions():
    import base64
    import re
    import xml.etree.ElementTree as ET

    from lnpath.response.html import render_html

    bl = _with_dists(5, 1, BL_AI, BL_CI)
    fu = _with_dists(2, 2, FU_AI, FU_CI)
    data = compare(bl, fu).to_dict()
    page = render_html(data)
    uris = re.findall(r'src="data:image/svg\+xml;base64,([^"]+)"', page)
    assert len(uris) == 2  # ΔAI and ΔCI
    for uri, key, observed in ((uris[0], "delta_ai", -3), (uris[1], "delta_ci", 1)):
        svg = ET.fromstring(base64.b64decode(uri))
        bars = {int(e.get("data-delta", "0")): e for e in svg.iter() if e.get("class") == "bar"}
        dist = data["uncertainty"][key]
        shown = sum(dist["p"][d - dist["min"]] for d in bars)
        assert shown == pytest.approx(1.0, abs=1e-3)  # every bar with mass is drawn
        assert 0 in bars and bars[observed].get("stroke") == "#111"  # observed Δ outlined
        assert sum(1 for b in bars.values() if b.get("stroke")) == 1
    # without distributions there is nothing to chart
    assert "image/svg+xml" not in render_html(compare(score(8), score(2)).to_dict())


def test_html_names_the_patient_either_biopsy_records_and_components_in_words():
    """The heading took the patient from the baseline only ("patient not recorded" though the
    follow-up had an id), and an incomplete total listed raw snake_case names."""
    bl = result(score(10), patient_id=None, biopsy_date="2023-01-01")
    fu = result(score(2), patient_id="P7", biopsy_date="2024-01-01")
    page = compare(bl, fu).to_html()
    assert "Histological response: P7" in page and "patient not recorded" not in page
    from lnpath.core.findings import LESIONS

    scoring = _scoring()
    table = pd.DataFrame({"glomerulus_id": range(12)})
    for lesion in LESIONS:
        table[lesion] = pd.array([False] * 12, dtype="boolean")
    table["fibrinoid_necrosis"] = pd.array([pd.NA] * 12, dtype="boolean")
    open_fu = scoring.score_findings(table, cortex=CORTEX)
    page = compare(scoring.score_findings(table.fillna(True), cortex=CORTEX), open_fu).to_html()
    assert "incomplete (not assessed: fibrinoid necrosis)" in page
    assert "incomplete (not assessed: fibrinoid_necrosis)" not in page
    # marked not evaluable at the follow-up's sign-out: the table gives the pathologist's reason
    marked = result(
        open_fu.to_dict(),
        biopsy={"not_evaluable": {"fibrinoid_necrosis": "tangential section"}},
        biopsy_date="2024-01-01",
    )
    base = result(scoring.score_findings(table.fillna(True), cortex=CORTEX).to_dict())
    response = compare({**base, "biopsy_date": "2023-01-01"}, marked)
    assert response.to_dict()["followup"]["not_evaluable"] == {
        "fibrinoid_necrosis": "tangential section"
    }
    assert "not evaluable: tangential section" in response.to_html()
