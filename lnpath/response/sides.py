"""One biopsy of a baseline/follow-up pair, normalised from whatever form it arrived in.

``compare`` accepts a :class:`~lnpath.scoring.score.BiopsyScore`, a ``SlideResult``, a result
folder (or
its result.json) or a plain dict; all become one small typed :class:`BiopsySide`, so the rules
never depend on where a score came from. Malformed inputs are one-line errors naming the source.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

import numpy as np

from lnpath.core.dates import date_problem
from lnpath.core.errors import InputError
from lnpath.scoring.biopsy import normalise_biopsy, stains_examined
from lnpath.scoring.indices import ACTIVITY, CHRONICITY, Component

logger = logging.getLogger(__name__)

#: The components and weights come from the scoring floor, the one table of the index (spec §1.2).
AI_COMPONENTS: tuple[str, ...] = tuple(ACTIVITY)
CI_COMPONENTS: tuple[str, ...] = tuple(CHRONICITY)

_DEFAULT_WEIGHTS = {name: weight for name, (_, weight) in ACTIVITY.items() if weight != 1}

#: Components counted as n/N glomeruli; the band rule then maps a count change to a score change.
GLOMERULAR_COMPONENTS = frozenset(
    name for name, (columns, _) in {**ACTIVITY, **CHRONICITY}.items() if columns is not None
)

AI_MAX, CI_MAX = 24, 12


_CLASS_TOKEN = re.compile(r"\b(VI|IV|V|III|II|I)\b")


def parse_class(proposal: str | None) -> frozenset[str] | None:
    """The ISN/RPS classes named in a proposal ('IV+V' -> {IV, V}); None when it names none."""
    if not proposal:
        return None
    found = frozenset(_CLASS_TOKEN.findall(proposal.replace("+", " + ")))
    return found or None


def parse_alternatives(alternative: str | None) -> list[frozenset[str]]:
    """Each class an ``alternative`` names, apart: 'IV or VI' -> [{IV}, {VI}] ('IV+V' stays one)."""
    if not alternative:
        return []
    found = (parse_class(part) for part in alternative.split(" or "))
    return [f for f in found if f is not None]


def classes(side: BiopsySide) -> frozenset[str] | None:
    """Classes a side's proposal names; empty when light microscopy found no LN lesion, None when
    the class is not determinable (lesions not assessed) or unknown."""
    if not side.class_determined:
        return None
    found = parse_class(side.class_proposal)
    if found is None and side.class_proposal is None and side.class_label:
        return frozenset()  # every lesion assessed, and no LN lesion by light microscopy
    return found


def class_name(side: BiopsySide) -> str:
    if side.class_proposal:
        return side.class_proposal
    if not side.class_determined:
        return "not determinable" if side.class_label else "unknown"
    return "no LN lesion by LM" if side.class_label else "unknown"


def _determined(klass: Mapping[str, Any]) -> bool:
    """Whether a stored class is decided; results written before ``determined`` existed count
    as undetermined when no class was proposed and unassessed glomeruli could make it III/IV."""
    if "determined" in klass:
        return bool(klass["determined"])
    if klass.get("proposal"):
        return True
    label = str(klass.get("label") or "")
    return bool(label) and klass.get("alternative") is None and not label.startswith("Not ")


@dataclass(frozen=True)
class SideIndex:
    """One biopsy's activity or chronicity index as a comparison sees it (with its total's
    distribution); ``total`` is None when incomplete."""

    total: int | None
    maximum: int
    complete: bool
    not_assessed: tuple[str, ...]
    components: dict[str, Component]
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
    activity: SideIndex
    chronicity: SideIndex
    class_proposal: str | None
    class_label: str | None
    class_alternative: str | None
    class_determined: bool
    adequacy_status: str | None
    n_glomeruli: int | None
    nih_version: str | None
    lnpath_version: str | None
    config: dict[str, Any]
    status: str
    patient_id: str | None = None
    biopsy_date: date | None = None
    stain: str | None = None
    #: stains the pathologist recorded as examined (biopsy ``stains_examined``); None: not recorded
    stains_examined: frozenset[str] | None = None
    models: tuple[tuple[str, str], ...] | None = None
    confirmed_by: str | None = None
    slide_sha256: str | None = None
    seal_verified: bool | None = None
    seal_message: str | None = None
    component_uncertainty: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: components the pathologist marked not evaluable, with the reason (biopsy ``not_evaluable``)
    not_evaluable: dict[str, str] = field(default_factory=dict)

    @property
    def confirmed(self) -> bool:
        return self.status == "confirmed"

    @property
    def sealed(self) -> bool:
        """Confirmed, and the confirmation seal was checked and holds: what makes ``final``."""
        return self.confirmed and self.seal_verified is True

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "patient_id": self.patient_id,
            "biopsy_date": None if self.biopsy_date is None else self.biopsy_date.isoformat(),
            "stain": self.stain,
            "stains_examined": None
            if self.stains_examined is None
            else sorted(self.stains_examined),
            "status": self.status,
            "confirmed_by": self.confirmed_by,
            "slide_sha256": self.slide_sha256,
            "seal_verified": self.seal_verified,
            "seal_message": self.seal_message,
            "nih_version": self.nih_version,
            "lnpath_version": self.lnpath_version,
            "models": None if self.models is None else [list(m) for m in self.models],
            "config": self.config,
            "isn_rps_class": class_name(self),
            "adequacy": {"status": self.adequacy_status, "n_glomeruli": self.n_glomeruli},
            "activity_index": self.activity.to_dict(),
            "chronicity_index": self.chronicity.to_dict(),
            "not_evaluable": dict(self.not_evaluable),
        }


def load_side(obj: Any, label: str = "biopsy") -> BiopsySide:
    """Normalise a BiopsySide, a BiopsyScore or a score/result dict (pure: no folders, no seals).

    Result folders and :class:`~lnpath.results.folder.SlideResult` objects are read, and their
    confirmation seal verified, by :func:`lnpath.workflow.compare.load_folder_side`, one floor up.

    Args:
        obj: the biopsy; a dict with a ``"scores"`` key is read as a result.json, any other dict as
            ``BiopsyScore.to_dict()``.
        label: "baseline" or "follow-up", used in error messages.

    Raises:
        InputError: the object is of an unknown kind or its scores are malformed.
    """
    if isinstance(obj, BiopsySide):
        return obj
    if isinstance(obj, Mapping):
        data, source = dict(obj), f"{label} (dict)"
    elif callable(getattr(obj, "to_dict", None)):
        data, source = obj.to_dict(), f"{label} ({type(obj).__name__})"
        if not isinstance(data, Mapping):
            raise InputError(f"{source}: to_dict() did not return a mapping")
    else:
        raise InputError(
            f"{label}: expected a BiopsyScore, SlideResult, result folder or dict, "
            f"got {type(obj).__name__}"
        )
    if "scores" in data:
        return side_from_result(data, source, InputError)
    return _side_from_scores(data, source, InputError, meta={})


def side_from_result(data: Mapping[str, Any], source: str, error: type[Exception]) -> BiopsySide:
    scores = data.get("scores")
    if not isinstance(scores, Mapping):
        raise error(f"{source}: malformed result ('scores' is not an object)")
    status = data.get("status", scores.get("status"))
    confirmation = data.get("confirmation")
    confirmed_by = None
    if isinstance(confirmation, Mapping):
        confirmed_by = confirmation.get("pathologist") or None
    models = data.get("models")
    model_ids: tuple[tuple[str, str], ...] | None = None
    if isinstance(models, list):
        model_ids = tuple(sorted(_model_id(m) for m in models if isinstance(m, Mapping)))
    slide = data.get("slide")
    biopsy = data.get("biopsy")
    fingerprint = slide.get("fingerprint") if isinstance(slide, Mapping) else None
    meta = {
        "slide_sha256": fingerprint.get("sha256") if isinstance(fingerprint, Mapping) else None,
        "status": status,
        "patient_id": data.get("patient_id"),
        "biopsy_date": data.get("biopsy_date"),
        "stain": data.get("stain"),
        "stains_examined": _examined(biopsy, source, error),
        "models": model_ids,
        "confirmed_by": confirmed_by,
        "lnpath_version": data.get("lnpath_version"),
        "class_override": data.get("class_override"),
        "not_evaluable": biopsy.get("not_evaluable") if isinstance(biopsy, Mapping) else None,
    }
    return _side_from_scores(scores, source, error, meta)


def _examined(biopsy: Any, source: str, error: type[Exception]) -> frozenset[str] | None:
    """The recorded stain panel of a result's biopsy section, checked as sign-out checks it."""
    if not isinstance(biopsy, Mapping) or biopsy.get("stains_examined") is None:
        return None
    try:
        panel = normalise_biopsy(
            {"stains_examined": biopsy["stains_examined"]}, f"{source}: biopsy"
        )
    except InputError as exc:
        raise error(str(exc)) from None
    return stains_examined(panel)


