"""How a biopsy date that cannot be read is named, the same wherever one is parsed."""

from __future__ import annotations

import datetime as dt
import re

_YMD = re.compile(r"\s*(\d{4})-(\d{2})-(\d{2})")


def date_problem(value: object) -> str:
    """Why ``value`` is no ISO date: a day that does not exist (``2026-02-30``, a typo the
    format check alone would call malformed) is said to be one, anything else is not ISO."""
    match = _YMD.match(str(value))
    if match:
        try:
            dt.date(*(int(part) for part in match.groups()))
        except ValueError:
            return f"{match.group(0).strip()} is not a calendar date"
    return f"{value!r} is not an ISO date (YYYY-MM-DD)"
