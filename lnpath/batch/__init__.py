"""Many slides: a manifest scored on Dask (local, a scheduler, or SLURM) and the cohort table.

The only room that imports dask. ``score_batch`` (and with it the networks) loads on first use, so
that building a cohort table from finished results never imports torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "cohort_pairs": "cohort",
    "cohort_table": "cohort",
    "read_manifest": "manifest",
    "score_batch": "run",
    "slurm_client": "cluster",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'lnpath.batch' has no attribute {name!r}")
    return getattr(importlib.import_module(f"lnpath.batch.{module}"), name)
