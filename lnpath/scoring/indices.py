"""The 2018 modified NIH index components: which lesions, which denominator, which band.

Each component is ``n`` of ``N`` glomeruli (or an exact area fraction of cortex) banded 0-3 by the
integer rule of spec §1.3; weights are x2 for fibrinoid necrosis and cellular/fibrocellular
crescents. A component whose unassessed (``<NA>``) glomeruli could change its band is "not
assessed" and carries the score range the missing calls allow, so a total never silently treats
"unknown" as "absent"; one whose band they cannot change is scored, and names them.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import numpy as np
import pandas as pd

from lnpath.core.errors import InputError
from lnpath.scoring.config import ScoringConfig
from lnpath.scoring.uncertainty import band

__all__ = [
    "ACTIVITY",
    "CHRONICITY",
    "CORTEX_BASIS",
    "CORTEX_KEYS",
    "INDEX_BANDS",
    "Component",
    "IndexScore",
    "cortex_fractions",
    "denominator",
    "index_band",
    "index_components",
    "index_score",
    "lesion_columns",
    "lesion_or",
]

logger = logging.getLogger(__name__)

#: AI component -> (lesion columns counted with OR, or None for a cortex fraction; weight).
ACTIVITY: dict[str, tuple[tuple[str, ...] | None, int]] = {
    "endocapillary_hypercellularity": (("endocapillary_hypercellularity",), 1),
    "neutrophils_karyorrhexis": (("neutrophils_karyorrhexis",), 1),
    "fibrinoid_necrosis": (("fibrinoid_necrosis",), 2),
    "hyaline_deposits": (("hyaline_deposits",), 1),
    "cellular_fibrocellular_crescents": (("cellular_crescent", "fibrocellular_crescent"), 2),
    "interstitial_inflammation": (None, 1),
}
#: CI component -> (lesion columns, weight); every CI item weighs 1.
CHRONICITY: dict[str, tuple[tuple[str, ...] | None, int]] = {
    "glomerulosclerosis": (("global_sclerosis", "segmental_sclerosis"), 1),
    "fibrous_crescents": (("fibrous_crescent",), 1),
    "tubular_atrophy": (None, 1),
    "interstitial_fibrosis": (None, 1),
}
#: Cortex keys accepted; the ``*_nonscarred`` / ``*_cortex_area`` variants serve the config options.
CORTEX_KEYS = (
    "interstitial_inflammation",
    "interstitial_inflammation_nonscarred",
    "interstitial_fibrosis",
    "tubular_atrophy",
    "tubular_atrophy_cortex_area",
)
#: What each cortex key is a fraction of (spec §1.4 items 3-4): words for every place that shows
#: the figure, so tubular atrophy is never called a fraction "of cortex" when it is of tubules.
CORTEX_BASIS: dict[str, str] = {
    "interstitial_inflammation": "% of cortex",
    "interstitial_inflammation_nonscarred": "% of non-scarred cortex",
    "interstitial_fibrosis": "% of cortex",
    "tubular_atrophy": "% of cortical tubules",
    "tubular_atrophy_cortex_area": "% of cortical area",
}


#: Report wording of an index total (spec §1.7, Yamamura 2021; not from the revision itself):
#: index maximum -> (lowest total, word), from the top band down.
INDEX_BANDS: dict[int, tuple[tuple[int, str], ...]] = {
    24: ((12, "high"), (6, "moderate"), (0, "low")),
    12: ((6, "high"), (3, "moderate"), (0, "low")),
}


def index_band(total: int, maximum: int) -> str:
    """``low`` / ``moderate`` / ``high`` for an AI (0-5 / 6-11 / 12-24) or CI (0-2 / 3-5 /
    6-12) total (spec §1.7)."""
    return next(word for lowest, word in INDEX_BANDS[maximum] if total >= lowest)


@dataclass
class Component:
    """One index component: ``n`` of ``N`` glomeruli (or an area fraction) and its 0-3 score."""

    name: str
    weight: int
    assessed: bool
    score: int | None
    n: int | None = None
    N: int | None = None
    fraction: float | None = None
    basis: str = ""
    n_not_assessed: int = 0
    score_range: tuple[int, int] | None = None
    note: str | None = None
    involved_ids: list[Any] = field(default_factory=list)
    not_assessed_ids: list[Any] = field(default_factory=list)

    @property
    def weighted(self) -> int | None:
        """Score times weight, or None when not assessed."""
        return None if self.score is None else self.score * self.weight

    def __repr__(self) -> str:  # one line in a notebook, not the dataclass's 13 fields
        from lnpath.scoring.views import component_repr

        return component_repr(self)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (keys of the team contract plus basis/range/note)."""
        return {
            "n": self.n,
            "N": self.N,
            "fraction": self.fraction,
            "score": self.score,
            "weight": self.weight,
            "weighted": self.weighted,
            "assessed": self.assessed,
            "basis": self.basis,
            "n_not_assessed": self.n_not_assessed,
            "score_range": list(self.score_range) if self.score_range else None,
            "note": self.note,
            "involved_ids": list(self.involved_ids),
            "not_assessed_ids": list(self.not_assessed_ids),
        }

    @classmethod
    def from_dict(cls, name: str, d: Mapping[str, Any]) -> Component:
        """Inverse of :meth:`to_dict`."""
        rng = d.get("score_range")
        return cls(
            name=name,
            weight=int(d["weight"]),
            assessed=bool(d["assessed"]),
            score=d.get("score"),
            n=d.get("n"),
            N=d.get("N"),
            fraction=d.get("fraction"),
            basis=d.get("basis", ""),
            n_not_assessed=int(d.get("n_not_assessed", 0)),
            score_range=(int(rng[0]), int(rng[1])) if rng else None,
            note=d.get("note"),
            involved_ids=list(d.get("involved_ids") or []),
            not_assessed_ids=list(d.get("not_assessed_ids") or []),
        )


