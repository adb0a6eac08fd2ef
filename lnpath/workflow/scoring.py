"""Score a biopsy from whatever a user holds: a table, a table file, QuPath GeoJSON, a config file.

:func:`lnpath.scoring.score_findings` is the pure rule engine (a DataFrame in); this is the facade
``lnpath.score_findings`` that reads files first, so notebooks and the CLI accept paths.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from lnpath.io.configfile import load_config
from lnpath.io.tables import read_findings
from lnpath.scoring import score as pure
from lnpath.scoring.config import ScoringConfig
from lnpath.scoring.score import BiopsyScore


def score_findings(
    glomeruli: pd.DataFrame | Sequence[Mapping[str, Any]] | str | os.PathLike[str],
    cortex: Mapping[str, Any] | Any | None = None,
    config: ScoringConfig | Mapping[str, Any] | str | os.PathLike[str] | None = None,
    biopsy: Mapping[str, Any] | None = None,
) -> BiopsyScore:
    """Score one biopsy; ``glomeruli`` and ``config`` may be files (see the pure
    :func:`lnpath.scoring.score.score_findings` for the arguments and rules)."""
    return pure.score_findings(read_findings(glomeruli), cortex, load_config(config), biopsy)
