"""Findings -> 2018 modified NIH activity/chronicity indices, ISN/RPS class proposal, adequacy.

Pure functions, no image I/O (spec ``clinical-scoring.md`` §1, §2, §7, §8). Every band comes from
integer counts (or exact rationals for area fractions), never from rounded percentages. A lesion
that was not assessed (``<NA>``) makes its component "not assessed": the index total then counts
only the assessed components, says so, and gives the range the missing ones could add, so a
pathologist knows exactly what to supply. Everything is a proposal (``status: provisional``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from lnpath import __version__
from lnpath.core.errors import InputError
from lnpath.core.findings import read_findings
from lnpath.core.vocabulary import class_phrase
from lnpath.scoring import views
from lnpath.scoring.adequacy import Adequacy, assess_adequacy, withheld
from lnpath.scoring.biopsy import counted_glomeruli
from lnpath.scoring.classification import ClassProposal, biopsy_inputs, propose_class
from lnpath.scoring.config import ScoringConfig, config_from
from lnpath.scoring.indices import (
    ACTIVITY,
    CHRONICITY,
    CORTEX_KEYS,
    Component,
    IndexScore,
    cortex_fractions,
    index_components,
    index_score,
    lesion_columns,
    lesion_or,
)
from lnpath.scoring.legacy import legacy_2003_label
from lnpath.scoring.measured import apply_measurements
from lnpath.scoring.uncertainty import (
    band,
    count_distributions,
    interval_95,
    near_band_edge,
    replicate_band_probabilities,
    total_distribution,
    wilson_interval,
)
from lnpath.scoring.uncertainty import band_distribution as fold_bands

__all__ = [
    "ACTIVITY",
    "CHRONICITY",
    "CORTEX_KEYS",
    "Adequacy",
    "BiopsyScore",
    "Component",
    "IndexScore",
    "score_findings",
]

logger = logging.getLogger(__name__)

ASSUMPTION = (
    "Sampling: Wilson 95% interval of each glomerular fraction; band_probabilities = chance that "
    "a second core with the same number of glomeruli scores each band (beta-binomial, Jeffreys "
    "prior), p_different_band = 1 - its own band; class_fraction likewise for the IV threshold. "
    "Calling (only with p_<lesion> columns): glomeruli, lesions and components are "
    "independent given their probabilities; counts are Poisson-binomial and index totals their "
    "exact convolution; components without probabilities are fixed at their observed score."
)


@dataclass
class BiopsyScore:
    """Everything scoring proposes for one biopsy, serialisable with :meth:`to_dict`."""

    activity_index: IndexScore
    chronicity_index: IndexScore
    isn_rps_class: ClassProposal
    adequacy: Adequacy
    uncertainty: dict[str, Any]
    config: ScoringConfig = field(default_factory=ScoringConfig)
    counts: dict[str, Any] = field(default_factory=dict)
    pending_review: list[str] = field(default_factory=list)
    biopsy: dict[str, Any] = field(default_factory=dict)
    cortex: dict[str, float | None] = field(default_factory=dict)
    status: str = "provisional"
    lnpath_version: str = __version__

    @property
    def nih_version(self) -> str:
        """Index definition used (from the config)."""
        return self.config.nih_version

    def diagnosis_line(self) -> str:
        """The primary diagnosis line of spec §6, e.g. "Lupus nephritis, ISN/RPS class IV + V
        (2018 revision). Modified NIH activity index 9/24; chronicity index 3/12."

        An incomplete index gives the range it can still take; an undetermined class says so.
        """
        klass = class_phrase(self.isn_rps_class.to_dict())
        return (
            f"Lupus nephritis, {klass} (2018 revision). Modified NIH activity index "
            f"{_index_text(self.activity_index)}; chronicity index "
            f"{_index_text(self.chronicity_index)}."
        )

    @property
    def activity(self) -> IndexScore:
        """The activity index (``score.activity.total``, ``.components[name].score``)."""
        return self.activity_index

    @property
    def chronicity(self) -> IndexScore:
        """The chronicity index (``score.chronicity.components["interstitial_fibrosis"]``)."""
        return self.chronicity_index

    def __repr__(self) -> str:
        return views.score_repr(self)

    def _repr_html_(self) -> str:
        return views.score_html(self)

    def plot(self, ax: Any = None) -> Any:
        """Points per component (a not-assessed one as its possible range); matplotlib Axes."""
        return views.plot_score(self, ax)

    def to_dict(self) -> dict[str, Any]:
        """The contract dict consumed by the pipeline, report and comparison."""
        return {
            "diagnosis_line": self.diagnosis_line(),
            "nih_version": self.nih_version,
            "lnpath_version": self.lnpath_version,
            "config": self.config.to_dict(),
            "status": self.status,
            "activity_index": self.activity_index.to_dict(),
            "chronicity_index": self.chronicity_index.to_dict(),
            "isn_rps_class": self.isn_rps_class.to_dict(),
            "adequacy": self.adequacy.to_dict(),
            "uncertainty": self.uncertainty,
            "counts": self.counts,
            "pending_review": list(self.pending_review),
            "biopsy": dict(self.biopsy),
            "cortex": dict(self.cortex),
        }

    def to_json(self, indent: int | None = 2) -> str:
        """:meth:`to_dict` as JSON text (no NaN: missing values are null)."""
        return json.dumps(self.to_dict(), indent=indent, ensure_ascii=False, allow_nan=False)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> BiopsyScore:
        """Rebuild a score from :meth:`to_dict` output (e.g. a stored result.json); anything
        else is one InputError line saying so, not Python's KeyError or TypeError wording."""
        expected = "expected the mapping BiopsyScore.to_dict() writes"
        if not isinstance(d, Mapping):
            raise InputError(f"biopsy score: {expected}, got {type(d).__name__}")
        parts = ("activity_index", "chronicity_index", "isn_rps_class", "adequacy")
        missing = [key for key in parts if not isinstance(d.get(key), Mapping)]
        if missing:
            raise InputError(
                f"biopsy score: {expected}; {', '.join(missing)}: missing or no mapping"
            )
        try:
            return cls(
                activity_index=IndexScore.from_dict(d["activity_index"]),
                chronicity_index=IndexScore.from_dict(d["chronicity_index"]),
                isn_rps_class=ClassProposal.from_dict(d["isn_rps_class"]),
                adequacy=Adequacy.from_dict(d["adequacy"]),
                uncertainty=dict(d.get("uncertainty") or {}),
                config=config_from(d.get("config") or {}),
                counts=dict(d.get("counts") or {}),
                pending_review=list(d.get("pending_review") or []),
                biopsy=dict(d.get("biopsy") or {}),
                cortex=dict(d.get("cortex") or {}),
                status=str(d.get("status", "provisional")),
                lnpath_version=str(d.get("lnpath_version", __version__)),
            )
        except KeyError as exc:
            raise InputError(f"biopsy score: {expected}; a part lacks its key {exc}") from None
        except (TypeError, ValueError) as exc:
            raise InputError(f"biopsy score: {expected}; a value is malformed ({exc})") from None