@dataclass
class IndexScore:
    """The activity (max 24) or chronicity (max 12) index; never added to each other."""

    maximum: int
    components: dict[str, Component]
    total: int | None
    complete: bool
    total_range: tuple[int, int] | None = None
    note: str = ""

    @property
    def band(self) -> str | None:
        """The §1.7 wording of the total; for an incomplete index only when every total it can
        still take has the same word, else None."""
        span = (self.total, self.total) if self.complete else self.total_range
        if self.maximum not in INDEX_BANDS or span is None or span[0] is None:
            return None
        if span[1] is None:
            return None
        low, high = index_band(int(span[0]), self.maximum), index_band(int(span[1]), self.maximum)
        return low if low == high else None

    @property
    def not_assessed(self) -> list[str]:
        """Components that did not enter the total."""
        return [name for name, c in self.components.items() if not c.assessed]

    def __repr__(self) -> str:
        from lnpath.scoring.views import index_repr

        return index_repr(self)

    def _repr_html_(self) -> str:
        """The component table, as the score's own view shows it."""
        from lnpath.scoring.views import index_table, index_title

        return index_table(index_title(self), self)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "total": self.total,
            "max": self.maximum,
            "complete": self.complete,
            "not_assessed": self.not_assessed,
            "total_range": list(self.total_range) if self.total_range else None,
            "band": self.band,
            "note": self.note,
            "components": {name: c.to_dict() for name, c in self.components.items()},
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> IndexScore:
        """Inverse of :meth:`to_dict`."""
        rng = d.get("total_range")
        return cls(
            maximum=int(d["max"]),
            components={k: Component.from_dict(k, v) for k, v in d["components"].items()},
            total=d.get("total"),
            complete=bool(d["complete"]),
            total_range=(int(rng[0]), int(rng[1])) if rng else None,
            note=d.get("note", ""),
        )


def lesion_or(table: pd.DataFrame, columns: Sequence[str]) -> pd.Series:
    """Kleene OR of nullable boolean columns: True if any True, <NA> if unknown, else False."""
    out = table[columns[0]].astype("boolean")
    for column in columns[1:]:
        out = out | table[column].astype("boolean")
    return out


def lesion_columns(lesions: tuple[str, ...], table: pd.DataFrame, cfg: ScoringConfig) -> list[str]:
    """The columns a component ORs; adhesions join sclerosis only with ``adhesion_as_sclerosis``."""
    columns = list(lesions)
    if "segmental_sclerosis" in columns and cfg.adhesion_as_sclerosis and "adhesion" in table:
        columns.append("adhesion")
    return columns


def denominator(name: str, table: pd.DataFrame, cfg: ScoringConfig) -> tuple[pd.Series, str]:
    """Rows in the denominator and its wording (spec §1.4)."""
    viable = cfg.glomerular_denominator == "non_globally_sclerosed"
    if viable and name in ACTIVITY:
        mask = ~table["global_sclerosis"].fillna(False).astype(bool)
        return mask, "glomeruli not globally sclerosed"
    return pd.Series(True, index=table.index), "all glomeruli"


