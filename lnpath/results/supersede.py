"""Re-scoring over a confirmed result: refused, or the confirmed folder moved aside intact."""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lnpath.core.errors import ResultError, SignOutRefused
from lnpath.results.folder import read_audit
from lnpath.results.seal import verify

LOG = logging.getLogger(__name__)


def confirmation_in(folder: Path) -> dict[str, Any] | None:
    """The last confirmation a result folder holds (any revision), or None if it holds none.

    Read from both result.json and the audit trail, so an edited or broken folder that may hold
    a confirmation counts as confirmed: it must never be replaced silently.
    """
    if not (folder / "result.json").is_file():
        return None
    try:
        events = read_audit(folder)
    except (OSError, ValueError, ResultError):
        events = []
    confirmed = [e for e in events if e.get("event") == "confirmed"]
    if confirmed:
        last = confirmed[-1]
        return {"revision": last.get("revision"), "by": last.get("by"), "at": last.get("at")}
    try:
        data = json.loads((folder / "result.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {"revision": None, "by": None, "at": None}  # unreadable: assume the worst
    confirmation = data.get("confirmation") if isinstance(data, dict) else None
    if isinstance(data, dict) and (data.get("status") == "confirmed" or confirmation):
        info = confirmation if isinstance(confirmation, dict) else {}
        return {
            "revision": data.get("revision"),
            "by": info.get("pathologist"),
            "at": info.get("confirmed_at"),
        }
    return None


def refuse_confirmed(folder: Path, supersede: bool) -> dict[str, Any] | None:
    """Guard a re-scoring: a folder holding a confirmation is replaced only with ``supersede``.

    Returns:
        The confirmation (to pass to :func:`supersede_result`), or None if there is none.

    Raises:
        SignOutRefused: the folder holds an intact confirmation and ``supersede`` is false.
        ResultError: it holds a confirmation but fails its checks (edited outside lnpath), or
            its result.json cannot be read, and ``supersede`` is false.
    """
    confirmed = confirmation_in(folder)
    if confirmed is not None and not supersede:
        refusal: type[ResultError] = SignOutRefused
        if any(confirmed.values()):
            held = (
                f"holds revision {confirmed['revision']} confirmed by {confirmed['by']} "
                f"({confirmed['at']}); a confirmed result is never replaced"
            )
            try:
                verify(folder)
            except ResultError as failed:  # edited outside lnpath: exit 3, not the rule's 4
                refusal = ResultError
                held = f"{held}, and it fails its checks ({failed})"
        else:  # "confirmed by None" would name a sign-off nobody can see
            refusal = ResultError  # a malformed folder, as verify would call it
            held = (
                "holds a result.json that cannot be read, so whether it was confirmed is "
                "unknown; such a result is never replaced"
            )
        raise refusal(
            f"{folder}: {held} (add --supersede to move it aside as a superseded result and "
            "score anew)"
        )
    return confirmed


@dataclass(frozen=True)
class Supersession:
    """A confirmed result about to be superseded: where it will go, and the record of it that
    the new result keeps (``supersedes`` in result.json and its first audit event)."""

    folder: Path
    aside: Path
    record: dict[str, Any]

    def move_aside(self) -> None:
        """Move the confirmed folder, intact, to ``aside``: called by the new result's write
        just before it takes the folder's place, so the new result already names where the
        old one went, and a failed or interrupted scoring leaves the confirmed folder where it
        was."""
        os.replace(self.folder, self.aside)
        LOG.warning("%s: confirmed result moved aside to %s", self.folder, self.aside)


def supersede_result(folder: Path, confirmed: Mapping[str, Any]) -> Supersession:
    """Plan moving a confirmed result aside to ``<folder>.superseded-<UTC time>``.

    Nothing moves yet: pass :meth:`Supersession.move_aside` to the write of the new result.
    """
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    aside = folder.with_name(f"{folder.name}.superseded-{stamp}")
    number = 1
    while aside.exists():
        number += 1
        aside = folder.with_name(f"{folder.name}.superseded-{stamp}-{number}")
    try:
        data = json.loads((folder / "result.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        data = {}
    record = {
        "folder": str(aside),
        "revision": confirmed.get("revision"),
        "confirmed_by": confirmed.get("by"),
        "confirmed_at": confirmed.get("at"),
        "seal": data.get("seal") if isinstance(data, dict) else None,
    }
    return Supersession(folder, aside, record)
