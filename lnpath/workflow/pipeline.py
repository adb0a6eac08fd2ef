"""Score a whole slide end to end and keep the result as a reviewable folder.

``score_slide`` chains the library's steps (open → segment glomeruli → call lesions → measure cortex
→ score) and writes everything a pathologist needs to check the machine's proposal into one result
folder (its format: :mod:`lnpath.results.folder`), atomically: an interrupted run never leaves a
half-written result.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import os
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

import pandas as pd

from lnpath import __version__
from lnpath.analysis.cortex import DEFAULT_CORTEX_MPP, measure_cortex
from lnpath.analysis.glomeruli import Glomeruli
from lnpath.analysis.lesions import MorphometryCaller
from lnpath.core.args import check_flag
from lnpath.core.dates import date_problem
from lnpath.core.errors import InputError
from lnpath.core.progress import progress_scope
from lnpath.core.text import check_patient_id
from lnpath.core.vocabulary import main_call
from lnpath.io.atomic import check_output_dir
from lnpath.io.configfile import load_biopsy, load_config
from lnpath.io.hashing import file_sha256
from lnpath.report.assets import Assets
from lnpath.results.edits import beyond_slide
from lnpath.results.folder import (
    SCHEMA_VERSION,
    ResultContent,
    SlideResult,
    feature_id,
    json_safe,
    json_value,
    write_result,
)
from lnpath.results.integrity import recover, result_lock
from lnpath.results.supersede import refuse_confirmed, supersede_result
from lnpath.scoring.biopsy import class_inputs
from lnpath.scoring.score import score_findings
from lnpath.workflow.options import ScoreOptions
from lnpath.wsi.kept_pixels import KeptPixels
from lnpath.wsi.slide import SNAP_TOLERANCE, Slide, coarse_scan, open_slide, slide_file
from lnpath.wsi.tissue import detect_tissue

LOG = logging.getLogger(__name__)

SEGMENTATION_MODEL = "glomeruli-unet-pas"
STAGES = ("open", "segment", "lesions", "cortex", "score", "write")

StageCallback = Callable[[str, bool], None]


def default_output(slide_path: Path) -> Path:
    """``./lnpath-result-<slide stem>`` in the working directory."""
    return Path.cwd() / f"lnpath-result-{slide_path.stem}"


def _parse_date(value: str | dt.date | None) -> str | None:
    """An ISO biopsy date, refusing one in the future (a typo that would reorder the cohort)."""
    if value is None:
        return None
    try:
        date = value if isinstance(value, dt.date) else dt.date.fromisoformat(str(value))
    except ValueError:
        raise InputError(f"biopsy date {date_problem(value)}") from None
    if date > dt.date.today():
        raise InputError(f"biopsy date {date.isoformat()} is in the future")
    return date.isoformat()


def lesion_caller(name: str | None, stain: str = "PAS", device: str = "auto") -> Any:
    """The lesion caller a result was (or will be) scored with: rules, or a model folder.

    The rules (default or lab-calibrated) are stain-specific (they call only where their
    measurements hold), so the stain of the section travels with them; a model folder's card says
    which kind of caller it needs (:func:`lnpath.analysis.lesions.load_lesion_model`).
    """

    if name is None:
        return MorphometryCaller(stain=stain)
    from lnpath.analysis.lesion_models import load_lesion_model  # torch, for a model folder only

    return load_lesion_model(name, stain=stain, device=device)


def _model_info(obj: Any, fallback: str) -> dict[str, Any]:
    """Name and sha256 of a model (or caller), plus its settings when it can describe them."""
    model = getattr(obj, "model", obj)
    info: dict[str, Any] = {
        "name": str(getattr(model, "name", None) or fallback),
        "sha256": getattr(model, "sha256", None),
    }
    if callable(getattr(obj, "describe", None)):
        info["settings"] = json_safe(obj.describe())
    card = getattr(obj, "card", None)
    if isinstance(card, dict):  # a trained model: its figures travel with the calls it makes
        from lnpath.analysis.lesion_models import validation_summary

        info["validation"] = json_safe(validation_summary(card))
    return info


MIN_OUTLINE_UM2 = 200.0
"""Smallest outline taken as a glomerulus (a 16 µm disc): even a tangential cut of a small
glomerulus is larger; below it is a speck, or coordinates that are not level-0 pixels."""


def _check_outlines_on_slide(outlines: Any, dimensions: tuple[int, int], where: str) -> None:
    """Refuse outlines that cannot be glomeruli of this slide: beyond it (another slide's) or
    smaller than any glomerulus (specks, degrees of longitude), which would count as glomeruli.

    Raises:
        InputError: naming the first such glomerulus.
    """

    for g in outlines:
        if not g.area_um2 >= MIN_OUTLINE_UM2:
            raise InputError(
                f"{where}: glomerulus {g.id} has an area of {g.area_um2:.3g} µm², below the "
                f"{MIN_OUTLINE_UM2:g} µm² of the smallest glomerulus profile (a speck, or "
                "coordinates that are not level-0 pixels of this slide?)"
            )
        if beyond_slide(g.polygon, dimensions):
            width, height = dimensions
            raise InputError(
                f"{where}: glomerulus {g.id} lies outside this slide ({width}x{height} px); "
                "are the outlines from another slide?"
            )


def findings_table(glomeruli: Any, calls: pd.DataFrame, slide_sha256: str) -> pd.DataFrame:
    """Join the caller's findings with the outlines' geometry, one row per glomerulus."""
    geometry = pd.DataFrame(
        {
            "glomerulus_id": [g.id for g in glomeruli],
            "x": [round(g.centroid[0], 1) for g in glomeruli],
            "y": [round(g.centroid[1], 1) for g in glomeruli],
            "area_um2": [round(g.area_um2, 1) for g in glomeruli],
            "probability": [round(g.probability, 4) for g in glomeruli],
        }
    )
    table = geometry.merge(calls, on="glomerulus_id", how="left", validate="one_to_one")
    table.insert(1, "feature_id", [feature_id(slide_sha256, int(g)) for g in table.glomerulus_id])
    table.insert(2, "main_call", [main_call(r) for r in table.to_dict("records")])
    return table


@contextmanager
def _stage(name: str, timings: dict[str, float], on_stage: StageCallback | None) -> Iterator[None]:
    if on_stage:
        on_stage(name, False)
    start = time.perf_counter()
    yield
    timings[name] = round(time.perf_counter() - start, 3)
    LOG.info("%s: %.1f s", name, timings[name])
    if on_stage:
        on_stage(name, True)


def score_slide(
    path: str | os.PathLike[str] | Slide,
    out: str | Path | None = None,
    options: ScoreOptions | None = None,
    *,
    mpp: float | None = None,
    patient_id: str | None = None,
    biopsy_date: str | dt.date | None = None,
    glomeruli: str | Path | Glomeruli | None = None,
    biopsy: str | Path | Mapping[str, Any] | None = None,
    supersede: bool = False,
    on_stage: StageCallback | None = None,
    **option_values: Any,
) -> SlideResult:
    """Score one biopsy slide and write its result folder.

    Args:
        path: the slide (any format :func:`lnpath.open_slide` reads), or an open Slide (its
            file, and the µm/px given to ``open_slide``, unless ``mpp`` is given here).
        out: result folder; default ``./lnpath-result-<slide stem>``.
        options: how to score (:class:`ScoreOptions`, shared with :func:`lnpath.score_batch`);
            its fields may also be given as keywords (``stain="PAS"``, ``device="cuda"``, ...).
        mpp: level-0 µm/px, required only when the file does not carry it.
        patient_id: printed on the report (escaped); never used for anything else.
        biopsy_date: ISO date of the biopsy.
        glomeruli: outlines to score instead of segmenting: a QuPath GeoJSON (level-0 px), e.g.
            a pathologist's own annotations, or the :class:`~lnpath.Glomeruli` that
            :func:`lnpath.segment_glomeruli` returned for this slide (not segmented twice; its
            model and run are recorded as if score_slide had segmented).
        biopsy: biopsy-level findings the section cannot show (IF/EM, vessels, "not evaluable"
            marks): a YAML/JSON file or a mapping (layout in :mod:`lnpath.scoring.biopsy`); the
            class rules read its IF/EM part.
        on_stage: called as ``on_stage(stage, done)`` at the start and end of each stage.
        supersede: with ``overwrite``, move a *confirmed* result aside to
            ``<out>.superseded-<time>`` (kept whole and verifiable; recorded in the new result)
            instead of refusing it. A confirmed result is never replaced otherwise.

    Returns:
        The :class:`SlideResult`, status ``provisional``.

    Raises:
        SlideError, InputError, ModelError: the slide, an option or a model is unusable.
    """
    opts = ScoreOptions.build(options, **option_values)
    check_patient_id(patient_id, "score_slide")
    supersede = check_flag(supersede, "score_slide: supersede")
    path, mpp = slide_file(path, mpp, "score_slide")
    if out is not None and not isinstance(out, str | os.PathLike):
        raise InputError(f"score_slide: out must be a folder path (got {type(out).__name__})")
    if on_stage is not None and not callable(on_stage):  # it failed with the result's lock held
        raise InputError(f"score_slide: on_stage must be callable (got {type(on_stage).__name__})")
    target = Path(os.path.realpath(out if out is not None else default_output(path)))
    check_output_dir(target, opts.overwrite, marker="result.json")  # before taking its lock there
    # every input is read before the lock file (and the folders above it) is created, so a typo
    # in a date, a file or the slide leaves nothing behind
    inputs = _read_inputs(path, opts, mpp, biopsy_date, biopsy, glomeruli)
    with inputs.slide, result_lock(target):  # one writer per result, for the whole run
        recover(target)
        confirmed = refuse_confirmed(target, supersede) if opts.overwrite else None
        check_output_dir(target, opts.overwrite, marker="result.json")
        return _score_slide(path, target, opts, inputs, patient_id, on_stage, confirmed)


class _Inputs(NamedTuple):
    """What :func:`score_slide` reads before it takes the result's lock."""

    date: str | None
    config: Any
    biopsy: dict[str, Any]
    caller: Any
    slide: Slide
    glomeruli: Glomeruli | None
    """Outlines to score instead of segmenting (a GeoJSON file already read)."""
    source: dict[str, Any] | None
    """Where ``glomeruli`` came from, for a GeoJSON file."""
    tissue: Any
    """The slide's tissue mask: a slide with none is refused before anything is written."""
    tissue_s: float


def _read_inputs(
    path: Path,
    opts: ScoreOptions,
    mpp: float | None,
    biopsy_date: str | dt.date | None,
    biopsy: str | Path | Mapping[str, Any] | None,
    glomeruli: str | Path | Glomeruli | None,
) -> _Inputs:
    """Every input of a run, validated; the slide is opened (not hashed: that waits for the
    lock, so a busy or confirmed result is refused without reading the whole file)."""
    date = _parse_date(biopsy_date)
    cfg = load_config(opts.config)
    stated = load_biopsy(biopsy)
    caller = lesion_caller(opts.lesion_model, stain=opts.stain, device=opts.device)  # fail now
    if glomeruli is None:  # --device cuda without one: refused before the lock file is made
        from lnpath.nn.predict import resolve_device

        resolve_device(opts.device)
    slide = open_slide(path, mpp=mpp)
    try:
        started = time.perf_counter()
        tissue = detect_tissue(slide)
        if not tissue.mask.any():
            raise InputError(
                f"{slide.path}: no tissue found on the slide (blank glass or not a tissue section)"
            )
        tissue_s = time.perf_counter() - started
        if glomeruli is None or isinstance(glomeruli, Glomeruli):
            return _Inputs(date, cfg, stated, caller, slide, glomeruli, None, tissue, tissue_s)
        outlines = Glomeruli.from_geojson(glomeruli, slide.mpp)
        _check_outlines_on_slide(outlines, slide.dimensions, Path(glomeruli).name)
        source = {
            "name": f"annotations:{Path(glomeruli).name}",
            "sha256": file_sha256(Path(glomeruli)),
        }
    except BaseException:
        slide.close()
        raise
    return _Inputs(date, cfg, stated, caller, slide, outlines, source, tissue, tissue_s)


def _score_slide(
    path: Path,
    target: Path,
    opts: ScoreOptions,
    inputs: _Inputs,
    patient_id: str | None,
    on_stage: StageCallback | None,
    confirmed: dict[str, Any] | None,
) -> SlideResult:
    """The stages of :func:`score_slide`, run while it holds the result's lock."""
    date, cfg, stated, caller, slide = inputs[:5]
    warnings: list[str] = []
    if opts.stain != "PAS":
        warnings.append(
            f"the shipped models were trained on PAS; results on {opts.stain} are less reliable"
        )
        LOG.warning("%s", warnings[-1])
    timings: dict[str, float] = {}
    started = time.perf_counter() - inputs.tissue_s
    with _stage("open", timings, on_stage):
        fingerprint = slide.fingerprint()
    timings["open"] = round(timings["open"] + inputs.tissue_s, 3)  # tissue found before the lock
    # segmentation's 1 µm/px tiles, cut out again by the cortex instead of decoded again
    kept = KeptPixels(slide, DEFAULT_CORTEX_MPP)
    if slide.mpp > DEFAULT_CORTEX_MPP * (1.0 + SNAP_TOLERANCE):
        warnings.append(coarse_scan(slide.mpp, DEFAULT_CORTEX_MPP))
    with _stage("segment", timings, on_stage):
        outlines, outline_source, tissue = _find_glomeruli(slide, inputs, opts, warnings, kept)
    with _stage("lesions", timings, on_stage), progress_scope(opts.progress):
        calls = caller.call(outlines, slide)
        findings = findings_table(outlines, calls, fingerprint["sha256"])
    with _stage("cortex", timings, on_stage):
        cortex = measure_cortex(
            slide, outlines, stain=opts.stain, progress=opts.progress, tissue=tissue, kept=kept
        )
        kept.clear()
        fractions = cortex.fractions()
    with _stage("score", timings, on_stage):
        score = score_findings(calls, cortex=fractions, config=cfg, biopsy=class_inputs(stated))
    with _stage("write", timings, on_stage):
        polygons = {g.id: g.polygon for g in outlines}
        assets = Assets.from_slide(slide, polygons)
        timings["total"] = round(time.perf_counter() - started, 3)
        result: dict[str, Any] = {
            "schema_version": SCHEMA_VERSION,
            "status": "provisional",
            "revision": 1,
            "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "slide": _slide_record(slide, path, fingerprint),
            "stain": opts.stain,
            "patient_id": patient_id,
            "biopsy_date": date,
            "lnpath_version": __version__,
            "models": [outline_source, _model_info(caller, type(caller).__name__)],
            "lesion_model": opts.lesion_model,
            "config": score.to_dict()["config"],
            "timings": timings,
            "scores": score.to_dict(),
            "cortex": cortex.to_dict(),
            "cortex_fractions": {k: json_value(v) for k, v in fractions.items()},
            "confirmation": None,
            "changes": [],
            "warnings": warnings,
            "biopsy": stated,
        }
        event: dict[str, Any] = {
            "event": "scored",
            "at": result["created_at"],
            "by": f"lnpath {__version__}",
        }
        move_aside = None
        if confirmed is not None:  # moved aside by the write, once the new result is complete
            supersession = supersede_result(target, confirmed)
            result["supersedes"] = event["supersedes"] = supersession.record
            move_aside = supersession.move_aside
        content = ResultContent(findings, polygons, assets)
        write_result(
            target, result, event, content, overwrite=opts.overwrite, move_aside=move_aside
        )
        slide.close()
    LOG.info("result written to %s", target)
    return SlideResult.load(target)


def _find_glomeruli(
    slide: Any,
    inputs: _Inputs,
    opts: ScoreOptions,
    warnings: list[str],
    kept: KeptPixels,
) -> tuple[Any, dict[str, Any], Any]:
    """The outlines to score (segmented, or a pathologist's GeoJSON), their source and the
    tissue mask."""
    tissue = inputs.tissue
    glomeruli = inputs.glomeruli
    if glomeruli is not None and inputs.source is not None:  # read from a GeoJSON file
        return glomeruli, inputs.source, tissue
    if glomeruli is not None:
        return _given_outlines(slide, glomeruli, warnings), _outline_source(glomeruli), tissue
    # torch only when there is something to segment: review, confirm and scoring given outlines
    # start in a fraction of the time
    from lnpath.analysis.segment import segment_glomeruli
    from lnpath.models.store import load_model

    seg_model = load_model(SEGMENTATION_MODEL)
    outlines = segment_glomeruli(
        slide,
        model=seg_model,
        device=opts.device,
        progress=opts.progress,
        tissue=tissue,
        tta=opts.tta,
        keep=kept,
    )
    source = {**_model_info(seg_model, SEGMENTATION_MODEL), "run": json_safe(outlines.metadata)}
    _quality_warning(outlines, warnings)
    return outlines, source, tissue


def _quality_warning(outlines: Glomeruli, warnings: list[str]) -> None:
    quality = outlines.metadata.get("detection_quality") or {}
    if quality.get("warning"):
        warnings.append(quality["warning"])


def _given_outlines(slide: Any, outlines: Glomeruli, warnings: list[str]) -> Glomeruli:
    """Outlines handed over in Python: they must be this slide's (its µm/px, inside it)."""
    if not math.isclose(outlines.mpp, slide.mpp, rel_tol=1e-6):
        raise InputError(
            f"glomeruli: outlines at {outlines.mpp:g} µm/px, but {slide.path.name} is at "
            f"{slide.mpp:g} µm/px at level 0 (outlines of another slide?)"
        )
    _check_outlines_on_slide(outlines, slide.dimensions, "the given glomeruli")
    _quality_warning(outlines, warnings)
    return outlines


def _outline_source(outlines: Glomeruli) -> dict[str, Any]:
    """Provenance of outlines given in Python: the segmentation run that made them, if any."""
    meta = outlines.metadata
    if meta.get("sha256"):
        return {
            "name": str(meta.get("model") or outlines.source),
            "sha256": meta["sha256"],
            "run": json_safe(meta),
        }
    return {"name": f"given in Python: {outlines.source}", "sha256": None}


def _slide_record(slide: Any, path: Path, fingerprint: dict[str, Any]) -> dict[str, Any]:
    return {
        "path": str(path.resolve()),
        "name": path.name,
        "fingerprint": fingerprint,
        "mpp": slide.mpp,
        "mpp_source": slide.mpp_source,
        "vendor": slide.vendor,
        "dimensions": list(slide.dimensions),
    }