def _ids(table: pd.DataFrame, rows: pd.Series) -> list[Any]:
    """Glomerulus ids of the selected rows as plain JSON values, for per-glomerulus review."""
    return [v.item() if isinstance(v, np.generic) else v for v in table["glomerulus_id"][rows]]


def _glomerular(
    name: str, lesions: tuple[str, ...], weight: int, table: pd.DataFrame, cfg: ScoringConfig
) -> Component:
    mask, basis = denominator(name, table, cfg)
    involved = lesion_or(table, lesion_columns(lesions, table, cfg))[mask]
    total = int(mask.sum())
    n = int(involved.fillna(False).sum())
    unknown = int(involved.isna().sum())
    fraction = n / total if total else None
    if len(table) == 0:
        return Component(name, weight, False, None, 0, 0, None, basis, 0, None, "no glomeruli")
    positive = involved.fillna(False).astype(bool).reindex(table.index, fill_value=False)
    missing = involved.isna().reindex(table.index, fill_value=False)
    low, high = band(n, total), band(n + unknown, total)
    open_n = _open_denominator(name, table, cfg)[mask]
    if open_n.any():
        low, high = _open_denominator_range(involved, open_n)
    # a band the missing calls cannot move is decided (spec §1.3: the band of the counts), as the
    # class is; the glomeruli not assessed are still named for review
    decided = low == high
    component = Component(
        name,
        weight,
        assessed=decided,
        score=low if decided else None,
        n=n,
        N=total,
        fraction=fraction,
        basis=basis,
        n_not_assessed=unknown,
        involved_ids=_ids(table, positive),
        not_assessed_ids=_ids(table, missing),
    )
    if decided and unknown:
        component.note = (
            f"not assessed in {unknown} of {total} glomeruli; score {low} whatever they show"
        )
    elif not decided:
        component.score_range = (low, high)
        why = [f"not assessed in {unknown} of {total} glomeruli"] if unknown else []
        if low != high and open_n.any():
            why.append(
                f"global sclerosis not assessed in {int(open_n.sum())}, so the denominator "
                "(glomeruli not globally sclerosed) is not known"
            )
        component.note = f"{'; '.join(why)}; score would be {low}-{high}"
    return component


def _open_denominator(name: str, table: pd.DataFrame, cfg: ScoringConfig) -> pd.Series:
    """Glomeruli that may or may not belong in the denominator: under ``viable_denominator`` an
    unassessed global sclerosis call leaves a glomerulus's place in N open (spec §1.4 item 1)."""
    if cfg.glomerular_denominator == "non_globally_sclerosed" and name in ACTIVITY:
        return table["global_sclerosis"].isna()
    return pd.Series(False, index=table.index)


def _open_denominator_range(involved: pd.Series, open_n: pd.Series) -> tuple[int, int]:
    """The lowest and highest band over every way the open glomeruli fall in or out of N.

    Adding an involved glomerulus to n/N never lowers the fraction and adding an uninvolved one
    never raises it, so the extremes leave out the open positives (low) or the open negatives
    (high); unassessed lesions count as absent for the low end and present for the high end.
    """
    known, maybe = involved[~open_n], involved[open_n]
    n_known, u_known = int(known.fillna(False).sum()), int(known.isna().sum())
    n_maybe, u_maybe = int(maybe.fillna(False).sum()), int(maybe.isna().sum())
    z_maybe = len(maybe) - n_maybe - u_maybe
    low = band(n_known, len(known) + z_maybe + u_maybe)
    high_n = n_known + u_known + n_maybe + u_maybe
    high = band(high_n, len(known) + n_maybe + u_maybe)
    return low, high


def _cortex_key(name: str, cfg: ScoringConfig) -> tuple[str, str]:
    key = name
    if (
        name == "interstitial_inflammation"
        and cfg.interstitial_inflammation_region != "total_cortex"
    ):
        key = "interstitial_inflammation_nonscarred"
    if name == "tubular_atrophy" and cfg.tubular_atrophy_basis == "cortex_area":
        key = "tubular_atrophy_cortex_area"
    return key, CORTEX_BASIS[key]


