"""Every numeric rule of clinical-scoring.md at its edges: just below, at and just above.

Each case names the section it checks in its id. The expected values are written from the spec's
own words (§1.3's integer rule, §2.2's decision procedure, §2.3's adequacy counts, §3.3's preset
tables), not from the code, and everything goes through the public facade
(``lnpath.score_findings``, ``lnpath.compare``).
"""

from __future__ import annotations

import re
import shutil
from fractions import Fraction
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import lnpath
from tests.test_engine_spec import CORTEX, table

LESIONS = lnpath.LESIONS
ZERO_CORTEX = CORTEX  # every cortex item scored 0


def score(frame: pd.DataFrame, cortex: dict | None = None, **kwargs: Any) -> lnpath.BiopsyScore:
    return lnpath.score_findings(frame, cortex=ZERO_CORTEX if cortex is None else cortex, **kwargs)


def spec_band(n: int, big_n: int) -> int:
    """§1.3 verbatim: 0 if n == 0; 1 if 4n < N; 2 if 4n >= N and 2n <= N; 3 if 2n > N."""
    if n == 0:
        return 0
    if 4 * n < big_n:
        return 1
    if 4 * n >= big_n and 2 * n <= big_n:
        return 2
    return 3


# ------------------------------------------------------------------ §1.2 / §1.3 glomerular bands

#: index component -> (lesion column that makes it, index, weight) per §1.2's table
GLOMERULAR = {
    "endocapillary_hypercellularity": ("endocapillary_hypercellularity", "activity", 1),
    "neutrophils_karyorrhexis": ("neutrophils_karyorrhexis", "activity", 1),
    "fibrinoid_necrosis": ("fibrinoid_necrosis", "activity", 2),
    "hyaline_deposits": ("hyaline_deposits", "activity", 1),
    "cellular_fibrocellular_crescents/cellular": ("cellular_crescent", "activity", 2),
    "cellular_fibrocellular_crescents/fibrocellular": ("fibrocellular_crescent", "activity", 2),
    "glomerulosclerosis/global": ("global_sclerosis", "chronicity", 1),
    "glomerulosclerosis/segmental": ("segmental_sclerosis", "chronicity", 1),
    "fibrous_crescents": ("fibrous_crescent", "chronicity", 1),
}


def _edges(big_n: int) -> list[int]:
    """0, 1, and one below / at / above N/4 and N/2, and N."""
    marks = {0, 1, big_n}
    for k in (big_n / 4, big_n / 2):
        for m in (int(k) - 1, int(k), int(k) + 1, -(-big_n // (4 if k == big_n / 4 else 2))):
            if 0 <= m <= big_n:
                marks.add(m)
    return sorted(marks)


BAND_CASES = [
    pytest.param(comp, n, big_n, id=f"§1.3-{comp}-{n}/{big_n}")
    for comp in GLOMERULAR
    for big_n in (10, 12, 20, 21)
    for n in _edges(big_n)
]


@pytest.mark.parametrize(("component", "n", "big_n"), BAND_CASES)
def test_glomerular_component_band(component: str, n: int, big_n: int) -> None:
    """§1.3: every glomerular component is banded by the integer rule on n/N (N = all glomeruli,
    §1.4 default); §1.2 weights: x2 for fibrinoid necrosis and cellular/fibrocellular crescents."""
    column, index, weight = GLOMERULAR[component]
    result = score(table(big_n, **{column: n}))
    idx = result.activity_index if index == "activity" else result.chronicity_index
    comp = idx.components[component.split("/")[0]]
    assert (comp.n, comp.N) == (n, big_n)
    assert comp.score == spec_band(n, big_n)
    assert comp.weight == weight
    assert idx.total == spec_band(n, big_n) * weight
    assert idx.complete


@pytest.mark.parametrize(
    ("n", "big_n", "expected"),
    [
        pytest.param(3, 12, 2, id="§1.3-exactly-25%-3/12-scores-2"),
        pytest.param(6, 12, 2, id="§1.3-exactly-50%-6/12-scores-2"),
        pytest.param(2, 12, 1, id="§1.3-below-25%-2/12-scores-1"),
        pytest.param(7, 12, 3, id="§1.3-above-50%-7/12-scores-3"),
        pytest.param(1, 100, 1, id="§1.3-1%-scores-1"),
        pytest.param(0, 12, 0, id="§1.3-absent-scores-0"),
        pytest.param(12, 12, 3, id="§1.3-all-scores-3"),
    ],
)
def test_spec_worked_band_examples(n: int, big_n: int, expected: int) -> None:
    """§1.3: "so exactly 25% scores 2, and exactly 50% also scores 2"; 3/12 and 6/12 named."""
    comp = score(table(big_n, endocapillary_hypercellularity=n)).activity_index.components[
        "endocapillary_hypercellularity"
    ]
    assert comp.score == expected


# ------------------------------------------------------------------ §1.3 cortex fractions

CORTEX_VALUES = [
    (0.0, 0),
    (1e-9, 1),
    (0.2499999, 1),
    (0.25, 2),
    (0.2500001, 2),
    (0.4999999, 2),
    (0.5, 2),
    (0.5000001, 3),
    (1.0, 3),
    ([0, 1000], 0),
    ([1, 1000], 1),
    ([249, 1000], 1),
    ([250, 1000], 2),
    ([1, 3], 2),  # 33 %: no float involved
    ([500, 1000], 2),
    ([501, 1000], 3),
    ([2, 3], 3),
]
#: cortex key -> (index, component, config that scores it from that key, basis wording)
CORTEX_ITEMS = {
    "interstitial_inflammation": ("activity", "interstitial_inflammation", {}, "% of cortex"),
    "interstitial_inflammation_nonscarred": (
        "activity",
        "interstitial_inflammation",
        {"preset": "nonscarred_inflammation"},
        "% of non-scarred cortex",
    ),
    "interstitial_fibrosis": ("chronicity", "interstitial_fibrosis", {}, "% of cortex"),
    "tubular_atrophy": ("chronicity", "tubular_atrophy", {}, "% of cortical tubules"),
    "tubular_atrophy_cortex_area": (
        "chronicity",
        "tubular_atrophy",
        {"tubular_atrophy_basis": "cortex_area"},
        "% of cortical area",
    ),
}


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        pytest.param(key, value, expected, id=f"§1.3/§1.4-{key}-{value}")
        for key in CORTEX_ITEMS
        for value, expected in CORTEX_VALUES
    ],
)
def test_cortex_component_band(key: str, value: Any, expected: int) -> None:
    """§1.3: "Use the same rule for area fractions, computed as a ratio of pixel areas"; §1.4
    items 3-4: % of cortex by default, non-scarred cortex / cortical area by option."""
    index, name, config, basis = CORTEX_ITEMS[key]
    cortex = {**ZERO_CORTEX, key: value}
    result = score(table(12), cortex, config=config)
    comp = (result.activity_index if index == "activity" else result.chronicity_index).components[
        name
    ]
    assert comp.assessed and comp.score == expected
    assert comp.basis == basis
    if isinstance(value, list):
        assert Fraction(comp.fraction) == Fraction(value[0], value[1]) or comp.fraction == float(
            Fraction(value[0], value[1])
        )


# ------------------------------------------------------------------ §1.2 weights and maxima


def test_indices_reach_24_and_12_and_are_never_added() -> None:
    """§1.2: AI = sum(score x weight) max 24, CI = sum(score) max 12, reported separately."""
    every = {column: 7 for column, _, _ in GLOMERULAR.values()}  # 7/12 -> 3
    full = {"interstitial_inflammation": 1.0, "interstitial_fibrosis": 1.0, "tubular_atrophy": 1.0}
    result = score(table(12, **every), full)
    assert (result.activity_index.total, result.activity_index.maximum) == (24, 24)
    assert (result.chronicity_index.total, result.chronicity_index.maximum) == (12, 12)
    line = result.diagnosis_line()
    assert "activity index 24/24" in line and "chronicity index 12/12" in line
    assert "36" not in line


@pytest.mark.parametrize(
    ("columns", "component", "index"),
    [
        pytest.param(
            ("global_sclerosis", "segmental_sclerosis"),
            "glomerulosclerosis",
            "chronicity",
            id="§1.4.2-global-and-segmental-in-one-glomerulus-counts-once",
        ),
        pytest.param(
            ("cellular_crescent", "fibrocellular_crescent"),
            "cellular_fibrocellular_crescents",
            "activity",
            id="§1.2-cellular-and-fibrocellular-in-one-glomerulus-counts-once",
        ),
    ],
)
def test_or_components_count_a_glomerulus_once(
    columns: tuple[str, str], component: str, index: str
) -> None:
    """§1.4 item 2 ("count a glomerulus once if it has global or segmental sclerosis") and §1.2
    (glomeruli with >= 1 cellular or fibrocellular crescent): 3 glomeruli with both -> 3/12, 2."""
    result = score(table(12, **dict.fromkeys(columns, 3)))
    comp = getattr(result, f"{index}_index").components[component]
    assert (comp.n, comp.score) == (3, 2)


