"""``verify``: is a result folder exactly what lnpath wrote, and (with a key) signed by whom?

The audit trail is a hash chain whose head result.json's ``seal`` names (:mod:`lnpath.results.
integrity`); every event's snapshot is write-once. Folders written before the chain existed
(lnpath 0.1.0) verify by the checks of their time and are reported as such; their first new
event chains their whole trail.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lnpath.core.errors import ResultError
from lnpath.io.hashing import file_sha256
from lnpath.results.folder import (
    DERIVED_FILES,
    HASHED_EXCLUDED_KEYS,
    RESULT_ENTRIES,
    SlideResult,
    content_sha256,
    load_result_json,
    read_audit,
)
from lnpath.results.integrity import (
    check_chain,
    check_recorded_signature,
    check_signature,
    exclusive,
    fingerprint,
    legacy_count,
    load_public_key,
    real_path,
    seal,
)
from lnpath.results.keyname import key_pathologist, same_pathologist


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


def _snapshot_dir(event: dict[str, Any], legacy: bool) -> Any:
    return event.get("snapshot_dir", f"r{event['revision']:03d}" if legacy else None)


def _refuse_links(path: Path) -> None:
    """lnpath writes plain files and folders: a link among them was put there by hand, and
    would make the folder's content live, and change, outside it."""
    found = [path] if path.is_symlink() else []
    if not found and path.is_dir():
        for root, dirs, files in os.walk(path):
            found += [Path(root) / n for n in sorted(dirs + files) if (Path(root) / n).is_symlink()]
    if found:
        raise ResultError(
            f"{found[0]}: is a symbolic link (to {os.readlink(found[0])}); lnpath writes no links "
            "in a result folder (replaced outside lnpath)"
        )


def _check_layout(folder: Path, events: list[dict[str, Any]]) -> list[str]:
    """No link where lnpath keeps its files, and nothing in ``revisions/`` it did not write.

    Returns:
        The names beside lnpath's own files (the user's: verify vouches for none of them).
    """
    for name in RESULT_ENTRIES:
        _refuse_links(folder / name)
    revisions = folder / "revisions"
    if revisions.is_dir():
        legacy = legacy_count(events)
        names = {_snapshot_dir(e, i < legacy): e for i, e in enumerate(events)}
        for entry in sorted(revisions.iterdir()):
            if entry.name != "audit.jsonl" and entry.name not in names:
                raise ResultError(
                    f"{entry}: not written by lnpath (added to revisions/ outside lnpath; "
                    "no audit event has this snapshot)"
                )
            recorded = (names.get(entry.name) or {}).get("snapshot")
            if entry.is_dir() and isinstance(recorded, dict):
                extra = sorted(set(os.listdir(entry)) - set(recorded))
                if extra:
                    raise ResultError(
                        f"{entry / extra[0]}: not written by lnpath (added to the snapshot of "
                        f"revision {names[entry.name].get('revision')} outside lnpath)"
                    )
    return sorted(p.name for p in folder.iterdir() if p.name not in RESULT_ENTRIES)


def _what_changed(folder: Path, result: dict[str, Any], event: dict[str, Any]) -> str:
    """Which of result.json (and its fields), findings.csv, glomeruli.geojson or assets/ differ
    from the snapshot the last event recorded."""
    recorded = event.get("snapshot") or {}
    changed = []
    try:
        name = _snapshot_dir(event, "hash" not in event)
        sealed = json.loads((folder / "revisions" / str(name) / "result.json").read_text("utf-8"))
        keys = sorted(
            k
            for k in {*result, *sealed}
            if k not in HASHED_EXCLUDED_KEYS and result.get(k) != sealed.get(k)
        )
        changed += [f"result.json ({', '.join(keys)})"] if keys else []
    except (OSError, ValueError, TypeError, AttributeError):
        pass
    changed += [
        n
        for n in ("findings.csv", "glomeruli.geojson")
        if (folder / n).is_file() and file_sha256(folder / n) != recorded.get(n)
    ]
    return ", ".join(changed or ["assets/"])


