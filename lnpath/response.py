"""Baseline vs follow-up biopsy: the histological response endpoint (clinical-scoring.md §3).

A trial reads a response endpoint off two biopsies of one patient. This module normalises both sides
(a :class:`~lnpath.scoring.BiopsyScore`, a ``SlideResult``, a result folder, or a plain dict) to a
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
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from fractions import Fraction
from itertools import product
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError, ResultError

logger = logging.getLogger(__name__)

AI_COMPONENTS: tuple[str, ...] = (
    "endocapillary_hypercellularity",
    "neutrophils_karyorrhexis",
    "fibrinoid_necrosis",
    "hyaline_deposits",
    "cellular_fibrocellular_crescents",
    "interstitial_inflammation",
)
CI_COMPONENTS: tuple[str, ...] = (
    "glomerulosclerosis",
    "fibrous_crescents",
    "tubular_atrophy",
    "interstitial_fibrosis",
)
_DEFAULT_WEIGHTS = {"fibrinoid_necrosis": 2, "cellular_fibrocellular_crescents": 2}
#: Components counted as n/N glomeruli; the band rule then maps a count change to a score change.
GLOMERULAR_COMPONENTS = frozenset(AI_COMPONENTS[:5] + CI_COMPONENTS[:2])
_AI_MAX, _CI_MAX = 24, 12

INDEPENDENCE_ASSUMPTION = (
    "The baseline and follow-up biopsies are separate samples, so their AI and CI total "
    "distributions are treated as independent; where one endpoint combines the activity and the "
    "chronicity of the same biopsy, its AI and CI distributions are also treated as independent "
    "(the scores carry only these marginal distributions). Probabilities are exact sums over the "
    "product of those distributions; each distribution itself rests on the scorer's own assumption."
)
SAMPLING_ASSUMPTION = (
    "One glomerular component at a time, with the number of glomeruli N held fixed: the smallest "
    "number k of the sampled glomeruli that, read the other way, would move the component's band "
    "(0 if n == 0; 1 if 4n < N; 2 if 4n >= N and 2n <= N; 3 if 2n > N) far enough to change the "
    "endpoint."
)
READER_NOISE_CAVEAT = (
    "Repeat reads by the same pathologist differ by more than 2 AI points in 43% of cases and by "
    "more than 1 CI point in 45% (Wernick 1993); a CI change of +1 or an AI change of ±2 is within "
    "human reading error. A fixed algorithm removes reader variance, not the sampling variance "
    "between two cores."
)


def band(n: int, total: int) -> int:
    """Score a count with the §1.3 band rule in integer arithmetic (25% and 50% both score 2)."""
    if n == 0:
        return 0
    if 4 * n < total:
        return 1
    if 2 * n <= total:
        return 2
    return 3


# --------------------------------------------------------------------------------------------
# Parameters and presets
# --------------------------------------------------------------------------------------------

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
}


@dataclass(frozen=True)
class Preset:
    """A named response definition: its headline endpoint, thresholds and literature source."""

    name: str
    endpoint: str
    description: str
    source: str
    validated: bool = True
    params: Mapping[str, Any] = field(default_factory=dict)

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
        if not 0 <= p[key] <= _AI_MAX:
            raise InputError(f"response threshold {key}={p[key]} is outside 0..{_AI_MAX}")
    if p["quiescent_max_ai"] > p["active_above_ai"]:
        raise InputError(
            f"response thresholds: quiescent_max_ai={p['quiescent_max_ai']} exceeds "
            f"active_above_ai={p['active_above_ai']}"
        )
    if not 0 < p["partial_max_fraction"] <= 1:
        raise InputError(f"partial_max_fraction={p['partial_max_fraction']} is not in (0, 1]")
    if not 1 <= p["progression_min_delta_ci"] <= _CI_MAX:
        raise InputError(
            f"progression_min_delta_ci={p['progression_min_delta_ci']} is outside 1..{_CI_MAX}"
        )
    if not 0 <= p["high_chronicity_above_ci"] <= _CI_MAX:
        raise InputError(
            f"high_chronicity_above_ci={p['high_chronicity_above_ci']} is outside 0..{_CI_MAX}"
        )


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset(
            "lnhr_default",
            "composite_histologic_responder",
            "Composite responder: histologic remission (AI_fu <= 2) and no chronic progression "
            "(CI_fu - CI_bl >= 2); a CI rise of +1 is 'possible' progression inside reader error.",
            "clinical-scoring.md §3.3: LuFla AI threshold (De Rosa 2018 [V]) with a noise-aware CI "
            "rule (Wernick 1993 [V])",
        ),
        Preset(
            "lufla_AI2",
            "histologic_remission",
            "Remission if AI_fu <= 2; every LuFla patient with AI > 2 flared after withdrawal.",
            "De Rosa M et al. Kidney Int 2018;94:788-794 (LuFla, NCT02313974) [V]",
        ),
        Preset(
            "malvar_AI0",
            "histologic_remission",
            "Quiescent (remission) only if AI_fu = 0; AI 1-5 was continued activity, so "
            "maintenance immunosuppression continued.",
            "Malvar A et al. Kidney Int 2020;97:156-162 [V]",
            params={"remission_max_ai": 0, "active_above_ai": 0},
        ),
        Preset(
            "parodis_rebiolup_AI3",
            "persistent_activity_fu",
            "High activity if AI_fu > 3 (REBIOLUP intensifies immunosuppression); CI_fu is "
            "reported as a continuous value.",
            "Parodis I et al. Rheumatology 2020;59:3424-3434; REBIOLUP NCT04449991 [V]",
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
            params={"remission_max_ai": 0, "active_above_ai": 0},
        ),
        Preset(
            "class_transition",
            "class_response",
            "Response if a class III/IV(+/-V) baseline becomes class I/II (or pure V when "
            "class_response_includes_pure_v=true) at follow-up.",
            "Zickert A et al. Lupus Sci Med 2014;1:e000018 [R: definition not re-checked]",
        ),
        Preset(
            "relative_AI50",
            "relative_response",
            "Partial response if AI_fu <= 0.5 x AI_bl. NOT VALIDATED: an analogy to the "
            "clinical >=50% proteinuria reduction; no source defines a histologic partial "
            "response this way.",
            "analogy to clinical partial response; not validated (clinical-scoring.md §3.1)",
            validated=False,
        ),
        Preset(
            "strict_chronicity_CI1",
            "chronic_progression",
            "Progression if CI rises by >= 1; note that +1 lies within human reading error.",
            "Moroni 2022 style [V]; reader noise caveat Wernick 1993 [V]",
            params={"progression_min_delta_ci": 1},
        ),
    )
}


def list_presets() -> list[dict[str, Any]]:
    """Each preset's name, endpoint, description, source, validation flag and thresholds."""
    return [
        {
            "name": p.name,
            "endpoint": p.endpoint,
            "description": p.description,
            "source": p.source,
            "validated": p.validated,
            "params": p.effective_params(),
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


# --------------------------------------------------------------------------------------------
# One biopsy, normalised
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ComponentScore:
    """One index component of one biopsy: its band score and, where counted, n of N."""

    name: str
    weight: int
    score: int | None
    n: float | None = None
    N: float | None = None
    fraction: float | None = None

    @property
    def assessed(self) -> bool:
        return self.score is not None

    @property
    def weighted(self) -> int | None:
        return None if self.score is None else self.score * self.weight

    def to_dict(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "N": self.N,
            "fraction": self.fraction,
            "score": self.score,
            "weight": self.weight,
            "weighted": self.weighted,
            "assessed": self.assessed,
        }


@dataclass(frozen=True)
class IndexScore:
    """An activity or chronicity index of one biopsy; ``total`` is None when incomplete."""

    total: int | None
    maximum: int
    complete: bool
    not_assessed: tuple[str, ...]
    components: dict[str, ComponentScore]
    distribution: tuple[float, ...] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "max": self.maximum,
            "complete": self.complete,
            "not_assessed": list(self.not_assessed),
            "components": {k: c.to_dict() for k, c in self.components.items()},
            "distribution": None if self.distribution is None else list(self.distribution),
        }


@dataclass(frozen=True)
class BiopsySide:
    """What the comparison needs from one biopsy, whatever form it arrived in."""

    source: str
    activity: IndexScore
    chronicity: IndexScore
    class_proposal: str | None
    class_label: str | None
    class_alternative: str | None
    adequacy_status: str | None
    n_glomeruli: int | None
    nih_version: str | None
    lnpath_version: str | None
    config: dict[str, Any]
    status: str
    patient_id: str | None = None
    biopsy_date: date | None = None
    stain: str | None = None
    models: tuple[tuple[str, str], ...] | None = None
    confirmed_by: str | None = None
    component_uncertainty: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def confirmed(self) -> bool:
        return self.status == "confirmed"

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "patient_id": self.patient_id,
            "biopsy_date": None if self.biopsy_date is None else self.biopsy_date.isoformat(),
            "stain": self.stain,
            "status": self.status,
            "confirmed_by": self.confirmed_by,
            "nih_version": self.nih_version,
            "lnpath_version": self.lnpath_version,
            "models": None if self.models is None else [list(m) for m in self.models],
            "config": self.config,
            "isn_rps_class": _class_name(self),
            "adequacy": {"status": self.adequacy_status, "n_glomeruli": self.n_glomeruli},
            "activity_index": self.activity.to_dict(),
            "chronicity_index": self.chronicity.to_dict(),
        }


