"""The review workstation: score, correct and sign out a biopsy in the browser.

:func:`workstation` opens result folders in a local web application: the slide with its
glomerulus outlines, a panel per glomerulus and per biopsy, and the NIH indices recomputed by the
server as the pathologist works. Every save is a :func:`lnpath.review` revision and every sign-out a
:func:`lnpath.confirm`, so the browser adds no second way of writing a result.
"""

from __future__ import annotations

import logging
import os
import sys
import types
import webbrowser
from collections.abc import Callable, Sequence

from lnpath.core.args import as_path, check_flag
from lnpath.core.errors import InputError
from lnpath.workstation.server import LOOPBACK, Workstation

__all__ = ["Workstation", "workstation"]

LOG = logging.getLogger(__name__)


def workstation(
    results: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    *,
    slides: Sequence[str | os.PathLike[str]] = (),
    host: str = "127.0.0.1",
    port: int = 0,
    open_browser: bool = False,
    announce: Callable[[str], None] | None = None,
) -> None:
    """Serve the workstation for ``results`` until interrupted.

    Args:
        results: one result folder or several (e.g. baseline and follow-up, side by side).
        slides: slide files for results whose slide moved, matched by fingerprint.
        host: interface to listen on (default loopback only). Any other host is reachable from the
            network; the per-launch token is still required and a warning says so.
        port: 0 picks a free port.
        open_browser: open the URL in the default browser.
        announce: called with the URL line (the CLI prints it); default logs it.

    Raises:
        ResultError, SlideError, InputError: a folder is not a result, a slide is missing, the port
            is in use; each as one line.
    """
    if isinstance(results, str | os.PathLike):
        results = [results]
    elif not isinstance(results, Sequence):  # None: "'NoneType' object is not iterable"
        raise InputError(f"workstation: expected result folder paths, got {type(results).__name__}")
    open_browser = check_flag(open_browser, "workstation: open_browser")
    folders = [as_path(r, "workstation: results") for r in results]
    slides = [as_path(s, "workstation: slides") for s in slides]
    server = Workstation(folders, slides=[os.fspath(s) for s in slides], host=host, port=port)
    say = announce or LOG.warning
    if host not in LOOPBACK:
        LOG.warning(
            "workstation: listening on %s, reachable from the network: the token in the URL is "
            "required for every request, and anyone who has it can read and edit these results",
            host,
        )
    say(f"lnpath workstation: {server.url}  (the token is required; Ctrl-C stops)")
    if open_browser:
        webbrowser.open(server.url)
    server.serve()


class _CallablePackage(types.ModuleType):
    """Importing any ``lnpath.workstation.*`` module binds this package as ``lnpath.workstation``,
    in place of the exported function; calling the package runs :func:`workstation`, so
    ``lnpath.workstation(...)`` works in either order of imports."""

    def __call__(self, *args: object, **kwargs: object) -> None:
        workstation(*args, **kwargs)  # type: ignore[arg-type]


sys.modules[__name__].__class__ = _CallablePackage
