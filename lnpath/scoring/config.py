"""Scoring configuration: the clinical choices the specification leaves open, as one typed object.

Every point that ``clinical-scoring.md`` marks as ambiguous has its default here and its alternative
as a named option or preset, so a result can always say which rule produced it. The effective
configuration is stored in every :class:`~lnpath.scoring.score.BiopsyScore` (``config``) and can be
read
back with :func:`config_from` (or from a file with :func:`lnpath.io.configfile.load_config`).

Example:
    >>> cfg = config_from({"preset": "viable_denominator"})
    >>> cfg.glomerular_denominator
    'non_globally_sclerosed'
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from lnpath.core.errors import InputError
from lnpath.scoring.presets import PRESETS

__all__ = [
    "MEASURED_OPTIONS",
    "PRESETS",
    "AdequacyThresholds",
    "ClassVRule",
    "ScoringConfig",
    "build_config",
    "config_from",
]

_CHOICES: dict[str, tuple[str, ...]] = {
    # austin1984 cannot be scored from the findings table: it separates leukocyte exudation from
    # karyorrhexis, which the 2018 table merges into one column.
    "nih_version": ("bajema2018",),
    "glomerular_denominator": ("all", "non_globally_sclerosed"),
    "interstitial_inflammation_region": ("total_cortex", "nonscarred_cortex"),
    "tubular_atrophy_basis": ("cortical_tubules", "cortex_area"),
    "inadequate_policy": ("counts_only", "score"),
    "class_nomenclature": ("isn_rps_2018", "legacy_2003"),
}
_FRACTIONS = (
    "global_threshold",
    "crescent_min_circumference",
    "crescent_cellular_min_cell_fraction",
    "crescent_fibrous_min_matrix_fraction",
    "class_iv_threshold",
    "class_vi_threshold",
)
_BOOLS = ("adhesion_as_sclerosis", "ischemic_exclusion", "inflammation_is_residual_activity")
#: Options that act on a per-glomerulus measurement, and the ``m_*`` columns they need (§1.5).
MEASURED_OPTIONS: dict[str, tuple[str, ...]] = {
    "global_threshold": ("m_sclerosed_fraction",),
    "crescent_min_circumference": ("m_crescent_circumference", "m_crescent_cell_fraction"),
    "crescent_cellular_min_cell_fraction": ("m_crescent_circumference", "m_crescent_cell_fraction"),
    "crescent_fibrous_min_matrix_fraction": (
        "m_crescent_circumference",
        "m_crescent_cell_fraction",
    ),
    "mesangial_hypercellularity_min_cells": ("m_mesangial_cells",),
}


@dataclass(frozen=True)
class AdequacyThresholds:
    """Glomerulus counts for an adequate / limited biopsy (spec §2.3); fewer is inadequate."""

    adequate: int = 10
    limited: int = 8


@dataclass(frozen=True)
class ClassVRule:
    """The [R] extent rule for reporting a membranous component with III/IV ("IV+V"), spec §2.1.

    The verified class table only says both are diagnosed (spec §9 item 2), so by default "+V" is
    kept and a given extent is reported beside it; ``enforce`` drops "+V" below the extent.
    """

    capillary_surface_gt: float = 0.5
    glomeruli_gt: float = 0.5
    enforce: bool = False


@dataclass(frozen=True)
class ScoringConfig:
    """Every rule the scoring engine applies, with the defaults of spec §7.

    Attributes:
        nih_version: index definition; only the 2018 modified NIH index (Bajema 2018) is scored.
        glomerular_denominator: ``all`` glomeruli (default) or ``non_globally_sclerosed`` for the
            five glomerular activity items (preset ``viable_denominator``).
        global_threshold: sclerosed tuft fraction above which a sclerosed glomerulus is "global"
            (ISN/RPS 2003); it splits global from segmental wherever ``m_sclerosed_fraction`` is
            measured, and a non-default value is refused for findings without that measurement.
        adhesion_as_sclerosis: count an isolated adhesion as segmental sclerosis (Oxford).
        crescent_min_circumference: capsule fraction a crescent must exceed (2018: 0.10).
        crescent_cellular_min_cell_fraction: cell + fibrin share a cellular crescent exceeds.
        crescent_fibrous_min_matrix_fraction: matrix share a fibrous crescent exceeds.
            The three crescent options call crescents wherever ``m_crescent_circumference`` and
            ``m_crescent_cell_fraction`` are measured; non-default values are refused otherwise.
        mesangial_hypercellularity_min_cells: nuclei per mesangial area (2018: 4); it sets the
            ``mesangial_hypercellularity`` flag wherever ``m_mesangial_cells`` is measured.
        interstitial_inflammation_region: ``total_cortex`` or ``nonscarred_cortex`` (Banff "i").
        tubular_atrophy_basis: ``cortical_tubules`` or ``cortex_area``.
        adequacy: glomerulus counts for adequate / limited.
        class_iv_threshold: involved fraction at or above which III becomes IV (>=).
        class_vi_threshold: globally sclerosed fraction for class VI (>=).
        class_v_combined_rule: the [R] extent for "+V"; reported, applied only with ``enforce``.
        ischemic_exclusion: leave glomeruli flagged ``ischemic`` out of the class fraction.
        inflammation_is_residual_activity: interstitial inflammation alone blocks class VI.
        inadequate_policy: ``counts_only`` (spec: no index or class below the limited count) or
            ``score`` (compute them anyway, still flagged inadequate).
        class_nomenclature: ``isn_rps_2018`` (default: the class plus AI/CI) or ``legacy_2003``,
            which adds the 2003 label (A, A/C, C suffixes and IV-S / IV-G) beside the 2018
            proposal for older trial protocols (spec §2.1: only in this explicit mode).
        response_preset: the histological response preset ``compare`` and the cohort apply
            when none is named.
        presets: the presets applied, recorded for provenance.
    """

    nih_version: str = "bajema2018"
    glomerular_denominator: str = "all"
    global_threshold: float = 0.5
    adhesion_as_sclerosis: bool = False
    crescent_min_circumference: float = 0.10
    crescent_cellular_min_cell_fraction: float = 0.75
    crescent_fibrous_min_matrix_fraction: float = 0.75
    mesangial_hypercellularity_min_cells: int = 4
    interstitial_inflammation_region: str = "total_cortex"
    tubular_atrophy_basis: str = "cortical_tubules"
    adequacy: AdequacyThresholds = field(default_factory=AdequacyThresholds)
    class_iv_threshold: float = 0.5
    class_vi_threshold: float = 0.9
    class_v_combined_rule: ClassVRule = field(default_factory=ClassVRule)
    ischemic_exclusion: bool = True
    inflammation_is_residual_activity: bool = False
    inadequate_policy: str = "counts_only"
    class_nomenclature: str = "isn_rps_2018"
    response_preset: str = "lnhr_default"
    presets: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _validate(self, "configuration")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON/YAML-ready dict; :func:`load_config` reads it back unchanged."""
        out = dataclasses.asdict(self)
        out["presets"] = list(self.presets)
        return out

    def replace(self, **changes: Any) -> ScoringConfig:
        """A copy with ``changes`` applied (validated like a loaded file)."""
        return build_config({**self.to_dict(), **changes}, "configuration")

    def with_presets(self, *names: str) -> ScoringConfig:
        """A copy with the named presets applied on top, in order (they win over set keys)."""
        cfg = self
        for name in names:
            if not isinstance(name, str):  # a list, or None: one line, not difflib's TypeError
                raise InputError(
                    f"with_presets: a preset is a name, got {name!r}; "
                    "give several one by one: with_presets('oxford_8', 'legacy_2003')"
                )
            if name not in PRESETS:
                known = ", ".join(PRESETS)
                hint = _suggest(name, PRESETS)
                raise InputError(f"unknown preset {name!r}{hint} (known: {known})")
            cfg = cfg.replace(presets=[*cfg.presets, name], **PRESETS[name])
        return cfg

    @classmethod
    def from_presets(cls, *names: str) -> ScoringConfig:
        """Defaults with the named presets applied in order."""
        return build_config({"presets": list(names)}, "configuration")