def load_side(obj: Any, label: str = "biopsy") -> BiopsySide:
    """Normalise a BiopsyScore, SlideResult, result folder (or its result.json) or dict.

    Args:
        obj: the biopsy in any of the accepted forms; a dict with a ``"scores"`` key is read as a
            result.json, any other dict as ``BiopsyScore.to_dict()``.
        label: "baseline" or "follow-up", used in error messages.

    Raises:
        ResultError: a result folder is missing or its result.json is unreadable or malformed.
        InputError: the object is of an unknown kind or its scores are malformed.
    """
    if isinstance(obj, str | Path):
        return _side_from_folder(Path(obj), label)
    if isinstance(obj, Mapping):
        data, source = dict(obj), f"{label} (dict)"
    elif callable(getattr(obj, "to_dict", None)):
        data, source = obj.to_dict(), f"{label} ({type(obj).__name__})"
        if not isinstance(data, Mapping):
            raise InputError(f"{source}: to_dict() did not return a mapping")
        folder = getattr(obj, "folder", None) or getattr(obj, "path", None)
        if isinstance(folder, str | Path):
            source = str(folder)
    else:
        raise InputError(
            f"{label}: expected a BiopsyScore, SlideResult, result folder or dict, "
            f"got {type(obj).__name__}"
        )
    if "scores" in data:
        return _side_from_result(data, source, InputError)
    return _side_from_scores(data, source, InputError, meta={})


