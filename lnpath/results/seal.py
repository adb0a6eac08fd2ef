"""Verification of a result folder's seals: is it exactly what lnpath last wrote?

The audit trail's last event for the current revision records the content sha256 and the sha256 of
the derived files; a confirmation repeats them in result.json. Reading a folder's seal needs no
slide, no model and no scoring, so comparisons and cohorts check seals without loading them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lnpath.core.errors import ResultError
from lnpath.io.hashing import file_sha256
from lnpath.results.folder import (
    DERIVED_FILES,
    content_sha256,
    load_result_json,
    read_audit,
)


def _check_snapshots(folder: Path) -> int:
    """Every revision's snapshot still matches the hashes its last audit event recorded."""
    last: dict[int, dict[str, Any]] = {}
    for event in read_audit(folder):
        last[int(event["revision"])] = event
    for revision, event in sorted(last.items()):
        snapshot = folder / "revisions" / f"r{revision:03d}"
        for name, sha in (event.get("snapshot") or {}).items():
            path = snapshot / name
            if not path.is_file() or file_sha256(path) != sha:
                raise ResultError(f"{path}: revision {revision} of the audit trail was modified")
    return len(last)


@dataclass
class Verification:
    """What :func:`verify` checked: the revision, its status and its content sha256."""

    folder: Path
    revision: int
    status: str
    content_sha256: str
    checked: list[str]


def verify(result_dir: str | os.PathLike[str]) -> Verification:
    """Check that the result folder is exactly what lnpath last wrote.

    The audit trail's last event for the current revision records the content sha256 and the
    sha256 of the report and overlay; a confirmation repeats them in ``result.json``. Any
    difference, a status that disagrees with the audit trail (an "unconfirmed" confirmed result),
    or an edited earlier revision means the folder was edited outside lnpath.

    Raises:
        ResultError: naming the first file or seal that does not match; also when a file is
            missing or unparseable, which only an edit outside lnpath produces.
    """
    folder = Path(result_dir)
    try:
        return _verify(folder)
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
        # JSONDecodeError and UnicodeDecodeError are ValueErrors
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ResultError(
            f"{folder}: unreadable or modified outside lnpath ({type(exc).__name__}: {detail})"
        ) from None


def _verify(folder: Path) -> Verification:
    result = load_result_json(folder)
    revision = int(result["revision"])
    events = [e for e in read_audit(folder) if e.get("revision") == revision]
    if not events:
        raise ResultError(
            f"{folder}: no audit record for revision {revision} (edited outside lnpath?)"
        )
    last = events[-1]
    sha = content_sha256(folder, result)
    if sha != last["content_sha256"]:
        raise ResultError(
            f"{folder}: content of revision {revision} was modified after it was written "
            "(edit a copy of a file and pass it to lnpath review instead)"
        )
    checked = ["content"]
    for name in DERIVED_FILES:
        if file_sha256(folder / name) != (last.get("snapshot") or {}).get(name):
            raise ResultError(f"{folder / name}: modified after lnpath wrote it")
        checked.append(name)
    confirmation = result.get("confirmation")
    if last["event"] == "confirmed":
        if result["status"] != "confirmed" or not confirmation:
            raise ResultError(
                f"{folder}: revision {revision} was confirmed but reads {result['status']!r}"
            )
        sealed_files = confirmation.get("files") or {}
        if (
            confirmation.get("sha256") != sha
            or confirmation.get("pathologist") != last.get("by")
            or any(sealed_files.get(n) != last["snapshot"].get(n) for n in DERIVED_FILES)
        ):
            raise ResultError(f"{folder}: confirmation seal does not match the audit trail")
    elif result["status"] != "provisional" or confirmation is not None:
        raise ResultError(
            f"{folder}: revision {revision} was never confirmed but reads {result['status']!r}"
        )
    checked.append(f"{_check_snapshots(folder)} revision snapshot(s)")
    return Verification(folder, int(result["revision"]), str(result["status"]), sha, checked)
