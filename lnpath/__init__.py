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
    "LnpathError": "errors",
    "SlideError": "errors",
    "InputError": "errors",
    "ModelError": "errors",
    "ResultError": "errors",
    # slides, tissue, tiles
    "open_slide": "slide",
    "Slide": "slide",
    "detect_tissue": "tissue",
    "TissueMask": "tissue",
    "tile": "tiling",
    "TileGrid": "tiling",
    "TileSpec": "tiling",
    # QuPath GeoJSON
    "read_qupath": "qupath",
    "QuPathFeature": "qupath",
    # scoring
    "ScoringConfig": "config",
    "load_config": "config",
    "read_findings": "findings",
    "findings_from_geojson": "findings",
    "score_findings": "scoring",
    "BiopsyScore": "scoring",
    # segmentation
    "load_model": "model_store",
    "Glomerulus": "glomeruli",
    "Glomeruli": "glomeruli",
    "segment_glomeruli": "segment",
    # lesions and cortex
    "measure_glomeruli": "measure",
    "LesionCaller": "lesions",
    "MorphometryCaller": "lesions",
    "TrainedLesionCaller": "lesions",
    "load_lesion_model": "lesions",
    "CalibratedMorphometryCaller": "lesion_calibration",
    "measure_cortex": "cortex",
    # pipeline, review, comparison
    "score_slide": "pipeline",
    "SlideResult": "result",
    "review": "signoff",
    "confirm": "signoff",
    "verify": "signoff",
    "compare": "response",
    "ResponseResult": "response",
    # cohorts
    "score_batch": "batch",
    "read_manifest": "batch",
    "cohort_table": "batch",
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