@dataclass
class Verification:
    """What :func:`verify` checked: the revision, its status and its content sha256; what it
    did not (``unchecked``: files beside lnpath's own, a signature without the public key)."""

    folder: Path
    revision: int
    status: str
    content_sha256: str
    checked: list[str]
    unchecked: list[str] = field(default_factory=list)


def verify(
    result_dir: str | os.PathLike[str] | SlideResult,
    public_key: str | os.PathLike[str] | None = None,
) -> Verification:
    """Check that the result folder is exactly what lnpath last wrote.

    The audit trail is a hash chain whose head result.json's ``seal`` names; the last event
    records the content sha256, the sha256 of the report and overlay and of its own snapshot;
    a confirmation repeats who, when, the note and the hashes in ``result.json``. Any difference,
    a broken link, a status that disagrees with the audit trail, or an edited snapshot means the
    folder was edited outside lnpath. With ``public_key`` the confirmation must also carry a valid
    signature by its private key, and where the key names a pathologist, the confirmation and
    the addenda it signed must be made as that name. ``result_dir`` is the folder or its
    SlideResult.

    Raises:
        ResultError: naming the first file or seal that does not match; also when a file is
            missing or unparseable, which only an edit outside lnpath produces.
        InputError: the public key file is unusable, or ``result_dir`` is not a path.
    """
    folder = real_path(result_dir, "verify")
    key = None if public_key is None else load_public_key(public_key)
    owner = None if public_key is None else key_pathologist(public_key)
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
        _check_signed_as(folder, owner, last, public_key, "the confirmation")
        verification.checked = [c for c in verification.checked if not c.startswith("signature")]
        verification.checked.append("signature")
        verification.unchecked = [u for u in verification.unchecked if "--public-key" not in u]
        _addenda_signed_by(folder, read_audit(folder), key, owner, public_key, verification)
        if owner is None:
            verification.unchecked.append(
                f"the signer's name ({Path(public_key).name} names no pathologist; "
                "lnpath keygen --pathologist writes a key that does)"
            )
        else:
            verification.checked.append(f"signer's name ({owner}, as the key names)")
    return verification


def _check_signed_as(
    folder: Path,
    owner: str | None,
    event: dict[str, Any],
    key_path: str | os.PathLike[str],
    what: str,
) -> None:
    """A signature by a named key vouches only for its pathologist: one made as someone else
    (the key lent, or its name typed wrong) is refused naming both.

    Raises:
        ResultError: the event was signed as another name than the key's.
    """
    signed_as = str(event.get("by") or "")
    if owner is not None and not same_pathologist(owner, signed_as):
        raise ResultError(
            f"{folder}: {what} was signed as {signed_as or 'nobody'} with the key of {owner} "
            f"({key_path}); a named key vouches only for its own pathologist"
        )


def _addenda(events: list[dict[str, Any]]) -> list[tuple[int, dict[str, Any]]]:
    """The addenda after the event that set the status, numbered as result.json lists them."""
    sealed = len(events) - 1 - events[::-1].index(confirmation_event(events))
    numbered = [e for e in events if e.get("event") == "addendum"]
    return [(numbered.index(e) + 1, e) for e in events[sealed + 1 :]]


def _check_addendum_signatures(
    folder: Path, events: list[dict[str, Any]], signed: bool
) -> list[str]:
    """Each signed addendum's signature against the key it records; after a signed confirmation,
    the addenda after the last signed event are named: their text, and the report.html and
    overlay.png re-rendered with them, rest on hashes alone, which anyone able to write the
    folder can recompute (a signed event covers all before it through the chain).

    Returns:
        What no signature vouches for.
    """
    unsigned: list[str] = []
    for number, event in _addenda(events):
        if check_recorded_signature(folder, event, f"addendum {number}"):
            unsigned = []
        elif signed:
            unsigned.append(str(number))
    if not unsigned:
        return []
    which = f"addendum {unsigned[0]}" if len(unsigned) == 1 else f"addenda {', '.join(unsigned)}"
    rendered = "the report.html and overlay.png rendered since"
    return [f"{which} and {rendered} (not signed: lnpath addendum --key)"]


