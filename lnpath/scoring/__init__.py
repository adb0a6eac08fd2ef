"""Floor 1: from a findings table to the NIH indices, an ISN/RPS class and adequacy.

Pure: a DataFrame and a configuration in, a typed :class:`BiopsyScore` out. No files, no torch.
``score_findings`` and ``BiopsyScore`` load on first use, so that reading the configuration
(:mod:`lnpath.scoring.config`, which the command line needs) does not import pandas.
"""

from __future__ import annotations

import importlib
from typing import Any

from lnpath.scoring.config import PRESETS, ScoringConfig

__all__ = ["PRESETS", "BiopsyScore", "ScoringConfig", "score_findings"]


def __getattr__(name: str) -> Any:
    if name in ("BiopsyScore", "score_findings"):
        return getattr(importlib.import_module("lnpath.scoring.score"), name)
    raise AttributeError(f"module 'lnpath.scoring' has no attribute {name!r}")