def _side_from_folder(path: Path, label: str) -> BiopsySide:
    file = path if path.is_file() else path / "result.json"
    if not path.exists():
        raise ResultError(f"{path}: {label} result folder not found")
    if not file.is_file():
        raise ResultError(f"{path}: no result.json in the {label} result folder")
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ResultError(f"{file}: unreadable result.json ({exc})") from None
    if not isinstance(data, dict) or "scores" not in data:
        raise ResultError(f"{file}: malformed result.json (no 'scores')")
    return _side_from_result(data, str(file.parent), ResultError)


def _side_from_result(data: Mapping[str, Any], source: str, error: type[Exception]) -> BiopsySide:
    scores = data.get("scores")
    if not isinstance(scores, Mapping):
        raise error(f"{source}: malformed result ('scores' is not an object)")
    status = data.get("status", scores.get("status"))
    confirmation = data.get("confirmation")
    confirmed_by = None
    if isinstance(confirmation, Mapping):
        confirmed_by = confirmation.get("pathologist") or None
    if status == "confirmed" and "confirmation" in data and not confirmed_by:
        logger.warning("%s: status 'confirmed' without a confirming pathologist", source)
        status = "provisional"
    models = data.get("models")
    model_ids: tuple[tuple[str, str], ...] | None = None
    if isinstance(models, list):
        model_ids = tuple(
            sorted(
                (str(m.get("name")), str(m.get("sha256"))) for m in models if isinstance(m, dict)
            )
        )
    meta = {
        "status": status,
        "patient_id": data.get("patient_id"),
        "biopsy_date": data.get("biopsy_date"),
        "stain": data.get("stain"),
        "models": model_ids,
        "confirmed_by": confirmed_by,
        "lnpath_version": data.get("lnpath_version"),
    }
    return _side_from_scores(scores, source, error, meta)


def _side_from_scores(
    scores: Mapping[str, Any], source: str, error: type[Exception], meta: Mapping[str, Any]
) -> BiopsySide:
    try:
        activity = _index(scores["activity_index"], AI_COMPONENTS, _AI_MAX, "activity_index")
        chronicity = _index(scores["chronicity_index"], CI_COMPONENTS, _CI_MAX, "chronicity_index")
    except KeyError as exc:
        raise error(f"{source}: malformed scores (missing {exc.args[0]!r})") from None
    except (TypeError, ValueError) as exc:
        raise error(f"{source}: malformed scores ({exc})") from None
    uncertainty = scores.get("uncertainty") or {}
    activity = _with_distribution(activity, uncertainty, "activity_index", source, error)
    chronicity = _with_distribution(chronicity, uncertainty, "chronicity_index", source, error)
    adequacy = scores.get("adequacy") or {}
    klass = scores.get("isn_rps_class")
    klass = klass if isinstance(klass, Mapping) else {}
    status = meta.get("status") or scores.get("status") or "provisional"
    if status not in {"provisional", "confirmed"}:
        raise error(f"{source}: unknown status {status!r} (expected provisional or confirmed)")
    lnpath_version = meta.get("lnpath_version") or scores.get("lnpath_version")
    return BiopsySide(
        source=source,
        activity=activity,
        chronicity=chronicity,
        class_proposal=_opt_str(klass.get("proposal")),
        class_label=_opt_str(klass.get("label")),
        class_alternative=_opt_str(klass.get("alternative")),
        adequacy_status=adequacy.get("status"),
        n_glomeruli=adequacy.get("n_glomeruli"),
        nih_version=scores.get("nih_version"),
        lnpath_version=lnpath_version,
        config=dict(scores.get("config") or {}),
        status=status,
        patient_id=_opt_str(meta.get("patient_id")),
        biopsy_date=_parse_date(meta.get("biopsy_date"), source, error),
        stain=_opt_str(meta.get("stain")),
        models=meta.get("models"),
        confirmed_by=meta.get("confirmed_by"),
        component_uncertainty=dict(uncertainty.get("components") or {}),
    )


def _index(d: Mapping[str, Any], names: tuple[str, ...], maximum: int, key: str) -> IndexScore:
    raw = d["components"]
    components: dict[str, ComponentScore] = {}
    for name in names:
        c = raw.get(name) or {}
        score = c.get("score") if c.get("assessed", c.get("score") is not None) else None
        if score is not None and (int(score) != score or not 0 <= score <= 3):
            raise ValueError(f"{key}.{name}.score={score!r} is not 0..3")
        components[name] = ComponentScore(
            name=name,
            weight=int(c.get("weight") or _DEFAULT_WEIGHTS.get(name, 1)),
            score=None if score is None else int(score),
            n=c.get("n"),
            N=c.get("N"),
            fraction=c.get("fraction"),
        )
    total = d.get("total")
    complete = bool(d.get("complete", total is not None)) and total is not None
    missing = tuple(d.get("not_assessed") or (n for n, c in components.items() if not c.assessed))
    if complete and missing:
        raise ValueError(f"{key} is marked complete but {', '.join(missing)} not assessed")
    if total is not None and (int(total) != total or not 0 <= total <= maximum):
        raise ValueError(f"{key}.total={total!r} is not 0..{maximum}")
    return IndexScore(
        total=int(total) if complete and total is not None else None,
        maximum=maximum,
        complete=complete,
        not_assessed=missing,
        components=components,
    )


