"""Whose signing key it is: the pathologist's name that ``lnpath keygen --pathologist`` wrote.

The name is RFC 7468 explanatory text, a ``Pathologist: NAME`` line before ``-----BEGIN``, in
both key files. A sidecar file would get lost or mismatched whenever a key is copied, mailed
or renamed on its own; a line inside the PEM travels with the key, and the standard loaders
(``cryptography``'s, OpenSSL's) skip text before the BEGIN line, so a named key loads wherever
an unnamed one does. The line is not signed: it names the key for whoever trusts the public key
file, which is exactly what ``verify --public-key`` already trusts. Checked at confirm and
addendum time, it stops a borrowed or mixed-up key before anything is signed.
"""

from __future__ import annotations

import os
import unicodedata

from lnpath.core.errors import InputError
from lnpath.core.text import check_name

LABEL = "Pathologist:"
MAX_NAME_CHARS = 200
"""The longest name a key records (a name, not a text)."""
_MAX_KEY_FILE = 1 << 20
"""More than any key file holds: the whole file is read, so no text before the key hides it."""


def key_name_line(pathologist: str | None) -> bytes:
    """The explanatory text line that names a key's pathologist (none for an unnamed key).

    Raises:
        InputError: the name is empty, more than one line, holds a control or text-direction
            character or ``-----`` (which would end the PEM text), or is too long.
    """
    if pathologist is None:
        return b""
    what = "keygen --pathologist"
    if not isinstance(pathologist, str) or not pathologist.strip():
        raise InputError(f"{what}: the pathologist's name is empty")
    if any(unicodedata.category(ch) in ("Zl", "Zp") or ch in "\r\n\v\f" for ch in pathologist):
        raise InputError(f"{what}: the pathologist's name must be one line")
    check_name(pathologist, what)
    name = " ".join(pathologist.split())
    if "-----" in name:
        raise InputError(f"{what}: the pathologist's name cannot hold ----- (it ends PEM text)")
    if len(name) > MAX_NAME_CHARS:
        raise InputError(f"{what}: the pathologist's name is at most {MAX_NAME_CHARS} characters")
    return f"{LABEL} {name}\n".encode()


def key_pathologist(path: str | os.PathLike[str]) -> str | None:
    """The pathologist a key file names, whitespace collapsed; None for an unnamed key.

    Raises:
        InputError: the text before the key is not UTF-8, or a hand edit left its name
            ambiguous: a label naming nobody, two labels, or one after the key (which would
            otherwise leave the key unnamed, signing for anyone).
    """
    try:
        with open(path, "rb") as handle:
            content = handle.read(_MAX_KEY_FILE)
    except OSError:
        return None  # the key loaders, called first, say why a key file is unreadable
    start = content.find(b"-----BEGIN ")
    if start < 0:
        return None  # not a PEM file: the key loaders say so
    try:
        before = content[:start].decode("utf-8")
    except UnicodeDecodeError:
        raise InputError(f"{path}: the text before the key is not UTF-8 (edited by hand)") from None
    lines = [line.strip() for line in before.split("\n")]  # an indented label names it too
    labels = [line for line in lines if line.startswith(LABEL)]
    after = content[start:].decode("utf-8", errors="replace").split("\n")
    if any(line.lstrip().startswith(LABEL) for line in after):
        raise InputError(f"{path}: a {LABEL} line after -----BEGIN (edited by hand)")
    if len(labels) > 1:
        raise InputError(f"{path}: {len(labels)} {LABEL} lines name it (edited by hand)")
    if not labels:
        return None
    name = " ".join(labels[0][len(LABEL) :].split())
    if not name:
        raise InputError(f"{path}: its {LABEL} line names nobody (edited by hand)")
    return name


def same_pathologist(one: str, other: str) -> bool:
    """Whether two names are the same person's as typed: spacing, case and Unicode form aside
    (an accent typed as one character or as a letter and a combining mark)."""

    def form(name: str) -> str:
        return " ".join(unicodedata.normalize("NFKC", name).split()).casefold()

    return form(one) == form(other)


def check_key_owner(key: str | os.PathLike[str], pathologist: str, what: str) -> None:
    """Refuse to sign as ``pathologist`` with a key that names someone else.

    Raises:
        InputError: the key names another pathologist (an unnamed key signs for anyone).
    """
    owner = key_pathologist(key)
    if owner is not None and not same_pathologist(owner, pathologist):
        raise InputError(
            f"{what}: {key} is the key of {owner}, not of {pathologist}; "
            "sign with your own key (nothing was written)"
        )