def as_written(value: float) -> Fraction:
    """A configured decimal threshold as the rational it was written as (0.9 -> 9/10): compared
    with counts or measurements exactly, never by its binary float."""
    return Fraction(repr(float(value)))


def config_from(source: Mapping[str, Any] | ScoringConfig | None = None) -> ScoringConfig:
    """Build a validated configuration from a mapping (or pass an existing one through).

    A ``preset`` (name or list of names) is applied first, then the explicit keys, so a mapping can
    say ``preset: viable_denominator`` and still override single values. Files are read one floor
    up, by :func:`lnpath.io.configfile.load_config`, so that scoring stays free of file formats.

    Raises:
        InputError: a key is unknown, a value is out of range, or ``source`` is not a mapping.
    """
    if source is None:
        return ScoringConfig()
    if isinstance(source, ScoringConfig):
        return source
    if isinstance(source, Mapping):
        return build_config(source, "configuration")
    raise InputError(
        f"configuration: expected a mapping or ScoringConfig, got {type(source).__name__} "
        "(read a file with lnpath.load_config)"
    )


def build_config(data: Mapping[str, Any], where: str) -> ScoringConfig:
    """Apply presets then keys; ``where`` names the source in every error."""
    _string_keys(data, where)
    values = dict(data)
    presets = values.pop("preset", None)
    listed = values.pop("presets", None)
    names: list[str] = []
    for item in (listed, presets):
        if item is None:
            continue
        if isinstance(item, str):
            names.append(item)
        elif isinstance(item, Sequence) and all(isinstance(n, str) for n in item):
            names.extend(item)
        else:
            raise InputError(f"{where}: 'preset' must be a name or a list of names")
    merged: dict[str, Any] = {}
    for name in names:
        if name not in PRESETS:
            raise InputError(
                f"{where}: unknown preset {name!r}{_suggest(name, PRESETS)} "
                f"(known: {', '.join(PRESETS)})"
            )
        merged.update(PRESETS[name])
    merged.update(values)
    fields = {f.name for f in dataclasses.fields(ScoringConfig)} - {"presets"}
    unknown = sorted(set(merged) - fields)
    if unknown:
        key = unknown[0]
        raise InputError(f"{where}: unknown configuration key {key!r}{_suggest(key, fields)}")
    merged["adequacy"] = _nested(merged.get("adequacy"), AdequacyThresholds, "adequacy", where)
    merged["class_v_combined_rule"] = _nested(
        merged.get("class_v_combined_rule"), ClassVRule, "class_v_combined_rule", where
    )
    try:
        cfg = ScoringConfig(**merged, presets=tuple(dict.fromkeys(names)))
    except InputError as exc:
        raise InputError(str(exc).replace("configuration:", f"{where}:", 1)) from None
    return cfg


