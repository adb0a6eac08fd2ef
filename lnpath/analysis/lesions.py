"""Lesion callers: turn glomerulus polygons into the findings table that scoring consumes.

Two implementations of :class:`LesionCaller`:

* :class:`MorphometryCaller` (default): transparent rules on the measurements of
  :mod:`lnpath.analysis.measure`. It calls only global sclerosis, segmental sclerosis and
  endocapillary
  hypercellularity; every other lesion is ``<NA>`` (not assessed, pending the pathologist's review),
  because no public data labels them and an unvalidated call must not look validated.
* :class:`TrainedLesionCaller`: a lab's own CNN (``lnpath train-lesions``) for the lesions in its
  model card, with Platt-calibrated ``p_<lesion>``; lesions outside the card stay ``<NA>``.

A lab can also calibrate the morphometry itself on its own labels (``lnpath train-lesions --method
morphometry``, :mod:`lnpath.training.calibration`); :func:`load_lesion_model` picks the right caller
for a model folder.

Evaluation of the morphometry global-sclerosis call (``python scripts/eval_sclerosis.py``; eval-only
sets read in place, thresholds fixed beforehand and not tuned on them), lnpath 0.1.0:

* CMIL PAS crops (72; 42 sclerotic; mask = inscribed ellipse, µm/px assumed 0.25): sensitivity
  0.33, specificity 1.00, Cohen's κ 0.29; the continuous sclerosed fraction ranks them with
  AUC 0.79.
* bupt PAS glomeruli, ``gs`` vs ``gn`` (9 vs 2): sensitivity 0.00, specificity 1.00, κ 0.00; the
  fraction's AUC is 0.94. PASM and Masson: AUC < 0.5, hence no calls on those stains.

So the rule is specific but insensitive: the a-priori 0.5 cut on this measurement misses most
globally sclerosed glomeruli. It does *not* reach the κ ≥ 0.8 of human readers; treat its
negative calls as unreviewed, or calibrate the morphometry (``lnpath train-lesions --method
morphometry``) / train a model on the lab's own labelled PAS glomeruli.

A lab calibration's figures are the lab's own (the command prints them, cross-validated on its
labels): nothing is fitted or cross-validated on the eval-only sets above, which carry no licence
for it, so no figure for it is quoted here.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import pandas as pd
from skimage import transform

from lnpath.analysis.cortex import normalise_stain
from lnpath.analysis.measure import (
    DEFAULT_MPP,
    MEASUREMENTS,
    measure_glomeruli,
)
from lnpath.core.errors import ModelError
from lnpath.core.findings import LESIONS
from lnpath.wsi.slide import check_mpp

log = logging.getLogger(__name__)

#: stains on which the morphometry rules make calls (see :class:`MorphometryCaller`)
CALL_STAINS = ("PAS",)


def warn_not_called(slide: Any, stain: str) -> None:
    """Log that the morphometry calls are left not assessed on a stain they are not defined for."""
    log.warning(
        "%s: morphometry lesion calls are defined for PAS only; on %s they are left "
        "not assessed (measurements are kept)",
        getattr(slide, "path", "slide"),
        stain,
    )


@runtime_checkable
class LesionCaller(Protocol):
    """Anything that turns glomeruli of a slide into a findings table.

    The table has one row per glomerulus: ``glomerulus_id``, the nine lesion columns of
    :data:`lnpath.core.findings.LESIONS` as nullable ``"boolean"`` (``<NA>`` = not assessed),
    optional
    ``p_<lesion>`` and ``m_<measurement>`` floats, and ``source``.
    """

    source: str

    def call(self, glomeruli: Any, slide: Any) -> pd.DataFrame:
        """Findings table for ``glomeruli`` (level-0 polygons) of ``slide``."""
        ...


def empty_findings(ids: Sequence[Any], source: str) -> pd.DataFrame:
    """A findings table with every lesion ``<NA>`` (not assessed)."""
    table = pd.DataFrame({"glomerulus_id": list(ids)})
    for name in LESIONS:
        table[name] = pd.array([pd.NA] * len(table), dtype="boolean")
    table["source"] = source
    return table


@dataclass(frozen=True)
class MorphometryThresholds:
    """Documented decision rules of :class:`MorphometryCaller` (none fitted to labelled pixels).

    Attributes:
        global_sclerosis: sclerosed tuft fraction above which a glomerulus is globally sclerosed;
            0.5 is the ISN/RPS 2003 rule ("global: >50 % of the tuft").
        segmental_min: lower bound of a segmental call (fraction in (segmental_min, global]); a
            noise floor above the highest fraction measured on the 19 glomeruli of the licensed
            Bueno PAS *train* split (0.32, a glomerulus cut by the tile edge; the others <= 0.25),
            which show no sclerosis.
        endocapillary_nuclei_per_1000um2: tuft nuclear density for endocapillary hypercellularity;
            2.2 times the median of those reference glomeruli (≈2.5 per 1000 µm²) and above their
            maximum (5.0): the "more cells than normal" reading.
        endocapillary_max_lumen: open-lumen fraction below which lumina count as narrowed (the
            reference glomeruli have 0.05-0.38, median ≈0.21).
    """

    global_sclerosis: float = 0.5
    segmental_min: float = 0.35
    endocapillary_nuclei_per_1000um2: float = 5.5
    endocapillary_max_lumen: float = 0.1


def calls_from_measurements(
    measurements: pd.DataFrame,
    thresholds: MorphometryThresholds | None = None,
    source: str = "morphometry",
) -> pd.DataFrame:
    """Apply :class:`MorphometryThresholds` to a :func:`~lnpath.analysis.measure.measure_glomeruli`
    table.

    A glomerulus with missing measurements gets ``<NA>`` calls. No ``p_`` columns are emitted:
    there are no licensed sclerosis or hypercellularity labels with pixels to calibrate a
    probability on, and a rule's distance to its threshold is not a probability.
    """
    t = thresholds or MorphometryThresholds()
    table = empty_findings(measurements["glomerulus_id"].tolist(), source)
    valid = measurements["m_sclerosed_fraction"].notna().to_numpy()
    scl = measurements["m_sclerosed_fraction"].to_numpy(dtype=float)
    dens = measurements["m_nuclei_per_1000um2"].to_numpy(dtype=float)
    lumen = measurements["m_lumen_fraction"].to_numpy(dtype=float)
    with np.errstate(invalid="ignore"):
        global_ = scl > t.global_sclerosis
        calls = {
            "global_sclerosis": global_,
            "segmental_sclerosis": (scl > t.segmental_min) & ~global_,
            "endocapillary_hypercellularity": (dens >= t.endocapillary_nuclei_per_1000um2)
            & (lumen < t.endocapillary_max_lumen)
            & ~global_,
        }
    for name, values in calls.items():
        table[name] = pd.array(
            [bool(v) if ok else pd.NA for v, ok in zip(values, valid, strict=True)],
            dtype="boolean",
        )
    for col in MEASUREMENTS:
        table[col] = measurements[col].to_numpy(dtype=float)
    return table


class MorphometryCaller:
    """Rule-based calls from interpretable measurements (the default caller).

    The pixel classes behind the rules (PAS-magenta matrix, haematoxylin nuclei, open lumina) are
    defined for PAS. On other stains the measurements are still reported, but the calls are
    ``<NA>`` (not assessed): on the PASM and Masson glomeruli of the eval-only bupt set the
    sclerosed fraction ranked sclerosed glomeruli *below* normal ones (AUC < 0.5), because silver
    and trichrome colour sclerotic matrix unlike PAS.

    Args:
        thresholds: decision rules; the defaults are documented in :class:`MorphometryThresholds`.
        mpp: working resolution of the measurements (µm/px).
        stain: the section's stain (``PAS|HE|trichrome|sirius_red|silver``); calls only on PAS.
    """

    source = "morphometry"

    def __init__(
        self,
        thresholds: MorphometryThresholds | None = None,
        mpp: float = DEFAULT_MPP,
        stain: str = "PAS",
    ) -> None:

        self.thresholds = thresholds or MorphometryThresholds()
        self.mpp = check_mpp(mpp, "MorphometryCaller: mpp")
        self.stain = normalise_stain(stain)

    def describe(self) -> dict[str, Any]:
        """The rules and their thresholds, for result provenance."""
        return {
            "source": self.source,
            "mpp": self.mpp,
            "stain": self.stain,
            "calls": self.stain in CALL_STAINS,
            "thresholds": asdict(self.thresholds),
        }

    def call(self, glomeruli: Any, slide: Any, progress: bool | None = None) -> pd.DataFrame:
        """Measure every glomerulus and apply the rules (see :func:`calls_from_measurements`)."""
        measurements = measure_glomeruli(glomeruli, slide, mpp=self.mpp, progress=progress)
        table = calls_from_measurements(measurements, self.thresholds, self.source)
        if self.stain not in CALL_STAINS:
            warn_not_called(slide, self.stain)
            for name in LESIONS:
                table[name] = pd.array([pd.NA] * len(table), dtype="boolean")
        return table


def require_label_set(
    card_path: Path, labels: Sequence[str], expected: Sequence[str] | None
) -> None:
    """Refuse a lesion model whose labels differ from the configured ones (none silently dropped).

    Raises:
        ModelError: ``expected`` is given and is not the same set as ``labels``.
    """
    if expected is not None and set(expected) != set(labels):
        raise ModelError(
            f"{card_path}: model labels {sorted(labels)} differ from the configured "
            f"{sorted(expected)}"
        )


def square_crop(rgb: np.ndarray, size: int) -> np.ndarray:
    """Resize a crop to ``size`` x ``size`` uint8 RGB (anti-aliased; the aspect is not kept)."""
    out = transform.resize(np.asarray(rgb)[..., :3], (size, size), anti_aliasing=True)
    return np.clip(out * 255.0 + 0.5, 0, 255).astype(np.uint8)