def _index_text(index: IndexScore) -> str:
    """``9/24``; ``0-21/24 (incomplete)`` while components are unassessed; or not computable."""
    if index.total is None and index.total_range is None:
        return "not computable"
    if index.complete:
        return f"{index.total}/{index.maximum}"
    low, high = index.total_range or (index.total, index.maximum)
    return f"{low}-{high}/{index.maximum} (incomplete)"


def score_findings(
    glomeruli: pd.DataFrame | Sequence[Mapping[str, Any]],
    cortex: Mapping[str, Any] | Any | None = None,
    config: ScoringConfig | Mapping[str, Any] | None = None,
    biopsy: Mapping[str, Any] | None = None,
) -> BiopsyScore:
    """Score one biopsy from its findings table and cortex fractions (pure: no files).

    ``lnpath.score_findings`` (:func:`lnpath.workflow.scoring.score_findings`) also takes a table
    file, QuPath GeoJSON or a configuration file.

    Args:
        glomeruli: the findings table (see :func:`lnpath.read_findings`), validated here.
        cortex: ``{interstitial_inflammation, interstitial_fibrosis, tubular_atrophy}`` fractions
            in [0, 1] (a float, or ``[lesion_area, cortex_area]`` for an exact ratio); absent or
            None = not assessed. An object with ``.fractions()`` is accepted too.
        config: a :class:`~lnpath.scoring.config.ScoringConfig` or a mapping.
        biopsy: biopsy-level IF/EM inputs for the class proposal: ``membranous`` (subepithelial
            deposits confirmed), ``membranous_capillary_surface`` and ``membranous_glomeruli``
            (fractions, to apply the III/IV + V extent rule), ``if_mesangial_deposits``,
            ``mesangial_hypercellularity``.

    Returns:
        The :class:`BiopsyScore`; an empty table gives status "inadequate" and indices that are
        not computable rather than an error.

    Raises:
        InputError: malformed findings, cortex, config or biopsy inputs.
    """
    cfg = config_from(config)
    table, measured = apply_measurements(counted_glomeruli(read_findings(glomeruli)), cfg)
    fractions = cortex_fractions(cortex)
    inputs = biopsy_inputs(biopsy)
    adequacy = assess_adequacy(len(table), cfg)
    blocked = withheld(adequacy, cfg)
    components = {
        "activity": index_components(ACTIVITY, table, fractions, cfg),
        "chronicity": index_components(CHRONICITY, table, fractions, cfg),
    }
    activity = index_score(components["activity"], 24, blocked)
    chronicity = index_score(components["chronicity"], 12, blocked)
    inflammation = components["activity"]["interstitial_inflammation"].score
    proposal = propose_class(table, cfg, inputs, blocked, inflammation)
    if cfg.class_nomenclature == "legacy_2003":  # the 2003 label only in that explicit mode
        proposal.legacy_2003 = legacy_2003_label(table, proposal.proposal, cfg)
    uncertainty = _uncertainty(table, cfg, activity, chronicity, proposal)
    score = BiopsyScore(
        activity_index=activity,
        chronicity_index=chronicity,
        isn_rps_class=proposal,
        adequacy=adequacy,
        uncertainty=uncertainty,
        config=cfg,
        counts={**_counts(table, cfg), "measured_calls": measured},
        pending_review=_pending(activity, chronicity, proposal, uncertainty),
        biopsy={k: v for k, v in inputs.items() if v is not None},
        # every cortex figure given, including the basis not scored (spec §1.4: report both)
        cortex={k: None if v is None else float(v) for k, v in fractions.items()},
    )
    logger.info(
        "scored %d glomeruli: AI %s, CI %s, class %s",
        len(table),
        activity.total,
        chronicity.total,
        proposal.proposal,
    )
    return score


