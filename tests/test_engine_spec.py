"""The scoring and response engine held to clinical-scoring.md (issue #17), hand-computed cases.

Every case goes through the public facade only (``lnpath.score_findings``, ``lnpath.compare``,
``lnpath.load_config``); each docstring cites the section of the specification it checks.
"""

from __future__ import annotations

import math
import subprocess
import sys
from typing import Any

import pandas as pd
import pytest

import lnpath

LESIONS = lnpath.LESIONS  # the package's one lesion list
CORTEX = {"interstitial_inflammation": 0.0, "interstitial_fibrosis": 0.0, "tubular_atrophy": 0.0}


def table(n: int, value: Any = False, **positives: Any) -> pd.DataFrame:
    """``n`` glomeruli with every lesion ``value``; ``lesion=k`` (first k rows) or rows -> True."""
    frame = pd.DataFrame({"glomerulus_id": range(n)})
    for lesion in LESIONS:
        frame[lesion] = pd.array([value] * n, dtype="boolean")
    for name, rows in positives.items():
        chosen = list(range(rows) if isinstance(rows, int) else rows)
        if name not in frame:
            frame[name] = pd.array([False] * n, dtype="boolean")
        frame.loc[chosen, name] = True
    return frame


def unassessed(n: int) -> pd.DataFrame:
    """``n`` glomeruli whose lesions were not assessed (the demo's machine-only state)."""
    return table(n, pd.NA)


def side(frame: pd.DataFrame, cortex: dict | None = None, **kwargs: Any) -> lnpath.BiopsyScore:
    return lnpath.score_findings(frame, cortex=CORTEX if cortex is None else cortex, **kwargs)


def as_result(score: lnpath.BiopsyScore, **meta: Any) -> dict[str, Any]:
    """A result.json-shaped dict around a score (what a script may hand to compare)."""
    return {"scores": score.to_dict(), "lnpath_version": lnpath.__version__, **meta}


# ------------------------------------------------------------------ class wording (§2.2, §6)


def test_nothing_assessed_is_not_determinable_not_no_lesion() -> None:
    """§2.2: "no LN lesion identified" needs lesions that were looked for; 27/27 unassessed
    is not."""
    cls = side(unassessed(20)).isn_rps_class
    assert cls.proposal is None
    assert "not determinable: lesions not assessed" in cls.label.lower()
    assert "no ln lesion identified" not in cls.label.lower()


def test_partly_assessed_with_no_lesion_is_not_determinable() -> None:
    """§2.2: 10/20 glomerulus unassessed and none involved could still be IV (10/20 >= 50 %)."""
    frame = table(20)
    frame.loc[10:, list(LESIONS)] = pd.NA
    cls = side(frame).isn_rps_class
    assert cls.proposal is None and cls.alternative == "IV"
    assert "not determinable" in cls.label.lower()
    assert "no ln lesion identified" not in cls.label.lower()


def test_everything_assessed_and_absent_is_no_lesion() -> None:
    """§2.2: every lesion assessed and absent -> "no LN lesion identified / indeterminate"."""
    cls = side(table(20)).isn_rps_class
    assert cls.proposal is None
    assert "no ln lesion identified by light microscopy" in cls.label.lower()


def test_diagnosis_line_names_the_2018_revision() -> None:
    """§6: "Lupus nephritis, ISN/RPS class IV + V (2018 revision). Modified NIH activity index
    9/24; chronicity index 3/12." Hand count: endocapillary 11/20 -> 3; cellular crescents 5/20 ->
    2 (x2 = 4); inflammation 30 % -> 2: AI 9. Fibrosis 10 % -> 1, atrophy 30 % -> 2: CI 3.
    Involved 11/20 >= 50 % -> IV; subepithelial deposits given without extent -> IV+V."""
    frame = table(20, endocapillary_hypercellularity=11, cellular_crescent=5)
    cortex = {
        "interstitial_inflammation": 0.3,
        "interstitial_fibrosis": 0.1,
        "tubular_atrophy": 0.3,
    }
    score = side(frame, cortex, biopsy={"membranous": True})
    assert (score.activity_index.total, score.chronicity_index.total) == (9, 3)
    line = score.to_dict()["diagnosis_line"]
    assert line == (
        "Lupus nephritis, ISN/RPS class IV + V (2018 revision). "
        "Modified NIH activity index 9/24; chronicity index 3/12."
    )


