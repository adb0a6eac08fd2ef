"""Exceptions whose message is shown to the user as one line.

Every error a user can cause (bad path, corrupt slide, malformed table) is raised as a subclass of
:class:`LnpathError` with a message that names the file and the problem; the CLI prints it and exits
non-zero without a traceback. Exit codes: 2 bad input, 3 a result folder that fails its checks,
4 a sign-out step the rules refuse (:class:`SignOutRefused`), so a script tells them apart.
"""

from __future__ import annotations


class LnpathError(Exception):
    """Base class for errors caused by input, shown as a one-line message."""

    exit_code = 2


class SlideError(LnpathError):
    """A slide cannot be opened or read, or lacks what the operation needs (e.g. µm/px)."""


class InputError(LnpathError):
    """A table, GeoJSON, configuration or option value is malformed or out of range."""


class ModelError(LnpathError):
    """A model is unknown, tampered with, or incompatible with the request."""


class OutputError(LnpathError):
    """An output cannot be written: the disk is full, the folder read-only, a file too large.

    lnpath's writers raise it only after undoing the write, so what was there before is intact.
    ``reason`` is the system's words for the failure ("No space left on device").
    """

    def __init__(self, message: str, reason: str = "") -> None:
        super().__init__(message)
        self.reason = reason or message


class ResultError(LnpathError):
    """A result folder is missing, malformed, confirmed (immutable) or tampered with."""

    exit_code = 3


class SignOutRefused(ResultError):
    """The sign-out rules refuse a step on an intact result: an index not ready to sign, a
    confirmed result changed without ``supersede``, an addendum to a draft.

    A :class:`ResultError` so that existing handlers still catch it, with its own exit code so
    that a script running sign-outs tells "not ready" (4) from "tampered" (3).
    """

    exit_code = 4


def one_line(text: str) -> str:
    """Collapse a message to one line (errors from libraries can span several)."""
    return " ".join(text.split()) or "unknown error"
