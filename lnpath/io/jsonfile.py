"""Small JSON inputs a user hands lnpath: cortex fractions, biopsy-level IF/EM inputs."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from lnpath.core.errors import InputError
from lnpath.scoring.indices import CORTEX_KEYS


def not_a_file(path: Path, what: str) -> InputError:
    """The one line for an input path that is not a file: a folder is called a folder, so the
    user does not go looking for a typo ("no such biopsy file")."""
    if path.is_dir():
        return InputError(f"{path}: is a folder, not a {what}")
    if path.exists():  # /dev/null, a pipe, a socket
        return InputError(f"{path}: not a regular file, so not a {what}")
    return InputError(f"{path}: no such {what}")


def read_json(path: str | Path, what: str) -> Any:
    """Parse a JSON file; NaN and Infinity are refused, since no lnpath input may hold them.

    Raises:
        InputError: the file is missing, not UTF-8, not JSON, or holds NaN/Infinity.
    """
    path = Path(path)
    if not path.is_file():
        raise not_a_file(path, f"{what} file")

    def no_constants(token: str) -> float:
        raise InputError(f"{path}: {token} is not a number lnpath accepts")

    try:
        text = path.read_text(encoding="utf-8-sig")  # a BOM, as Windows editors write
        return json.loads(text, parse_constant=no_constants)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(f"{path}: not valid JSON ({detail})") from None


def read_cortex(path: str | Path) -> dict[str, Any]:
    """Cortex fractions from JSON: ``{component: fraction}`` or a CortexMeasurement export."""
    data = read_json(path, "cortex")
    if isinstance(data, dict) and isinstance(data.get("scored"), dict):
        data = data["scored"]  # a CortexMeasurement.to_dict() export (result.json's "cortex")
    if not isinstance(data, dict):
        raise InputError(f"{path}: cortex JSON must be an object of component: fraction")
    unknown = [str(key) for key in data if key not in CORTEX_KEYS]
    if unknown:  # a misspelt component would otherwise score as not assessed
        raise InputError(
            f"{path}: unknown cortex key(s) {', '.join(unknown)} (known: {', '.join(CORTEX_KEYS)})"
        )
    for key, value in data.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise InputError(f"{path}: {key} is not a finite number")
    return data