def test_diagnosis_line_of_an_undetermined_class_does_not_claim_no_lesion() -> None:
    """§6 with §2.2: the diagnosis line of an unassessed biopsy says the class is not determinable
    and gives the range the incomplete indices can still take."""
    line = side(unassessed(20)).to_dict()["diagnosis_line"]
    assert "(2018 revision)" in line and "not determinable" in line
    assert "no LN lesion" not in line
    assert "0-21/24" in line  # five glomerular AI items unassessed: 0 .. 3+3+6+3+6


def test_every_component_states_its_denominator_basis() -> None:
    """§6 ("state the denominator rules used") and §1.4: each glomerular component carries its
    basis beside it; the viable preset changes the activity items only."""
    frame = table(20, global_sclerosis=10, endocapillary_hypercellularity=range(10, 13))
    viable = side(frame, config={"preset": "viable_denominator"}).to_dict()
    ai = viable["activity_index"]["components"]
    ci = viable["chronicity_index"]["components"]
    for name in ("endocapillary_hypercellularity", "fibrinoid_necrosis"):
        assert ai[name]["basis"] == "glomeruli not globally sclerosed"
    assert ci["glomerulosclerosis"]["basis"] == "all glomeruli"
    assert ai["interstitial_inflammation"]["basis"] == "% of cortex"


# ------------------------------------------------------------------ band edges (§2.3, §8)


def test_absent_lesion_is_not_flagged_at_a_band_edge_and_compare_agrees() -> None:
    """§8 guard: a doubled component "one glomerulus from a band edge" is flagged; 0/20 necrosis
    is absent (a replicate view covers 0 -> 1), and score and compare must say the same."""
    score = side(table(20))
    notes = " ".join(score.uncertainty["notes"]) + " ".join(score.pending_review)
    assert "band edge" not in notes
    assert score.uncertainty["components"]["fibrinoid_necrosis"]["near_band_edge"] is False
    r = lnpath.compare(score, side(table(20)), preset="lufla_AI2")
    assert not [e for e in r.uncertainty["band_edges"] if e["component"] == "fibrinoid_necrosis"]


def test_a_stored_result_flagging_an_absent_lesion_is_not_flagged_by_compare() -> None:
    """§8: results scored before this rule carry ``near_band_edge`` at 0/N; compare reads the
    count, so old and new results agree."""
    old = side(table(20)).to_dict()
    old["uncertainty"]["components"]["fibrinoid_necrosis"]["near_band_edge"] = True
    r = lnpath.compare(old, side(table(20)), preset="lufla_AI2")
    assert not [e for e in r.uncertainty["band_edges"] if e["component"] == "fibrinoid_necrosis"]


def test_present_doubled_lesion_at_a_band_edge_is_flagged_by_both() -> None:
    """§1.3/§8: 5/20 necrosis scores 2 (4*5 >= 20, 2*5 <= 20); 4/20 scores 1: one glomerulus
    fewer moves AI by 2, so score and compare both flag it."""
    score = side(table(20, fibrinoid_necrosis=5))
    assert any(
        "fibrinoid_necrosis (x2) sits at a band edge (5/20" in n for n in score.pending_review
    )
    r = lnpath.compare(score, side(table(20)), preset="lufla_AI2")
    flagged = [e for e in r.uncertainty["band_edges"] if e["component"] == "fibrinoid_necrosis"]
    assert [(e["side"], e["doubled"]) for e in flagged] == [("baseline", True)]


# ------------------------------------------------------------------ §7 options act or are refused


def crescents() -> pd.DataFrame:
    """12 glomeruli, crescents not called but measured: g0 20 % of the capsule, 90 % cells; g1
    50 %, 50 % cells; g2 50 %, 10 % cells; the rest no crescent."""
    frame = table(12)
    for lesion in ("cellular_crescent", "fibrocellular_crescent", "fibrous_crescent"):
        frame[lesion] = pd.array([pd.NA] * 12, dtype="boolean")
    frame["m_crescent_circumference"] = [0.2, 0.5, 0.5] + [0.0] * 9
    frame["m_crescent_cell_fraction"] = [0.9, 0.5, 0.1] + [math.nan] * 9
    return frame