def test_one_glomerulus_counts_in_several_components() -> None:
    """§1.4 item 5: one glomerulus may count for endocapillary hypercellularity, necrosis, a
    cellular crescent and segmental sclerosis all at once; each is its own proportion."""
    rows = dict.fromkeys(
        ("endocapillary_hypercellularity", "fibrinoid_necrosis", "cellular_crescent"), 3
    )
    result = score(table(12, segmental_sclerosis=3, **rows))
    ai = result.activity_index.components
    assert [ai[c].score for c in ("endocapillary_hypercellularity", "fibrinoid_necrosis")] == [2, 2]
    assert ai["cellular_fibrocellular_crescents"].score == 2
    assert result.activity_index.total == 2 + 2 * 2 + 2 * 2
    assert result.chronicity_index.components["glomerulosclerosis"].score == 2


# ------------------------------------------------------------------ §1.4 denominators


@pytest.mark.parametrize(
    ("config", "endocap_score", "endocap_n"),
    [
        pytest.param({}, 1, 20, id="§1.4.1-default-all-glomeruli-3/20-15%-scores-1"),
        pytest.param({"preset": "viable_denominator"}, 2, 10, id="§1.4.1-viable-3/10-30%-scores-2"),
    ],
)
def test_denominator_rule(config: dict, endocap_score: int, endocap_n: int) -> None:
    """§1.4 item 1, the spec's own example: 20 glomeruli, 10 globally sclerosed, 3 endocapillary:
    15 % (1) by default, 30 % (2) with viable_denominator; CI sclerosis stays N = all (item 2)."""
    frame = table(20, global_sclerosis=10, endocapillary_hypercellularity=range(10, 13))
    result = score(frame, config=config)
    comp = result.activity_index.components["endocapillary_hypercellularity"]
    assert (comp.n, comp.N, comp.score) == (3, endocap_n, endocap_score)
    gs = result.chronicity_index.components["glomerulosclerosis"]
    assert (gs.n, gs.N, gs.score) == (10, 20, 2)


@pytest.mark.parametrize(
    ("config", "expected_n"),
    [
        pytest.param({}, 0, id="§1.5-isolated-adhesion-is-not-sclerosis-by-default"),
        pytest.param({"preset": "adhesion_as_sclerosis"}, 3, id="§1.5-adhesion_as_sclerosis"),
    ],
)
def test_adhesion(config: dict, expected_n: int) -> None:
    """§1.5: record adhesions but do not count an isolated one as segmental sclerosis by default."""
    comp = score(table(12, adhesion=3), config=config).chronicity_index.components[
        "glomerulosclerosis"
    ]
    assert comp.n == expected_n


# ------------------------------------------------------------------ §1.5 measured definitions


@pytest.mark.parametrize(
    ("fraction", "threshold", "is_global"),
    [
        pytest.param(0.49, 0.5, False, id="§1.5-tuft-49%-segmental"),
        pytest.param(0.5, 0.5, False, id="§1.5-tuft-exactly-50%-not-global(>50%)"),
        pytest.param(0.51, 0.5, True, id="§1.5-tuft-51%-global"),
        pytest.param(1.0, 0.5, True, id="§1.5-tuft-100%-global-and-complete"),
        pytest.param(0.59, 0.6, False, id="§7-global_threshold-0.6-tuft-59%"),
        pytest.param(0.6, 0.6, False, id="§7-global_threshold-0.6-tuft-exactly-60%"),
        pytest.param(0.61, 0.6, True, id="§7-global_threshold-0.6-tuft-61%"),
    ],
)
def test_global_threshold_edge(fraction: float, threshold: float, is_global: bool) -> None:
    """§1.5/§7: global = sclerosed tuft fraction > global_threshold (0.5, ISN/RPS 2003); the
    "completely sclerosed" count is reported beside it. The given call agrees with the default
    threshold (a call that contradicts its own measurement was set by a person and stands)."""
    frame = table(10, **{"global_sclerosis" if fraction > 0.5 else "segmental_sclerosis": 1})
    frame["m_sclerosed_fraction"] = [fraction] + [float("nan")] * 9
    counts = score(frame, config={"global_threshold": threshold}).counts
    assert counts["globally_sclerosed"] == int(is_global)
    assert counts["segmentally_sclerosed"] == int(not is_global)
    assert counts["over_global_threshold"] == int(is_global)
    assert counts["completely_sclerosed"] == int(fraction >= 1.0)


@pytest.mark.parametrize(
    ("circumference", "cells", "expected"),
    [
        pytest.param(0.10, 0.9, None, id="§1.5-crescent-exactly-10%-is-not->10%"),
        pytest.param(0.11, 0.9, "cellular_crescent", id="§1.5-crescent-11%-cellular"),
        pytest.param(0.5, 0.76, "cellular_crescent", id="§1.5-cells-76%-cellular"),
        pytest.param(0.5, 0.75, "fibrocellular_crescent", id="§1.5-cells-75%-fibrocellular"),
        pytest.param(0.5, 0.25, "fibrocellular_crescent", id="§1.5-cells-25%-fibrocellular"),
        pytest.param(0.5, 0.24, "fibrous_crescent", id="§1.5-cells-24%-fibrous"),
    ],
)
def test_crescent_definition_edges(circumference: float, cells: float, expected: str) -> None:
    """§1.5: crescent > 10 % of the capsule; cellular > 75 % cells, fibrous > 75 % matrix,
    fibrocellular 25-75 % cells (§8: active crescent has cell-plus-fibrin >= 25 %)."""
    frame = table(10)
    for kind in ("cellular_crescent", "fibrocellular_crescent", "fibrous_crescent"):
        frame.loc[0, kind] = pd.NA  # not called: the measurement makes the call
    frame["m_crescent_circumference"] = [circumference] + [0.0] * 9
    frame["m_crescent_cell_fraction"] = [cells] + [float("nan")] * 9
    lesions = score(frame).counts["lesions"]
    for kind in ("cellular_crescent", "fibrocellular_crescent", "fibrous_crescent"):
        assert lesions[kind]["present"] == int(kind == expected), kind


@pytest.mark.parametrize(
    ("cells", "flag"),
    [pytest.param(3.0, False, id="§1.5-mesangial-3-nuclei"), pytest.param(4.0, True, id="§1.5-4")],
)
def test_mesangial_cell_edge(cells: float, flag: bool) -> None:
    """§1.5: mesangial hypercellularity >= 4 nuclei (2018); with IF deposits -> II, else I."""
    frame = table(12)
    frame["m_mesangial_cells"] = [cells] * 12
    cls = score(frame, biopsy={"if_mesangial_deposits": True}).isn_rps_class
    assert cls.proposal == ("II" if flag else "I")


# ------------------------------------------------------------------ §2.1 / §2.2 class


@pytest.mark.parametrize(
    ("involved", "big_n", "expected"),
    [
        pytest.param(0, 20, None, id="§2.2-p=0-no-proliferative-class"),
        pytest.param(1, 20, "III", id="§2.2-1/20-III"),
        pytest.param(9, 20, "III", id="§2.1-9/20-45%-III"),
        pytest.param(10, 20, "IV", id="§2.1-exactly-50%-10/20-IV"),
        pytest.param(11, 20, "IV", id="§2.1-11/20-IV"),
        pytest.param(10, 21, "III", id="§2.1-10/21-47.6%-III"),
        pytest.param(11, 21, "IV", id="§2.1-11/21-52.4%-IV"),
        pytest.param(5, 10, "IV", id="§2.1-exactly-50%-5/10-IV"),
        pytest.param(4, 10, "III", id="§2.1-4/10-III"),
    ],
)
def test_class_iii_iv_edge(involved: int, big_n: int, expected: str | None) -> None:
    """§2.1/§2.2: IV if 2*count >= N_class ("exactly 50% -> class IV"), III below, none at 0."""
    cls = score(table(big_n, endocapillary_hypercellularity=involved)).isn_rps_class
    assert cls.proposal == expected
    assert (cls.involved, cls.n_class) == (involved, big_n)


@pytest.mark.parametrize(
    "lesion",
    [
        pytest.param(lesion, id=f"§2.2-LN-lesion-{lesion}")
        for lesion in (
            "endocapillary_hypercellularity",
            "fibrinoid_necrosis",
            "hyaline_deposits",
            "cellular_crescent",
            "fibrocellular_crescent",
            "fibrous_crescent",
            "segmental_sclerosis",
        )
    ],
)
def test_ln_lesions_that_make_a_glomerulus_involved(lesion: str) -> None:
    """§2.2: endocapillary hypercellularity, any crescent, fibrinoid necrosis, wire loops and
    LN sclerosis make a glomerulus involved: 10/20 with any one of them -> IV."""
    assert score(table(20, **{lesion: 10})).isn_rps_class.proposal == "IV"