def _model_id(model: Mapping[str, Any]) -> tuple[str, str]:
    """(name, sha256) of a model; outlines read from a per-biopsy annotation file are an input,
    not a model, so only their kind takes part in the comparison."""
    name = str(model.get("name"))
    if name.startswith("annotations:"):
        return ("annotations", "per-biopsy outlines")
    return (name, str(model.get("sha256")))


def _side_from_scores(
    scores: Mapping[str, Any], source: str, error: type[Exception], meta: Mapping[str, Any]
) -> BiopsySide:
    try:
        activity = _index(scores["activity_index"], AI_COMPONENTS, AI_MAX, "activity_index")
        chronicity = _index(scores["chronicity_index"], CI_COMPONENTS, CI_MAX, "chronicity_index")
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
    override = meta.get("class_override")
    if isinstance(override, Mapping) and override.get("class"):
        # the class the pathologist set (with a reason) is the biopsy's class
        klass = {"proposal": override["class"], "label": f"{override['class']} (pathologist)"}
    status = meta.get("status") or scores.get("status") or "provisional"
    if status not in {"provisional", "confirmed"}:
        raise error(f"{source}: unknown status {status!r} (expected provisional or confirmed)")
    if status == "confirmed" and not meta.get("confirmed_by"):
        # Only a result naming its confirming pathologist can make an endpoint final.
        logger.warning("%s: status 'confirmed' without a confirming pathologist", source)
        status = "provisional"
    lnpath_version = meta.get("lnpath_version") or scores.get("lnpath_version")
    return BiopsySide(
        source=source,
        activity=activity,
        chronicity=chronicity,
        class_proposal=_opt_str(klass.get("proposal")),
        class_label=_opt_str(klass.get("label")),
        class_alternative=_opt_str(klass.get("alternative")),
        class_determined=_determined(klass),
        adequacy_status=adequacy.get("status"),
        n_glomeruli=adequacy.get("n_glomeruli"),
        nih_version=scores.get("nih_version"),
        lnpath_version=lnpath_version,
        config=dict(scores.get("config") or {}),
        status=status,
        patient_id=_opt_str(meta.get("patient_id")),
        biopsy_date=_parse_date(meta.get("biopsy_date"), source, error),
        stain=_opt_str(meta.get("stain")),
        stains_examined=meta.get("stains_examined"),
        models=meta.get("models"),
        confirmed_by=meta.get("confirmed_by"),
        slide_sha256=_opt_str(meta.get("slide_sha256")),
        component_uncertainty=dict(uncertainty.get("components") or {}),
        not_evaluable={str(k): str(v) for k, v in (meta.get("not_evaluable") or {}).items()},
    )