def crescent_counts(config: dict[str, Any] | None = None) -> tuple[int, int, int, int, int]:
    score = side(crescents(), config=config)
    lesions = score.counts["lesions"]
    active = score.activity_index.components["cellular_fibrocellular_crescents"]
    fibrous = score.chronicity_index.components["fibrous_crescents"]
    return (
        lesions["cellular_crescent"]["present"],
        lesions["fibrocellular_crescent"]["present"],
        lesions["fibrous_crescent"]["present"],
        active.n,
        fibrous.n,
    )


def test_crescent_thresholds_drive_measured_crescents() -> None:
    """§1.5/§7: crescent > 10 % of the capsule (2018); cellular > 75 % cells + fibrin, fibrous
    > 75 % matrix, fibrocellular between. g0 cellular, g1 fibrocellular, g2 fibrous (90 % matrix).
    """
    assert crescent_counts() == (1, 1, 1, 2, 1)
    # ISN/RPS 2003 size (25 %): g0 (20 %) is no longer a crescent
    assert crescent_counts({"crescent_min_circumference": 0.25}) == (0, 1, 1, 1, 1)
    # cellular needs > 95 % cells: g0 (90 %) becomes fibrocellular, still active
    assert crescent_counts({"crescent_cellular_min_cell_fraction": 0.95}) == (0, 2, 1, 2, 1)
    # fibrous needs > 95 % matrix: g2 (90 %) becomes fibrocellular, active
    assert crescent_counts({"crescent_fibrous_min_matrix_fraction": 0.95}) == (1, 2, 0, 3, 0)


@pytest.mark.parametrize(
    ("option", "value", "column"),
    [
        ("crescent_min_circumference", 0.25, "m_crescent_circumference"),
        ("crescent_cellular_min_cell_fraction", 0.5, "m_crescent_cell_fraction"),
        ("crescent_fibrous_min_matrix_fraction", 0.9, "m_crescent_cell_fraction"),
        ("mesangial_hypercellularity_min_cells", 3, "m_mesangial_cells"),
        ("global_threshold", 0.7, "m_sclerosed_fraction"),
    ],
)
def test_an_option_with_nothing_to_act_on_is_refused(option: str, value: Any, column: str) -> None:
    """§7: an option that cannot act on these findings (calls made upstream, no measurement) is
    refused with one line naming it and the measurement it needs, never silently ignored."""
    with pytest.raises(lnpath.InputError, match=rf"{option}.*{column}") as info:
        side(table(12), config={option: value})
    assert "\n" not in str(info.value)
    side(table(12))  # the defaults need no measurement


def test_mesangial_cell_count_drives_the_flag_and_class_ii() -> None:
    """§1.5/§2.2: mesangial hypercellularity >= 4 nuclei (2018) or >= 3 (2003); with mesangial
    deposits and no proliferative lesion the flag makes class II, without it class I."""
    frame = table(12)
    frame["m_mesangial_cells"] = [3.0] * 12
    biopsy = {"if_mesangial_deposits": True, "membranous": False}
    default = side(frame, biopsy=biopsy)
    assert default.counts["lesions"]["mesangial_hypercellularity"]["present"] == 0
    assert default.isn_rps_class.proposal == "I"
    older = side(frame, biopsy=biopsy, config={"mesangial_hypercellularity_min_cells": 3})
    assert older.counts["lesions"]["mesangial_hypercellularity"]["present"] == 12
    assert older.isn_rps_class.proposal == "II"


def sclerosed() -> pd.DataFrame:
    """10 glomeruli called globally sclerosed; measured tuft fractions nine at 0.8, one at 0.6."""
    frame = table(10, global_sclerosis=10)
    frame["m_sclerosed_fraction"] = [0.8] * 9 + [0.6]
    return frame


def test_global_threshold_drives_global_calls_and_class() -> None:
    """§1.5/§2.1: "global" = sclerosed tuft fraction > global_threshold. At 0.5 all 10 are global
    (VI, >= 90 %); at 0.7 nine are (9/10 = 90 %, still VI); at 0.85 none is: all ten are
    segmentally sclerosed, 10/10 involved -> IV. The CI item counts global or segmental alike."""
    for threshold, n_global, klass in ((0.5, 10, "VI"), (0.7, 9, "VI"), (0.85, 0, "IV")):
        score = side(sclerosed(), config={"global_threshold": threshold})
        assert score.counts["globally_sclerosed"] == n_global, threshold
        assert score.counts["segmentally_sclerosed"] == 10 - n_global, threshold
        assert score.isn_rps_class.proposal == klass, threshold
        assert score.chronicity_index.components["glomerulosclerosis"].n == 10


