"""Scoring configuration files (YAML or JSON) read into a validated :class:`ScoringConfig`.

The configuration itself is pure data (:mod:`lnpath.scoring.config`); this module is the file edge,
and it also checks the response preset a configuration names, since that table lives one floor up
from scoring (:mod:`lnpath.response.presets`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from lnpath.core.errors import InputError
from lnpath.io.jsonfile import not_a_file
from lnpath.response.presets import PRESETS as RESPONSE_PRESETS
from lnpath.scoring.biopsy import normalise_biopsy
from lnpath.scoring.config import ScoringConfig, build_config, config_from


def load_config(
    source: str | os.PathLike[str] | Mapping[str, Any] | ScoringConfig | None = None,
) -> ScoringConfig:
    """Read a configuration from a YAML/JSON file, a mapping, or return the defaults.

    A ``preset`` (name or list of names) is applied first, then the explicit keys, so a file can
    say ``preset: viable_denominator`` and still override single values.

    Args:
        source: a path to ``.yaml``/``.yml``/``.json``, a mapping, an existing config, or None.

    Raises:
        InputError: the file is missing or malformed, a key is unknown, a value is out of range,
            or the response preset is unknown.
    """
    if source is None or isinstance(source, ScoringConfig | Mapping):
        cfg, where = config_from(source), "configuration"
    elif not isinstance(source, str | os.PathLike):
        raise InputError(
            f"configuration: expected a file path, a mapping or a ScoringConfig "
            f"(got {type(source).__name__})"
        )
    else:
        path = Path(source)
        cfg, where = build_config(_read(path), str(path)), str(path)
    preset = cfg.response_preset
    if not isinstance(preset, str) or preset not in RESPONSE_PRESETS:  # a YAML list is no name
        raise InputError(
            f"{where}: response_preset must be one of {', '.join(RESPONSE_PRESETS)} "
            f"(got {cfg.response_preset!r})"
        )
    return cfg


def load_biopsy(
    source: str | os.PathLike[str] | Mapping[str, Any] | None,
) -> dict[str, Any]:
    """Biopsy-level findings (IF/EM, vessels, "not evaluable" marks) from a YAML/JSON file or a
    mapping, validated (:func:`lnpath.scoring.biopsy.normalise_biopsy`).

    Raises:
        InputError: the file is missing or malformed, or a field is unknown or out of range.
    """
    if source is None or isinstance(source, Mapping):
        return normalise_biopsy(source)
    if not isinstance(source, str | os.PathLike):
        raise InputError(f"biopsy: expected a file path or a mapping (got {type(source).__name__})")
    path = Path(source)
    return normalise_biopsy(_read(path, "biopsy findings"), str(path))


def _read(path: Path, what: str = "configuration") -> Mapping[str, Any]:
    if not path.is_file():
        raise not_a_file(path, f"{what} file")
    try:
        text = path.read_text(encoding="utf-8-sig")  # a BOM, as Windows editors write
        data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (UnicodeDecodeError, json.JSONDecodeError, yaml.YAMLError) as exc:
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(f"{path}: not valid YAML/JSON ({detail})") from None
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise InputError(f"{path}: {what} must be a mapping of name: value")
    return data