def _cortex_component(
    name: str, weight: int, fractions: Mapping[str, Fraction | None], cfg: ScoringConfig
) -> Component:
    key, basis = _cortex_key(name, cfg)
    value = fractions.get(key)
    if value is None:
        note = f"no cortex measurement '{key}'"
        return Component(name, weight, False, None, basis=basis, score_range=(0, 3), note=note)
    score = 0 if value == 0 else 1 if 4 * value < 1 else 2 if 2 * value <= 1 else 3
    return Component(name, weight, True, score, fraction=float(value), basis=basis)


def index_components(
    spec: Mapping[str, tuple[tuple[str, ...] | None, int]],
    table: pd.DataFrame,
    fractions: Mapping[str, Fraction | None],
    cfg: ScoringConfig,
) -> dict[str, Component]:
    """Every component of one index (``ACTIVITY`` or ``CHRONICITY``) from findings and cortex."""
    out: dict[str, Component] = {}
    for name, (lesions, weight) in spec.items():
        if lesions is None:
            out[name] = _cortex_component(name, weight, fractions, cfg)
        else:
            out[name] = _glomerular(name, lesions, weight, table, cfg)
    return out


def index_score(components: dict[str, Component], maximum: int, blocked: str | None) -> IndexScore:
    """Sum the assessed components; withhold the total when ``blocked`` names a reason.

    An incomplete index keeps the partial total (as the spec asks) and adds ``total_range``, the
    totals the unassessed components could still produce.
    """
    assessed = [c for c in components.values() if c.assessed]
    if blocked:
        return IndexScore(maximum, components, None, False, None, f"not computable: {blocked}")
    if not assessed:
        note = "not computable: no component assessed"
        return IndexScore(maximum, components, None, False, None, note)
    total = sum(c.score * c.weight for c in assessed if c.score is not None)
    missing = [c for c in components.values() if not c.assessed]
    if not missing:
        return IndexScore(maximum, components, total, True, (total, total), "")
    low = total + sum((c.score_range or (0, 3))[0] * c.weight for c in missing)
    high = total + sum((c.score_range or (0, 3))[1] * c.weight for c in missing)
    names = ", ".join(c.name for c in missing)
    note = (
        f"incomplete: total counts only assessed components; not assessed: {names}; "
        f"the full index would lie in {low}-{high}"
    )
    return IndexScore(maximum, components, total, False, (low, high), note)


def cortex_fractions(cortex: Mapping[str, Any] | Any | None) -> dict[str, Fraction | None]:
    """Validate cortex fractions into exact rationals (None = not assessed)."""
    if cortex is None:
        return {}
    if not isinstance(cortex, Mapping) and callable(getattr(cortex, "fractions", None)):
        cortex = cortex.fractions()
    if not isinstance(cortex, Mapping):
        raise InputError("cortex: expected a mapping of component -> fraction in [0, 1]")
    unknown = [k for k in cortex if k not in CORTEX_KEYS]
    if unknown:
        logger.warning("cortex: ignoring unknown key(s): %s", ", ".join(map(str, unknown)))
    return {key: _fraction(key, cortex[key]) for key in CORTEX_KEYS if key in cortex}


def _fraction(key: str, value: Any) -> Fraction | None:
    """A float (exact binary value), an int 0/1, or ``[part, whole]`` -> Fraction in [0, 1]."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    try:
        if isinstance(value, bool):
            raise TypeError
        if isinstance(value, list | tuple) and len(value) == 2:
            part, whole = (Fraction(v) for v in value)
            if whole <= 0:
                raise InputError(f"cortex: {key}: area {whole} must be positive")
            if not 0 <= part <= whole:
                raise InputError(
                    f"cortex: {key}: lesion area {float(part):g} is not between 0 and the "
                    f"whole area {float(whole):g} ([lesion_area, cortex_area])"
                )
            result = part / whole
        elif isinstance(value, int | float | Fraction | np.integer | np.floating):
            result = Fraction(float(value)) if not isinstance(value, Fraction) else value
        else:
            raise TypeError
    except (TypeError, ValueError, OverflowError):
        raise InputError(f"cortex: {key}: {value!r} is not a fraction in [0, 1]") from None
    if not 0 <= result <= 1:
        # 30 for 30 % is the likely slip: say what to write instead
        hint = (
            f" (a fraction: {float(result) / 100:g} for {float(result):g}%)"
            if 1 < result <= 100
            else ""
        )
        raise InputError(f"cortex: {key}: {float(result)} is outside [0, 1]{hint}")
    return result