def test_response_preset_in_the_config_is_what_compare_applies() -> None:
    """§7 ``response_preset``: compare without a preset applies the one the scores were configured
    with; an explicit preset wins; two sides naming different presets are refused."""
    cfg = {"response_preset": "lufla_AI2"}
    bl, fu = (
        side(table(20, endocapillary_hypercellularity=11), config=cfg),
        side(table(20), config=cfg),
    )
    assert lnpath.compare(bl, fu).preset == "lufla_AI2"
    assert lnpath.compare(bl, fu, preset="malvar_AI0").preset == "malvar_AI0"
    assert lnpath.compare(side(table(20)), side(table(20))).preset == "lnhr_default"
    other = side(table(20), config={"response_preset": "moroni2022"})
    with pytest.raises(lnpath.InputError, match=r"lufla_AI2.*moroni2022"):
        lnpath.compare(bl, other)


# ------------------------------------------------------------------ class V with III/IV (§2.1, §9)


def test_v_with_iv_keeps_plus_v_and_reports_a_low_extent() -> None:
    """§9 item 2: the verified class table only says V with III/IV is "both diagnosed"; the >50 %
    extent rule is [R]. Default: keep +V and report the extent; the rule is opt-in."""
    frame = table(10, endocapillary_hypercellularity=6)  # 6/10 >= 50 % -> IV
    biopsy = {"membranous": True, "membranous_capillary_surface": 0.3, "membranous_glomeruli": 0.4}
    default = side(frame, biopsy=biopsy).isn_rps_class
    assert default.proposal == "IV+V"
    assert "30%" in default.rationale and "40%" in default.rationale
    opted = side(frame, biopsy=biopsy, config={"class_v_combined_rule": {"enforce": True}})
    assert opted.isn_rps_class.proposal == "IV"


# ------------------------------------------------------------------ small defects (§1.5, §2.3)


def test_unassessed_adhesion_means_not_flagged() -> None:
    """§1.5 adhesions with ``adhesion_as_sclerosis``: an optional flag left empty means "not
    flagged", so it cannot make total glomerulosclerosis "not assessed"."""
    frame = table(10)
    frame["adhesion"] = pd.array([pd.NA] * 10, dtype="boolean")
    score = side(frame, config={"adhesion_as_sclerosis": True})
    gs = score.chronicity_index.components["glomerulosclerosis"]
    assert (gs.assessed, gs.n, gs.N, gs.score) == (True, 0, 10, 0)
    assert score.chronicity_index.complete and score.isn_rps_class.alternative is None
    frame.loc[:2, "adhesion"] = True
    assert (
        side(frame, config={"adhesion_as_sclerosis": True})
        .chronicity_index.components["glomerulosclerosis"]
        .n
        == 3
    )


def test_a_plain_dict_saying_confirmed_is_not_final_without_a_seal() -> None:
    """§3.3 / signoff: only a verified confirmation seal makes an endpoint final; a dict that
    merely says "confirmed" stays provisional and says why."""
    meta = {"status": "confirmed", "confirmation": {"pathologist": "Dr A. Renal"}}
    bl = as_result(side(table(20, endocapillary_hypercellularity=11)), **meta)
    fu = as_result(side(table(20)), **meta)
    r = lnpath.compare(bl, fu, preset="lufla_AI2")
    assert r.endpoint["value"] is True
    assert r.status == "provisional"
    assert any("seal" in c for c in r.caveats)


@pytest.mark.parametrize(("n", "status"), [(5, "inadequate"), (6, "adequate")])
def test_permissive_5_means_more_than_five(n: int, status: str) -> None:
    """§2.3: the South-Indian study scored only biopsies with >5 glomeruli, so 5 is not enough."""
    assert lnpath.load_config({"preset": "permissive_5"}).adequacy.adequate == 6
    score = side(table(n), config={"preset": "permissive_5"})
    assert score.adequacy.status == status


# ------------------------------------------------------------------ class-based response (§3.3)


IV_BASELINE = dict(endocapillary_hypercellularity=12, cellular_crescent=4)  # 12/20 -> IV


