"""Tamper evidence of a result folder: a hash-chained audit trail, one writer, optional signatures.

Every audit event carries the hash of the event before it (``prev``) and its own (``hash``, over
every other field), so editing, removing or reordering any event breaks the chain; result.json's
``seal`` names the chain's head and length, so the trail cannot be cut short either. Each event
records the sha256 of its own write-once snapshot (``revisions/<snapshot_dir>/``).

Hashes catch accidental and casual edits. Someone with write access who recomputes every hash
with lnpath's own code is not caught by hashes alone: that needs a signature by a key kept
outside the folder (:func:`sign`, Ed25519), checked with the public key (:func:`check_signature`).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from lnpath.core.errors import InputError, OutputError, ResultError
from lnpath.io.atomic import check_output_file
from lnpath.io.jsonfile import not_a_file
from lnpath.results.keyname import key_name_line

LOG = logging.getLogger(__name__)

CHAIN_EXCLUDED = ("hash", "signature")
SIGNATURE_ALGORITHM = "ed25519"
_HELD: dict[Path, int] = {}  # lock files this process holds, with their nesting depth


def canonical(value: Any) -> bytes:
    """The one byte form of a JSON value that every hash here is taken over."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str
    ).encode()


def event_hash(event: Mapping[str, Any]) -> str:
    """sha256 over every field of an audit event except its own hash and signature."""
    return hashlib.sha256(
        canonical({k: v for k, v in event.items() if k not in CHAIN_EXCLUDED})
    ).hexdigest()


def legacy_count(events: Sequence[Mapping[str, Any]]) -> int:
    """How many leading events predate the chain (lnpath 0.1.0 wrote them without hashes)."""
    count = 0
    while count < len(events) and "hash" not in events[count]:
        count += 1
    return count


def chain_head(events: Sequence[Mapping[str, Any]]) -> str | None:
    """The hash a new event links to: the last event's, or one over an unchained trail."""
    if not events:
        return None
    if "hash" in events[-1]:
        return str(events[-1]["hash"])
    return hashlib.sha256(canonical(list(events))).hexdigest()


def chained(previous: Sequence[Mapping[str, Any]], event: Mapping[str, Any]) -> dict[str, Any]:
    """``event`` linked after ``previous``: ``prev`` = the head of the chain, ``hash`` its own."""
    linked = {**event, "prev": chain_head(previous)}
    linked["hash"] = event_hash(linked)
    return linked


def check_chain(folder: Path, events: Sequence[Mapping[str, Any]]) -> str | None:
    """The head of an intact chain; a :class:`ResultError` naming the first broken link.

    Unchained events are accepted only before the first chained one (a 0.1.0 trail that a
    later lnpath extended); the first chained event then covers them all.
    """
    legacy = legacy_count(events)
    for number, event in enumerate(events[:legacy], start=1):
        if "prev" in event or "snapshot_dir" in event:  # 0.1.0 wrote neither
            raise ResultError(f"{folder}: audit event {number} lost its hash (edited by hand)")
    prev = chain_head(events[:legacy])
    for number, event in enumerate(events[legacy:], start=legacy + 1):
        what = f"audit event {number} ({event.get('event')}, revision {event.get('revision')})"
        if event.get("prev") != prev:
            raise ResultError(
                f"{folder}: {what} does not follow the event before it "
                "(an audit event was removed, inserted or reordered)"
            )
        if event.get("hash") != event_hash(event):
            raise ResultError(f"{folder}: {what} was edited after lnpath wrote it")
        prev = event["hash"]
    return prev


