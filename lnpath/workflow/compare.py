"""Compare two biopsies held as result folders (or SlideResults): read, verify, then compare.

The endpoint rules are pure (:mod:`lnpath.response`); what they cannot do is read a folder or check
its confirmation seal, so this is where a folder becomes a
:class:`~lnpath.response.sides.BiopsySide`
whose ``seal_verified`` says whether its confirmation still holds.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from lnpath.core.errors import LnpathError, ResultError
from lnpath.response.endpoint import ResponseResult
from lnpath.response.endpoint import compare as compare_sides
from lnpath.response.presets import get_preset
from lnpath.response.sides import BiopsySide, load_side, side_from_result
from lnpath.results.folder import load_result_json
from lnpath.results.seal import verify


def load_folder_side(obj: Any, label: str = "biopsy") -> BiopsySide:
    """A BiopsySide from a result folder, its result.json, a SlideResult, or anything pure.

    Raises:
        ResultError: a result folder is missing, its result.json is unreadable or malformed, or
            it is unconfirmed and was edited outside lnpath.
        InputError: the object is of an unknown kind or its scores are malformed.
    """
    folder = getattr(obj, "folder", None)
    if isinstance(obj, str | os.PathLike):
        folder = Path(obj)
    if not isinstance(folder, str | os.PathLike):
        return load_side(obj, label)
    path = Path(folder)
    side = side_from_result(
        load_result_json(path, f"{label} result"), str(_result_folder(path)), ResultError
    )
    return _with_seal(side, _result_folder(path), label)


def compare(
    baseline: Any,
    followup: Any,
    preset: str | None = None,
    rule: Mapping[str, Any] | None = None,
    **overrides: Any,
) -> ResponseResult:
    """Compare a baseline and a follow-up biopsy under a named response preset.

    Each biopsy may be a result folder, a SlideResult, a BiopsyScore or a score dict; folders
    are verified, so a result edited after sign-out never gives a ``final`` endpoint and an
    unconfirmed one edited outside lnpath is refused. ``preset=None`` applies the
    ``response_preset`` the biopsies were scored with; ``rule`` adds a component-level endpoint.
    See :func:`lnpath.response.endpoint.compare`.
    """
    if preset is not None:
        get_preset(preset)  # an unknown name fails before any folder is read
    return compare_sides(
        load_folder_side(baseline, "baseline"),
        load_folder_side(followup, "follow-up"),
        preset,
        rule,
        **overrides,
    )


def _result_folder(path: Path) -> Path:
    return path.parent if path.is_file() else path


def _with_seal(side: BiopsySide, folder: Path, label: str) -> BiopsySide:
    """Check a result folder is what lnpath wrote, so no edit made outside it is compared.

    A confirmed result edited after confirmation is compared but never ``final`` (its check
    names the edit); a provisional one has no confirmation to lose, so an edit to it would pass
    unseen into the endpoint, and it is refused.

    Raises:
        ResultError: a provisional result was edited outside lnpath.
    """
    try:
        verify(folder)
    except LnpathError as exc:
        if not side.confirmed:
            raise ResultError(
                f"{label} not compared: {exc} (an unconfirmed result is compared only as lnpath "
                "wrote it)"
            ) from None
        return replace(side, seal_verified=False, seal_message=str(exc))
    if not side.confirmed:
        return side
    return replace(side, seal_verified=True, seal_message="confirmation seal verified")