def test_ischemic_glomeruli_leave_the_class_fraction() -> None:
    """§2.2: N_class = N_all - ischemic. 20 glomeruli, 2 ischemic, 9 involved: 9/18 = 50 % -> IV
    (9/20 would be III); excluded, the class fraction says so."""
    frame = table(20, endocapillary_hypercellularity=9, ischemic=range(18, 20))
    cls = score(frame).isn_rps_class
    assert (cls.involved, cls.n_class, cls.proposal) == (9, 18, "IV")
    off = score(frame, config={"ischemic_exclusion": False}).isn_rps_class
    assert (off.n_class, off.proposal) == (20, "III")


@pytest.mark.parametrize(
    ("n_global", "big_n", "expected"),
    [
        pytest.param(17, 20, "IV", id="§2.1-85%-global-not-VI"),
        pytest.param(18, 20, "VI", id="§2.1-exactly-90%-global-VI"),
        pytest.param(19, 20, "VI", id="§2.1-95%-VI"),
        pytest.param(18, 21, "IV", id="§2.1-18/21-85.7%-not-VI"),
        pytest.param(19, 21, "VI", id="§2.1-19/21-90.5%-VI"),
        pytest.param(8, 10, "IV", id="§2.1-8/10-not-VI"),
        pytest.param(9, 10, "VI", id="§2.1-exactly-9/10-VI"),
    ],
)
def test_class_vi_edge(n_global: int, big_n: int, expected: str) -> None:
    """§2.1/§2.2: VI if 10*global >= 9*N_all (">= 90 %", not "> 90 %") and no residual activity;
    below it the sclerosed glomeruli count as LN-involved -> IV."""
    assert score(table(big_n, global_sclerosis=n_global)).isn_rps_class.proposal == expected


@pytest.mark.parametrize(
    ("lesion", "config", "cortex", "expected"),
    [
        pytest.param(None, {}, None, "VI", id="§2.1-VI-without-activity"),
        pytest.param(
            "endocapillary_hypercellularity", {}, None, "IV", id="§2.1-residual-endocap-not-VI"
        ),
        pytest.param("neutrophils_karyorrhexis", {}, None, "IV", id="§2.2-residual-neutrophils"),
        pytest.param("fibrinoid_necrosis", {}, None, "IV", id="§2.2-residual-necrosis"),
        pytest.param("hyaline_deposits", {}, None, "IV", id="§2.2-residual-hyaline"),
        pytest.param("cellular_crescent", {}, None, "IV", id="§2.2-residual-cellular-crescent"),
        pytest.param(
            "fibrous_crescent", {}, None, "VI", id="§2.2-fibrous-crescent-is-not-activity"
        ),
        pytest.param(
            None,
            {},
            {**ZERO_CORTEX, "interstitial_inflammation": 0.6},
            "VI",
            id="§2.2-inflammation-alone-is-not-residual-activity",
        ),
        pytest.param(
            None,
            {"inflammation_is_residual_activity": True},
            {**ZERO_CORTEX, "interstitial_inflammation": 0.6},
            "IV",
            id="§2.2-inflammation-configured-as-activity",
        ),
    ],
)
def test_class_vi_residual_activity(
    lesion: str | None, config: dict, cortex: dict | None, expected: str
) -> None:
    """§2.2: "active_glomerular_lesions_present (any glomerular AI lesion; interstitial
    inflammation alone does not count as residual activity - configurable)". 18/20 global."""
    frame = table(20, global_sclerosis=18, **({lesion: [19]} if lesion else {}))
    assert score(frame, cortex, config=config).isn_rps_class.proposal == expected


@pytest.mark.parametrize(
    ("involved", "biopsy", "config", "expected"),
    [
        pytest.param(10, {"membranous": True}, {}, "IV+V", id="§2.1-IV+V"),
        pytest.param(9, {"membranous": True}, {}, "III+V", id="§2.1-III+V"),
        pytest.param(0, {"membranous": True}, {}, "V", id="§2.2-pure-V"),
        pytest.param(10, {"membranous": False}, {}, "IV", id="§2.2-IV-without-deposits"),
        pytest.param(
            10,
            {"membranous": True, "membranous_capillary_surface": 0.5, "membranous_glomeruli": 0.6},
            {},
            "IV+V",
            id="§9.2-extent-at-50%-below-rule-but-+V-kept-by-default",
        ),
        pytest.param(
            10,
            {"membranous": True, "membranous_capillary_surface": 0.5, "membranous_glomeruli": 0.6},
            {"class_v_combined_rule": {"enforce": True}},
            "IV",
            id="§2.1-enforced-extent-exactly-50%-is-not->50%",
        ),
        pytest.param(
            10,
            {
                "membranous": True,
                "membranous_capillary_surface": 0.51,
                "membranous_glomeruli": 0.51,
            },
            {"class_v_combined_rule": {"enforce": True}},
            "IV+V",
            id="§2.1-enforced-extent-51%-meets",
        ),
        pytest.param(
            0,
            {"membranous": True, "membranous_capillary_surface": 0.1, "membranous_glomeruli": 0.1},
            {"class_v_combined_rule": {"enforce": True}},
            "V",
            id="§2.1-extent-rule-is-for-V-with-III/IV-only",
        ),
        pytest.param(
            0,
            {"if_mesangial_deposits": True, "mesangial_hypercellularity": True},
            {},
            "II",
            id="§2.2-II",
        ),
        pytest.param(0, {"if_mesangial_deposits": True}, {}, "I", id="§2.2-I"),
        pytest.param(0, {"mesangial_hypercellularity": True}, {}, None, id="§2.2-II-needs-IF"),
        pytest.param(
            10,
            {"if_mesangial_deposits": True, "mesangial_hypercellularity": True},
            {},
            "IV",
            id="§2.2-proliferative-outranks-II",
        ),
        pytest.param(0, {}, {}, None, id="§2.2-no-LN-lesion-indeterminate"),
    ],
)
def test_class_combinations(involved: int, biopsy: dict, config: dict, expected: str) -> None:
    """§2.2's decision procedure after the III/IV fraction: +V, V, II, I, indeterminate."""
    frame = table(20, endocapillary_hypercellularity=involved)
    cls = score(frame, biopsy=biopsy, config=config).isn_rps_class
    assert cls.proposal == expected
    if expected is None:
        assert "indeterminate" in cls.label or "no LN lesion" in cls.label


@pytest.mark.parametrize(
    ("hypercellularity", "alternative"),
    [
        pytest.param(None, "II", id="§2.2-I-or-II-while-hypercellularity-unstated"),
        pytest.param(False, None, id="§2.2-I-when-stated-absent"),
    ],
)
def test_class_i_names_ii_while_mesangial_hypercellularity_is_unstated(
    hypercellularity: bool | None, alternative: str | None
) -> None:
    """§2.2: I and II differ only by mesangial hypercellularity; unstated, II stays open, and a
    comparison reads the follow-up as I or II, not as a settled I."""
    biopsy = {"if_mesangial_deposits": True, "membranous": False}
    if hypercellularity is not None:
        biopsy["mesangial_hypercellularity"] = hypercellularity
    cls = score(table(20), biopsy=biopsy).isn_rps_class
    assert (cls.proposal, cls.alternative) == ("I", alternative)
    assert ("class II if it is present" in cls.rationale) == (alternative == "II")
    baseline = score(table(20, endocapillary_hypercellularity=12), biopsy=biopsy)
    transition = lnpath.compare(baseline, score(table(20), biopsy=biopsy)).to_dict()
    assert transition["panel"]["class_response"]["value"] is True  # I or II: a response both ways


@pytest.mark.parametrize(
    ("config", "has_legacy"),
    [
        pytest.param({}, False, id="§2.1-2018-no-IV-S/IV-G-by-default"),
        pytest.param({"preset": "legacy_2003"}, True, id="§2.1-legacy_2003-mode-only"),
    ],
)
def test_iv_s_iv_g_only_in_legacy_mode(config: dict, has_legacy: bool) -> None:
    """§2.1: "2018: no IV-S/IV-G subclass"; "IV-G (A/C)" only in an explicit legacy_2003 mode.
    12/20 with segmental lesions (endocapillary, lesion_extent segmental) -> IV-S (A) in 2003."""
    frame = table(20, endocapillary_hypercellularity=12)
    frame["lesion_extent"] = ["segmental"] * 12 + [None] * 8
    cls = score(frame, config=config).isn_rps_class
    assert cls.proposal == "IV"
    text = str(cls.to_dict()) + score(frame, config=config).diagnosis_line()
    assert ("IV-S" in text) is has_legacy
    assert "IV-G" not in text
    if has_legacy:
        assert cls.legacy_2003 and cls.legacy_2003["label"] == "IV-S (A)"