def seal(events: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """What result.json records of its audit trail: the head hash and the number of events."""
    return {"audit_head": chain_head(events), "events": len(events)}


# --------------------------------------------------------------------------------------------
# One writer at a time, and what a crash leaves behind


def lock_path(folder: Path) -> Path:
    """The lock file of a result folder: beside it, because every write replaces the folder."""
    return folder.parent / f".{folder.name}.lock"


@contextlib.contextmanager
def result_lock(folder: Path) -> Iterator[None]:
    """Hold the result's lock for the whole of a write (re-entrant within one process).

    Raises:
        ResultError: another process holds it, or the folder's parent cannot be written.
    """
    from filelock import FileLock, Timeout

    path = lock_path(folder)
    if _HELD.get(path):
        _HELD[path] += 1
        try:
            yield
        finally:
            _HELD[path] -= 1
        return
    if path.is_symlink():  # opening it would create or truncate whatever it points at
        raise ResultError(
            f"{folder}: its lock file {path.name} is a symbolic link (lnpath never makes one); "
            "remove the link and try again"
        )
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(path), timeout=0)
        lock.acquire()
    except Timeout:
        raise ResultError(
            f"{folder}: another lnpath process is writing this result; "
            "try again when it has finished"
        ) from None
    except OSError as exc:
        raise ResultError(f"{folder}: cannot write here ({exc.strerror or exc})") from None
    _HELD[path] = 1
    try:
        yield
    finally:
        _HELD.pop(path, None)
        lock.release()


@contextlib.contextmanager
def exclusive(folder: Path) -> Iterator[None]:
    """One writer at a time per result folder, so two reviews never both become revision N+1;
    what an interrupted write left behind is restored or removed first.

    Raises:
        ResultError: no result there, said before a mistyped path gets a lock file and parents.
    """
    if not folder.exists() and not folder.with_name(f".{folder.name}.old").is_dir():
        raise ResultError(f"{folder}: result folder not found")
    with result_lock(folder):
        recover(folder)
        yield


def result_path(result_dir: object, who: str) -> Path:
    """The path a result argument names: a path, or a SlideResult (its ``folder``), which is
    what ``score_slide`` and ``review`` hand a notebook, so it can go straight back in.

    Raises:
        InputError: anything else, named in one line instead of ``TypeError`` from pathlib.
    """
    if isinstance(result_dir, str | os.PathLike):
        return Path(result_dir)
    folder = getattr(result_dir, "folder", None)
    if isinstance(folder, Path):
        return folder
    raise InputError(
        f"{who}: expected a result folder path or a SlideResult (got {type(result_dir).__name__})"
    )


def real_path(result_dir: str | os.PathLike[str] | Any, who: str = "result") -> Path:
    """The folder a result path names, through symlinks: a write replaces the real folder and
    leaves a link in place, instead of replacing the link with a copy.

    A path to a result's own ``result.json`` names its folder (read as a folder, the file has
    no audit trail and looked tampered with); any other file is refused. A SlideResult names
    its folder.

    Raises:
        ResultError: the path is a file other than a result.json.
        InputError: ``result_dir`` is neither a path nor a SlideResult.
    """
    named = result_path(result_dir, who)
    if named.is_file():
        if named.name == "result.json":  # its folder, even where the file itself is a link
            return Path(os.path.realpath(named.parent))
        raise not_a_folder(named)
    return Path(os.path.realpath(named))


def not_a_folder(path: Path) -> ResultError:
    """The one wording for a file given where a result folder belongs, whichever command."""
    return ResultError(
        f"{path}: a file, not a result folder (pass the folder that holds result.json)"
    )


def recover(folder: Path) -> None:
    """Undo what a crashed write left, with the lock held.

    Between the writer's two renames the only copy of a result is ``.NAME.old``: it is moved
    back. Temporary ``.NAME.XXXXXXXX.tmp`` folders of killed writes are removed (no other
    writer can be using them while the lock is held).
    """
    old = folder.with_name(f".{folder.name}.old")
    if old.is_dir() and not folder.exists():
        os.replace(old, folder)
        LOG.warning("%s: restored from %s (an earlier write was interrupted)", folder, old.name)
    pattern = re.compile(rf"\.{re.escape(folder.name)}\.[A-Za-z0-9_]{{8}}\.tmp")
    if folder.parent.is_dir():
        for leftover in folder.parent.iterdir():
            if pattern.fullmatch(leftover.name) and leftover.is_dir():
                shutil.rmtree(leftover, ignore_errors=True)
                LOG.info("%s: removed %s left by an interrupted write", folder, leftover.name)