def _with_distribution(
    index: IndexScore,
    uncertainty: Mapping[str, Any],
    key: str,
    source: str,
    error: type[Exception],
) -> IndexScore:
    dist = (uncertainty.get(key) or {}).get("distribution")
    if dist is None or not index.complete:
        return index
    p = np.asarray(dist, dtype=float)
    if p.ndim != 1 or len(p) != index.maximum + 1 or (p < -1e-12).any():
        raise error(f"{source}: uncertainty.{key}.distribution must be {index.maximum + 1} p >= 0")
    if abs(p.sum() - 1.0) > 1e-6:
        raise error(f"{source}: uncertainty.{key}.distribution sums to {p.sum():.6g}, not 1")
    p = np.clip(p, 0.0, None)
    return IndexScore(**{**index.__dict__, "distribution": tuple(float(x) for x in p / p.sum())})


def _opt_str(value: Any) -> str | None:
    return None if value is None or value == "" else str(value)


def _parse_date(value: Any, source: str, error: type[Exception]) -> date | None:
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    try:
        return datetime.fromisoformat(str(value)).date()
    except ValueError:
        raise error(f"{source}: biopsy_date {value!r} is not an ISO date") from None


# --------------------------------------------------------------------------------------------
# Rules on the totals
# --------------------------------------------------------------------------------------------

Totals = tuple[int, int, int, int]  # ai_bl, ai_fu, ci_bl, ci_fu
_VARS = ("ai_bl", "ai_fu", "ci_bl", "ci_fu")


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
class _Rule:
    """One panel field as a pure function of the four totals, plus what it needs."""

    needs: tuple[str, ...]
    fn: Callable[[Totals, Mapping[str, Any]], Any]
    rule: str


def _rules(p: Mapping[str, Any]) -> dict[str, _Rule]:
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
        "activity_status_fu": _Rule(
            ("ai_fu",),
            lambda t, p: activity_status(t[1], p),
            f"quiescent if AI_fu <= {q}; active if AI_fu > {a}; low_residual otherwise",
        ),
        "histologic_remission": _Rule(("ai_fu",), lambda t, p: t[1] <= r, f"AI_fu <= {r}"),
        "persistent_activity_fu": _Rule(("ai_fu",), lambda t, p: t[1] > a, f"AI_fu > {a}"),
        "histologic_response": _Rule(
            ("ai_bl", "ai_fu"),
            lambda t, p: histologic_response(t[0], t[1], p),
            f"not_applicable if AI_bl <= {r}; complete if AI_fu <= {r}; partial if AI_fu <= "
            f"{f} x AI_bl (non-validated analogy); none otherwise",
        ),
        "relative_response": _Rule(
            ("ai_bl", "ai_fu"),
            relative,
            f"AI_fu <= {f} x AI_bl (not validated); not_applicable if AI_bl = 0",
        ),
        "chronic_progression": _Rule(
            ("ci_bl", "ci_fu"),
            lambda t, p: chronic_progression(t[2], t[3], p),
            f"progression if CI_fu - CI_bl >= {d}; possible if it is "
            f"{'+1' if d == 2 else f'+1..+{d - 1}'} (within reader error); stable if <= 0"
            if d > 1
            else "progression if CI_fu - CI_bl >= 1 (+1 is within reader error); stable if <= 0",
        ),
        "high_chronicity_fu": _Rule(("ci_fu",), lambda t, p: t[3] > h, f"CI_fu > {h}"),
        "composite_histologic_responder": _Rule(
            ("ai_fu", "ci_bl", "ci_fu"),
            composite,
            f"histologic_remission (AI_fu <= {r}) and not chronic progression "
            f"(CI_fu - CI_bl >= {d})",
        ),
    }


#: The proposition whose truth the headline endpoint reports, per endpoint kind.
def _holds(endpoint: str, value: Any) -> bool | None:
    if endpoint == "chronic_progression":
        return value == "progression"
    return value if isinstance(value, bool) or value is None else None


_ACTIVITY_FIELDS = (
    "activity_status_fu",
    "histologic_remission",
    "persistent_activity_fu",
    "histologic_response",
    "relative_response",
)
_CHRONICITY_FIELDS = ("chronic_progression", "high_chronicity_fu")


# --------------------------------------------------------------------------------------------
# Class transition
# --------------------------------------------------------------------------------------------

_CLASS_TOKEN = re.compile(r"\b(VI|IV|V|III|II|I)\b")


def parse_class(proposal: str | None) -> frozenset[str] | None:
    """The ISN/RPS classes named in a proposal ('IV+V' -> {IV, V}); None when it names none."""
    if not proposal:
        return None
    found = frozenset(_CLASS_TOKEN.findall(proposal.replace("+", " + ")))
    return found or None


def _classes(side: BiopsySide) -> frozenset[str] | None:
    """Classes a side's proposal names; empty when light microscopy found no LN lesion."""
    found = parse_class(side.class_proposal)
    if found is None and side.class_proposal is None and side.class_label:
        return frozenset()  # scored, and no LN lesion by light microscopy
    return found


def _class_name(side: BiopsySide) -> str:
    if side.class_proposal:
        return side.class_proposal
    return "no LN lesion by LM" if side.class_label else "unknown"


