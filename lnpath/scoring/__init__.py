"""Floor 1: from a findings table to the NIH indices, an ISN/RPS class and adequacy.

Pure: a DataFrame and a configuration in, a typed :class:`BiopsyScore` out. No files, no torch.
``score_findings``, ``BiopsyScore`` and ``ScoringConfig`` load on first use, so that the command
line can list the presets (:mod:`lnpath.scoring.presets`) without importing pandas or the
configuration's dataclasses.
"""

from __future__ import annotations

import importlib
from typing import Any

from lnpath.scoring.presets import PRESETS

__all__ = ["PRESETS", "BiopsyScore", "ScoringConfig", "score_findings"]


def __getattr__(name: str) -> Any:
    if name in ("BiopsyScore", "score_findings"):
        return getattr(importlib.import_module("lnpath.scoring.score"), name)
    if name == "ScoringConfig":
        return importlib.import_module("lnpath.scoring.config").ScoringConfig
    raise AttributeError(f"module 'lnpath.scoring' has no attribute {name!r}")