# --------------------------------------------------------------------------------------------
# Signatures


def generate_key(stem: str | os.PathLike[str], pathologist: str | None = None) -> tuple[Path, Path]:
    """Write a new Ed25519 key pair: ``STEM.pem`` (private, mode 0600) and ``STEM.pub.pem``,
    both naming ``pathologist`` when given (:mod:`lnpath.results.keyname`), so that signing and
    verifying can hold the signer's name to the key's.

    Raises:
        InputError: either file exists already, a parent is a file or not writable, or the name
            is not one line of plain text.
        OutputError: the folder cannot be written (nothing is left half-written).
    """
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    label = key_name_line(pathologist)
    stem = Path(stem)
    if stem.is_dir() or not stem.name:  # DIR.pem beside the folder is not what was meant
        raise InputError(f"{stem}: is a folder; give a file stem in it, e.g. {stem / 'dr_renal'}")
    private, public = stem.with_name(f"{stem.name}.pem"), stem.with_name(f"{stem.name}.pub.pem")
    for path in (private, public):
        if path.exists():
            raise InputError(f"{path}: already exists; refusing to replace a key")
        check_output_file(path)  # a parent that is a file, or not writable: say so up front
    key = Ed25519PrivateKey.generate()
    private_pem = label + key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public_pem = label + key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    created: list[Path] = []
    try:
        private.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        created.append(private)
        with os.fdopen(fd, "wb") as handle:
            handle.write(private_pem)
        created.append(public)
        public.write_bytes(public_pem)
    except OSError as exc:
        for path in created:  # half a key pair (a disk full) would block the next keygen
            path.unlink(missing_ok=True)
        raise OutputError(f"{stem}: cannot write the key pair ({exc.strerror or exc})") from None
    return private, public


def fingerprint(public_key: Any) -> str:
    """sha256 of a public key's raw bytes: how a signature record names the key that made it."""
    from cryptography.hazmat.primitives import serialization

    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()


def _key_bytes(path: str | os.PathLike[str], kind: str) -> bytes:
    """A key file's bytes; an unreadable or empty file, or one with no PEM block, is refused in a
    sentence (InputError) before cryptography would answer in a paragraph."""
    if not Path(path).is_file():  # not "[Errno 2] ..." inside "not a readable key"
        raise not_a_file(Path(path), f"{kind} key file")
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise InputError(f"{path}: cannot read the {kind} key file ({exc.strerror})") from None
    if not data.strip():
        raise InputError(f"{path}: the {kind} key file is empty (lnpath keygen writes one)")
    if b"-----BEGIN " not in data:
        raise InputError(f"{path}: not a PEM key (lnpath keygen writes one)")
    return data


def _pem_header(data: bytes) -> bytes:
    """The first PEM header line of a key file's bytes."""
    return data[data.find(b"-----BEGIN ") :].split(b"\n", 1)[0].strip()


def _unreadable_pem(path: str | os.PathLike[str], exc: Exception, kind: str) -> InputError:
    """cryptography's error in a sentence: its own text is a paragraph with a URL."""
    if isinstance(exc, TypeError):  # "Password was not given but private key is encrypted"
        return InputError(f"{path}: the {kind} key is encrypted (lnpath keygen writes one without)")
    return InputError(f"{path}: not a PEM {kind} key (its PEM text is damaged or of another kind)")


