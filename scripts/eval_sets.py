"""Scale facts about the eval-only sets, shared by the evaluation scripts.

The eval-only images are read in place at evaluation time and never copied, trained or tuned on.
Neither set records µm/px, so the scale comes from its provenance and its file names only.
"""

from __future__ import annotations

import re

# PROVENANCE.md estimates 0.3-0.5 µm/px for the snapshots; the midpoint is taken for 200x.
BUPT_MPP_200X = 0.4
# 40x whole-slide crops per PROVENANCE.md.
CMIL_MPP = 0.25

_MAGNIFICATION = re.compile(r"-0?(200|400)(?:-|$)")


def bupt_mpp(stem: str) -> float:
    """µm/px of a bupt snapshot from the total magnification in its file name.

    Names such as ``20181462-PAS-0400-0003`` or ``20181471-PAS-400-0004`` mark 400x snapshots, at
    half the µm/px of the 200x ones (same camera, twice the optical magnification); names without a
    mark are taken as 200x.
    """
    match = _MAGNIFICATION.search(stem)
    return BUPT_MPP_200X * (0.5 if match and match.group(1) == "400" else 1.0)
