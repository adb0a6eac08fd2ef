"""Keeping freed memory for reuse, so CPU inference does not page-fault its way through every layer.

PyTorch's CPU allocator caches nothing: each layer's output is a fresh ``malloc`` and its input a
``free``. glibc serves blocks above its mmap threshold (dynamic, at most 32 MB) with a new
``mmap`` and returns them with ``munmap``, so every page of such a block is faulted in again on
its next use. A batch of four 512 px tiles through the U-Net makes 33 MB float32 activations, just
above that ceiling. On a 2-core EPYC without BF16 (float32), ``score_slide`` on the demo spent
18 s of its 78 s of CPU in the kernel (4.5 million page faults), and the forward pass ran 1.7x
slower than with the memory kept (``score_slide`` 41.0 -> 32.7 s; U-Net training steps
1.3-1.4x faster).

:func:`keep_freed_memory` raises the mmap threshold to 256 MB and lets up to 512 MB of freed heap
stay mapped. The cost is a higher resting footprint: memory freed after segmentation is reused by
the process rather than given back (peak RSS of ``score_slide`` on the demo 1.17 -> 1.32 GB,
``scripts/bench_score_slide.py``). It applies to the whole process, once, and only where the C
library is glibc; a user's own ``GLIBC_TUNABLES`` or ``MALLOC_*_`` settings are left alone (Dask's
own default in its workers is not the user's:
:func:`lnpath.batch.cluster.keep_freed_memory_in_worker`), and ``LNPATH_KEEP_FREED_MEMORY=0`` turns
it off (for a notebook that should give memory back after segmenting).
"""

from __future__ import annotations

import ctypes
import logging
import os
from collections.abc import Collection

from lnpath.core.env import switched_off

log = logging.getLogger(__name__)

ENV_VAR = "LNPATH_KEEP_FREED_MEMORY"
MMAP_THRESHOLD = 256 << 20
TRIM_THRESHOLD = 512 << 20
_M_TRIM_THRESHOLD = -1  # glibc's <malloc.h> parameter numbers
_M_MMAP_THRESHOLD = -3
_state = {"kept": False}  # once set, it holds for the rest of the process


def keep_freed_memory(disregard: Collection[str] = ()) -> bool:
    """Ask glibc's malloc to keep freed blocks up to 256 MB for reuse; whether it now does.

    Args:
        disregard: ``MALLOC_*_`` variables set by a framework rather than by the user (Dask's
            nanny sets ``MALLOC_TRIM_THRESHOLD_`` in every worker), which may be overridden.

    Cheap after the first success. False where the C library is not glibc (macOS, Windows,
    musl), where the user tuned malloc through the environment or set
    ``LNPATH_KEEP_FREED_MEMORY=0``, or where glibc refused.
    """
    if _state["kept"]:
        return True
    if switched_off(ENV_VAR):
        return False
    tuned = [k for k in os.environ if k.startswith("MALLOC_")]
    if "glibc.malloc." in os.environ.get("GLIBC_TUNABLES", ""):
        tuned.append("GLIBC_TUNABLES")
    if set(tuned) - set(disregard):
        log.debug("malloc left as configured in the environment (%s)", ", ".join(tuned))
        return False
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # only glibc has it  # noqa: B018
    except (OSError, AttributeError, TypeError):  # TypeError: Windows has no CDLL(None)
        return False
    kept = bool(libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )
    log.debug("glibc malloc keeps freed blocks up to %d MB: %s", MMAP_THRESHOLD >> 20, kept)
    _state["kept"] = kept
    return kept
