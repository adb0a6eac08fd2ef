"""Floor 2: baseline vs follow-up scores to a histological response endpoint (pure).

Folders and seals are read one floor up, in :mod:`lnpath.workflow.compare`.
"""

from lnpath.response.endpoint import ResponseResult, compare

__all__ = ["ResponseResult", "compare"]
