"""Worker processes for reads: may they start, their context, the CPUs."""

from __future__ import annotations

import ast
import functools
import logging
import multiprocessing as mp
import os
import signal
import site
import sys
import threading
from pathlib import Path
from typing import Any

from lnpath.core.args import check_count

log = logging.getLogger(__name__)

GUARD = 'if __name__ == "__main__":'


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
    script = unguarded_script()
    if script is not None:
        _say_unguarded(script)
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
        # first, lnpath.wsi.forkserver_guard: the server itself dies with the main process
        ctx.set_forkserver_preload(
            ["lnpath.wsi.forkserver_guard", __name__, "lnpath.analysis.measure"]
        )
        _start_forkserver_with_this_lnpath()
    return ctx


def _start_forkserver_with_this_lnpath() -> None:
    """Start the forkserver where it imports the lnpath this process runs.

    Python 3.11's forkserver ignores the ``sys.path`` it is handed before importing its preloads,
    so an lnpath reached through ``sys.path.insert`` (a script beside a checkout) was preloaded
    from another install, or not at all: every worker then paid 0.5 s of imports, and the server
    outlived a killed main process. Its folder goes on the server's ``PYTHONPATH``, unless it is
    a site-packages folder (which must stay after the standard library).
    """
    from multiprocessing import forkserver

    root = str(Path(__file__).resolve().parents[2])
    entries = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if root in entries or root in {*site.getsitepackages(), site.getusersitepackages()}:
        forkserver.ensure_running()
        return
    saved = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join([root, *entries])
    try:
        forkserver.ensure_running()
    finally:
        if saved is None:
            del os.environ["PYTHONPATH"]
        else:
            os.environ["PYTHONPATH"] = saved


_SHARE: dict[str, int | None] = {"cpus": None}  # set by use_cpus, for the rest of the process


def available_cpus() -> int:
    """CPUs this process may run on (the affinity mask, e.g. a SLURM allocation), or fewer where
    :func:`use_cpus` gave it a share of them."""
    affinity = getattr(os, "sched_getaffinity", None)
    cpus = len(affinity(0)) if affinity is not None else os.cpu_count() or 1
    share = _SHARE["cpus"]
    return cpus if share is None else max(1, min(cpus, share))


def use_cpus(count: int | None) -> None:
    """Size this process's parallel work (reader processes and threads, measurement threads)
    for ``count`` CPUs from now on, e.g. a batch worker's share of the machine, where the
    affinity mask holds every CPU of the node (``None``: all of them again)."""
    _SHARE["cpus"] = None if count is None else check_count(count, "cpus")


def die_with_parent() -> None:
    """Have the kernel end this process when its parent dies, even by ``kill -9`` (Linux)."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    pr_set_pdeathsig = 1
    try:
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):  # no prctl: the pool's own shutdown still applies
        log.debug("prctl(PR_SET_PDEATHSIG) unavailable")


def quiet_worker() -> None:
    """Call first in every worker process: it dies with its parent and ignores Ctrl-C.

    Ctrl-C reaches the whole process group; the parent stops the pool and says "interrupted",
    so a worker must not print its own traceback. A forkserver worker's parent is the
    forkserver, which dies with the main process (:mod:`lnpath.wsi.forkserver_guard`).
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    die_with_parent()


def unguarded_script() -> str | None:
    """The script that worker processes would run again on start-up, or None.

    Spawned and fork-server workers import ``__main__`` again from its file (as ``__mp_main__``),
    so code at a script's top level outside ``if __name__ == "__main__":`` runs once more in
    every worker and dies there trying to start workers of its own (``BrokenProcessPool``). This
    finds the statement the main thread is running at the script's top level and checks whether
    it sits inside that guard. Jupyter, ``python -c`` and a package's ``__main__`` are never
    re-imported.
    """
    main = sys.modules.get("__main__")
    name = getattr(getattr(main, "__spec__", None), "name", None)
    if name is not None and (name == "__main__" or name.endswith(".__main__")):
        return None
    path = getattr(main, "__file__", None)
    if main is None or path is None:
        return None
    line = _top_level_line(vars(main))
    if line is None:
        return None
    try:
        guards = _guard_spans(str(Path(path).resolve()))
    except (OSError, SyntaxError, ValueError):
        return str(path)  # unreadable source: assume the worst, work in this process
    if any(start <= line <= end for start, end in guards):
        return None
    return str(path)


def _top_level_line(main_globals: dict[str, Any]) -> int | None:
    """The line of ``__main__``'s module code that the main thread is executing."""
    frame = sys._current_frames().get(threading.main_thread().ident or -1)
    line = None
    while frame is not None:
        if frame.f_code.co_name == "<module>" and frame.f_globals is main_globals:
            line = frame.f_lineno
        frame = frame.f_back
    return line


@functools.cache
def _guard_spans(path: str) -> list[tuple[int, int]]:
    """Line spans of the top-level ``if __name__ == "__main__":`` blocks of a script."""
    tree = ast.parse(Path(path).read_text(encoding="utf-8"), filename=path)
    return [
        (node.lineno, node.end_lineno or node.lineno)
        for node in tree.body
        if isinstance(node, ast.If) and _is_main_test(node.test)
    ]


def _is_main_test(test: ast.expr) -> bool:
    if not (isinstance(test, ast.Compare) and len(test.ops) == 1):
        return False
    if not isinstance(test.ops[0], ast.Eq):
        return False
    sides = [test.left, test.comparators[0]]
    names = {s.id for s in sides if isinstance(s, ast.Name)}
    values = {s.value for s in sides if isinstance(s, ast.Constant)}
    return names == {"__name__"} and values == {"__main__"}


@functools.cache
def _say_unguarded(path: str) -> None:
    log.warning(
        "%s calls lnpath outside `%s`, so lnpath works in one process (slower): worker "
        "processes would run the script again; put its calls under that guard to use them",
        Path(path).name,
        GUARD,
    )
