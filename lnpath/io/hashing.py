"""sha256 of files and bytes: the one way lnpath fingerprints weights, slides and result files."""

from __future__ import annotations

import hashlib
import os


def file_sha256(path: str | os.PathLike[str]) -> str:
    """The hex sha256 of a whole file, streamed (never read into memory at once); it matches
    ``sha256sum``."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def bytes_sha256(data: bytes) -> str:
    """The hex sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()
