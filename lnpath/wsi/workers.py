"""Worker processes for reads and measurements: may they start, their context, the CPUs."""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import sys
from pathlib import Path

log = logging.getLogger(__name__)


def can_start_workers(what: str) -> bool:
    """Whether this process may start worker processes for ``what`` (logged when it may not)."""
    if mp.current_process().daemon:
        # e.g. inside a Dask or multiprocessing worker, which may not start processes; expected
        # in batch runs (the cluster parallelises across slides), so not a warning
        log.info("%s: working in this process (a daemon cannot start workers)", what)
        return False
    main_file = getattr(sys.modules["__main__"], "__file__", None)
    if main_file is not None and not Path(main_file).is_file():
        # e.g. `python - < script`: spawned workers re-import __main__ from its path and die
        log.info("%s: working in this process (__main__ is not an importable file)", what)
        return False
    return True


def worker_context(method: str | None = None) -> mp.context.BaseContext:
    """Context for worker processes; default ``forkserver`` where available (cheap to start, no
    inherited slide handles), else ``spawn``."""
    method = method or ("forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn")
    ctx = mp.get_context(method)
    if method == "forkserver":
        # workers fork from a server that has already imported what they run: readers (this
        # module) and glomerulus measurement (SciPy, scikit-image: 0.6 s per worker otherwise)
        ctx.set_forkserver_preload([__name__, "lnpath.analysis.measure"])
    return ctx


def available_cpus() -> int:
    """CPUs this process may run on (the affinity mask, e.g. a SLURM allocation)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1
