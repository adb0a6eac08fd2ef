"""How to score: the options one slide and a whole batch share (one object, not 13 keywords)."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Any

from lnpath.analysis.cortex import normalise_stain
from lnpath.core.args import check_flag, check_optional_flag
from lnpath.core.errors import InputError


@dataclass(frozen=True)
class ScoreOptions:
    """Options of :func:`lnpath.score_slide` and :func:`lnpath.score_batch`.

    Attributes:
        stain: the stain of the sections; the shipped models are trained on PAS.
        device: ``auto``, ``cpu`` or ``cuda`` for the networks.
        config: a :class:`~lnpath.scoring.config.ScoringConfig`, a mapping, a YAML/JSON path, or
            None for the defaults.
        lesion_model: a trained lesion model name or folder; None uses the morphometry rules.
        overwrite: replace an existing result folder (only once the new one is complete).
        progress: progress bars of the long stages; None (the default): on in Jupyter and on a
            terminal, off in pipes and logs (``LNPATH_PROGRESS``); a batch shows one bar over
            its slides.
        tta: flip averaging in segmentation; None (the default) follows the model card (four
            flips for the shipped model); False runs one forward pass (segmentation about 2x
            faster on a CPU), with slightly rougher outlines (recorded in the result's
            segmentation run).
    """

    stain: str = "PAS"
    device: str = "auto"
    config: Any = None
    lesion_model: str | None = None
    overwrite: bool = False
    progress: bool | None = None
    tta: bool | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "stain", normalise_stain(self.stain))
        # scoring from given outlines runs no network, so a device typo was never noticed there
        if not (
            isinstance(self.device, str) and re.fullmatch(r"auto|cpu|cuda(:\d+)?", self.device)
        ):
            raise InputError(f"device must be auto, cpu or cuda[:N] (got {self.device!r})")
        object.__setattr__(self, "overwrite", check_flag(self.overwrite, "overwrite"))
        for name in ("progress", "tta"):  # ``tta="no"`` would otherwise be true: four flips
            object.__setattr__(self, name, check_optional_flag(getattr(self, name), name))

    @classmethod
    def build(cls, options: ScoreOptions | None = None, **values: Any) -> ScoreOptions:
        """``options`` (or the defaults) with ``values`` applied; unknown names are refused."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            names = ", ".join(sorted(known))
            raise InputError(f"unknown scoring option(s) {', '.join(unknown)} (known: {names})")
        return dataclasses.replace(options or cls(), **values)
