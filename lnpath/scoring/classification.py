"""ISN/RPS class proposal from light-microscopy findings plus optional IF/EM inputs (spec §2.2).

A section can support III vs IV vs VI; it cannot confirm classes I, II or V, which need
immunofluorescence / electron microscopy. Those are inputs here, never inferred. Thresholds are
compared as exact rationals, so exactly 50 % involved is class IV and exactly 90 % globally
sclerosed is class VI.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import pandas as pd

from lnpath.core.errors import InputError
from lnpath.scoring.config import ScoringConfig, as_written
from lnpath.scoring.uncertainty import replicate_count_distribution, wilson_interval

__all__ = [
    "ACTIVE_LESIONS",
    "BIOPSY_KEYS",
    "LN_LESIONS",
    "ClassProposal",
    "biopsy_inputs",
    "kleene_any",
    "propose_class",
]

#: Lesions that make a glomerulus "involved by LN" for the III/IV fraction (spec §2.2).
LN_LESIONS = (
    "endocapillary_hypercellularity",
    "fibrinoid_necrosis",
    "hyaline_deposits",
    "cellular_crescent",
    "fibrocellular_crescent",
    "fibrous_crescent",
    "segmental_sclerosis",
    "global_sclerosis",
)
#: Glomerular activity lesions: any of them is "residual activity" that rules out class VI.
ACTIVE_LESIONS = (
    "endocapillary_hypercellularity",
    "neutrophils_karyorrhexis",
    "fibrinoid_necrosis",
    "hyaline_deposits",
    "cellular_crescent",
    "fibrocellular_crescent",
)
_BOOL_KEYS = ("membranous", "if_mesangial_deposits", "mesangial_hypercellularity")
_FRACTION_KEYS = ("membranous_capillary_surface", "membranous_glomeruli")
#: Biopsy-level inputs score_findings accepts.
BIOPSY_KEYS = (*_BOOL_KEYS, *_FRACTION_KEYS)
LM_LIMIT = "Light microscopy cannot confirm classes I, II or V; they need IF/EM."


@dataclass
class ClassProposal:
    """An ISN/RPS class proposal with the reasoning a pathologist can check."""

    proposal: str | None
    label: str
    rationale: str
    needs_if_em: list[str] = field(default_factory=list)
    involved: int = 0
    n_class: int = 0
    globally_sclerosed: int = 0
    n_all: int = 0
    alternative: str | None = None
    iv_threshold: float = 0.5
    legacy_2003: dict[str, Any] | None = None
    determined: bool = True

    def __repr__(self) -> str:  # the label a pathologist reads, not 13 fields
        return f"ClassProposal({self.label})"

    def _repr_html_(self) -> str:
        from lnpath.core import views

        needs = ", ".join(self.needs_if_em)
        return views.block(
            views.para(f"ISN/RPS: {self.label}", bold=True),
            views.para(self.rationale),
            views.para(f"Needs IF/EM: {needs}") if needs else "",
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (``legacy_2003`` only in that mode)."""
        legacy = {"legacy_2003": dict(self.legacy_2003)} if self.legacy_2003 else {}
        return {
            "proposal": self.proposal,
            "label": self.label,
            "rationale": self.rationale,
            "needs_if_em": list(self.needs_if_em),
            "involved": self.involved,
            "n_class": self.n_class,
            "fraction_involved": self.involved / self.n_class if self.n_class else None,
            "globally_sclerosed": self.globally_sclerosed,
            "n_all": self.n_all,
            "alternative": self.alternative,
            "iv_threshold": self.iv_threshold,
            "determined": self.determined,
            **legacy,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ClassProposal:
        """Inverse of :meth:`to_dict`."""
        return cls(
            proposal=d.get("proposal"),
            label=str(d.get("label", "")),
            rationale=str(d.get("rationale", "")),
            needs_if_em=list(d.get("needs_if_em") or []),
            involved=int(d.get("involved", 0)),
            n_class=int(d.get("n_class", 0)),
            globally_sclerosed=int(d.get("globally_sclerosed", 0)),
            n_all=int(d.get("n_all", 0)),
            alternative=d.get("alternative"),
            iv_threshold=float(d.get("iv_threshold", 0.5)),
            legacy_2003=d.get("legacy_2003"),
            determined=bool(
                d.get("determined", d.get("proposal") is not None or d.get("alternative") is None)
            ),
        )

    def uncertainty(self) -> dict[str, Any]:
        """The III/IV fraction's sampling doubt (spec §2.3).

        Returns:
            ``wilson_95`` of the involved fraction, ``near_threshold`` (one glomerulus would
            cross the III/IV line) and ``p_replicate_other_side``: the chance that a second core
            of the same size would fall on the other side of the IV threshold.
        """
        if not self.n_class:
            return {"wilson_95": None, "near_threshold": False, "p_replicate_other_side": None}
        n, total = self.involved, self.n_class
        threshold = as_written(self.iv_threshold)

        def is_iv(k: int) -> bool:
            return _prolif(k, total, threshold) == "IV"

        flips = (n > 0 and is_iv(n - 1) != is_iv(n)) or (n < total and is_iv(n + 1) != is_iv(n))
        replicate = replicate_count_distribution(n, total)
        other = sum(float(p) for k, p in enumerate(replicate) if is_iv(k) != is_iv(n))
        return {
            "wilson_95": list(wilson_interval(n, total)),
            "near_threshold": flips,
            "p_replicate_other_side": other,
        }


def biopsy_inputs(biopsy: Mapping[str, Any] | None) -> dict[str, Any]:
    """Validate biopsy-level IF/EM inputs; unknown keys and wrong types are errors."""
    values: dict[str, Any] = dict.fromkeys(BIOPSY_KEYS)
    if biopsy is None:
        return values
    if not isinstance(biopsy, Mapping):
        raise InputError("biopsy: expected a mapping of IF/EM findings")
    for key, value in biopsy.items():
        if key not in BIOPSY_KEYS:
            raise InputError(f"biopsy: unknown input {key!r} (known: {', '.join(BIOPSY_KEYS)})")
        if value is None:
            continue
        if key in _BOOL_KEYS and not isinstance(value, bool):
            raise InputError(f"biopsy: {key} must be true, false or null (got {value!r})")
        if key in _FRACTION_KEYS and (
            isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1
        ):
            raise InputError(f"biopsy: {key} must be a fraction in [0, 1] (got {value!r})")
        values[key] = value
    return values


def kleene_any(table: pd.DataFrame, columns: tuple[str, ...]) -> pd.Series:
    """Per glomerulus: True if any column is True, <NA> if unknown, False if none can be."""
    out = pd.Series(False, index=table.index, dtype="boolean")
    for column in columns:
        out = out | table[column].astype("boolean")
    return out


def _prolif(n: int, total: int, threshold: Fraction) -> str | None:
    if n == 0 or total == 0:
        return None
    return "IV" if n * threshold.denominator >= threshold.numerator * total else "III"


def propose_class(
    table: pd.DataFrame,
    cfg: ScoringConfig,
    inputs: Mapping[str, Any],
    blocked: str | None,
    inflammation_score: int | None,
) -> ClassProposal:
    """Apply the spec §2.2 decision procedure (the 2003 label is :mod:`lnpath.scoring.legacy`).

    Long because it follows the decision procedure of spec §2.2 step by step, so that it can be
    read against the spec.

    Lesions not assessed (``<NA>``) cannot be counted: the proposal uses the glomeruli known to be
    involved and ``alternative`` names the class reached if every unassessed glomerulus were
    involved, so "III" with alternative "IV" tells the pathologist the call hinges on them; where
    unassessed global sclerosis calls could reach the class VI threshold it also names VI
    ("IV or VI" when both are open).
    """
    n_all = len(table)
    needs = _needs(inputs)
    if blocked:
        return ClassProposal(
            None,
            f"not proposed: {blocked}",
            f"Not proposed: {blocked}.",
            needs,
            n_all=n_all,
            iv_threshold=cfg.class_iv_threshold,
            determined=False,
        )
    adhesion = cfg.adhesion_as_sclerosis and "adhesion" in table
    ln = kleene_any(table, (*LN_LESIONS, "adhesion") if adhesion else LN_LESIONS)
    ischemic = pd.Series(False, index=table.index)
    if cfg.ischemic_exclusion and "ischemic" in table:
        ischemic = table["ischemic"].fillna(False).astype(bool)
    n_class = n_all - int(ischemic.sum())
    involved = int((ln.fillna(False).astype(bool) & ~ischemic).sum())
    unknown = int((ln.isna() & ~ischemic).sum())
    global_n = int(table["global_sclerosis"].fillna(False).sum())
    global_open = int(table["global_sclerosis"].isna().sum())
    base: dict[str, Any] = {
        "iv_threshold": cfg.class_iv_threshold,
        "involved": involved,
        "n_class": n_class,
        "globally_sclerosed": global_n,
        "n_all": n_all,
    }
    steps = [
        f"{involved}/{n_class} glomeruli involved by LN lesions"
        + (f" ({n_all - n_class} ischemic excluded)" if n_class != n_all else "")
        + (f"; {unknown} with lesions not assessed" if unknown else ""),
        f"{global_n}/{n_all} globally sclerosed",
    ]
    threshold = as_written(cfg.class_iv_threshold)
    prolif = _prolif(involved, n_class, threshold)
    upper = _prolif(involved + unknown, n_class, threshold)
    merged = dict(inputs)
    if merged.get("mesangial_hypercellularity") is None and "mesangial_hypercellularity" in table:
        # per-glomerulus flags stand in for the biopsy-level statement when it is not given
        # (present in any; absent only when called absent in every one)
        flags = table["mesangial_hypercellularity"]
        if bool(flags.fillna(False).any()):
            merged["mesangial_hypercellularity"] = True
        elif not bool(flags.isna().any()):
            merged["mesangial_hypercellularity"] = False
    vi = as_written(cfg.class_vi_threshold)
    active = kleene_any(table, ACTIVE_LESIONS)
    any_active = bool(active.fillna(False).any())
    residual_unknown = bool(active.isna().any())
    if cfg.inflammation_is_residual_activity:
        any_active = any_active or bool(inflammation_score)
        residual_unknown = residual_unknown or inflammation_score is None
    if global_n * vi.denominator >= vi.numerator * n_all:
        if not any_active:
            steps.append(
                f">= {cfg.class_vi_threshold:.0%} globally sclerosed, no residual activity"
            )
            # Unassessed activity could rule VI out: name the class reached then, as III/IV
            # name theirs, so that nobody reads "VI" as settled (spec §2.2).
            otherwise = _combine(upper, merged, cfg)[0] if residual_unknown else None
            if residual_unknown:
                steps.append(
                    "absence of activity must be confirmed for unassessed lesions"
                    + (f" (class {otherwise} if they were active)" if otherwise else "")
                )
            return ClassProposal(
                "VI",
                "Class VI (advanced sclerosing), proposal",
                "; ".join(steps),
                [],  # class VI rests on light microscopy alone (spec §2.1)
                alternative=otherwise,
                **base,
            )
        steps.append("class VI excluded by residual glomerular activity")
    alternative = upper if upper != prolif else None
    proposal, extra = _combine(prolif, merged, cfg)
    steps.extend(extra)
    if proposal == "I" and merged.get("mesangial_hypercellularity") is None:
        # I and II differ only by mesangial hypercellularity: unstated, II stays open (§2.2)
        alternative = alternative or "II"
        steps.append("mesangial hypercellularity not assessed: class II if it is present")
    if prolif:
        steps.append(f"{'>=' if prolif == 'IV' else '<'} {cfg.class_iv_threshold:.0%} -> {prolif}")
    if alternative and alternative != "II":
        steps.append(f"would be {alternative} if the unassessed glomeruli were involved")
    vi_open = (
        not any_active
        and global_n * vi.denominator < vi.numerator * n_all
        and (global_n + global_open) * vi.denominator >= vi.numerator * n_all
    )
    if vi_open and proposal is not None:
        # Unassessed global sclerosis calls could reach the class VI threshold: name VI as the
        # class VI names IV when its activity is unassessed, so that nobody reads the proposal
        # as settled (spec §2.2: VI if >= 90 % globally sclerosed without residual activity).
        alternative = "VI" if alternative is None else f"{alternative} or VI"
        steps.append(
            f"class VI if the {global_open} glomeruli with global sclerosis not assessed were "
            f"globally sclerosed ({global_n + global_open}/{n_all} >= "
            f"{cfg.class_vi_threshold:.0%}, no residual activity found)"
        )
    determined = proposal is not None or not unknown
    if proposal:
        label = f"Class {proposal}, proposal"
    elif unknown:
        # nothing found among the assessed glomeruli, but the unassessed ones could be III/IV
        label = (
            f"Not determinable: lesions not assessed in {unknown} of {n_class} glomeruli "
            f"(class {alternative} if they were involved)"
        )
    else:
        label = "No LN lesion identified by light microscopy; indeterminate (IF/EM needed)"
    return ClassProposal(
        proposal,
        label,
        "; ".join([*steps, LM_LIMIT]),
        needs,
        alternative=alternative,
        determined=determined,
        **base,
    )


def _combine(
    prolif: str | None, inputs: Mapping[str, Any], cfg: ScoringConfig
) -> tuple[str | None, list[str]]:
    """Add the membranous component or fall back to II / I (spec §2.2)."""
    membranous = inputs.get("membranous") is True
    if prolif and membranous:
        surface = inputs.get("membranous_capillary_surface")
        glomeruli = inputs.get("membranous_glomeruli")
        rule = cfg.class_v_combined_rule
        if surface is None or glomeruli is None:
            return f"{prolif}+V", ["membranous component given without its extent; +V kept"]
        extent = (
            f"membranous component on {surface:.0%} of the capillary surface in "
            f"{glomeruli:.0%} of glomeruli"
        )
        # both sides as the decimals they were written as: 0.1 given against "> 0.1" is equal,
        # not above (the binary float 0.1 lies just over 1/10)
        above_surface = as_written(surface) > as_written(rule.capillary_surface_gt)
        meets = above_surface and as_written(glomeruli) > as_written(rule.glomeruli_gt)
        limit = (
            f"> {rule.capillary_surface_gt:.0%} of the capillary surface in "
            f"> {rule.glomeruli_gt:.0%} of glomeruli"
        )
        if meets:
            return f"{prolif}+V", [f"{extent} (meets the extent rule, {limit})"]
        if rule.enforce:
            return prolif, [f"{extent}: below the enforced extent rule for +V ({limit})"]
        # spec §9: the verified class table diagnoses both, with no extent; the rule is [R]
        return f"{prolif}+V", [
            f"{extent}: below the [R] extent rule ({limit}); +V kept, as the verified class "
            "table diagnoses both (class_v_combined_rule.enforce drops it)"
        ]
    if prolif:
        return prolif, []
    if membranous:
        return "V", ["no proliferative lesion; subepithelial deposits given (IF/EM)"]
    mesangial = inputs.get("mesangial_hypercellularity") is True
    if mesangial and inputs.get("if_mesangial_deposits") is True:
        return "II", ["mesangial hypercellularity with mesangial deposits"]
    if inputs.get("if_mesangial_deposits") is True:
        return "I", ["mesangial deposits by IF, normal glomeruli by LM"]
    return None, ["no proliferative or sclerosing LN lesion identified"]


def _needs(inputs: Mapping[str, Any]) -> list[str]:
    needs = []
    if inputs.get("membranous") is None:
        needs.append("membranous component (class V): subepithelial deposits by IF/EM")
    if inputs.get("if_mesangial_deposits") is None:
        needs.append("mesangial immune deposits by IF (classes I/II)")
    return needs