def test_undetermined_baseline_class_is_not_evaluable_not_not_applicable() -> None:
    """§3.3/§8: a baseline whose lesions were not assessed could be III/IV: the class response is
    not evaluable (it must not drop out of a trial's denominator as "not applicable")."""
    r = lnpath.compare(side(unassessed(20)), side(table(20)), preset="class_transition")
    cr = r.panel["class_response"]
    assert cr["value"] != "not_applicable" and cr["evaluable"] is False
    assert "baseline" in cr["reason"] and "not determinable" in cr["reason"]
    assert r.status == "not_evaluable"
    # a baseline assessed and free of LN lesions is genuinely not applicable
    r = lnpath.compare(side(table(20)), side(table(20)), preset="class_transition")
    assert r.panel["class_response"]["value"] == "not_applicable"


def test_zickert_counts_iii_iv_without_active_glomerular_lesion_as_response() -> None:
    """§3.3 ``class_transition`` (Zickert 2014 [V]): response = follow-up class I or II, or III/IV
    with no active glomerular lesion (III/IV-C). Follow-up: 10/20 segmental sclerosis only -> IV
    with glomerular_activity 0 -> response; 10/20 endocapillary -> IV, active -> no response."""
    bl = side(table(20, **IV_BASELINE))
    scarred = side(table(20, segmental_sclerosis=10))
    assert scarred.isn_rps_class.proposal == "IV"
    r = lnpath.compare(bl, scarred, preset="class_transition")
    assert r.endpoint["name"] == "class_response" and r.endpoint["value"] is True
    assert r.to_dict()["fields"]["glomerular_activity_fu"] == {"value": 0, "range": [0, 0]}
    active = lnpath.compare(
        bl, side(table(20, endocapillary_hypercellularity=10)), "class_transition"
    )
    assert active.endpoint["value"] is False
    assert active.to_dict()["fields"]["glomerular_activity_fu"]["value"] == 2  # 10/20 -> 2, x1
    mesangial = side(
        table(20), biopsy={"if_mesangial_deposits": True, "mesangial_hypercellularity": True}
    )
    assert mesangial.isn_rps_class.proposal == "II"
    assert lnpath.compare(bl, mesangial, preset="class_transition").endpoint["value"] is True


def test_zickert_decides_from_component_bounds() -> None:
    """§3.3 with component rules over ranges: a follow-up IV with endocapillary 10/20 is active
    whatever its unassessed neutrophils show; a scarred IV with unassessed neutrophils is not
    decidable (they could be active)."""
    bl = side(table(20, **IV_BASELINE))
    frame = table(20, endocapillary_hypercellularity=10)
    frame["neutrophils_karyorrhexis"] = pd.array([pd.NA] * 20, dtype="boolean")
    assert lnpath.compare(bl, side(frame), preset="class_transition").endpoint["value"] is False
    frame = table(20, segmental_sclerosis=10)
    frame["neutrophils_karyorrhexis"] = pd.array([pd.NA] * 20, dtype="boolean")
    r = lnpath.compare(bl, side(frame), preset="class_transition")
    assert r.status == "not_evaluable" and r.endpoint["value"] is None
    assert r.to_dict()["fields"]["glomerular_activity_fu"]["range"] == [0, 3]


def test_preset_rule_is_component_level_and_shown() -> None:
    """§3.3: the Zickert rule "needs component-level rules, not totals": the preset carries its
    rule as data, and the rule text names the glomerular activity items."""
    r = lnpath.compare(side(table(20, **IV_BASELINE)), side(table(20)), preset="class_transition")
    rule = r.to_dict()["preset"]["rule"]
    assert rule is not None and "any" in rule
    text = r.panel["class_response"]["rule"]
    assert "glomerular_activity_fu == 0" in text and "class_fu" in text


def test_a_custom_component_rule() -> None:
    """§3.3 "a user can override any threshold": a rule over components, here "no endocapillary
    hypercellularity at follow-up", is evaluated as its own endpoint and labelled not validated."""
    bl = side(table(20, **IV_BASELINE))
    rule = {"field": "endocapillary_hypercellularity_fu", "op": "==", "value": 0}
    yes = lnpath.compare(
        bl, side(table(20, segmental_sclerosis=3)), preset="class_transition", rule=rule
    )
    assert yes.endpoint["name"] == "custom_rule" and yes.endpoint["value"] is True
    assert yes.to_dict()["preset"]["label"] == "not validated"
    no = lnpath.compare(bl, side(table(20, endocapillary_hypercellularity=1)), rule=rule)
    assert no.endpoint["value"] is False
    with pytest.raises(lnpath.InputError, match="unknown field"):
        lnpath.compare(bl, bl, rule={"field": "endocap_fu", "op": "==", "value": 0})