def _addenda_signed_by(
    folder: Path,
    events: list[dict[str, Any]],
    key: Any,
    owner: str | None,
    key_path: str | os.PathLike[str],
    verification: Verification,
) -> None:
    """With the confirmation's public key and the name it records: the addenda signed by it are
    checked with it, and held to its name; one signed by another key is named (whose key is for
    its own public key to say), with the unsigned addenda before it, which only that other key's
    signature covers."""
    covered_by_nobody: list[str] = []
    for number, event in _addenda(events):
        record = event.get("signature")
        if not isinstance(record, dict):
            covered_by_nobody.append(str(number))
            continue
        if record.get("public_key_sha256") == fingerprint(key):
            check_signature(folder, key, event, key_path, f"addendum {number}")
            _check_signed_as(folder, owner, event, key_path, f"addendum {number}")
            verification.checked.append(f"signature of addendum {number}")
        else:
            before = (
                f", and addend{'um' if len(covered_by_nobody) == 1 else 'a'} "
                f"{', '.join(covered_by_nobody)} before it (not signed)"
                if covered_by_nobody
                else ""
            )
            verification.unchecked.append(
                f"whose key signed addendum {number} (another key than {key_path}){before}"
            )
        covered_by_nobody = []


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
    if not events and result.get("seal") is not None:
        trail = folder / "revisions" / "audit.jsonl"
        what = "empty (emptied" if trail.is_file() else "missing or not a file (removed"
        raise ResultError(
            f"{trail}: {what} or replaced outside lnpath); the audit trail cannot be checked"
        )
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
    others = _check_layout(folder, events)
    sha = content_sha256(folder, result)
    if sha != last["content_sha256"]:
        raise ResultError(
            f"{folder}: content of revision {revision} was modified after it was written: "
            f"{_what_changed(folder, result, last)} "
            "(edit a copy of a file and pass it to lnpath review instead)"
        )
    checked = [
        "content",
        "legacy audit trail (lnpath 0.1.0, unchained)" if unchained else "audit chain",
    ]
    for name in DERIVED_FILES:
        if not (folder / name).is_file():
            raise ResultError(f"{folder / name}: missing (removed outside lnpath)")
        if file_sha256(folder / name) != (last.get("snapshot") or {}).get(name):
            raise ResultError(f"{folder / name}: modified after lnpath wrote it")
        checked.append(name)
    _check_addenda(folder, result, events)
    confirmation = result.get("confirmation")
    sealed = confirmation_event(events)
    if sealed["event"] == "confirmed":
        if result["status"] != "confirmed":
            raise ResultError(
                f"{folder}: revision {revision} was confirmed but reads {result['status']!r}"
            )
        if not isinstance(confirmation, dict):
            raise ResultError(
                f"{folder}: revision {revision} was confirmed but result.json holds no "
                "confirmation record (edited outside lnpath)"
            )
        sealed_files = confirmation.get("files") or {}
        recorded = {
            "pathologist": sealed.get("by"),
            "confirmed_at": sealed.get("at"),
            "note": sealed.get("note"),
            "sha256": sha,
        }
        if sealed.get("content_sha256") != sha:  # addenda after it never change the content
            raise ResultError(
                f"{folder}: content of revision {revision} was changed after it was confirmed: "
                f"{_what_changed(folder, result, sealed)} (edited outside lnpath; the "
                "confirmation's content sha256 no longer matches)"
            )
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
    unchecked = [f"{', '.join(others)} (not lnpath's)"] if others else []
    if sealed["event"] == "confirmed" and check_recorded_signature(folder, sealed):
        checked.append("signature against the key it records")
        unchecked.append("whose key signed (give --public-key)")
    elif isinstance(sealed.get("signature"), dict):
        unchecked.append("the signature (give --public-key)")
    unchecked += _check_addendum_signatures(
        folder, events, isinstance(sealed.get("signature"), dict)
    )
    return Verification(
        folder, int(result["revision"]), str(result["status"]), sha, checked, unchecked
    )