@pytest.mark.parametrize(
    ("segmental", "global_", "expected"),
    [
        pytest.param(6, 4, "IV-S (A)", id="§2.1-legacy-60%-segmental-IV-S"),
        pytest.param(4, 6, "IV-G (A)", id="§2.1-legacy-60%-global-IV-G"),
        pytest.param(5, 5, "IV-S or IV-G (A)", id="§2.1-legacy-exactly-half-both-apply"),
    ],
)
def test_legacy_iv_s_iv_g_edge(segmental: int, global_: int, expected: str) -> None:
    """ISN/RPS 2003 (legacy mode, §2.1): IV-S when >= 50 % of involved glomeruli have segmental
    lesions, IV-G when >= 50 % have global ones."""
    frame = table(20, endocapillary_hypercellularity=10)
    frame["lesion_extent"] = ["segmental"] * segmental + ["global"] * global_ + [None] * 10
    cls = score(frame, config={"preset": "legacy_2003"}).isn_rps_class
    assert cls.legacy_2003["label"] == expected


# ------------------------------------------------------------------ §2.3 adequacy


@pytest.mark.parametrize(
    ("preset", "n", "status"),
    [
        pytest.param(None, 7, "inadequate", id="§2.3-default-7-inadequate"),
        pytest.param(None, 8, "limited", id="§2.3-default-8-limited"),
        pytest.param(None, 9, "limited", id="§2.3-default-9-limited"),
        pytest.param(None, 10, "adequate", id="§2.3-default-10-adequate"),
        pytest.param(None, 11, "adequate", id="§2.3-default-11-adequate"),
        pytest.param("isnrps_10", 9, "limited", id="§2.3-isnrps_10-9-limited"),
        pytest.param("isnrps_10", 10, "adequate", id="§2.3-isnrps_10-10-adequate"),
        pytest.param("oxford_8", 7, "inadequate", id="§2.3-oxford_8-7-inadequate"),
        pytest.param("oxford_8", 8, "adequate", id="§2.3-oxford_8-8-adequate"),
        pytest.param("permissive_5", 5, "inadequate", id="§2.3-permissive_5-5-(>5)-inadequate"),
        pytest.param("permissive_5", 6, "adequate", id="§2.3-permissive_5-6-adequate"),
    ],
)
def test_adequacy_edge(preset: str | None, n: int, status: str) -> None:
    """§2.3: >= 10 adequate; 8-9 limited; < 8 "inadequate for class and index; counts only"."""
    config = {"preset": preset} if preset else {}
    result = score(table(n, endocapillary_hypercellularity=(n + 1) // 2), config=config)
    assert result.adequacy.status == status
    if status == "inadequate":
        assert result.activity_index.total is None and result.chronicity_index.total is None
        assert result.isn_rps_class.proposal is None
        assert result.counts["n_glomeruli"] == n
    else:
        assert result.activity_index.total is not None
        assert result.isn_rps_class.proposal == "IV"


def test_one_glomerulus_reads_in_the_singular() -> None:
    """The adequacy sentence goes into a signed report: "1 glomerulus", not "1 glomeruli"."""
    result = score(table(1, endocapillary_hypercellularity=1))
    assert result.adequacy.message.startswith("1 glomerulus (< 8)")
    assert "glomeruli" not in result.adequacy.message
    assert score(table(2)).adequacy.message.startswith("2 glomeruli")


def test_wilson_interval_of_the_spec_example() -> None:
    """§2.3: "With 10 glomeruli, 3 involved gives an observed 30% (score 2), with a 95% CI of
    about 11-60%"."""
    result = score(table(10, endocapillary_hypercellularity=3))
    assert result.activity_index.components["endocapillary_hypercellularity"].score == 2
    low, high = result.uncertainty["components"]["endocapillary_hypercellularity"]["wilson_95"]
    assert round(low * 100) == 11 and round(high * 100) == 60


@pytest.mark.parametrize(
    ("n", "flagged"),
    [
        pytest.param(2, True, id="§8-necrosis-2/12-one-below-25%-flagged"),
        pytest.param(3, True, id="§8-necrosis-3/12-at-25%-flagged"),
        pytest.param(4, False, id="§8-necrosis-4/12-inside-band-2"),
        pytest.param(6, True, id="§8-necrosis-6/12-at-50%-flagged"),
        pytest.param(7, True, id="§8-necrosis-7/12-one-above-50%-flagged"),
        pytest.param(9, False, id="§8-necrosis-9/12-inside-band-3"),
    ],
)
def test_doubled_component_at_a_band_edge_is_said(n: int, flagged: bool) -> None:
    """§8: "When a doubled AI component sits one glomerulus away from a band edge, say so"."""
    result = score(table(12, fibrinoid_necrosis=n))
    said = any("fibrinoid_necrosis (x2) sits at a band edge" in p for p in result.pending_review)
    assert said is flagged


# ------------------------------------------------------------------ not assessed (§1.2, §6)


def test_an_unassessed_glomerulus_makes_its_component_not_assessed() -> None:
    """§8 ("compute every component from exact counts"): one unknown call in 12 glomeruli with
    2 known positives is 2/12 (1) or 3/12 (2): not assessed, range 1-2, never silently 1."""
    frame = table(12, fibrinoid_necrosis=2)
    frame.loc[11, "fibrinoid_necrosis"] = pd.NA
    result = score(frame)
    comp = result.activity_index.components["fibrinoid_necrosis"]
    assert comp.assessed is False and comp.score is None and comp.score_range == (1, 2)
    assert result.activity_index.complete is False
    assert result.activity_index.total_range == (2, 4)
    assert "2-4/24 (incomplete)" in result.diagnosis_line()


def test_a_missing_cortex_fraction_is_not_assessed_not_zero() -> None:
    """§1.2: a component without its measurement is not assessed (range 0-3), not scored 0."""
    result = score(table(12), {"interstitial_fibrosis": 0.0, "tubular_atrophy": 0.0})
    comp = result.activity_index.components["interstitial_inflammation"]
    assert comp.assessed is False and comp.score_range == (0, 3)
    assert result.activity_index.total_range == (0, 3)


# ------------------------------------------------------------------ §3.3 response endpoints


def scored(ai: int, ci: int, n: int = 20) -> lnpath.BiopsyScore:
    """A biopsy of ``n`` glomeruli whose AI and CI totals are exactly ``ai`` and ``ci``."""
    per_band = {0: 0, 1: 1, 2: n // 4 + (n % 4 > 0), 3: n // 2 + 1}
    cortex_of = {0: 0.0, 1: 0.1, 2: 0.3, 3: 0.6}
    positives: dict[str, int] = {}
    cortex = dict(ZERO_CORTEX)
    left = ai
    for column, weight in (
        ("fibrinoid_necrosis", 2),
        ("cellular_crescent", 2),
        ("endocapillary_hypercellularity", 1),
        ("neutrophils_karyorrhexis", 1),
        ("hyaline_deposits", 1),
        ("interstitial_inflammation", 1),
    ):
        s = min(3, left // weight)
        left -= s * weight
        if column in cortex:
            cortex[column] = cortex_of[s]
        elif s:
            positives[column] = per_band[s]
    left = ci
    for column in (
        "segmental_sclerosis",
        "fibrous_crescent",
        "tubular_atrophy",
        "interstitial_fibrosis",
    ):
        s = min(3, left)
        left -= s
        if column in cortex:
            cortex[column] = cortex_of[s]
        elif s:
            positives[column] = per_band[s]
    result = score(table(n, **positives), cortex)
    assert (result.activity_index.total, result.chronicity_index.total) == (ai, ci)
    return result


def panel(preset: str, ai_bl: int, ai_fu: int, ci_bl: int = 0, ci_fu: int = 0) -> Any:
    result = lnpath.compare(scored(ai_bl, ci_bl), scored(ai_fu, ci_fu), preset=preset)
    assert result.status == "provisional", result.reasons
    return result


@pytest.mark.parametrize(
    ("ai_fu", "status", "remission"),
    [
        pytest.param(0, "quiescent", True, id="§3.3-lnhr-AI_fu=0-quiescent"),
        pytest.param(1, "low_residual", True, id="§3.3-lnhr-AI_fu=1-low_residual"),
        pytest.param(2, "low_residual", True, id="§3.3-lnhr-AI_fu=2-low_residual-remission"),
        pytest.param(3, "active", False, id="§3.3-lnhr-AI_fu=3-active-no-remission"),
    ],
)
def test_lnhr_activity_status_and_remission(ai_fu: int, status: str, remission: bool) -> None:
    """§3.3 lnhr_default: quiescent if AI_fu = 0; low_residual 1-2; active >= 3; remission <= 2."""
    r = panel("lnhr_default", 8, ai_fu)
    assert r.panel["activity_status_fu"]["value"] == status
    assert r.panel["histologic_remission"]["value"] is remission


@pytest.mark.parametrize(
    ("ai_bl", "ai_fu", "expected"),
    [
        pytest.param(2, 0, "not_applicable", id="§3.3-AI_bl=2-not_applicable"),
        pytest.param(3, 2, "complete", id="§3.3-AI_bl=3-AI_fu=2-complete"),
        pytest.param(8, 2, "complete", id="§3.3-AI_fu=2-complete"),
        pytest.param(8, 4, "partial", id="§3.3-AI_fu=4=0.5xAI_bl-partial"),
        pytest.param(8, 5, "none", id="§3.3-AI_fu=5>0.5x8-none"),
        pytest.param(7, 3, "partial", id="§3.3-AI_fu=3<=3.5-partial"),
        pytest.param(7, 4, "none", id="§3.3-AI_fu=4>3.5-none"),
        pytest.param(6, 3, "partial", id="§3.3-AI_fu=3=0.5x6-partial"),
        pytest.param(5, 3, "none", id="§3.3-AI_fu=3>2.5-none"),
        pytest.param(4, 6, "none", id="§3.3-worse-none"),
    ],
)
def test_histologic_response(ai_bl: int, ai_fu: int, expected: str) -> None:
    """§3.3: complete if AI_fu <= 2; partial if AI_fu > 2 and AI_fu <= 0.5 x AI_bl (flagged
    "non-validated analogy"); none otherwise; not_applicable if AI_bl <= 2."""
    rec = panel("lnhr_default", ai_bl, ai_fu).panel["histologic_response"]
    assert rec["value"] == expected
    assert ("non-validated analogy" in rec["flags"]) is (expected == "partial")


@pytest.mark.parametrize(
    ("ci_bl", "ci_fu", "expected", "composite"),
    [
        pytest.param(3, 2, "stable", True, id="§3.3-dCI=-1-stable"),
        pytest.param(3, 3, "stable", True, id="§3.3-dCI=0-stable"),
        pytest.param(3, 4, "possible", True, id="§3.3-dCI=+1-possible"),
        pytest.param(3, 5, "progression", False, id="§3.3-dCI=+2-progression"),
        pytest.param(3, 6, "progression", False, id="§3.3-dCI=+3-progression"),
    ],
)
def test_lnhr_chronic_progression(ci_bl: int, ci_fu: int, expected: str, composite: bool) -> None:
    """§3.3: progression if CI_fu - CI_bl >= 2; possible at +1; stable if <= 0; composite
    responder = remission AND NOT progression (AI_fu 1 here, in remission)."""
    r = panel("lnhr_default", 8, 1, ci_bl, ci_fu)
    assert r.panel["chronic_progression"]["value"] == expected
    assert r.panel["composite_histologic_responder"]["value"] is composite
    assert r.endpoint["name"] == "composite_histologic_responder"
    assert r.endpoint["value"] is composite


@pytest.mark.parametrize(
    ("ci_fu", "high"),
    [
        pytest.param(4, False, id="§3.3-CI_fu=4-not-high"),
        pytest.param(5, True, id="§3.3-CI_fu=5->4-high"),
    ],
)
def test_high_chronicity(ci_fu: int, high: bool) -> None:
    """§3.3: high_chronicity_fu = CI_fu > 4 (Moroni 2022)."""
    assert panel("lnhr_default", 8, 1, ci_fu, ci_fu).panel["high_chronicity_fu"]["value"] is high


@pytest.mark.parametrize(
    ("preset", "ai_fu", "ci_bl", "ci_fu", "endpoint", "value"),
    [
        pytest.param("lufla_AI2", 2, 0, 0, "histologic_remission", True, id="§3.3-lufla-AI2-in"),
        pytest.param("lufla_AI2", 3, 0, 0, "histologic_remission", False, id="§3.3-lufla-AI3"),
        pytest.param("malvar_AI0", 0, 0, 0, "histologic_remission", True, id="§3.3-malvar-AI0"),
        pytest.param("malvar_AI0", 1, 0, 0, "histologic_remission", False, id="§3.3-malvar-AI1"),
        pytest.param(
            "parodis_rebiolup_AI3", 3, 0, 0, "persistent_activity_fu", False, id="§3.3-parodis-3"
        ),
        pytest.param(
            "parodis_rebiolup_AI3", 4, 0, 0, "persistent_activity_fu", True, id="§3.3-parodis-4"
        ),
        pytest.param("moroni2022", 1, 3, 3, "chronic_progression", "stable", id="§3.3-moroni-d0"),
        pytest.param(
            "moroni2022", 1, 3, 4, "chronic_progression", "progression", id="§3.3-moroni-d+1"
        ),
        pytest.param(
            "pineiro_any_activity", 0, 0, 0, "persistent_activity_fu", False, id="§3.3-pineiro-0"
        ),
        pytest.param(
            "pineiro_any_activity", 1, 0, 0, "persistent_activity_fu", True, id="§3.3-pineiro-1"
        ),
        pytest.param(
            "strict_chronicity_CI1", 1, 3, 3, "chronic_progression", "stable", id="§3.3-CI1-d0"
        ),
        pytest.param(
            "strict_chronicity_CI1", 1, 3, 4, "chronic_progression", "progression", id="§3.3-CI1-d1"
        ),
        pytest.param("relative_AI50", 4, 0, 0, "relative_response", True, id="§3.3-rel-4<=0.5x8"),
        pytest.param("relative_AI50", 5, 0, 0, "relative_response", False, id="§3.3-rel-5>0.5x8"),
    ],
)
def test_named_preset_edges(
    preset: str, ai_fu: int, ci_bl: int, ci_fu: int, endpoint: str, value: Any
) -> None:
    """§3.3 named presets, each at its threshold and one past it (baseline AI 8)."""
    r = panel(preset, 8, ai_fu, ci_bl, ci_fu)
    assert r.endpoint["name"] == endpoint
    assert r.endpoint["value"] == value


@pytest.mark.parametrize(
    ("ai_fu", "status"),
    [
        pytest.param(0, "quiescent", id="§3.3-malvar-AI0-quiescent"),
        pytest.param(1, "active", id="§3.3-malvar-AI1-continued-activity"),
        pytest.param(5, "active", id="§3.3-malvar-AI5-continued-activity"),
    ],
)
def test_malvar_activity_status(ai_fu: int, status: str) -> None:
    """§3.3 malvar_AI0: quiescent <=> AI_fu = 0; AI 1-5 = continued activity."""
    assert panel("malvar_AI0", 8, ai_fu).panel["activity_status_fu"]["value"] == status


@pytest.mark.parametrize(
    ("ai_fu", "risk"),
    [pytest.param(3, False, id="§3.3-moroni-AI3"), pytest.param(4, True, id="§3.3-moroni-AI4")],
)
def test_moroni_activity_risk(ai_fu: int, risk: bool) -> None:
    """§3.3 moroni2022: AI_fu > 3 = risk."""
    r = panel("moroni2022", 8, ai_fu)
    assert r.panel["persistent_activity_fu"]["value"] is risk


@pytest.mark.parametrize(
    ("n_glomeruli", "evaluable"),
    [
        pytest.param(9, False, id="§3.3-limited-9-glomeruli-not-evaluable"),
        pytest.param(10, True, id="§3.3-adequate-10-evaluable"),
    ],
)
def test_response_needs_adequate_biopsies(n_glomeruli: int, evaluable: bool) -> None:
    """§3.3 pre-condition: both biopsies adequate (§2.3), otherwise not_evaluable."""
    fu = score(table(n_glomeruli))
    r = lnpath.compare(scored(8, 0), fu, preset="lufla_AI2")
    assert (r.status != "not_evaluable") is evaluable


def test_response_refuses_different_denominator_rules() -> None:
    """§3.3 pre-condition: both scored with the same denominator rules, else not_evaluable."""
    bl = scored(8, 0)
    fu = score(table(20), config={"preset": "viable_denominator"})
    r = lnpath.compare(bl, fu, preset="lufla_AI2")
    assert r.status == "not_evaluable"
    assert any("glomerular_denominator" in reason for reason in r.reasons)


# ------------------------------------------------------------------ regressions found here


def test_class_vi_with_unassessed_activity_names_the_class_it_could_be() -> None:
    """§2.2: VI needs "no residual activity". 18/20 globally sclerosed, glomerulus 19's
    endocapillary call not assessed: VI is proposed, but if 19 were active the class is IV
    (19/20 involved), + V with subepithelial deposits. The proposal must say so, as III/IV do,
    and compare must not read the follow-up as "proliferative lesions resolved"."""
    frame = table(20, global_sclerosis=18)
    frame.loc[19, "endocapillary_hypercellularity"] = pd.NA
    cls = score(frame).isn_rps_class
    assert (cls.proposal, cls.alternative) == ("VI", "IV")
    assert "class IV if they were active" in cls.rationale
    assert score(frame, biopsy={"membranous": True}).isn_rps_class.alternative == "IV+V"
    assert score(table(20, global_sclerosis=18)).isn_rps_class.alternative is None
    r = lnpath.compare(
        score(table(20, endocapillary_hypercellularity=12)), score(frame), "class_transition"
    )
    assert r.panel["class_transition"]["proliferative_resolved"] is None
    assert r.to_dict()["fields"]["class_fu"]["possible"] == ["VI", "IV"]
    settled = lnpath.compare(
        score(table(20, endocapillary_hypercellularity=12)),
        score(table(20, global_sclerosis=18)),
        "class_transition",
    )
    assert settled.panel["class_transition"]["proliferative_resolved"] is True


def test_class_vi_with_inflammation_as_activity_but_unmeasured_is_open() -> None:
    """§2.2 (configurable): with inflammation_is_residual_activity, an unmeasured interstitial
    inflammation leaves "no residual activity" open: VI, alternative IV."""
    cortex = {"interstitial_fibrosis": 0.0, "tubular_atrophy": 0.0}
    config = {"inflammation_is_residual_activity": True}
    cls = score(table(20, global_sclerosis=18), cortex, config=config).isn_rps_class
    assert (cls.proposal, cls.alternative) == ("VI", "IV")


def test_viable_denominator_with_unassessed_global_sclerosis_is_not_assessed() -> None:
    """§1.4 item 1 (viable_denominator: N = glomeruli not globally sclerosed): 10 glomeruli,
    3 endocapillary, 5 with global sclerosis not assessed. N is 5..10, so 3/N is 30 % (2) to
    60 % (3): the component is not assessed with range 2-3, never silently 2."""
    frame = table(10, endocapillary_hypercellularity=3)
    frame.loc[5:9, "global_sclerosis"] = pd.NA
    result = score(frame, config={"preset": "viable_denominator"})
    comp = result.activity_index.components["endocapillary_hypercellularity"]
    assert (comp.assessed, comp.score, comp.score_range) == (False, None, (2, 3))
    assert "denominator" in (comp.note or "")
    # a lesion absent everywhere scores 0 whatever N is
    assert result.activity_index.components["fibrinoid_necrosis"].score == 0
    # the default denominator (all glomeruli) does not depend on the sclerosis calls
    assert score(frame).activity_index.components["endocapillary_hypercellularity"].score == 2


def _text(html_text: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html_text))


def test_report_words_tubular_atrophy_by_its_basis_and_signed_figures_as_signed(
    demo_result_template: Path, demo_followup: Path, tmp_path: Path
) -> None:
    """§1.4 item 4 (tubular atrophy defaults to % of cortical tubules, not of cortex) and §6
    ("mark machine-derived values as pending review"; after sign-out the wording says signed):
    the report, its change list, the notebook view of a signed result and the comparison page
    word each figure by what it is."""
    folder = Path(shutil.copytree(demo_result_template, tmp_path / "r", symlinks=True))
    lnpath.review(folder, pathologist="Dr A", cortex={"tubular_atrophy": 0.3})
    report = _text((folder / "report.html").read_text(encoding="utf-8"))
    assert "Tubular atrophy: 30% of cortical tubules." in report
    assert "Tubular atrophy: 30% of cortex" not in report
    assert "tubular atrophy (fraction of cortical tubules)" in report
    provisional = lnpath.SlideResult.load(folder)
    assert provisional.score.status == "provisional"
    assert "ISN/RPS: " in _text(provisional._repr_html_())

    lnpath.confirm(folder, pathologist="Dr A")
    signed = lnpath.SlideResult.load(folder)
    assert signed.score.status == "confirmed"
    view = _text(signed._repr_html_())
    assert "ISN/RPS class (signed):" in view
    assert "propos" not in view.lower()

    follow = lnpath.score_slide(
        demo_followup, out=tmp_path / "fu", glomeruli=folder / "glomeruli.geojson"
    )
    response = lnpath.compare(signed, follow, preset="lufla_AI2")
    bl, fu = (response.to_dict()[k]["isn_rps_class"] for k in ("baseline", "followup"))
    page = _text(response.to_html())
    assert f"ISN/RPS class {bl} {fu} (proposal)" in page  # the signed baseline, a machine FU
    assert "ISN/RPS class proposal" not in page


def _band_of_shown(percent: float) -> int:
    """The band a reader gives a displayed percentage (spec §1.3, read off the page)."""
    if percent == 0:
        return 0
    return 1 if percent < 25 else 2 if percent <= 50 else 3


def test_every_shown_percentage_reads_in_the_band_it_scores() -> None:
    """§1.3: 49/197 scores 1 but rounds to 25 %; the report must never show a figure whose band
    differs from the score beside it, nor 0 % for a lesion present, nor 90 % below class VI."""
    from lnpath.scoring.uncertainty import band, band_pct

    for total in range(1, 301):
        for n in range(total + 1):
            shown = float(band_pct(n / total).rstrip("%"))
            assert _band_of_shown(shown) == band(n, total), (n, total, shown)
            assert (shown >= 90) == (10 * n >= 9 * total), (n, total, shown)
            assert (shown == 100) == (n == total), (n, total, shown)
    assert band_pct(49 / 197) == "24.9%" and band_pct(5 / 20) == "25%"


def test_the_report_shows_a_near_edge_fraction_in_its_band() -> None:
    """The report's component row for 49 of 197 glomeruli (score 1) reads 24.9 %, not 25 %."""
    from lnpath.core.findings import LESIONS
    from lnpath.report.sections import _index_section

    table = pd.DataFrame({"glomerulus_id": range(1, 198), **dict.fromkeys(LESIONS, False)})
    table.loc[:48, "endocapillary_hypercellularity"] = True
    activity = lnpath.score_findings(table).to_dict()["activity_index"]
    rows = _index_section("activity", "Activity", activity, {}, {})["rows"]
    row = next(r for r in rows if "ndocapillary" in r["label"])
    assert (row["count"], row["pct"], row["score"]) == ("49/197", "24.9%", 1)


# ------------------------------------------------------------------ edges checked again (h10)


@pytest.mark.parametrize(
    ("known", "open_", "active", "alternative"),
    [
        pytest.param(17, 2, None, "VI", id="§2.2-17+2-unassessed-of-20-could-reach-90%-VI"),
        pytest.param(16, 1, None, None, id="§2.2-16+1-of-20-85%-cannot-reach-VI"),
        pytest.param(17, 1, None, "VI", id="§2.2-17+1-of-20-exactly-90%-VI"),
        pytest.param(
            17, 2, "endocapillary_hypercellularity", None, id="§2.2-activity-rules-VI-out"
        ),
        pytest.param(17, 2, "fibrous_crescent", "VI", id="§2.2-fibrous-crescent-is-not-activity"),
    ],
)
def test_unassessed_global_sclerosis_that_could_reach_class_vi_is_named(
    known: int, open_: int, active: str | None, alternative: str | None
) -> None:
    """§2.2: VI if 10*globally_sclerosed >= 9*N_all without residual activity. 20 glomeruli,
    ``known`` called globally sclerosed and ``open_`` with global sclerosis not assessed (every
    other lesion absent): IV is proposed from the known calls, and where the open calls could
    reach 90 % the proposal names VI, as VI names IV when its activity is unassessed."""
    frame = table(20, global_sclerosis=known, **({active: [19]} if active else {}))
    frame.loc[list(range(known, known + open_)), "global_sclerosis"] = pd.NA
    cls = score(frame).isn_rps_class
    assert (cls.proposal, cls.alternative) == ("IV", alternative)
    assert ("class VI if the" in cls.rationale) is (alternative == "VI")


def test_a_follow_up_that_could_be_vi_is_not_read_as_settled_iv() -> None:
    """§3.3 class_transition / proliferative_resolved: a follow-up proposed IV whose unassessed
    global sclerosis calls could make it VI is open (VI has no class III/IV lesions), and the
    class-based response (III/IV-C or I/II) is open with it, not a settled 'no response'."""
    frame = table(20, global_sclerosis=17)
    frame.loc[[17, 18], "global_sclerosis"] = pd.NA
    baseline = score(table(20, endocapillary_hypercellularity=12))
    r = lnpath.compare(baseline, score(frame), "class_transition")
    assert r.to_dict()["fields"]["class_fu"]["possible"] == ["IV", "VI"]
    assert r.panel["class_transition"]["proliferative_resolved"] is None
    assert r.endpoint["value"] is None
    settled = lnpath.compare(baseline, score(table(20, global_sclerosis=17)), "class_transition")
    assert settled.panel["class_transition"]["proliferative_resolved"] is False


def test_iii_with_both_iv_and_vi_open_names_both() -> None:
    """§2.2: 9 known global of 20, 9 more not assessed: III now (9/20), IV if the open ones are
    involved (18/20), VI if they are globally sclerosed (18/20 = 90 %); a comparison keeps all
    three possibilities apart."""
    frame = table(20, global_sclerosis=9)
    frame.loc[list(range(9, 18)), "global_sclerosis"] = pd.NA
    cls = score(frame).isn_rps_class
    assert (cls.proposal, cls.alternative) == ("III", "IV or VI")
    r = lnpath.compare(score(table(20, endocapillary_hypercellularity=12)), score(frame))
    assert r.to_dict()["fields"]["class_fu"]["possible"] == ["III", "IV", "VI"]


@pytest.mark.parametrize(
    ("surface", "glomeruli", "rule", "expected"),
    [
        pytest.param(0.1, 0.6, {"capillary_surface_gt": 0.1}, "IV", id="§2.1-surface-10%-not->10%"),
        pytest.param(0.11, 0.6, {"capillary_surface_gt": 0.1}, "IV+V", id="§2.1-surface-11%->10%"),
        pytest.param(0.6, 0.3, {"glomeruli_gt": 0.3}, "IV", id="§2.1-glomeruli-30%-not->30%"),
        pytest.param(0.6, 0.31, {"glomeruli_gt": 0.3}, "IV+V", id="§2.1-glomeruli-31%->30%"),
        pytest.param(0.7, 0.7, {"capillary_surface_gt": 0.7}, "IV", id="§2.1-surface-70%-not->70%"),
    ],
)
def test_enforced_class_v_extent_is_strictly_above_its_threshold(
    surface: float, glomeruli: float, rule: dict, expected: str
) -> None:
    """§7 class_v_combined_rule ``capillary_surface_gt`` / ``glomeruli_gt`` (">50 % of the
    capillary surface in >50 % of glomeruli", configurable): an extent equal to the configured
    decimal is not above it, whatever its binary float (0.1 lies just over 1/10)."""
    biopsy = {
        "membranous": True,
        "membranous_capillary_surface": surface,
        "membranous_glomeruli": glomeruli,
    }
    config = {"class_v_combined_rule": {**rule, "enforce": True}}
    cls = score(table(20, endocapillary_hypercellularity=10), biopsy=biopsy, config=config)
    assert cls.isn_rps_class.proposal == expected


@pytest.mark.parametrize(
    ("matrix_min", "cells", "expected"),
    [
        pytest.param(0.82, 0.18, "fibrocellular_crescent", id="§1.5-matrix-exactly-82%-not->82%"),
        pytest.param(0.82, 0.17, "fibrous_crescent", id="§1.5-matrix-83%->82%"),
        pytest.param(0.59, 0.41, "fibrocellular_crescent", id="§1.5-matrix-exactly-59%"),
        pytest.param(0.59, 0.40, "fibrous_crescent", id="§1.5-matrix-60%->59%"),
        pytest.param(0.3, 0.7, "fibrocellular_crescent", id="§1.5-matrix-exactly-30%"),
        pytest.param(0.9, 0.1, "fibrocellular_crescent", id="§1.5-matrix-exactly-90%-Oxford"),
        pytest.param(0.9, 0.09, "fibrous_crescent", id="§1.5-matrix-91%-Oxford"),
    ],
)
def test_fibrous_crescent_matrix_threshold_is_strict(
    matrix_min: float, cells: float, expected: str
) -> None:
    """§1.5/§7 ``crescent_fibrous_min_matrix_fraction``: fibrous means matrix *above* the
    threshold (matrix = 1 - cell share); a matrix share equal to it is fibrocellular, also where
    1.0 - cells in floating point lands just above the threshold (1 - 0.18 > 0.82)."""
    frame = table(10)
    for kind in ("cellular_crescent", "fibrocellular_crescent", "fibrous_crescent"):
        frame.loc[0, kind] = pd.NA
    frame["m_crescent_circumference"] = [0.5] + [0.0] * 9
    frame["m_crescent_cell_fraction"] = [cells] + [float("nan")] * 9
    config = {"crescent_fibrous_min_matrix_fraction": matrix_min}
    lesions = score(frame, config=config).counts["lesions"]
    for kind in ("cellular_crescent", "fibrocellular_crescent", "fibrous_crescent"):
        assert lesions[kind]["present"] == int(kind == expected), kind


@pytest.mark.parametrize(
    ("threshold", "involved", "expected"),
    [
        pytest.param(0.3, 2, "III", id="§7-class_iv_threshold-0.3-2/10-III"),
        pytest.param(0.3, 3, "IV", id="§7-class_iv_threshold-0.3-exactly-3/10-IV(>=)"),
        pytest.param(0.7, 6, "III", id="§7-class_iv_threshold-0.7-6/10-III"),
        pytest.param(0.7, 7, "IV", id="§7-class_iv_threshold-0.7-exactly-7/10-IV(>=)"),
        pytest.param(0.1, 1, "IV", id="§7-class_iv_threshold-0.1-exactly-1/10-IV(>=)"),
    ],
)
def test_configured_class_iv_threshold_is_compared_with_ge(
    threshold: float, involved: int, expected: str
) -> None:
    """§7 ``class_iv_threshold`` "compared with >=": exactly at a configured decimal is IV,
    one glomerulus below is III (0.3, 0.7 and 0.1 are not exact binary floats)."""
    cls = score(
        table(10, endocapillary_hypercellularity=involved),
        config={"class_iv_threshold": threshold},
    ).isn_rps_class
    assert cls.proposal == expected


@pytest.mark.parametrize(
    ("threshold", "n_global", "expected"),
    [
        pytest.param(0.7, 6, "IV", id="§7-class_vi_threshold-0.7-6/10-not-VI"),
        pytest.param(0.7, 7, "VI", id="§7-class_vi_threshold-0.7-exactly-7/10-VI(>=)"),
        pytest.param(0.3, 3, "VI", id="§7-class_vi_threshold-0.3-exactly-3/10-VI(>=)"),
    ],
)
def test_configured_class_vi_threshold_is_compared_with_ge(
    threshold: float, n_global: int, expected: str
) -> None:
    """§7 ``class_vi_threshold`` "compared with >= ; plus no residual glomerular activity"."""
    cls = score(
        table(10, global_sclerosis=n_global), config={"class_vi_threshold": threshold}
    ).isn_rps_class
    assert cls.proposal == expected


@pytest.mark.parametrize(
    ("config", "ai_n"),
    [
        pytest.param({}, 10, id="§1.4.1-default-globally-sclerosed-stay-in-N"),
        pytest.param({"preset": "viable_denominator"}, 0, id="§1.4.1-viable-N=0"),
    ],
)
def test_every_glomerulus_globally_sclerosed(config: dict, ai_n: int) -> None:
    """§1.4 items 1-2 and §2.1: 10 glomeruli, all globally sclerosed, no other lesion. By
    default they stay in every glomerular denominator (AI items 0/10, score 0); under
    viable_denominator the AI items have N = 0 and, with n = 0, score 0 (§1.3 "0 if n == 0");
    total glomerulosclerosis is 10/10 (3) either way (N = all) and the class is VI."""
    result = score(table(10, global_sclerosis=10), config=config)
    for name in (
        "endocapillary_hypercellularity",
        "neutrophils_karyorrhexis",
        "fibrinoid_necrosis",
        "hyaline_deposits",
        "cellular_fibrocellular_crescents",
    ):
        comp = result.activity_index.components[name]
        assert (comp.n, comp.N, comp.score) == (0, ai_n, 0), name
    gs = result.chronicity_index.components["glomerulosclerosis"]
    assert (gs.n, gs.N, gs.score) == (10, 10, 3)
    assert (result.activity_index.total, result.chronicity_index.total) == (0, 3)
    assert result.isn_rps_class.proposal == "VI"


def test_activity_in_a_globally_sclerosed_glomerulus_under_viable_denominator() -> None:
    """§1.4 item 1 with §2.2: viable_denominator leaves globally sclerosed glomeruli out of the
    five AI items only. A necrosis call in one of 10 all-globally-sclerosed glomeruli leaves AI
    necrosis at 0/0 (0) there, scores 1/10 (band 1, x2) by default, and rules class VI out in
    both (residual activity is any glomerular AI lesion, whatever the AI denominator)."""
    frame = table(10, global_sclerosis=10, fibrinoid_necrosis=[0])
    default = score(frame)
    assert default.activity_index.components["fibrinoid_necrosis"].score == 1
    assert default.activity_index.total == 2
    viable = score(frame, config={"preset": "viable_denominator"})
    comp = viable.activity_index.components["fibrinoid_necrosis"]
    assert (comp.n, comp.N, comp.score) == (0, 0, 0)
    assert default.isn_rps_class.proposal == viable.isn_rps_class.proposal == "IV"


def test_zero_glomeruli_follow_up_is_not_evaluable() -> None:
    """§2.3 / §3.3: a follow-up without glomeruli is inadequate, so the response is
    not_evaluable with the adequacy reason, never a response from empty indices."""
    r = lnpath.compare(scored(8, 0), score(table(0)), preset="lufla_AI2")
    assert r.status == "not_evaluable"
    assert any(reason.startswith("followup_adequate") for reason in r.reasons)
    assert r.endpoint["value"] is None


def test_the_diagnosis_line_names_the_class_the_unassessed_calls_could_make_it() -> None:
    """§6 diagnosis line: "class III" with IV still open read as settled; the line names the
    alternative while the machine's class stands, and not over a pathologist's class."""
    from lnpath.report.words import diagnosis_text

    frame = table(20, endocapillary_hypercellularity=6)
    frame.loc[list(range(6, 12)), "endocapillary_hypercellularity"] = pd.NA
    scored = score(frame)
    assert scored.isn_rps_class.alternative == "IV"
    opened = "ISN/RPS class III, or IV depending on lesions not assessed (2018 revision)"
    assert opened in scored.diagnosis_line()
    result = {"scores": scored.to_dict()}
    assert "ISN/RPS class III, or IV depending on lesions not assessed;" in diagnosis_text(result)
    signed = {**result, "class_override": {"class": "IV", "reason": "re-read"}}
    assert "ISN/RPS class IV;" in diagnosis_text(signed)
    settled = score(table(20, endocapillary_hypercellularity=6)).diagnosis_line()
    assert "ISN/RPS class III (2018 revision)" in settled


# ------------------------------------------------------------------ excluded glomeruli (§1.4, §2.2)


def _excluded_table() -> pd.DataFrame:
    """12 rows as a result's findings.csv keeps them: 2 excluded as not a glomerulus (both with
    endocapillary hypercellularity), 3 more with it, 1 ischemic with segmental sclerosis."""
    frame = table(12, endocapillary_hypercellularity=5, segmental_sclerosis=[5])
    frame["exclusion"] = ["not_glomerulus", "not_glomerulus", "", "", "", "ischemic", *[""] * 6]
    frame["exclusion_reason"] = ""
    return frame


def test_a_glomerulus_excluded_in_review_leaves_the_counts_of_score_findings(
    tmp_path: Path,
) -> None:
    """§1.4 item 1 (N = glomeruli evaluable by LM) and §2.2 (ischemic glomeruli leave the class
    fraction): scored by hand, N = 12 - 2 = 10; endocapillary hypercellularity 3/10 (4n = 12 >=
    10, 2n = 6 <= 10: score 2); glomerulosclerosis 1/10 (score 1); class 3/9 involved -> III.
    Counting the excluded rows gave 5/12 and 6/12 -> IV, unlike the result they came from."""
    path = tmp_path / "findings.csv"
    _excluded_table().to_csv(path, index=False)
    for source in (_excluded_table(), path):
        result = lnpath.score_findings(source, cortex=ZERO_CORTEX)
        endo = result.activity_index.components["endocapillary_hypercellularity"]
        sclerosis = result.chronicity_index.components["glomerulosclerosis"]
        assert result.adequacy.n_glomeruli == 10
        assert (endo.n, endo.N, endo.score) == (3, 10, 2)
        assert (sclerosis.n, sclerosis.N, sclerosis.score) == (1, 10, 1)
        klass = result.isn_rps_class
        assert (klass.involved, klass.n_class, klass.n_all, klass.proposal) == (3, 9, 10, "III")


def test_an_unknown_exclusion_kind_is_refused_naming_the_glomerulus() -> None:
    """§1.4: a misspelt exclusion would otherwise count a glomerulus the reviewer left out."""
    frame = _excluded_table()
    frame.loc[3, "exclusion"] = "artefact"
    with pytest.raises(lnpath.InputError, match=r"glomerulus_id 3, exclusion: 'artefact'"):
        lnpath.score_findings(frame, cortex=ZERO_CORTEX)


# ------------------------------------------------------------------ decided bands (§1.3)


def test_a_band_the_unassessed_calls_cannot_move_is_scored() -> None:
    """§1.3: 7 of 12 glomeruli with a cellular crescent is 2n = 14 > 12, score 3, and 8 of 12
    is too, so one unassessed call cannot change it: the component scores 3 (x2 = 6), the AI is
    6/24, not "6-6/24 (incomplete)" with a total of 0, and the glomerulus is still named."""
    frame = table(12, cellular_crescent=7)
    frame.loc[11, "cellular_crescent"] = pd.NA
    result = score(frame)
    crescents = result.activity_index.components["cellular_fibrocellular_crescents"]
    assert (crescents.assessed, crescents.score, crescents.weighted) == (True, 3, 6)
    assert (crescents.n, crescents.N, crescents.not_assessed_ids) == (7, 12, [11])
    assert (result.activity_index.total, result.activity_index.complete) == (6, True)
    assert "activity index 6/24;" in result.diagnosis_line()
    assert any(
        "cellular_fibrocellular_crescents" in item and "not assessed in 1 of 12" in item
        for item in result.pending_review
    )
    # one glomerulus that could move the band still leaves the component open: 6/12 is 2, 7/12 3
    frame.loc[6, "cellular_crescent"] = False
    open_ = score(frame).activity_index.components["cellular_fibrocellular_crescents"]
    assert (open_.assessed, open_.score, open_.score_range) == (False, None, (2, 3))


# ------------------------------------------------------------------ report bands (§1.7)


@pytest.mark.parametrize(
    ("total", "maximum", "word"),
    [
        pytest.param(0, 24, "low", id="§1.7-AI-0"),
        pytest.param(5, 24, "low", id="§1.7-AI-5"),
        pytest.param(6, 24, "moderate", id="§1.7-AI-6"),
        pytest.param(11, 24, "moderate", id="§1.7-AI-11"),
        pytest.param(12, 24, "high", id="§1.7-AI-12"),
        pytest.param(24, 24, "high", id="§1.7-AI-24"),
        pytest.param(2, 12, "low", id="§1.7-CI-2"),
        pytest.param(3, 12, "moderate", id="§1.7-CI-3"),
        pytest.param(5, 12, "moderate", id="§1.7-CI-5"),
        pytest.param(6, 12, "high", id="§1.7-CI-6"),
    ],
)
def test_index_band_words(total: int, maximum: int, word: str) -> None:
    """§1.7: AI 0-5 / 6-11 / 12-24 and CI 0-2 / 3-5 / 6-12 read low / moderate / high."""
    from lnpath.scoring.indices import index_band

    assert index_band(total, maximum) == word


def test_a_scored_index_carries_its_band_word() -> None:
    """§1.7 on a scored biopsy: endocapillary hypercellularity 11/20 (3) + necrosis 5/20 (2 x 2)
    = AI 7, moderate; glomerulosclerosis 11/20 (3) + fibrosis 30% (2) = CI 5, moderate; with
    inflammation unmeasured the AI lies in 7-10, still moderate, but CI with fibrosis unmeasured
    lies in 3-6 and has no single word."""
    frame = table(20, endocapillary_hypercellularity=11, fibrinoid_necrosis=5, global_sclerosis=11)
    cortex = {**ZERO_CORTEX, "interstitial_fibrosis": 0.3}
    full = score(frame, cortex)
    assert (full.activity_index.total, full.activity_index.band) == (7, "moderate")
    assert (full.chronicity_index.total, full.chronicity_index.band) == (5, "moderate")
    assert full.to_dict()["chronicity_index"]["band"] == "moderate"
    assert "AI 7/24 (moderate), CI 5/12 (moderate)" in repr(full)
    partial = score(frame, {"tubular_atrophy": 0.0})
    ai, ci = partial.activity_index, partial.chronicity_index
    assert (ai.total_range, ai.band) == ((7, 10), "moderate")
    assert (ci.total_range, ci.band) == ((3, 6), None)


def test_a_cortex_area_larger_than_its_whole_is_refused_in_words() -> None:
    """§1.3 ("a ratio of pixel areas"): [lesion_area, cortex_area] with the lesion larger than
    the cortex, or negative, is named as such, not as a fraction outside [0, 1]; a percentage
    given for a fraction is told what to write."""
    cases = (
        ([5, 2], "lesion area 5 is not between 0 and the whole area 2"),
        ([-1, 4], "lesion area -1 is not between 0 and the whole area 4"),
        (30, "30.0 is outside [0, 1] (a fraction: 0.3 for 30%)"),
    )
    for pair, shown in cases:
        with pytest.raises(lnpath.InputError, match=re.escape(shown)):
            score(table(10), {**ZERO_CORTEX, "interstitial_fibrosis": pair})


def test_austin1984_says_why_it_cannot_be_scored() -> None:
    """§7 lists ``nih_version: austin1984``; §1.6: the original index pairs karyorrhexis with
    fibrinoid necrosis (x2) and scores leukocytes apart, which one neutrophils_karyorrhexis
    column cannot give. The refusal says so instead of implying no such version exists."""
    with pytest.raises(lnpath.InputError, match="pairs karyorrhexis with necrosis"):
        score(table(10), config={"nih_version": "austin1984"})
