"""Arguments checked where they enter the public API, each refused as one line that names it.

A count given as ``"2"`` or NaN, or ``None`` where a path belongs, otherwise fails deep inside
(``'<' not supported``, pathlib's ``expected str, bytes or os.PathLike``) or, as NaN threads,
waits forever: the user reads a traceback into lnpath's internals instead of which argument.
"""

from __future__ import annotations

import numbers
import os
import sys
from pathlib import Path

from lnpath.core.errors import InputError


def check_count(value: object, what: str) -> int:
    """``value`` (workers, threads, jobs, folds) as a whole number >= 1; numpy integers pass."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise InputError(f"{what} must be >= 1 (a whole number), got {value!r}")
    return int(value)


#: numpy's seeds are unsigned 32-bit: ``--seed -1`` once failed as an internal ValueError
SEED_MAX = 2**32 - 1


def check_seed(value: object, what: str) -> int:
    """``value`` as a random seed: a whole number from 0 to :data:`SEED_MAX`."""
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Integral)
        or not 0 <= int(value) <= SEED_MAX
    ):
        raise InputError(f"{what} must be a whole number from 0 to {SEED_MAX}, got {value!r}")
    return int(value)


def as_path(value: object, what: str) -> Path:
    """``value`` as a :class:`~pathlib.Path` when it is text or path-like (existence is the
    caller's check, with its own words)."""
    if not isinstance(value, str | os.PathLike):
        raise InputError(f"{what}: expected a file or folder path, got {type(value).__name__}")
    return Path(value)


def check_flag(value: object, what: str) -> bool:
    """``value`` as True or False; numpy booleans pass. ``"no"``, ``"false"`` and ``0.0`` are
    all refused: Python reads a non-empty string as true, so ``tta="no"`` would turn flips on."""
    numpy = sys.modules.get("numpy")  # a numpy bool exists only once numpy is imported: the
    # CLI's --help must not import it
    if not (isinstance(value, bool) or (numpy is not None and isinstance(value, numpy.bool_))):
        raise InputError(f"{what} must be True or False, got {value!r}")
    return bool(value)


def check_optional_flag(value: object, what: str) -> bool | None:
    """:func:`check_flag`, or None where None means "the default" (``progress``, ``tta``)."""
    return None if value is None else check_flag(value, f"{what} (or None for the default)")


EVAL_ONLY = "eval-only"


def refuse_eval_only(*paths: object) -> None:
    """Refuse to train or fit on data under an ``eval-only`` folder.

    Why: those sets carry no licence beyond evaluation in place (shared/data/README.md), so every
    path a fit reads (folder, table, each image) is checked after resolving links and ``..``.
    What is not a path is left to the reader's own check.

    Raises:
        InputError: a path lies under a folder named ``eval-only``.
    """
    for path in paths:
        if isinstance(path, str | os.PathLike) and EVAL_ONLY in Path(path).resolve().parts:
            raise InputError(
                f"{path}: lies under {EVAL_ONLY}/, whose sets carry no licence to train or fit on"
            )
