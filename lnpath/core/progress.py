"""Progress bars for long calls: on in Jupyter and on a terminal, off in logs, silenceable.

A call that takes minutes (segmentation, scoring a slide or a cohort, training) shows a bar unless
told not to: ``progress=False`` for one call, ``LNPATH_PROGRESS=0`` for a whole process
(``LNPATH_PROGRESS=1`` forces bars into a log). Without either, bars appear where a person watches
(a Jupyter kernel, or stderr on a terminal) and never in a pipe, a CI log or cron mail, where the
carriage returns of a redrawn bar are noise.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import logging
import os
import sys
from collections.abc import Iterable, Iterator
from contextvars import ContextVar
from typing import Any

from lnpath.core.args import check_flag, check_optional_flag
from lnpath.core.env import OFF_VALUES

log = logging.getLogger(__name__)

ENV_VAR = "LNPATH_PROGRESS"
_ON = frozenset({"1", "true", "yes", "on"})
_SCOPE: ContextVar[bool | None] = ContextVar("lnpath_progress", default=None)


def progress_enabled(progress: bool | None = None) -> bool:
    """Whether a long call shows a bar: ``progress`` if given, else what an enclosing
    :func:`progress_scope` set, else ``$LNPATH_PROGRESS``, else in a Jupyter kernel or when
    stderr is a terminal."""
    if progress is not None:
        return check_flag(progress, "progress (or None for the default)")
    scoped = _SCOPE.get()
    if scoped is not None:
        return scoped
    value = os.environ.get(ENV_VAR, "").strip().lower()
    if value in _ON:
        return True
    if value in OFF_VALUES:
        return False
    if value:
        _unknown_setting(value)
    return in_jupyter() or _stderr_is_terminal()


def progress_bar(
    total: int | None,
    desc: str,
    unit: str = "it",
    progress: bool | None = None,
    iterable: Iterable[Any] | None = None,
) -> Any:
    """A tqdm bar (a widget in Jupyter when ipywidgets is installed), disabled when
    :func:`progress_enabled` says no: iterate it over ``iterable``, or use it as a context
    manager and call ``update``."""
    enabled = progress_enabled(progress)
    if enabled and in_jupyter() and importlib.util.find_spec("ipywidgets") is not None:
        from tqdm.notebook import tqdm as bar
    else:
        from tqdm.std import tqdm as bar
    return bar(iterable, total=total, desc=desc, unit=unit, disable=not enabled, file=sys.stderr)


@contextlib.contextmanager
def progress_scope(progress: bool | None) -> Iterator[None]:
    """Make ``progress`` the default of every call inside (e.g. a lesion caller that a pipeline
    runs with its own ``progress``); None changes nothing."""
    token = _SCOPE.set(check_optional_flag(progress, "progress")) if progress is not None else None
    try:
        yield
    finally:
        if token is not None:
            _SCOPE.reset(token)


def in_jupyter() -> bool:
    """Whether this process is a Jupyter kernel (IPython's terminal shell is not)."""
    ipython = sys.modules.get("IPython")
    if ipython is None:
        return False
    shell = ipython.get_ipython()
    return shell is not None and "IPKernelApp" in getattr(shell, "config", {})


def _stderr_is_terminal() -> bool:
    try:
        return sys.stderr is not None and sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced or closed stderr
        return False


@functools.cache
def _unknown_setting(value: str) -> None:
    log.warning(
        "%s=%r is not one of 0/1/true/false/on/off; showing progress only on a terminal or in "
        "Jupyter",
        ENV_VAR,
        value,
    )