def class_outcomes(bl: BiopsySide, fu: BiopsySide, include_pure_v: bool) -> dict[str, Any]:
    """class_transition label, proliferative_resolved and the class-based response (§3.3)."""
    a, b = _classes(bl), _classes(fu)
    out: dict[str, Any] = {"class_transition": f"{_class_name(bl)} → {_class_name(fu)}"}
    prolif = {"III", "IV"}

    def result(resolved: Any, response: Any, reason: str | None) -> dict[str, Any]:
        return {**out, "proliferative_resolved": resolved, "class_response": response,
                "reason": reason}  # fmt: skip

    if a is None:
        return result(None, None, f"baseline class proposal {bl.class_proposal!r} is unknown")
    if not a & prolif:
        return result("not_applicable", "not_applicable", "baseline is not class III/IV")
    if b is None:
        return result(None, None, f"follow-up class proposal {fu.class_proposal!r} is unknown")
    if b & prolif:
        return result(False, False, None)
    alternative = parse_class(fu.class_alternative) or frozenset()
    if alternative & prolif:
        return result(None, None, f"follow-up would be class {fu.class_alternative} if its "
                      "unassessed glomeruli were involved")  # fmt: skip
    targets = {"I", "II"} | ({"V"} if include_pure_v else set())
    if not b:  # no LN lesion by LM: I, II or V is for IF/EM to say
        if include_pure_v:
            return result(True, True, None)
        return result(True, None, "proliferative lesions resolved; class I/II vs V needs IF/EM")
    return result(True, b <= targets, None)


# --------------------------------------------------------------------------------------------
# The result
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Check:
    """One §3.3 pre-condition: passed, failed (a reason for not_evaluable) or not checkable."""

    name: str
    status: str  # "pass" | "fail" | "not_checked"
    message: str

    def to_dict(self) -> dict[str, str]:
        return {"name": self.name, "status": self.status, "message": self.message}


