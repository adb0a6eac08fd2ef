"""sha256 of files and bytes: the one way lnpath fingerprints weights, slides and result files."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from typing import Any

LEGACY_CHUNK = 1 << 20  # results written before whole-file hashes hashed the first and last MiB


def file_sha256(path: str | os.PathLike[str]) -> str:
    """The hex sha256 of a whole file, streamed (never read into memory at once); it matches
    ``sha256sum``."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def bytes_sha256(data: bytes) -> str:
    """The hex sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def recorded_sha256(path: str | os.PathLike[str], fingerprint: Mapping[str, Any]) -> str:
    """The slide file's sha256 in the scheme its result recorded it with: the whole file
    (``scheme: sha256``), or, for results written before that, its size and first and last MiB,
    so that a slide signed then is still recognised as itself."""
    if fingerprint.get("scheme") == "sha256":
        return file_sha256(path)
    size = os.stat(path).st_size
    digest = hashlib.sha256(str(size).encode())
    with open(path, "rb") as handle:
        digest.update(handle.read(LEGACY_CHUNK))
        if size > LEGACY_CHUNK:
            handle.seek(max(LEGACY_CHUNK, size - LEGACY_CHUNK))
            digest.update(handle.read(LEGACY_CHUNK))
    return digest.hexdigest()
