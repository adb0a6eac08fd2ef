"""Environment switches: one reading of "off" for every ``LNPATH_*`` variable."""

from __future__ import annotations

import os

OFF_VALUES = frozenset({"0", "false", "no", "off"})


def switched_off(variable: str) -> bool:
    """Whether ``$variable`` turns its feature off (``0``, ``false``, ``no`` or ``off``, in any
    case and spacing), so every switch a user sets reads the same way."""
    return os.environ.get(variable, "").strip().lower() in OFF_VALUES