@dataclass(frozen=True)
class ResponseResult:
    """The response endpoint of one baseline/follow-up pair under one preset.

    ``status`` is ``final`` only when both biopsies are pathologist-confirmed, ``provisional``
    when the endpoint was evaluated on machine proposals, and ``not_evaluable`` (with
    ``reasons``) when a pre-condition fails or the endpoint needs an incomplete index.
    """

    preset: str
    preset_description: str
    preset_source: str
    validated: bool
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

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (the response.json schema)."""
        from . import __version__

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
                "params": dict(self.params),
            },
            "endpoint": self.endpoint,
            "preconditions": [c.to_dict() for c in self.checks],
            "panel": self.panel,
            "deltas": self.deltas,
            "uncertainty": self.uncertainty,
            "caveats": list(self.caveats),
            "baseline": self.baseline.to_dict(),
            "followup": self.followup.to_dict(),
        }

    def to_json(self, indent: int = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, ensure_ascii=False)

    def to_html(self) -> str:
        """A self-contained HTML report."""
        from .response_report import render_html

        return render_html(self.to_dict())

    def _repr_html_(self) -> str:
        from .response_report import render_fragment

        return render_fragment(self.to_dict())


# --------------------------------------------------------------------------------------------
# Pre-conditions
# --------------------------------------------------------------------------------------------

_IGNORED_CONFIG_KEYS = frozenset({"response_preset"})


def _stains(stain: str) -> frozenset[str]:
    return frozenset(s.strip().lower() for s in re.split(r"[+,/;&]| and ", stain) if s.strip())


def check_preconditions(bl: BiopsySide, fu: BiopsySide, params: Mapping[str, Any]) -> list[Check]:
    """The §3.3 pre-conditions, each as a :class:`Check`."""
    checks: list[Check] = []

    def add(name: str, ok: bool | None, message: str) -> None:
        checks.append(
            Check(name, "not_checked" if ok is None else "pass" if ok else "fail", message)
        )

    if bl.patient_id and fu.patient_id:
        same = bl.patient_id == fu.patient_id
        add("same_patient", same, f"patient {bl.patient_id!r} vs {fu.patient_id!r}")
    else:
        add("same_patient", None, "patient id not recorded on both biopsies; not checked")

    if bl.biopsy_date and fu.biopsy_date:
        d0, d1 = bl.biopsy_date, fu.biopsy_date
        if d1 > d0:
            add("followup_after_baseline", True, f"{d0} → {d1} ({(d1 - d0).days} days)")
        elif d1 == d0:
            add("followup_after_baseline", False, f"both biopsies are dated {d0}")
        else:
            add(
                "followup_after_baseline",
                False,
                f"follow-up ({d1}) is dated before baseline ({d0}): refused, the two biopsies "
                "look swapped",
            )
    else:
        add("followup_after_baseline", None, "biopsy date not recorded on both; order not checked")

    accepted = {"adequate", "limited"} if params["accept_limited_adequacy"] else {"adequate"}
    for label, side in (("baseline", bl), ("follow-up", fu)):
        n = side.n_glomeruli
        add(
            f"{label.replace('-', '')}_adequate",
            side.adequacy_status in accepted,
            f"{label}: {side.adequacy_status or 'adequacy unknown'}"
            + ("" if n is None else f" ({n} glomeruli)"),
        )

    if bl.nih_version and fu.nih_version:
        add(
            "same_nih_version",
            bl.nih_version == fu.nih_version,
            f"{bl.nih_version} vs {fu.nih_version}",
        )
    else:
        add("same_nih_version", False, "nih_version missing; scores of unknown version refused")

    cfg_bl = {k: v for k, v in bl.config.items() if k not in _IGNORED_CONFIG_KEYS}
    cfg_fu = {k: v for k, v in fu.config.items() if k not in _IGNORED_CONFIG_KEYS}
    diff = sorted(k for k in set(cfg_bl) | set(cfg_fu) if cfg_bl.get(k) != cfg_fu.get(k))
    add(
        "same_scoring_config",
        not diff,
        "identical scoring configuration" if not diff else f"differs in {', '.join(diff)}",
    )

    if params["require_same_software_version"]:
        if bl.lnpath_version and fu.lnpath_version:
            add(
                "same_software_version",
                bl.lnpath_version == fu.lnpath_version,
                f"lnpath {bl.lnpath_version} vs {fu.lnpath_version}",
            )
        else:
            add("same_software_version", None, "software version not recorded on both")
    if bl.models is not None and fu.models is not None:
        add(
            "same_models",
            bl.models == fu.models,
            "same models"
            if bl.models == fu.models
            else f"models differ: {[m[0] for m in bl.models]} vs {[m[0] for m in fu.models]}",
        )

    if bl.stain and fu.stain:
        add(
            "comparable_stains", _stains(bl.stain) == _stains(fu.stain), f"{bl.stain} vs {fu.stain}"
        )
    else:
        add("comparable_stains", None, "stain not recorded on both biopsies; not checked")
    return checks


# --------------------------------------------------------------------------------------------
# compare()
# --------------------------------------------------------------------------------------------


def compare(
    baseline: Any, followup: Any, preset: str = "lnhr_default", **overrides: Any
) -> ResponseResult:
    """Compare a baseline and a follow-up biopsy under a named response preset.

    Args:
        baseline: the earlier biopsy: a ``BiopsyScore``, a ``SlideResult``, a result folder
            (or its result.json), or a dict in ``BiopsyScore.to_dict()`` / result.json form.
        followup: the repeat biopsy, in any of the same forms.
        preset: a name from :data:`PRESETS` (``lnpath compare --list-presets`` explains each).
        **overrides: thresholds replacing the preset's, by name (see :data:`DEFAULT_PARAMS`).

    Returns:
        The :class:`ResponseResult`; check ``status`` before reading ``endpoint``.

    Raises:
        InputError: unknown preset or threshold, or malformed scores.
        ResultError: a result folder is missing or malformed.
    """
    chosen = get_preset(preset)
    params = chosen.effective_params(overrides)
    bl, fu = load_side(baseline, "baseline"), load_side(followup, "follow-up")
    checks = check_preconditions(bl, fu, params)
    reasons = [f"{c.name}: {c.message}" for c in checks if c.status == "fail"]
    caveats = [READER_NOISE_CAVEAT]
    if not chosen.validated:
        caveats.insert(0, f"preset {chosen.name} is NOT VALIDATED: {chosen.description}")
    for side, label in ((bl, "baseline"), (fu, "follow-up")):
        if side.stain and not _stains(side.stain) & {"trichrome", "silver", "jones", "masson"}:
            caveats.append(
                f"{label} rests on {side.stain} alone; §3.3 asks for at least PAS and trichrome "
                "or silver, so fibrinoid necrosis and fibrosis calls carry more error"
            )

    panel: dict[str, dict[str, Any]] = {}
    deltas: dict[str, Any] = {}
    uncertainty: dict[str, Any] = {}
    if reasons:
        endpoint = _endpoint_record(chosen, None, None, "not evaluable: pre-conditions failed")
        status = "not_evaluable"
    else:
        deltas = _deltas(bl, fu)
        panel = _panel(bl, fu, params, chosen.endpoint)
        if panel.get("chronic_progression", {}).get("value") in {"possible", "progression"} or (
            params["progression_min_delta_ci"] < 2
        ):
            caveats.append("a CI rise of +1 counts here but lies within human reading error")
        rec = panel[chosen.endpoint]
        endpoint = _endpoint_record(chosen, rec.get("value"), rec.get("rule"), rec.get("reason"))
        if rec["evaluable"]:
            status = "final" if bl.confirmed and fu.confirmed else "provisional"
        else:
            status = "not_evaluable"
            reasons.append(f"{chosen.endpoint}: {rec['reason']}")
        uncertainty = _uncertainty(bl, fu, params, chosen.endpoint, panel)
    logger.info("compare %s vs %s under %s: %s", bl.source, fu.source, chosen.name, status)
    return ResponseResult(
        preset=chosen.name,
        preset_description=chosen.description,
        preset_source=chosen.source,
        validated=chosen.validated,
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
    )


def _endpoint_record(preset: Preset, value: Any, rule: str | None, reason: str | None) -> dict:
    return {
        "name": preset.endpoint,
        "value": value,
        "holds": _holds(preset.endpoint, value),
        "rule": rule,
        "basis": preset.source,
        "validated": preset.validated,
        "reason": reason,
    }


def _deltas(bl: BiopsySide, fu: BiopsySide) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, a, b in (
        ("activity_index", bl.activity, fu.activity),
        ("chronicity_index", bl.chronicity, fu.chronicity),
    ):
        comps = {}
        for name, ca in a.components.items():
            cb = b.components[name]
            both = ca.score is not None and cb.score is not None
            comps[name] = {
                "baseline": ca.score,
                "followup": cb.score,
                "delta_score": cb.score - ca.score if both else None,  # type: ignore[operator]
                "delta_weighted": (cb.weighted - ca.weighted) if both else None,  # type: ignore[operator]
            }
        total = None if a.total is None or b.total is None else b.total - a.total
        out[key] = {
            "baseline": a.total,
            "followup": b.total,
            "delta": total,
            "evaluable": total is not None,
            "reason": None if total is not None else _incomplete_reason(a, b),
            "components": comps,
        }
    return out


def _incomplete_reason(a: IndexScore, b: IndexScore) -> str:
    parts = []
    for label, idx in (("baseline", a), ("follow-up", b)):
        if not idx.complete:
            parts.append(f"{label} not assessed: {', '.join(idx.not_assessed) or 'total missing'}")
    return "incomplete index (" + "; ".join(parts) + ")"


def _panel(
    bl: BiopsySide, fu: BiopsySide, params: Mapping[str, Any], endpoint: str
) -> dict[str, dict]:
    totals = {
        "ai_bl": bl.activity.total,
        "ai_fu": fu.activity.total,
        "ci_bl": bl.chronicity.total,
        "ci_fu": fu.chronicity.total,
    }
    ai_reason = _incomplete_reason(bl.activity, fu.activity)
    ci_reason = _incomplete_reason(bl.chronicity, fu.chronicity)
    ai_ok = bl.activity.complete and fu.activity.complete
    ci_ok = bl.chronicity.complete and fu.chronicity.complete
    panel: dict[str, dict[str, Any]] = {}
    for name, rule in _rules(params).items():
        if name == "relative_response" and endpoint != name:
            continue  # not validated: shown only when asked for by name
        if name in _ACTIVITY_FIELDS and not ai_ok:
            panel[name] = _na(rule.rule, f"activity endpoints not evaluable: {ai_reason}")
        elif name in _CHRONICITY_FIELDS and not ci_ok:
            panel[name] = _na(rule.rule, f"not evaluable for chronicity: {ci_reason}")
        elif name == "composite_histologic_responder" and not (ai_ok and ci_ok):
            panel[name] = _composite_partial(rule.rule, ai_ok, totals, params, ai_reason, ci_reason)
        else:
            t = tuple(totals[v] for v in _VARS)
            value = rule.fn(t, params)  # type: ignore[arg-type]
            flags = []
            if name == "histologic_response" and value == "partial":
                flags.append("non-validated analogy")
            if name == "relative_response":
                flags.append("not validated")
            panel[name] = {
                "value": "not_applicable" if value is None else value,
                "evaluable": True,
                "rule": rule.rule,
                "reason": None,
                "flags": flags,
            }
    co = class_outcomes(bl, fu, params["class_response_includes_pure_v"])
    panel["class_transition"] = {
        "value": co["class_transition"],
        "evaluable": True,
        "rule": "baseline class → follow-up class (LM proposals)",
        "reason": None,
        "flags": [],
        "proliferative_resolved": co["proliferative_resolved"],
    }
    cr = co["class_response"]
    panel["class_response"] = {
        "value": cr,
        "evaluable": cr is not None,
        "rule": "III/IV(±V) → I/II"
        + (" or pure V" if params["class_response_includes_pure_v"] else ""),
        "reason": co["reason"],
        "flags": [],
        "proliferative_resolved": co["proliferative_resolved"],
    }
    return panel


def _na(rule: str, reason: str) -> dict[str, Any]:
    return {"value": None, "evaluable": False, "rule": rule, "reason": reason, "flags": []}


def _composite_partial(
    rule: str,
    ai_ok: bool,
    totals: Mapping[str, int | None],
    params: Mapping[str, Any],
    ai_reason: str,
    ci_reason: str,
) -> dict:
    # Kleene logic: a follow-up not in remission is not a responder whatever the chronicity.
    if ai_ok and totals["ai_fu"] is not None and totals["ai_fu"] > params["remission_max_ai"]:
        return {
            "value": False,
            "evaluable": True,
            "rule": rule,
            "flags": [],
            "reason": f"not in remission, so not a responder whatever the chronicity ({ci_reason})",
        }
    reason = (
        f"activity endpoints not evaluable: {ai_reason}"
        if not ai_ok
        else f"not evaluable for chronicity: {ci_reason}"
    )
    return _na(rule, reason)


# --------------------------------------------------------------------------------------------
# Uncertainty
# --------------------------------------------------------------------------------------------


def outcome_probabilities(
    name: str, params: Mapping[str, Any], dists: Mapping[str, tuple[float, ...] | None]
) -> dict[str, float] | None:
    """P(each value of a panel field) by exact summation over independent total distributions.

    Returns None when a distribution the field needs is missing.
    """
    rule = _rules(params)[name]
    needed = [dists.get(v) for v in rule.needs]
    if any(d is None for d in needed):
        return None
    fixed = dict.fromkeys(_VARS, 0)
    probs: dict[str, float] = {}
    supports = [np.flatnonzero(np.asarray(d) > 0) for d in needed]
    for combo in product(*supports):
        w = 1.0
        for d, k in zip(needed, combo, strict=True):
            w *= d[k]  # type: ignore[index]
        values = {**fixed, **dict(zip(rule.needs, (int(k) for k in combo), strict=True))}
        out = rule.fn(tuple(values[v] for v in _VARS), params)  # type: ignore[arg-type]
        key = "not_applicable" if out is None else str(out).lower()
        probs[key] = probs.get(key, 0.0) + w
    return {k: round(v, 12) for k, v in sorted(probs.items())}


def delta_distribution(p_bl: tuple[float, ...], p_fu: tuple[float, ...]) -> dict[str, Any]:
    """P(total_fu - total_bl = d) by convolution of the two independent distributions."""
    conv = np.convolve(np.asarray(p_fu), np.asarray(p_bl)[::-1])
    lo = -(len(p_bl) - 1)
    return {"min": lo, "max": len(p_fu) - 1, "p": [round(float(x), 12) for x in conv]}


def _uncertainty(
    bl: BiopsySide,
    fu: BiopsySide,
    params: Mapping[str, Any],
    endpoint: str,
    panel: Mapping[str, Mapping[str, Any]],
) -> dict[str, Any]:
    dists = {
        "ai_bl": bl.activity.distribution,
        "ai_fu": fu.activity.distribution,
        "ci_bl": bl.chronicity.distribution,
        "ci_fu": fu.chronicity.distribution,
    }
    out: dict[str, Any] = {"assumption": INDEPENDENCE_ASSUMPTION}
    probs: dict[str, Any] = {}
    for name in _rules(params):
        if panel.get(name, {}).get("evaluable"):
            probs[name] = outcome_probabilities(name, params, dists)
    out["outcome_probabilities"] = probs
    ep = probs.get(endpoint)
    if ep is None:
        out["endpoint_probability"] = None
        out["endpoint_probability_note"] = (
            "class-based endpoint: no distribution over classes is available"
            if endpoint == "class_response"
            else "the scores carry no AI/CI total distributions (no lesion probabilities), or "
            "the endpoint is not evaluable"
        )
    else:
        key = "progression" if endpoint == "chronic_progression" else "true"
        out["endpoint_probability"] = ep.get(key, 0.0)
    for key, a, b in (
        ("delta_ai", dists["ai_bl"], dists["ai_fu"]),
        ("delta_ci", dists["ci_bl"], dists["ci_fu"]),
    ):
        out[key] = None if a is None or b is None else delta_distribution(a, b)
    out["sampling"] = sampling_view(bl, fu, params, endpoint)
    out["band_edges"] = _band_edges(bl, fu)
    return out


def _endpoint_at(endpoint: str, t: list[int | None], params: Mapping[str, Any]) -> Any:
    totals: Totals = (t[0] or 0, t[1] or 0, t[2] or 0, t[3] or 0)
    return _rules(params)[endpoint].fn(totals, params)


def sampling_view(
    bl: BiopsySide, fu: BiopsySide, params: Mapping[str, Any], endpoint: str
) -> dict[str, Any]:
    """For each glomerular component, the glomeruli that would flip its band and the endpoint.

    See :data:`SAMPLING_ASSUMPTION`. Only components counted as n/N glomeruli take part; the
    endpoint is re-evaluated only when the totals it needs are complete.
    """
    rules = _rules(params)
    base: list[int | None] = [
        bl.activity.total,
        fu.activity.total,
        bl.chronicity.total,
        fu.chronicity.total,
    ]
    rule = rules.get(endpoint)
    evaluable = rule is not None and all(base[_VARS.index(v)] is not None for v in rule.needs)
    now = _endpoint_at(endpoint, base, params) if evaluable else None
    rows = []
    for side_i, side in ((0, bl), (1, fu)):
        for idx_off, index in ((0, side.activity), (2, side.chronicity)):
            for name, c in index.components.items():
                if name not in GLOMERULAR_COMPONENTS or c.score is None:
                    continue
                n, total = _count(c.n), _count(c.N)
                if n is None or total is None or total <= 0 or band(n, total) != c.score:
                    continue
                row: dict[str, Any] = {
                    "side": "baseline" if side_i == 0 else "follow-up",
                    "component": name,
                    "n": n,
                    "N": total,
                    "score": c.score,
                    "weight": c.weight,
                }
                for direction, step in (("up", 1), ("down", -1)):
                    k_band, k_flip, new_value = None, None, None
                    for k in range(1, (total - n if step > 0 else n) + 1):
                        s = band(n + step * k, total)
                        if s == c.score:
                            continue
                        if k_band is None:
                            k_band = k
                        if not evaluable:
                            break
                        t = list(base)
                        pos = idx_off + side_i
                        t[pos] = (t[pos] or 0) + (s - c.score) * c.weight
                        value = _endpoint_at(endpoint, t, params)
                        if value != now:
                            k_flip, new_value = k, value
                            break
                    row["more_to_next_band" if step > 0 else "fewer_to_lower_band"] = k_band
                    row[f"flip_{direction}"] = k_flip
                    row[f"flip_{direction}_value"] = new_value
                rows.append(row)
    flips = [
        (r[f"flip_{d}"], r, d) for r in rows for d in ("up", "down") if r[f"flip_{d}"] is not None
    ]
    k_min = min((f[0] for f in flips), default=None)
    return {
        "assumption": SAMPLING_ASSUMPTION,
        "endpoint": endpoint,
        "endpoint_value": now,
        "components": rows,
        "min_glomeruli_to_flip": k_min,
        "closest_flips": [
            {
                "side": r["side"],
                "component": r["component"],
                "direction": "more" if d == "up" else "fewer",
                "new_value": r[f"flip_{d}_value"],
            }
            for k, r, d in flips
            if k == k_min
        ],
    }


def _count(x: Any) -> int | None:
    if x is None or isinstance(x, bool):
        return None
    try:
        f = float(x)
    except (TypeError, ValueError):
        return None
    return int(f) if f.is_integer() else None


def _band_edges(bl: BiopsySide, fu: BiopsySide) -> list[dict[str, Any]]:
    """Components one glomerulus from a band edge; doubled AI components are flagged (§3.3)."""
    out = []
    for label, side in (("baseline", bl), ("follow-up", fu)):
        for index in (side.activity, side.chronicity):
            for name, c in index.components.items():
                given = side.component_uncertainty.get(name) or {}
                near = given.get("near_band_edge")
                n, total = _count(c.n), _count(c.N)
                if near is None and name in GLOMERULAR_COMPONENTS and n and total:
                    # An absent lesion is not flagged here: the sampling view covers 0 -> 1.
                    near = band(min(n + 1, total), total) != band(n, total) or band(
                        n - 1, total
                    ) != band(n, total)
                if near:
                    out.append(
                        {
                            "side": label,
                            "component": name,
                            "weight": c.weight,
                            "doubled": c.weight == 2,
                            "band_probabilities": given.get("band_probabilities"),
                        }
                    )
    return out
