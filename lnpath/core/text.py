"""Free text a pathologist types into a signed record: refused when it holds what nobody sees.

A name, a comment, a note or an addendum is read later by someone who trusts what is on screen.
A control character (NUL, ESC, ...) is invisible there yet changes what a terminal, a CSV or the
audit trail shows; a text-direction override inside a name can show the sign-out time beside it
reversed. So each is refused with one line that says which character, rather than stored.
"""

from __future__ import annotations

import unicodedata

from lnpath.core.errors import InputError

MAX_TEXT_CHARS = 20_000
"""The longest comment, note or addendum (longer documents belong outside the result)."""

BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
"""Unicode's explicit embeddings, overrides and isolates (format characters, but not the
joiners that names in some scripts need)."""


def _control(ch: str, allowed: str) -> bool:
    return unicodedata.category(ch) == "Cc" and ch not in allowed


def _hidden(name: str) -> str | None:
    """The first control or text-direction character of a name, if any (a tab is allowed)."""
    return next((ch for ch in name if ch in BIDI_CONTROLS or _control(ch, "\t")), None)


def check_name(name: str, what: str) -> None:
    """Refuse a name with a control or text-direction character (a name is shown inline, beside
    the time it signed)."""
    hidden = _hidden(name)
    if hidden is not None:
        raise InputError(
            f"{what}: the pathologist's name holds a control or text-direction character "
            f"(U+{ord(hidden):04X}), which hides or reorders the text shown beside it "
            "(the time of a sign-out); type the name as plain text"
        )


def check_patient_id(patient_id: str | None, what: str) -> None:
    """Refuse a patient id that is not one line of plain text, as a pathologist's name is
    refused: it is shown inline on the report and in every table, where a line break splits
    its row and a control or text-direction character hides or reorders it."""
    if patient_id is None:
        return
    breaks = next((ch for ch in patient_id if unicodedata.category(ch) in ("Zl", "Zp")), None)
    hidden = _hidden(patient_id) or breaks
    if hidden is not None:
        raise InputError(
            f"{what}: the patient id holds a line break, control or text-direction character "
            f"(U+{ord(hidden):04X}); a patient id must be one line of plain text"
        )


def check_free_text(text: str, what: str) -> None:
    """Refuse a comment, note or addendum with a control character other than a line break or a
    tab, or longer than :data:`MAX_TEXT_CHARS` (direction marks are allowed: the report isolates
    each text in its own ``<bdi>``)."""
    hidden = next((ch for ch in text if _control(ch, "\n\r\t")), None)
    if hidden is not None:
        raise InputError(
            f"{what} holds an invisible control character (U+{ord(hidden):04X}); "
            "type or paste it as plain text"
        )
    if len(text) > MAX_TEXT_CHARS:
        raise InputError(
            f"{what} is at most {MAX_TEXT_CHARS} characters, not {len(text)} "
            "(attach longer documents outside the result)"
        )