def test_a_field_a_rule_tests_twice_is_named_open_once() -> None:
    """The README's class rule reads class_fu in two clauses: left open, the reason said "class_fu
    could be ..." twice."""
    rule = {
        "any": [
            {"field": "class_fu", "op": "in", "value": ["I", "II"]},
            {
                "all": [
                    {"field": "class_fu", "op": "has", "value": ["III", "IV"]},
                    {"field": "glomerular_activity_fu", "op": "==", "value": 0},
                ]
            },
        ]
    }
    unassessed = side(table(20, value=pd.NA))
    open_ = lnpath.compare(side(table(20, **IV_BASELINE)), unassessed, rule=rule)
    reason = open_.endpoint["reason"]
    assert open_.endpoint["value"] is None and reason.startswith("not decided: ")
    assert reason.count("class_fu could be") == 1, reason


# ------------------------------------------------------------------ decide from bounds (§3.3)


def test_an_incomplete_index_that_already_decides_is_evaluable() -> None:
    """§3.3 LuFla remission AI_fu <= 2. Follow-up: endocapillary 11/20 (3) and necrosis 11/20
    (3 x2 = 6), interstitial inflammation not measured: AI_fu in 9..12 > 2 -> not in remission,
    whatever the missing component. With AI_fu in 1..4 the call is open: not evaluable."""
    bl = side(table(20, **IV_BASELINE))
    no_inflammation = {"interstitial_fibrosis": 0.0, "tubular_atrophy": 0.0}
    fu = side(table(20, endocapillary_hypercellularity=11, fibrinoid_necrosis=11), no_inflammation)
    assert fu.activity_index.total_range == (9, 12)
    r = lnpath.compare(bl, fu, preset="lufla_AI2")
    assert r.status == "provisional" and r.endpoint["value"] is False
    assert any("bounds" in f for f in r.panel["histologic_remission"]["flags"])
    open_fu = side(table(20, hyaline_deposits=1), no_inflammation)
    assert open_fu.activity_index.total_range == (1, 4)
    r = lnpath.compare(bl, open_fu, preset="lufla_AI2")
    assert r.status == "not_evaluable" and r.endpoint["value"] is None
    # Malvar remission needs AI_fu = 0: 1..4 already decides "not quiescent"
    assert lnpath.compare(bl, open_fu, preset="malvar_AI0").endpoint["value"] is False


# ------------------------------------------------------------------ honest labels (§3.1, §3.3)


@pytest.mark.parametrize(
    ("preset", "label", "nih", "caveat"),
    [
        ("lnhr_default", "proposed", "bajema2018", False),
        ("lufla_AI2", "validated", "austin1984", True),
        ("malvar_AI0", "validated", "austin1984", True),
        ("parodis_rebiolup_AI3", "validated", "austin1984", True),
        ("moroni2022", "validated", "bajema2018", False),
        ("class_transition", "validated", "austin1984", True),
        ("relative_AI50", "not validated", "bajema2018", False),
        ("strict_chronicity_CI1", "proposed", "bajema2018", False),
    ],
)
def test_presets_say_how_they_are_supported_and_which_index_their_source_used(
    preset: str, label: str, nih: str, caveat: bool
) -> None:
    """§3.1/§3.3: ``validated`` only for a rule taken verbatim from its source; our composites are
    ``proposed``. A source that predates the 2018 revision gets a caveat on 2018 scores."""
    r = lnpath.compare(side(table(20, **IV_BASELINE)), side(table(20)), preset=preset)
    info = r.to_dict()["preset"]
    assert (info["label"], info["nih_version"]) == (label, nih)
    assert info["validated"] is (label == "validated")
    assert any("predates the 2018 revision" in c for c in r.caveats) is caveat


def test_list_presets_shows_labels_index_versions_and_component_rules() -> None:
    """§3.3: ``lnpath compare --list-presets`` says how each preset is supported, which index
    its source scored, and the component-level rule where a preset has one."""
    run = subprocess.run(
        [sys.executable, "-m", "lnpath", "compare", "--list-presets"],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    out = " ".join(run.stdout.split())
    assert "lnhr_default -> endpoint: composite_histologic_responder (proposed)" in out
    assert "lufla_AI2 -> endpoint: histologic_remission [index: austin1984]" in out
    assert "component rule: class_fu in {I, II} or (class_fu has {III, IV} and" in out