# --------------------------------------------------------------------------- inputs, adequacy


def _counts(table: pd.DataFrame, cfg: ScoringConfig) -> dict[str, Any]:
    """Raw counts a pathology report lists (spec §6), per lesion present/absent/not assessed.

    With a measured sclerosed tuft fraction (``m_sclerosed_fraction``) the counts also give the
    glomeruli above ``global_threshold`` and the completely sclerosed ones, which many reports
    mean by "globally sclerosed" (spec §1.5).
    """
    lesions: dict[str, dict[str, int]] = {}
    for column in (c for c in table.columns if str(table[c].dtype) == "boolean"):
        values = table[column]
        lesions[column] = {
            "present": int(values.fillna(False).sum()),
            "absent": int((~values.fillna(True)).sum()),
            "not_assessed": int(values.isna().sum()),
        }
    any_sclerosis = lesion_or(table, ["global_sclerosis", "segmental_sclerosis"])
    counts: dict[str, Any] = {
        "n_glomeruli": len(table),
        "globally_sclerosed": lesions["global_sclerosis"]["present"],
        "segmentally_sclerosed": lesions["segmental_sclerosis"]["present"],
        "any_sclerosis": int(any_sclerosis.fillna(False).sum()),
        "lesions": lesions,
    }
    if "m_sclerosed_fraction" in table:
        measured = table["m_sclerosed_fraction"].to_numpy(dtype=np.float64)
        counts["sclerosed_fraction_measured"] = int(np.count_nonzero(~np.isnan(measured)))
        counts["over_global_threshold"] = int(np.count_nonzero(measured > cfg.global_threshold))
        counts["completely_sclerosed"] = int(np.count_nonzero(measured >= 1.0))
    return counts


# --------------------------------------------------------------------------- uncertainty


class _Calls:
    """The findings as float arrays (NaN = not assessed), read once for the uncertainty pass.

    Pandas indexing per component costs more than the maths itself; with plain arrays the whole
    pass for 100 glomeruli stays in the low milliseconds.
    """

    def __init__(self, table: pd.DataFrame, cfg: ScoringConfig) -> None:
        self.table = table
        self.cfg = cfg
        self.arrays: dict[str, np.ndarray] = {}
        glob = self.array("global_sclerosis")
        self.viable = ~(glob == 1.0)

    def array(self, column: str) -> np.ndarray:
        if column not in self.arrays:
            self.arrays[column] = self.table[column].to_numpy(dtype="float64", na_value=np.nan)
        return self.arrays[column]

    def probabilities(self, name: str, lesions: Sequence[str]) -> np.ndarray | None:
        """P(the component counts glomerulus i), 0 outside its denominator; None if no p_ column.

        A lesion without a probability enters as its observed call (0 or 1). Where a lesion is
        ``<NA>`` with no probability, the component's own observed call stands in (it is known,
        since only assessed components get here: True | <NA> is True).
        """
        columns = lesion_columns(tuple(lesions), self.table, self.cfg)
        if not any(f"p_{lesion}" in self.table for lesion in columns):
            return None
        observed = np.vstack([self.array(lesion) for lesion in columns])
        called = observed.copy()
        for row, lesion in enumerate(columns):
            if f"p_{lesion}" in self.table:
                p = self.array(f"p_{lesion}")
                called[row] = np.where(np.isnan(p), observed[row], p)
        probabilities = 1.0 - np.prod(1.0 - called, axis=0)
        component = np.where(
            (observed == 1.0).any(axis=0), 1.0, np.where((observed == 0.0).all(axis=0), 0.0, np.nan)
        )
        probabilities = np.where(np.isnan(probabilities), component, probabilities)
        if self.cfg.glomerular_denominator == "non_globally_sclerosed" and name in ACTIVITY:
            probabilities = np.where(self.viable, probabilities, 0.0)
        return probabilities


