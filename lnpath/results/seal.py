"""``verify``: is a result folder exactly what lnpath wrote, and (with a key) signed by whom?

The audit trail is a hash chain whose head result.json's ``seal`` names (:mod:`lnpath.results.
integrity`); every event's snapshot is write-once. Folders written before the chain existed
(lnpath 0.1.0) verify by the checks of their time and are reported as such; their first new
event chains their whole trail.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lnpath.core.errors import ResultError
from lnpath.io.hashing import file_sha256
from lnpath.results.folder import DERIVED_FILES, content_sha256, load_result_json, read_audit
from lnpath.results.integrity import (
    check_chain,
    check_signature,
    exclusive,
    legacy_count,
    load_public_key,
    real_path,
    seal,
)


def _check_snapshots(folder: Path, events: list[dict[str, Any]]) -> int:
    """Every event's write-once snapshot still matches the hashes the event recorded.

    lnpath 0.1.0 kept one snapshot per revision (``rNNN``, rewritten by its confirmation), so of
    its unchained events only each revision's last is checked.
    """
    legacy = legacy_count(events)
    last_of_revision = {e.get("revision"): i for i, e in enumerate(events[:legacy])}
    for index, event in enumerate(events):
        if index < legacy and last_of_revision[event.get("revision")] != index:
            continue
        name = event.get("snapshot_dir", f"r{event['revision']:03d}" if index < legacy else None)
        if not isinstance(name, str) or "/" in name or name.startswith("."):
            raise ResultError(f"{folder}: audit event without a snapshot (edited outside lnpath)")
        snapshot = folder / "revisions" / name
        for file, sha in (event.get("snapshot") or {}).items():
            path = snapshot / str(file)
            if not path.is_file() or file_sha256(path) != sha:
                raise ResultError(
                    f"{path}: snapshot of revision {event.get('revision')} was modified"
                )
    return len(events)


@dataclass
class Verification:
    """What :func:`verify` checked: the revision, its status and its content sha256."""

    folder: Path
    revision: int
    status: str
    content_sha256: str
    checked: list[str]


def verify(
    result_dir: str | os.PathLike[str], public_key: str | os.PathLike[str] | None = None
) -> Verification:
    """Check that the result folder is exactly what lnpath last wrote.

    The audit trail is a hash chain whose head result.json's ``seal`` names; the last event
    records the content sha256, the sha256 of the report and overlay and of its own snapshot;
    a confirmation repeats who, when, the note and the hashes in ``result.json``. Any difference,
    a broken link, a status that disagrees with the audit trail, or an edited snapshot means the
    folder was edited outside lnpath. With ``public_key`` the confirmation must also carry a valid
    signature by its private key.

    Raises:
        ResultError: naming the first file or seal that does not match; also when a file is
            missing or unparseable, which only an edit outside lnpath produces.
        InputError: the public key file is unusable.
    """
    folder = real_path(result_dir)
    key = None if public_key is None else load_public_key(public_key)
    old = folder.with_name(f".{folder.name}.old")
    if not folder.exists() and old.is_dir():  # a write interrupted between its two renames
        with exclusive(folder):
            pass
    try:
        verification = _verify(folder)
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
        # JSONDecodeError and UnicodeDecodeError are ValueErrors
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ResultError(
            f"{folder}: unreadable or modified outside lnpath ({type(exc).__name__}: {detail})"
        ) from None
    if key is not None and public_key is not None:
        last = confirmation_event(read_audit(folder))
        if last.get("event") != "confirmed":
            raise ResultError(f"{folder}: revision {verification.revision} is not confirmed")
        check_signature(folder, key, last, public_key)
        verification.checked.append("signature")
    return verification


def confirmation_event(events: list[dict[str, Any]]) -> dict[str, Any]:
    """The event that set the result's status: the last one that is not an addendum."""
    return next((e for e in reversed(events) if e.get("event") != "addendum"), events[-1])


def _check_addenda(folder: Path, result: dict[str, Any], events: list[dict[str, Any]]) -> None:
    """result.json's addenda are exactly the addendum events of the audit trail, in order."""
    recorded = [
        {"text": e.get("text"), "by": e.get("by"), "at": e.get("at")}
        for e in events
        if e.get("event") == "addendum"
    ]
    stated = result.get("addenda") or []
    if (
        not isinstance(stated, list)
        or [
            {k: a.get(k) for k in ("text", "by", "at")} if isinstance(a, dict) else a
            for a in stated
        ]
        != recorded
    ):
        raise ResultError(
            f"{folder}: the addenda in result.json do not match the audit trail "
            "(an addendum was added, removed or edited outside lnpath)"
        )


def _verify(folder: Path) -> Verification:
    result = load_result_json(folder)
    revision = int(result["revision"])
    events = read_audit(folder)
    check_chain(folder, events)
    unchained = legacy_count(events) == len(events)
    if (unchained and "seal" in result) or (not unchained and result.get("seal") != seal(events)):
        raise ResultError(
            f"{folder}: the audit trail does not end where result.json's seal says "
            "(an audit event was added, removed or edited)"
        )
    if not events or events[-1].get("revision") != revision:
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
    checked = [
        "content",
        "legacy audit trail (lnpath 0.1.0, unchained)" if unchained else "audit chain",
    ]
    for name in DERIVED_FILES:
        if file_sha256(folder / name) != (last.get("snapshot") or {}).get(name):
            raise ResultError(f"{folder / name}: modified after lnpath wrote it")
        checked.append(name)
    _check_addenda(folder, result, events)
    confirmation = result.get("confirmation")
    sealed = confirmation_event(events)
    if sealed["event"] == "confirmed":
        if result["status"] != "confirmed" or not isinstance(confirmation, dict):
            raise ResultError(
                f"{folder}: revision {revision} was confirmed but reads {result['status']!r}"
            )
        sealed_files = confirmation.get("files") or {}
        recorded = {
            "pathologist": sealed.get("by"),
            "confirmed_at": sealed.get("at"),
            "note": sealed.get("note"),
            "sha256": sha,
        }
        changed = [k for k, v in recorded.items() if confirmation.get(k) != v]
        changed += [n for n in DERIVED_FILES if sealed_files.get(n) != sealed["snapshot"].get(n)]
        if changed:
            raise ResultError(
                f"{folder}: the confirmation's {', '.join(changed)} do(es) not match the "
                "audit trail (edited outside lnpath)"
            )
    elif result["status"] != "provisional" or confirmation is not None:
        raise ResultError(
            f"{folder}: revision {revision} was never confirmed but reads {result['status']!r}"
        )
    checked.append(f"{_check_snapshots(folder, events)} snapshot(s)")
    return Verification(folder, int(result["revision"]), str(result["status"]), sha, checked)
