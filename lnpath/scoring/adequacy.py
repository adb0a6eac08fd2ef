"""Whether a core holds enough glomeruli for class and index (spec §2.3)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from lnpath.scoring.config import ScoringConfig

__all__ = ["Adequacy", "assess_adequacy", "withheld"]


@dataclass
class Adequacy:
    """Whether the core holds enough glomeruli for class and index (spec §2.3)."""

    n_glomeruli: int
    status: str
    message: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"n_glomeruli": self.n_glomeruli, "status": self.status, "message": self.message}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Adequacy:
        """Inverse of :meth:`to_dict`."""
        return cls(int(d["n_glomeruli"]), str(d["status"]), str(d["message"]))


def glomeruli_count(n: int) -> str:
    """``1 glomerulus``, ``2 glomeruli``: the count as a report sentence reads it."""
    return f"{n} glomerulus" if n == 1 else f"{n} glomeruli"


def assess_adequacy(n: int, cfg: ScoringConfig) -> Adequacy:
    """Adequate, limited or inadequate, from the glomerulus count and the configured limits."""
    thresholds = cfg.adequacy
    count = glomeruli_count(n)
    if n >= thresholds.adequate:
        return Adequacy(n, "adequate", f"{count} (>= {thresholds.adequate} needed)")
    if n >= thresholds.limited:
        return Adequacy(
            n,
            "limited",
            f"{count} (< {thresholds.adequate} for adequate); interpret with caution",
        )
    return Adequacy(
        n,
        "inadequate",
        f"{count} (< {thresholds.limited}): too few for class and index; counts reported only",
    )


def withheld(adequacy: Adequacy, cfg: ScoringConfig) -> str | None:
    """Why indices and class are withheld, or None."""
    if adequacy.n_glomeruli == 0:
        return "no glomeruli"
    if adequacy.status == "inadequate" and cfg.inadequate_policy == "counts_only":
        return (
            f"inadequate biopsy ({glomeruli_count(adequacy.n_glomeruli)} < {cfg.adequacy.limited})"
        )
    return None