def _whole(value: Any, maximum: int) -> bool:
    """A grade or total as JSON holds one: a whole number in 0..maximum (not NaN, not "2")."""
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and int(value) == value
        and 0 <= value <= maximum
    )


def _index(d: Any, names: tuple[str, ...], maximum: int, key: str) -> SideIndex:
    """One index read from its record; each malformed part is named in a plain sentence, never
    as the Python error it would raise further in."""
    if not isinstance(d, Mapping):
        raise ValueError(f"{key} is {d!r}, not an index record")
    raw = d["components"]
    if not isinstance(raw, Mapping):
        raise ValueError(f"{key}.components is {raw!r}, not a record of components")
    components: dict[str, Component] = {}
    for name in names:
        c = raw.get(name) or {}
        if not isinstance(c, Mapping):
            raise ValueError(f"{key}.{name} is {c!r}, not a component record")
        score = c.get("score") if c.get("assessed", c.get("score") is not None) else None
        if score is not None and not _whole(score, 3):
            raise ValueError(f"{key}.{name}.score={score!r} is not 0..3")
        rng = c.get("score_range") if score is None else None
        if rng is not None and (
            not isinstance(rng, list)
            or len(rng) != 2
            or not all(_whole(v, 3) for v in rng)
            or rng[0] > rng[1]
        ):
            raise ValueError(f"{key}.{name}.score_range={rng!r} is not [low, high] in 0..3")
        components[name] = Component(
            name=name,
            weight=int(c.get("weight") or _DEFAULT_WEIGHTS.get(name, 1)),
            assessed=score is not None,
            score=None if score is None else int(score),
            n=c.get("n"),
            N=c.get("N"),
            fraction=c.get("fraction"),
            score_range=None if rng is None else (int(rng[0]), int(rng[1])),
        )
    total = d.get("total")
    complete = bool(d.get("complete", total is not None)) and total is not None
    missing = tuple(d.get("not_assessed") or (n for n, c in components.items() if not c.assessed))
    if complete and missing:
        raise ValueError(f"{key} is marked complete but {', '.join(missing)} not assessed")
    if total is not None and not _whole(total, maximum):
        raise ValueError(f"{key}.total={total!r} is not 0..{maximum}")
    return SideIndex(
        total=int(total) if complete and total is not None else None,
        maximum=maximum,
        complete=complete,
        not_assessed=missing,
        components=components,
    )


def _with_distribution(
    index: SideIndex,
    uncertainty: Mapping[str, Any],
    key: str,
    source: str,
    error: type[Exception],
) -> SideIndex:
    dist = (uncertainty.get(key) or {}).get("distribution")
    if dist is None or not index.complete:
        return index
    p = np.asarray(dist, dtype=float)
    if p.ndim != 1 or len(p) != index.maximum + 1 or (p < -1e-12).any():
        raise error(f"{source}: uncertainty.{key}.distribution must be {index.maximum + 1} p >= 0")
    if abs(p.sum() - 1.0) > 1e-6:
        raise error(f"{source}: uncertainty.{key}.distribution sums to {p.sum():.6g}, not 1")
    p = np.clip(p, 0.0, None)
    return SideIndex(**{**index.__dict__, "distribution": tuple(float(x) for x in p / p.sum())})


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
        raise error(f"{source}: biopsy_date {date_problem(value)}") from None


def as_count(x: Any) -> int | None:
    if x is None or isinstance(x, bool):
        return None
    try:
        f = float(x)
    except (TypeError, ValueError):
        return None
    return int(f) if f.is_integer() else None