def _string_keys(data: Mapping[Any, Any], where: str) -> None:
    """YAML reads ``true:`` or ``1:`` as a bool or int key: name it instead of failing later."""
    for key in data:
        if not isinstance(key, str):
            raise InputError(f"{where}: unknown configuration key {key!r} (keys are option names)")


def _nested(value: Any, cls: type[Any], name: str, where: str) -> Any:
    if value is None:
        return cls()
    if isinstance(value, cls):
        return value
    if not isinstance(value, Mapping):
        raise InputError(f"{where}: {name!r} must be a mapping")
    _string_keys(value, f"{where}: {name}")
    allowed = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(value) - allowed)
    if unknown:
        key = unknown[0]
        raise InputError(f"{where}: unknown key {name}.{key}{_suggest(key, allowed)}")
    return cls(**{**dataclasses.asdict(cls()), **value})


def _suggest(word: str, choices: Any) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _validate(cfg: ScoringConfig, where: str) -> None:
    """Reject wrong types and out-of-range values with one line naming the option."""
    if cfg.nih_version == "austin1984":  # a §7 value, but not one a findings table can give
        raise InputError(
            f"{where}: nih_version must be one of bajema2018 (got 'austin1984': the original "
            "NIH index pairs karyorrhexis with necrosis and scores leukocytes apart, which a "
            "findings table's one neutrophils_karyorrhexis column cannot give)"
        )
    for name, choices in _CHOICES.items():
        value = getattr(cfg, name)
        if value not in choices:
            raise InputError(f"{where}: {name} must be one of {', '.join(choices)} (got {value!r})")
    for name in _FRACTIONS:
        value = getattr(cfg, name)
        if not _is_number(value) or not 0.0 <= value <= 1.0:
            raise InputError(f"{where}: {name} must be a number in [0, 1] (got {value!r})")
    for name in _BOOLS:
        if not isinstance(getattr(cfg, name), bool):
            raise InputError(f"{where}: {name} must be true or false")
    cells = cfg.mesangial_hypercellularity_min_cells
    if not isinstance(cells, int) or isinstance(cells, bool) or cells < 1:
        raise InputError(f"{where}: mesangial_hypercellularity_min_cells must be an integer >= 1")
    adequacy = cfg.adequacy
    for key in ("adequate", "limited"):
        value = getattr(adequacy, key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise InputError(f"{where}: adequacy.{key} must be a whole number >= 0")
    if adequacy.limited > adequacy.adequate:
        raise InputError(f"{where}: adequacy.limited must not exceed adequacy.adequate")
    rule = cfg.class_v_combined_rule
    for key in ("capillary_surface_gt", "glomeruli_gt"):
        value = getattr(rule, key)
        if not _is_number(value) or not 0.0 <= value <= 1.0:
            raise InputError(f"{where}: class_v_combined_rule.{key} must be a number in [0, 1]")
    if not isinstance(rule.enforce, bool):
        raise InputError(f"{where}: class_v_combined_rule.enforce must be true or false")