def _sampling_entry(component: Component, notes: list[str]) -> dict[str, Any]:
    """Wilson interval, replicate-core band probabilities and band-edge flags of one component."""
    n, total = int(component.n or 0), int(component.N or 0)
    entry: dict[str, Any] = {
        "wilson_95": list(wilson_interval(n, total)),
        "band_probabilities": replicate_band_probabilities(n, total),
        # an absent lesion is not at an edge: the replicate-core view covers 0 -> 1 (compare agrees)
        "near_band_edge": n > 0 and near_band_edge(n, total),
        "one_glomerulus_changes": _edge_moves(n, total),
    }
    entry["p_different_band"] = 1.0 - entry["band_probabilities"][band(n, total)]
    if entry["near_band_edge"] and component.weight > 1:
        moves = " or ".join(
            f"one glomerulus {k} gives score {v}"
            for k, v in entry["one_glomerulus_changes"].items()
        )
        notes.append(
            f"{component.name} (x{component.weight}) sits at a band edge ({n}/{total}, score "
            f"{component.score}): {moves}, moving the activity index by {component.weight} points"
        )
    return entry


def _uncertainty(
    table: pd.DataFrame,
    cfg: ScoringConfig,
    activity: IndexScore,
    chronicity: IndexScore,
    proposal: ClassProposal,
) -> dict[str, Any]:
    comps: dict[str, Any] = {}
    notes: list[str] = []
    out: dict[str, Any] = {"assumption": ASSUMPTION, "components": comps, "notes": notes}
    calls = _Calls(table, cfg)
    indices = (("activity_index", activity, ACTIVITY), ("chronicity_index", chronicity, CHRONICITY))
    # every called component in one batched Poisson-binomial pass
    called: dict[str, np.ndarray] = {}
    for _, index, spec in indices:
        for name, component in index.components.items():
            lesions = spec[name][0]
            # calls not assessed inside a decided band leave no count distribution to compute
            known = component.assessed and not component.n_not_assessed
            if known and lesions is not None and component.N:
                probs = calls.probabilities(name, lesions)
                if probs is not None:
                    called[name] = probs
    names = list(called)
    dists = count_distributions(np.vstack([called[n] for n in names])) if names else None
    for key, index, spec in indices:
        parts: list[tuple[int, list[float]]] = []
        for name, component in index.components.items():
            if not component.assessed or component.score is None:
                continue
            point = [float(component.score == b) for b in range(4)]
            if spec[name][0] is None or not component.N:
                parts.append((component.weight, point))
                continue
            entry = comps[name] = _sampling_entry(component, notes)
            if name not in called or dists is None:
                parts.append((component.weight, point))
                continue
            total = int(component.N)
            dist = dists[names.index(name), : total + 1]
            entry["count_distribution"] = [float(x) for x in dist]
            entry["expected_count"] = float(called[name].sum())
            entry["call_band_probabilities"] = fold_bands(dist, total)
            parts.append((component.weight, entry["call_band_probabilities"]))
        summary: dict[str, Any] = {"distribution": None, "interval_95": None}
        if index.total is not None and any(n in called for n in index.components):
            dist_total = total_distribution(parts, index.maximum)
            summary = {"distribution": dist_total, "interval_95": interval_95(dist_total)}
        out[key] = summary
    out["class_fraction"] = proposal.uncertainty()
    return out


def _edge_moves(n: int, total: int) -> dict[str, int]:
    """The score one glomerulus more / fewer would give, where it differs from the current one."""
    here = band(n, total)
    moves = {}
    if n < total and band(n + 1, total) != here:
        moves["more"] = band(n + 1, total)
    if n > 0 and band(n - 1, total) != here:
        moves["fewer"] = band(n - 1, total)
    return moves


def _pending(
    activity: IndexScore, chronicity: IndexScore, proposal: ClassProposal, uncertainty: Any
) -> list[str]:
    """What a pathologist must supply or check before the result can be confirmed."""
    items: list[str] = []
    for label, index in (("AI", activity), ("CI", chronicity)):
        for component in index.components.values():
            unassessed = not component.assessed or component.n_not_assessed
            if unassessed and component.note != "no glomeruli":
                items.append(f"{label} {component.name} (x{component.weight}): {component.note}")
    items.extend(f"class: {need}" for need in proposal.needs_if_em)
    items.extend(uncertainty.get("notes", []))
    return items
