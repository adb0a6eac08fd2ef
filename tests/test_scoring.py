"""NIH indices, class proposal, adequacy and configuration against the clinical specification."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import lnpath
from lnpath.core.errors import InputError
from lnpath.core.findings import LESIONS
from lnpath.io.configfile import load_config
from lnpath.io.tables import findings_from_geojson
from lnpath.scoring.config import ScoringConfig
from lnpath.scoring.score import BiopsyScore, score_findings
from lnpath.scoring.uncertainty import band

FULL_CORTEX = {
    "interstitial_inflammation": 0.0,
    "interstitial_fibrosis": 0.0,
    "tubular_atrophy": 0.0,
}


def table(n: int, **positives: Any) -> pd.DataFrame:
    """``n`` glomeruli, no lesions; ``lesion=k`` marks the first k rows, or the rows given."""
    frame = pd.DataFrame({"glomerulus_id": range(n)})
    for lesion in LESIONS:
        frame[lesion] = False
    for name, rows in positives.items():
        chosen = range(rows) if isinstance(rows, int) else rows
        frame.loc[list(chosen), name] = True
    return frame


# ------------------------------------------------------------------ worked examples (spec §1.4)


def test_spec_denominator_example_default_and_viable() -> None:
    frame = table(20, global_sclerosis=range(10), endocapillary_hypercellularity=range(10, 13))
    default = score_findings(frame, FULL_CORTEX).activity_index.components
    endo = default["endocapillary_hypercellularity"]
    assert (endo.n, endo.N, endo.fraction, endo.score) == (3, 20, 0.15, 1)
    viable = score_findings(frame, FULL_CORTEX, config={"preset": "viable_denominator"})
    endo = viable.activity_index.components["endocapillary_hypercellularity"]
    assert (endo.n, endo.N, endo.fraction, endo.score) == (3, 10, 0.3, 2)
    assert endo.basis == "glomeruli not globally sclerosed"
    # the chronicity index keeps all glomeruli
    sclerosis = viable.chronicity_index.components["glomerulosclerosis"]
    assert (sclerosis.n, sclerosis.N) == (10, 20)


def test_bands_at_exact_quarter_and_half() -> None:
    for n, score in ((2, 1), (3, 2), (6, 2), (7, 3)):
        frame = table(12, hyaline_deposits=n)
        assert score_findings(frame).activity_index.components["hyaline_deposits"].score == score


def test_weights_and_maxima() -> None:
    frame = table(10, **{lesion: 10 for lesion in LESIONS})
    cortex = {"interstitial_inflammation": 1.0, "interstitial_fibrosis": 1.0, "tubular_atrophy": 1}
    score = score_findings(frame, cortex)
    ai, ci = score.activity_index, score.chronicity_index
    assert (ai.total, ai.maximum, ai.complete) == (24, 24, True)
    assert (ci.total, ci.maximum, ci.complete) == (12, 12, True)
    assert {k: c.weight for k, c in ai.components.items()} == {
        "endocapillary_hypercellularity": 1,
        "neutrophils_karyorrhexis": 1,
        "fibrinoid_necrosis": 2,
        "hyaline_deposits": 1,
        "cellular_fibrocellular_crescents": 2,
        "interstitial_inflammation": 1,
    }
    assert all(c.weight == 1 for c in ci.components.values())


def test_one_glomerulus_counts_in_several_components() -> None:
    frame = table(
        8,
        endocapillary_hypercellularity=[0],
        fibrinoid_necrosis=[0],
        cellular_crescent=[0],
        segmental_sclerosis=[0],
        fibrous_crescent=[0],
    )
    score = score_findings(frame, FULL_CORTEX)
    ai, ci = score.activity_index.components, score.chronicity_index.components
    for name in ("endocapillary_hypercellularity", "fibrinoid_necrosis"):
        assert (ai[name].n, ai[name].N, ai[name].score) == (1, 8, 1)
    assert ai["fibrinoid_necrosis"].weighted == 2
    assert ai["cellular_fibrocellular_crescents"].weighted == 2
    assert ai["fibrinoid_necrosis"].involved_ids == [0] == ci["glomerulosclerosis"].involved_ids
    assert (ci["glomerulosclerosis"].n, ci["fibrous_crescents"].n) == (1, 1)
    assert score.activity_index.total == 1 + 2 + 2
    assert score.chronicity_index.total == 2
    assert score.isn_rps_class.involved == 1


def test_total_glomerulosclerosis_counts_global_or_segmental_once() -> None:
    frame = table(8, global_sclerosis=[0, 1], segmental_sclerosis=[1, 2])
    component = score_findings(frame).chronicity_index.components["glomerulosclerosis"]
    assert (component.n, component.N, component.score) == (3, 8, 2)


def test_crescents_component_is_cellular_or_fibrocellular() -> None:
    frame = table(10, cellular_crescent=[0, 1], fibrocellular_crescent=[1, 2], fibrous_crescent=[3])
    score = score_findings(frame)
    assert score.activity_index.components["cellular_fibrocellular_crescents"].n == 3
    assert score.chronicity_index.components["fibrous_crescents"].n == 1


@pytest.mark.parametrize(
    ("value", "expected"),
    [(0.0, 0), (0.01, 1), (0.2499999, 1), (0.25, 2), ([1, 4], 2), (0.5, 2), ([500, 1000], 2),
     ([501, 1000], 3), (1, 3)],
)  # fmt: skip
def test_cortex_fractions_banded_exactly(value: Any, expected: int) -> None:
    score = score_findings(table(10), {"interstitial_fibrosis": value})
    assert score.chronicity_index.components["interstitial_fibrosis"].score == expected


# ------------------------------------------------------------------ not assessed / incomplete


def test_absent_cortex_makes_the_index_incomplete() -> None:
    frame = table(10, endocapillary_hypercellularity=3)
    score = score_findings(frame, {"interstitial_fibrosis": 0.3})
    ai, ci = score.activity_index, score.chronicity_index
    assert (ai.total, ai.complete, ai.not_assessed) == (2, False, ["interstitial_inflammation"])
    assert ai.total_range == (2, 5)
    assert "incomplete" in ai.note and "interstitial_inflammation" in ai.note
    assert (ci.total, ci.complete) == (2, False)
    assert set(ci.not_assessed) == {"tubular_atrophy"}
    assert any("tubular_atrophy" in item for item in score.pending_review)


def test_not_assessed_lesion_is_listed_for_the_pathologist() -> None:
    frame = table(10, endocapillary_hypercellularity=3)
    frame["fibrinoid_necrosis"] = pd.array([pd.NA] * 10, dtype="boolean")
    score = score_findings(frame, FULL_CORTEX)
    necrosis = score.activity_index.components["fibrinoid_necrosis"]
    assert (necrosis.assessed, necrosis.score, necrosis.weighted) == (False, None, None)
    assert necrosis.n_not_assessed == 10 and necrosis.score_range == (0, 3)
    assert score.activity_index.total == 2 and not score.activity_index.complete
    assert score.activity_index.total_range == (2, 8)
    assert any(item.startswith("AI fibrinoid_necrosis (x2)") for item in score.pending_review)
    d = score.to_dict()["activity_index"]
    assert d["not_assessed"] == ["fibrinoid_necrosis"] and d["complete"] is False


def test_partly_assessed_lesion_gives_the_possible_score_range() -> None:
    frame = table(12, hyaline_deposits=2)
    frame["hyaline_deposits"] = frame["hyaline_deposits"].astype("boolean")
    frame.loc[[10, 11], "hyaline_deposits"] = pd.NA
    component = score_findings(frame).activity_index.components["hyaline_deposits"]
    assert not component.assessed and component.score_range == (1, 2)
    assert (component.involved_ids, component.not_assessed_ids) == ([0, 1], [10, 11])


def test_machine_output_from_qupath_lists_what_the_pathologist_supplies(qupath_dir: Path) -> None:
    score = score_findings(findings_from_geojson(qupath_dir / "TPATH129.geojson"))
    ai = score.activity_index
    assert ai.total is None and "no component assessed" in ai.note
    assert score.chronicity_index.total == 2 and score.chronicity_index.total_range == (2, 11)
    assert len(score.pending_review) >= 8


# ------------------------------------------------------------------ adequacy


def test_empty_table_is_inadequate_not_a_crash() -> None:
    score = score_findings(table(0))
    d = score.to_dict()
    assert d["adequacy"]["status"] == "inadequate" and d["adequacy"]["n_glomeruli"] == 0
    assert d["activity_index"]["total"] is None and d["chronicity_index"]["total"] is None
    assert "not computable" in d["activity_index"]["note"]
    assert d["isn_rps_class"]["proposal"] is None
    json.loads(score.to_json())


@pytest.mark.parametrize(
    ("n", "preset", "status"),
    [(10, None, "adequate"), (9, None, "limited"), (8, None, "limited"), (7, None, "inadequate"),
     (8, "oxford_8", "adequate"), (7, "oxford_8", "inadequate"), (6, "permissive_5", "adequate"),
     (5, "permissive_5", "inadequate")],
)  # fmt: skip
def test_adequacy_thresholds(n: int, preset: str | None, status: str) -> None:
    config = {"preset": preset} if preset else None
    assert score_findings(table(n), config=config).adequacy.status == status


def test_inadequate_biopsy_reports_counts_only_unless_configured() -> None:
    frame = table(5, endocapillary_hypercellularity=2)
    counts_only = score_findings(frame, FULL_CORTEX)
    assert counts_only.activity_index.total is None
    assert counts_only.activity_index.components["endocapillary_hypercellularity"].score == 2
    assert counts_only.isn_rps_class.proposal is None
    scored = score_findings(frame, FULL_CORTEX, config={"inadequate_policy": "score"})
    assert scored.activity_index.total == 2 and scored.isn_rps_class.proposal == "III"
    assert scored.adequacy.status == "inadequate"


# ------------------------------------------------------------------ ISN/RPS class


def test_class_iv_at_exactly_half() -> None:
    assert score_findings(table(10, endocapillary_hypercellularity=5)).isn_rps_class.proposal == (
        "IV"
    )
    assert score_findings(table(10, endocapillary_hypercellularity=4)).isn_rps_class.proposal == (
        "III"
    )


def test_class_vi_at_exactly_ninety_percent() -> None:
    vi = score_findings(table(10, global_sclerosis=9)).isn_rps_class
    assert (vi.proposal, vi.needs_if_em) == ("VI", [])
    assert score_findings(table(20, global_sclerosis=17)).isn_rps_class.proposal == "IV"
    active = table(10, global_sclerosis=9, cellular_crescent=[9])
    proposal = score_findings(active).isn_rps_class
    assert proposal.proposal == "IV" and "residual" in proposal.rationale


def test_ischemic_glomeruli_are_left_out_of_the_class_fraction() -> None:
    frame = table(10, endocapillary_hypercellularity=4, global_sclerosis=[8, 9])
    frame["ischemic"] = pd.array([False] * 8 + [True, True], dtype="boolean")
    proposal = score_findings(frame).isn_rps_class
    assert (proposal.involved, proposal.n_class, proposal.proposal) == (4, 8, "IV")
    kept = score_findings(frame, config={"ischemic_exclusion": False}).isn_rps_class
    assert (kept.involved, kept.n_class, kept.proposal) == (6, 10, "IV")


def test_membranous_and_mesangial_inputs() -> None:
    prolif = table(10, endocapillary_hypercellularity=6)
    assert score_findings(prolif, biopsy={"membranous": True}).isn_rps_class.proposal == "IV+V"
    below = {"membranous": True, "membranous_capillary_surface": 0.5, "membranous_glomeruli": 0.8}
    # spec §9: +V is kept below the [R] extent rule unless the rule is enforced
    assert score_findings(prolif, biopsy=below).isn_rps_class.proposal == "IV+V"
    enforced = {"class_v_combined_rule": {"enforce": True}}
    assert score_findings(prolif, biopsy=below, config=enforced).isn_rps_class.proposal == "IV"
    above = {**below, "membranous_capillary_surface": 0.6}
    assert score_findings(prolif, biopsy=above, config=enforced).isn_rps_class.proposal == "IV+V"
    quiet = table(10)
    assert score_findings(quiet, biopsy={"membranous": True}).isn_rps_class.proposal == "V"
    mesangial = {"mesangial_hypercellularity": True, "if_mesangial_deposits": True}
    assert score_findings(quiet, biopsy=mesangial).isn_rps_class.proposal == "II"
    only_if = score_findings(quiet, biopsy={"if_mesangial_deposits": True}).isn_rps_class
    assert only_if.proposal == "I" and only_if.needs_if_em == [
        "membranous component (class V): subepithelial deposits by IF/EM"
    ]
    nothing = score_findings(quiet).isn_rps_class
    assert nothing.proposal is None and "IF/EM" in nothing.label and len(nothing.needs_if_em) == 2


def test_unassessed_lesions_name_the_alternative_class(qupath_dir: Path) -> None:
    proposal = score_findings(findings_from_geojson(qupath_dir / "TPATH081.geojson")).isn_rps_class
    assert (proposal.proposal, proposal.alternative) == ("III", "IV")
    assert proposal.involved == 2 and proposal.n_class == 10


def test_bad_biopsy_inputs() -> None:
    with pytest.raises(InputError, match="unknown input 'membranus'"):
        score_findings(table(10), biopsy={"membranus": True})
    with pytest.raises(InputError, match="membranous_glomeruli"):
        score_findings(table(10), biopsy={"membranous_glomeruli": 1.5})


# ------------------------------------------------------------------ uncertainty in the score


def test_uncertainty_without_probabilities() -> None:
    score = score_findings(table(10, endocapillary_hypercellularity=3), FULL_CORTEX)
    unc = score.uncertainty
    endo = unc["components"]["endocapillary_hypercellularity"]
    assert 0.10 < endo["wilson_95"][0] < 0.12 and 0.59 < endo["wilson_95"][1] < 0.61
    assert math.isclose(sum(endo["band_probabilities"]), 1.0)
    assert endo["near_band_edge"] is True  # 2/10 scores 1
    assert unc["activity_index"] == {"distribution": None, "interval_95": None}
    assert "independent" in unc["assumption"]
    assert unc["class_fraction"]["near_threshold"] is False


def test_call_probabilities_give_exact_total_distribution() -> None:
    rng = np.random.default_rng(3)
    frame = table(6)
    p_endo = rng.uniform(0, 1, 6)
    p_necrosis = rng.uniform(0, 1, 6)
    frame["endocapillary_hypercellularity"] = p_endo > 0.5
    frame["fibrinoid_necrosis"] = p_necrosis > 0.5
    frame["p_endocapillary_hypercellularity"] = p_endo
    frame["p_fibrinoid_necrosis"] = p_necrosis
    score = score_findings(frame, FULL_CORTEX, config={"inadequate_policy": "score"})
    dist = score.uncertainty["activity_index"]["distribution"]
    brute = np.zeros(25)
    for endo, necrosis in itertools.product(itertools.product((0, 1), repeat=6), repeat=2):
        prob = math.prod(p if e else 1 - p for p, e in zip(p_endo, endo, strict=True))
        prob *= math.prod(p if e else 1 - p for p, e in zip(p_necrosis, necrosis, strict=True))
        brute[band(sum(endo), 6) + 2 * band(sum(necrosis), 6)] += prob
    assert np.allclose(dist, brute, atol=1e-12) and math.isclose(sum(dist), 1.0)
    lo, hi = score.uncertainty["activity_index"]["interval_95"]
    assert 0 <= lo <= hi <= 9
    assert score.uncertainty["chronicity_index"]["distribution"] is None


def test_certain_probabilities_reproduce_the_observed_total() -> None:
    frame = table(12, endocapillary_hypercellularity=4, cellular_crescent=7)
    frame["p_endocapillary_hypercellularity"] = frame["endocapillary_hypercellularity"] * 1.0
    frame["p_cellular_crescent"] = frame["cellular_crescent"] * 1.0
    score = score_findings(frame, FULL_CORTEX)
    dist = score.uncertainty["activity_index"]["distribution"]
    assert dist[score.activity_index.total] == pytest.approx(1.0)
    assert score.uncertainty["activity_index"]["interval_95"] == [8, 8]


# ------------------------------------------------------------------ serialisation and config


def test_to_dict_contract_keys_and_round_trip() -> None:
    score = score_findings(table(12, endocapillary_hypercellularity=4), FULL_CORTEX)
    d = json.loads(score.to_json())
    assert {"nih_version", "lnpath_version", "config", "status", "activity_index",
            "chronicity_index", "isn_rps_class", "adequacy", "uncertainty"} <= set(d)  # fmt: skip
    assert d["status"] == "provisional" and d["nih_version"] == "bajema2018"
    assert d["lnpath_version"] == lnpath.__version__
    component = d["activity_index"]["components"]["endocapillary_hypercellularity"]
    assert {"n", "N", "fraction", "score", "weight", "weighted", "assessed"} <= set(component)
    assert {"total", "max", "complete", "not_assessed", "components"} <= set(d["chronicity_index"])
    assert {"proposal", "rationale", "needs_if_em"} <= set(d["isn_rps_class"])
    assert {"n_glomeruli", "status", "message"} <= set(d["adequacy"])
    unc = d["uncertainty"]
    assert {"assumption", "components", "activity_index", "chronicity_index"} <= set(unc)
    assert BiopsyScore.from_dict(d).to_dict() == d
    with pytest.raises(InputError):
        BiopsyScore.from_dict({"activity_index": {}})


def test_config_defaults_presets_and_files(tmp_path: Path) -> None:
    cfg = ScoringConfig()
    assert (cfg.glomerular_denominator, cfg.class_iv_threshold, cfg.class_vi_threshold) == (
        "all",
        0.5,
        0.9,
    )
    assert (cfg.adequacy.adequate, cfg.adequacy.limited) == (10, 8)
    both = ScoringConfig.from_presets("viable_denominator", "adhesion_as_sclerosis")
    assert both.adhesion_as_sclerosis and both.presets == ("viable_denominator",
                                                           "adhesion_as_sclerosis")  # fmt: skip
    yaml_file = tmp_path / "c.yaml"
    yaml_file.write_text("preset: oxford_8\nglobal_threshold: 0.8\n")
    loaded = load_config(yaml_file)
    assert loaded.adequacy.adequate == 8 and loaded.global_threshold == 0.8
    assert load_config(loaded.to_dict()) == loaded
    json_file = tmp_path / "c.json"
    json_file.write_text(json.dumps(loaded.to_dict()))
    assert load_config(json_file) == loaded


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("glomerular_denominatr: all\n", "did you mean 'glomerular_denominator'"),
        ("class_iv_threshold: 1.5\n", "class_iv_threshold must be a number in [0, 1]"),
        ("glomerular_denominator: viable\n", "glomerular_denominator must be one of"),
        ("preset: viable\n", "unknown preset 'viable'"),
        ("adequacy: {adequate: 5, limited: 8}\n", "adequacy.limited must not exceed"),
        ("adhesion_as_sclerosis: 'yes'\n", "adhesion_as_sclerosis must be true or false"),
        ("nih_version: austin1984\n", "nih_version must be one of bajema2018"),
        ("[1, 2]\n", "must be a mapping"),
        ("a: [b\n", "not valid YAML/JSON"),
        ("true: 1\nfoo: 2\n", "unknown configuration key True"),  # YAML reads true: as a bool
        ("adequacy: {1: 2}\n", "adequacy: unknown configuration key 1"),
    ],
)
def test_bad_config_files(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(content)
    with pytest.raises(InputError) as info:
        load_config(path)
    assert str(path) in str(info.value) and message in str(info.value)


@pytest.mark.parametrize("names", [(None,), (["oxford_8", "legacy_2003"],)])
def test_with_presets_names_a_preset_that_is_not_a_name(names: tuple[object, ...]) -> None:
    """None reached difflib (``TypeError: 'NoneType' object is not iterable``) and a list, the
    likely slip for ``with_presets(*names)``, ``unhashable type``."""
    with pytest.raises(InputError, match=r"^with_presets: a preset is a name, got "):
        ScoringConfig().with_presets(*names)  # type: ignore[arg-type]
    assert ScoringConfig().with_presets("oxford_8", "legacy_2003").presets


def test_adhesion_as_sclerosis_preset_changes_chronicity() -> None:
    frame = table(10, segmental_sclerosis=2)
    frame["adhesion"] = pd.array([False] * 7 + [True] * 3, dtype="boolean")
    default = score_findings(frame).chronicity_index.components["glomerulosclerosis"]
    oxford = score_findings(frame, config={"preset": "adhesion_as_sclerosis"})
    counted = oxford.chronicity_index.components["glomerulosclerosis"]
    assert (default.n, default.score, counted.n, counted.score) == (2, 1, 5, 2)


def test_nonscarred_inflammation_preset_reads_its_own_measurement() -> None:
    cortex = {"interstitial_inflammation": 0.3, "interstitial_inflammation_nonscarred": 0.1}
    component = "interstitial_inflammation"
    default = score_findings(table(10), cortex).activity_index.components[component]
    banff = score_findings(table(10), cortex, config={"preset": "nonscarred_inflammation"})
    assert default.score == 2 and banff.activity_index.components[component].score == 1
    missing = score_findings(table(10), {"interstitial_inflammation": 0.3},
                             config={"preset": "nonscarred_inflammation"})  # fmt: skip
    assert not missing.activity_index.components[component].assessed


@pytest.mark.parametrize(
    "cortex",
    [{"interstitial_fibrosis": 1.2}, {"tubular_atrophy": "lots"}, {"tubular_atrophy": True}],
)
def test_bad_cortex_values(cortex: dict[str, Any]) -> None:
    with pytest.raises(InputError, match="cortex"):
        score_findings(table(10), cortex)


# ------------------------------------------------------------------ properties on random tables

lesion_rows = st.lists(
    st.fixed_dictionaries({lesion: st.booleans() for lesion in LESIONS}), min_size=1, max_size=40
)


@settings(max_examples=60, deadline=None)
@given(lesion_rows, st.booleans())
def test_components_and_totals_follow_the_integer_rule(rows: list[dict[str, bool]],
                                                       viable: bool) -> None:  # fmt: skip
    frame = pd.DataFrame([{"glomerulus_id": i, **row} for i, row in enumerate(rows)])
    config = {"preset": "viable_denominator"} if viable else {}
    score = score_findings(frame, FULL_CORTEX, config={**config, "inadequate_policy": "score"})
    keep = [not r["global_sclerosis"] for r in rows] if viable else [True] * len(rows)
    ai_rows = [r for r, k in zip(rows, keep, strict=True) if k]
    expected_ai = {  # component -> (weight, lesions counted with OR)
        "endocapillary_hypercellularity": (1, ("endocapillary_hypercellularity",)),
        "neutrophils_karyorrhexis": (1, ("neutrophils_karyorrhexis",)),
        "fibrinoid_necrosis": (2, ("fibrinoid_necrosis",)),
        "hyaline_deposits": (1, ("hyaline_deposits",)),
        "cellular_fibrocellular_crescents": (2, ("cellular_crescent", "fibrocellular_crescent")),
    }
    total = 0
    for name, (weight, lesions) in expected_ai.items():
        flags = [any(r[lesion] for lesion in lesions) for r in ai_rows]
        component = score.activity_index.components[name]
        assert (component.n, component.N) == (sum(flags), len(flags))
        assert component.score == band(sum(flags), len(flags))
        total += weight * band(sum(flags), len(flags))
    assert score.activity_index.total == total
    sclerosed = sum(r["global_sclerosis"] or r["segmental_sclerosis"] for r in rows)
    fibrous = sum(r["fibrous_crescent"] for r in rows)
    assert score.chronicity_index.total == band(sclerosed, len(rows)) + band(fibrous, len(rows))
    involved = sum(
        any(r[lesion] for lesion in LESIONS if lesion != "neutrophils_karyorrhexis") for r in rows
    )
    assert score.isn_rps_class.involved == involved


def test_probability_for_a_lesion_not_assessed_inside_a_called_component() -> None:
    frame = table(10, fibrocellular_crescent=[1])
    frame["cellular_crescent"] = pd.array([True] + [pd.NA] + [False] * 8, dtype="boolean")
    frame["p_fibrocellular_crescent"] = [0.2, 0.9] + [0.1] * 8
    score = score_findings(frame)
    crescents = score.activity_index.components["cellular_fibrocellular_crescents"]
    assert (crescents.assessed, crescents.n) == (True, 2)
    entry = score.uncertainty["components"]["cellular_fibrocellular_crescents"]
    assert entry["expected_count"] == pytest.approx(1 + 1 + 8 * 0.1)
    assert sum(entry["count_distribution"]) == pytest.approx(1.0)


def test_class_fraction_flags_one_glomerulus_from_iv() -> None:
    near = score_findings(table(10, endocapillary_hypercellularity=4)).uncertainty
    far = score_findings(table(10, endocapillary_hypercellularity=2)).uncertainty
    assert near["class_fraction"]["near_threshold"] and not far["class_fraction"]["near_threshold"]
    config = {"class_iv_threshold": 0.25}
    custom = score_findings(table(12, endocapillary_hypercellularity=3), config=config)
    assert custom.isn_rps_class.proposal == "IV"
    assert custom.uncertainty["class_fraction"]["near_threshold"]


def test_tubular_atrophy_basis_and_both_figures_reported() -> None:
    cortex = {"tubular_atrophy": 0.3, "tubular_atrophy_cortex_area": 0.2}
    default = score_findings(table(10), cortex)
    area = score_findings(table(10), cortex, config={"tubular_atrophy_basis": "cortex_area"})
    assert default.chronicity_index.components["tubular_atrophy"].score == 2
    assert area.chronicity_index.components["tubular_atrophy"].score == 1
    assert area.chronicity_index.components["tubular_atrophy"].basis == "% of cortical area"
    assert default.to_dict()["cortex"] == {
        "tubular_atrophy": 0.3,
        "tubular_atrophy_cortex_area": 0.2,
    }


def test_replicate_core_doubt_for_components_and_class() -> None:
    small = score_findings(table(10, endocapillary_hypercellularity=3), FULL_CORTEX)
    large = score_findings(table(100, endocapillary_hypercellularity=30), FULL_CORTEX)
    small_endo = small.uncertainty["components"]["endocapillary_hypercellularity"]
    large_endo = large.uncertainty["components"]["endocapillary_hypercellularity"]
    assert small_endo["p_different_band"] == pytest.approx(1 - small_endo["band_probabilities"][2])
    assert small_endo["p_different_band"] > large_endo["p_different_band"]
    at_half = score_findings(table(10, endocapillary_hypercellularity=5)).uncertainty
    clear_iii = score_findings(table(40, endocapillary_hypercellularity=4)).uncertainty
    assert at_half["class_fraction"]["p_replicate_other_side"] > 0.3
    assert clear_iii["class_fraction"]["p_replicate_other_side"] < 0.01


def test_measured_sclerosed_fraction_counts() -> None:
    frame = table(4, global_sclerosis=[0, 1])
    frame["m_sclerosed_fraction"] = [1.0, 0.7, 0.2, np.nan]
    counts = score_findings(frame).counts
    assert (counts["globally_sclerosed"], counts["completely_sclerosed"]) == (2, 1)
    assert (counts["over_global_threshold"], counts["sclerosed_fraction_measured"]) == (2, 3)
    strict = score_findings(frame, config={"global_threshold": 0.8}).counts
    assert strict["over_global_threshold"] == 1