def load_private_key(path: str | os.PathLike[str]) -> Any:
    """An Ed25519 private key from a PEM file (unencrypted, as :func:`generate_key` writes it).

    Raises:
        InputError: unreadable, readable by other users, encrypted, or not an Ed25519 private
            key.
    """
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    data = _key_bytes(path, "private")
    if _pem_header(data) == b"-----BEGIN PUBLIC KEY-----":  # not "readable by other users"
        name = Path(path).name
        half = f"{name[:-8]}.pem" if name.endswith(".pub.pem") else "what lnpath keygen wrote"
        raise InputError(f"{path}: is a public key; sign with its private half ({half})")
    mode = Path(path).stat().st_mode & 0o777
    if os.name == "posix" and mode & 0o077:  # as ssh: a key others can read signs for them too
        raise InputError(
            f"{path}: the private key is readable by other users (mode {mode:04o}); "
            f"make it yours alone (chmod 600 {path}), as lnpath keygen writes it"
        )
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise _unreadable_pem(path, exc, "private") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise InputError(f"{path}: not an Ed25519 private key (lnpath keygen writes one)")
    return key


def load_public_key(path: str | os.PathLike[str]) -> Any:
    """An Ed25519 public key from a PEM file.

    Raises:
        InputError: unreadable, or not an Ed25519 public key.
    """
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    data = _key_bytes(path, "public")
    if _pem_header(data).endswith(b"PRIVATE KEY-----"):
        half = Path(path).with_suffix(".pub.pem")
        raise InputError(f"{path}: is a private key; verify with its public half ({half.name})")
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        raise _unreadable_pem(path, exc, "public") from None
    if not isinstance(key, Ed25519PublicKey):
        raise InputError(f"{path}: not an Ed25519 public key (lnpath keygen writes one)")
    return key


def sign(private_key: Any, digest: str) -> dict[str, str]:
    """The signature record of an event hash (kept in the event, outside its own hash)."""
    value = private_key.sign(digest.encode())
    return {
        "algorithm": SIGNATURE_ALGORITHM,
        "public_key_sha256": fingerprint(private_key.public_key()),
        "value": base64.b64encode(value).decode(),
    }


def signer(private_key: Any) -> dict[str, str]:
    """The signing key's public half, recorded among the event's hashed fields: a signature
    edited or removed afterwards then breaks :func:`check_recorded_signature` without the
    public key file (which key it must be is still for ``--public-key`` to say)."""
    from cryptography.hazmat.primitives import serialization

    raw = private_key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    return {
        "algorithm": SIGNATURE_ALGORITHM,
        "public_key": base64.b64encode(raw).decode(),
        "public_key_sha256": hashlib.sha256(raw).hexdigest(),
    }


def check_recorded_signature(
    folder: Path, event: Mapping[str, Any], what: str = "the confirmation"
) -> bool:
    """Check a signed event's signature against the public key the event itself records.

    Returns:
        False where the event records no signer (unsigned, or signed before lnpath recorded it).

    Raises:
        ResultError: the signature, or what it signed, was edited after signing.
    """
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    record = event.get("signer")
    if record is None:
        return False
    try:
        key = Ed25519PublicKey.from_public_bytes(base64.b64decode(str(record["public_key"])))
        check_signature(folder, key, event, "the key it records", what)
    except (ResultError, ValueError, TypeError, KeyError):
        raise ResultError(
            f"{folder}: {what}'s signature was removed or edited after signing, or what it "
            "signed (content, files, who, when, text) was, and the audit trail re-hashed "
            "(edited outside lnpath)"
        ) from None
    return True


def check_signature(
    folder: Path,
    public_key: Any,
    event: Mapping[str, Any],
    key_path: str | os.PathLike[str],
    what: str = "the confirmation",
) -> None:
    """Check an event's signature with ``public_key``.

    Raises:
        ResultError: not signed, signed with another key, or the signature does not match.
    """
    from cryptography.exceptions import InvalidSignature

    record = event.get("signature")
    if not isinstance(record, Mapping):
        raise ResultError(f"{folder}: {what} is not signed (confirm with --key)")
    if record.get("public_key_sha256") != fingerprint(public_key):
        raise ResultError(f"{folder}: {what} was signed with another key than {key_path}")
    try:
        public_key.verify(base64.b64decode(str(record.get("value"))), str(event["hash"]).encode())
    except (InvalidSignature, ValueError):
        raise ResultError(f"{folder}: {what}'s signature does not match") from None
