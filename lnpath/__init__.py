"""lnpath: reproducible digital pathology for lupus nephritis kidney biopsies.

The public API reads like a recipe::

    slide = lnpath.open_slide("biopsy.svs")
    tiles = lnpath.tile(slide, mpp=2.0, size=512)
    gloms = lnpath.segment_glomeruli(slide)
    score = lnpath.score_findings(findings_table)
    result = lnpath.score_slide("biopsy.svs")
    endpoint = lnpath.compare(baseline, followup)

Names are imported lazily so that ``import lnpath`` stays fast and torch is loaded only when a
network is needed. Every machine output is a proposal until a pathologist confirms it.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS: dict[str, str] = {
    # errors
    "LnpathError": "core.errors",
    "SlideError": "core.errors",
    "InputError": "core.errors",
    "ModelError": "core.errors",
    "ResultError": "core.errors",
    "SignOutRefused": "core.errors",
    "OutputError": "core.errors",
    # slides, tissue, tiles
    "open_slide": "wsi.slide",
    "Slide": "wsi.slide",
    "detect_tissue": "wsi.tissue",
    "TissueMask": "wsi.tissue",
    "tile": "wsi.tiling",
    "TileGrid": "wsi.tiling",
    "TileSpec": "wsi.grid",
    "KeptPixels": "wsi.kept_pixels",
    # QuPath GeoJSON
    "LESIONS": "core.findings",
    "read_qupath": "io.qupath",
    "QuPathFeature": "io.qupath",
    # scoring
    "ScoringConfig": "scoring.config",
    "load_config": "io.configfile",
    "read_findings": "io.tables",
    "findings_from_geojson": "io.tables",
    "score_findings": "workflow.scoring",
    "BiopsyScore": "scoring.score",
    # segmentation
    "load_model": "models.store",
    "Glomerulus": "analysis.glomeruli",
    "Glomeruli": "analysis.glomeruli",
    "segment_glomeruli": "analysis.segment",
    # fine-tuning the glomerulus model on a lab's labelled images
    "LabelledImage": "training.glomeruli_data",
    "load_labelled_tiles": "training.glomeruli_data",
    "fine_tune_glomeruli": "training.fine_tuning",
    "FineTunedModel": "training.fine_tuning",
    "evaluate_segmentation": "training.fine_tuning",
    # lesions and cortex
    "measure_glomeruli": "analysis.measure",
    "LesionCaller": "analysis.lesions",
    "MorphometryCaller": "analysis.lesions",
    "TrainedLesionCaller": "analysis.lesion_cnn",
    "load_lesion_model": "analysis.lesion_models",
    "CalibratedMorphometryCaller": "analysis.calibrated",
    "measure_cortex": "analysis.cortex",
    # pipeline, review, comparison
    "score_slide": "workflow.pipeline",
    "SlideResult": "results.folder",
    "review": "workflow.signoff",
    "confirm": "workflow.signoff",
    "add_addendum": "workflow.signoff",
    "verify": "results.seal",
    "compare": "workflow.compare",
    "train_lesions_from_results": "training.learning",
    "review_order": "results.queue",
    "ResponseResult": "response.endpoint",
    # cohorts
    "score_batch": "batch.run",
    "slurm_client": "batch.cluster",
    "read_manifest": "batch.manifest",
    "cohort_table": "batch.cohort",
    # the review workstation (a callable package: see lnpath.workstation)
    "workstation": "workstation",
}

__all__ = ["__version__", *sorted(_EXPORTS)]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'lnpath' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
