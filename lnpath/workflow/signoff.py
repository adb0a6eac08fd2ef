"""Pathologist review, confirmation and tamper checks: the pathologist has the last word.

- :func:`review` applies a pathologist's edits (a QuPath GeoJSON export with glomeruli
  reclassified, deleted, redrawn or added; an edited findings CSV; cortex fractions), re-scores,
  and writes a new provisional revision listing every change (glomerulus, field, before → after).
- :func:`confirm` seals the current revision with who, when and a sha256 over the result content.
  It refuses an index with a component neither assessed nor marked "not evaluable" with a reason.
  A confirmed revision is immutable: confirming twice is refused, and a later review needs
  ``supersede=True`` and records whose confirmation it supersedes.
- A pathologist's name is required for both; an edit file exported from an older revision is
  refused unless told how to merge it (:mod:`lnpath.results.merge`).
- :func:`add_addendum` appends a signed-out result's addendum (who, when, text) without
  reopening it: the diagnosis and its seal stay; the addendum is its own audit event.
- :func:`verify` recomputes the seals and raises :class:`~lnpath.core.errors.ResultError` on any
  edit.

Every revision is kept under ``revisions/rNNN/`` and every event in ``revisions/audit.jsonl``.
Hashes detect accidental or casual edits; they are not signatures, so anyone able to rewrite the
whole folder consistently could forge one.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from lnpath.core.args import check_flag
from lnpath.core.errors import InputError, ResultError, SignOutRefused
from lnpath.core.text import check_free_text
from lnpath.core.vocabulary import main_call
from lnpath.io.configfile import load_config
from lnpath.report.assets import Assets
from lnpath.results.edits import (
    Edit,
    apply_cortex,
    apply_exclusions,
    apply_findings,
    apply_geojson,
)
from lnpath.results.folder import (
    ResultContent,
    SlideResult,
    load_result_json,
    read_audit,
    write_result,
)
from lnpath.results.integrity import exclusive, load_private_key, real_path
from lnpath.results.keyname import check_key_owner
from lnpath.results.seal import confirmation_event, verify
from lnpath.scoring.biopsy import (
    class_inputs,
)
from lnpath.scoring.score import score_findings
from lnpath.workflow.revision import (
    ReviewRequest,
    _apply_file,
    _edit,
    _last_change,
    _name,
    _record_fields,
    _refresh_from_slide,
    _scoring_table,
    _summary_changes,
    _supersedes,
)

LOG = logging.getLogger(__name__)

MANY_DELETIONS = 3
"""A review deleting more glomeruli than this (and over a quarter) needs ``allow_deletions``."""


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def review(
    result_dir: str | os.PathLike[str] | SlideResult,
    *,
    pathologist: str,
    findings: str | os.PathLike[str] | pd.DataFrame | None = None,
    geojson: str | os.PathLike[str] | None = None,
    cortex: Mapping[str, float | None] | None = None,
    biopsy: Mapping[str, Any] | None = None,
    class_override: Mapping[str, Any] | None = None,
    comment: str | None = None,
    exclusions: Mapping[int, str] | None = None,
    base_revision: int | None = None,
    supersede: bool = False,
    merge: str | None = None,
    note: str | None = None,
    allow_deletions: bool = False,
) -> SlideResult:
    """Apply a pathologist's edits, re-score, and write a new provisional revision.

    Args:
        result_dir: a folder written by :func:`lnpath.score_slide` (or the SlideResult it
            returned).
        pathologist: who makes the edits (required; recorded in the audit trail).
        findings: an edited ``findings.csv`` (path, or a DataFrame); a row left out is a
            deleted glomerulus; ``exclusion``/``exclusion_reason`` columns apply too.
        geojson: a QuPath GeoJSON export of the result's ``glomeruli.geojson`` after editing.
            Glomeruli are matched by feature id, else by outline overlap (IoU ≥ 0.5); a missing
            glomerulus is deleted, an unmatched feature is added, a changed class sets its lesion
            (and clears the previous main call), edited ``call: <lesion>`` measurements apply.
        cortex: cortex fractions in [0, 1] to set (None = not assessed).
        biopsy: biopsy-level findings to set: IF/EM, vessels, and ``not_evaluable`` marks
            (index component → reason); layout in :mod:`lnpath.scoring.biopsy`. Fields not given
            are kept.
        class_override: ``{"class": "IV+V", "reason": "..."}``; an empty class clears it.
        comment: the report's comment (an empty string clears it).
        exclusions: glomerulus id → ``ischemic`` (left out of the class fraction, spec §2.2) or
            ``not_glomerulus`` (left out of every count), optionally ``"kind: reason"``; ``""``
            clears it.
        base_revision: the revision the edits were made on; refused if the result moved on.
        supersede: required to revise a confirmed result; the new revision records whose
            confirmation it supersedes.
        merge: for an export made from an older revision: ``keep-current`` applies only what
            the export changed and keeps later changes where both changed; ``take-export`` lets
            the export win there. Without it such an export is refused.
        note: free text for the audit trail.
        allow_deletions: allow an edit that deletes more than :data:`MANY_DELETIONS` glomeruli
            and more than a quarter of them (a table of another slide, a partial export).

    Returns:
        The new revision; unchanged (and nothing written) if the edits change nothing.

    Raises:
        SignOutRefused: it is confirmed and ``supersede`` is not set (a :class:`ResultError`).
        ResultError: the folder is not a result or fails :func:`verify`; an edit was made on an
            older revision.
        InputError: no pathologist; an edit is malformed or belongs to another slide.
    """
    folder = real_path(result_dir, "review")
    who = _name(pathologist, "review")
    if base_revision is None:  # a SlideResult's edits are made on the revision it holds
        base_revision = _held_revision(result_dir)
    request = ReviewRequest(
        findings, geojson, cortex, biopsy, class_override, comment, exclusions,
        base_revision, supersede, merge, note,
    )  # fmt: skip
    request.check()
    allow_deletions = check_flag(allow_deletions, "review: allow_deletions")
    if request.empty():
        raise InputError(
            "review: give an edited GeoJSON or findings table, cortex fractions, biopsy "
            "findings, a class override, a comment or exclusions"
        )
    with exclusive(folder):
        return _review(folder, who, request, allow_deletions)


def _review(folder: Path, who: str, request: ReviewRequest, allow_deletions: bool) -> SlideResult:
    verify(folder)
    result = load_result_json(folder)
    if request.base_revision is not None and int(request.base_revision) != result["revision"]:
        raise ResultError(
            f"{folder}: the edits were made on revision {request.base_revision}, but the result "
            f"is at revision {result['revision']} (changed by {_last_change(folder, result)}); "
            "reload it and edit again"
        )
    supersedes = _supersedes(folder, result, request.supersede)
    edit = _edit(result, folder)
    before = len(edit.table)
    ids = set(edit.table["glomerulus_id"])
    merges = []
    if request.geojson is not None:
        path = Path(request.geojson)
        merges.append(
            _apply_file(
                folder, result, edit, path, lambda e: apply_geojson(e, path, result), request
            )
        )
    if isinstance(request.findings, pd.DataFrame):
        apply_findings(edit, request.findings)
    elif request.findings is not None:
        table = Path(request.findings)
        merges.append(
            _apply_file(folder, result, edit, table, lambda e: apply_findings(e, table), request)
        )
    if request.cortex:
        apply_cortex(edit, request.cortex)
    if request.exclusions:
        apply_exclusions(edit, request.exclusions)
    if before and edit.table.empty:
        raise InputError(
            f"review: the edit deletes all {before} glomeruli (an empty export or a findings "
            "file without rows?); nothing written"
        )
    deleted = len(ids - set(edit.table["glomerulus_id"]))
    if deleted > MANY_DELETIONS and deleted > before / 4 and not allow_deletions:
        raise InputError(
            f"review: the edit would delete {deleted} of {before} glomeruli (a table or export of "
            "another slide?); nothing written; pass --allow-deletions if that is intended"
        )
    fields = _record_fields(edit, result, request)
    if not edit.changes:
        LOG.warning("%s: the edits change nothing; revision %s kept", folder, result["revision"])
        return SlideResult(folder, result)
    merged = [m for m in merges if m is not None]
    fields.update(supersedes=supersedes, merge=merged[-1] if merged else None)
    return _write_revision(folder, result, edit, who, request.note, fields)


def _write_revision(
    folder: Path,
    result: dict[str, Any],
    edit: Edit,
    who: str,
    note: str | None,
    fields: Mapping[str, Any],
) -> SlideResult:

    assets = Assets.load(folder)
    _refresh_from_slide(edit, result, assets)
    config = load_config(result["config"])
    cortex = {k: v for k, v in edit.cortex.items() if v is not None}
    biopsy = fields.get("biopsy", result.get("biopsy"))
    score = score_findings(
        _scoring_table(edit.table), cortex=cortex, config=config, biopsy=class_inputs(biopsy)
    ).to_dict()
    edit.table["main_call"] = [main_call(r) for r in edit.table.to_dict("records")]
    revision = int(result["revision"]) + 1
    at = _now()
    changes = edit.changes + _summary_changes(result["scores"], score)
    for change in changes:
        change.update(revision=revision, at=at)
    new = {
        **result,
        **fields,
        "status": "provisional",
        "revision": revision,
        "scores": score,
        "cortex_fractions": edit.cortex,
        "confirmation": None,
        "changes": [*result.get("changes", []), *changes],
    }
    event = {"event": "reviewed", "at": at, "by": who, "note": note, "n_changes": len(changes)}
    if fields.get("supersedes"):
        event["supersedes"] = fields["supersedes"]
    content = ResultContent(edit.table, edit.polygons, assets)
    write_result(folder, new, event, content, overwrite=True)
    LOG.info("%s: revision %d with %d change(s)", folder, revision, len(changes))
    return SlideResult.load(folder)


# --------------------------------------------------------------------------------------------
# Confirm and verify


def confirm(
    result_dir: str | os.PathLike[str] | SlideResult,
    *,
    pathologist: str,
    note: str | None = None,
    key: str | os.PathLike[str] | None = None,
) -> SlideResult:
    """Sign the current revision as ``pathologist``, sealed with a content sha256.

    A signed index is a number or says it is not one: every component not assessed must first be
    marked "not evaluable" with a reason (``review(biopsy={"not_evaluable": {...}})``).

    Args:
        result_dir: the result folder (a symlink to it confirms the folder it points to), or
            its SlideResult.
        pathologist: who confirms (one line).
        note: recorded with the confirmation.
        key: an Ed25519 private key file (``lnpath keygen``) to sign the confirmation with, so
            that :func:`verify` with the public key detects even a deliberate rewrite. A key
            that names a pathologist (``lnpath keygen --pathologist``) signs only as that name.

    Raises:
        SignOutRefused: already confirmed (immutable), or an index component neither assessed
            nor marked not evaluable (a :class:`ResultError`, exit 4).
        ResultError: the folder fails :func:`verify`.
        InputError: the pathologist's name is empty, or the key is unusable or names another
            pathologist.
    """
    folder = real_path(result_dir, "confirm")
    who = _name(pathologist, "confirm")
    if note is not None and not isinstance(note, str):
        raise InputError(f"confirm: note must be text (got {type(note).__name__})")
    if note is not None:
        check_free_text(note, "confirm: the note")
    private_key = None if key is None else load_private_key(key)
    if key is not None:  # before the lock: a refusal leaves the folder as it was
        check_key_owner(key, who, "confirm")
    with exclusive(folder):
        return _confirm(folder, who, note, private_key, _held_revision(result_dir))


def _held_revision(result_dir: object) -> int | None:
    """The revision a SlideResult argument shows (None for a path): what the caller has seen."""
    return result_dir.revision if isinstance(result_dir, SlideResult) else None


def _check_held(folder: Path, result: Mapping[str, Any], held: int | None, what: str) -> None:
    """Refuse to sign, or add to, a revision other than the one the caller holds: a notebook's
    SlideResult from before someone else saved would otherwise sign what nobody looked at."""
    if held is not None and held != result["revision"]:
        raise ResultError(
            f"{folder}: you hold revision {held}, but the result is at revision "
            f"{result['revision']} (changed by {_last_change(folder, result)}); load it again "
            f"(lnpath.SlideResult.load) and check it before {what}"
        )


def unsigned_gaps(result: Mapping[str, Any]) -> list[str]:
    """Index components neither assessed nor marked not evaluable by the pathologist."""
    marked = (result.get("biopsy") or {}).get("not_evaluable") or {}
    scores = result["scores"]
    return [
        name
        for key in ("activity_index", "chronicity_index")
        for name in scores[key].get("not_assessed", [])
        if name not in marked
    ]


def _confirm(
    folder: Path, pathologist: str, note: str | None, key: Any, held: int | None
) -> SlideResult:
    verify(folder)
    result = load_result_json(folder)
    _check_held(folder, result, held, "signing it")
    if result["status"] == "confirmed":
        who = result["confirmation"]["pathologist"]
        raise SignOutRefused(
            f"{folder}: revision {result['revision']} is already confirmed by {who}; "
            "a confirmed result is immutable (review it with --supersede, supersede=True in "
            "Python, to start a new revision)"
        )
    gaps = unsigned_gaps(result)
    if gaps:
        raise SignOutRefused(
            f"{folder}: cannot sign an incomplete index; not assessed: {', '.join(gaps)}. "
            "Supply them (lnpath review --findings/--cortex) or mark each not evaluable with a "
            "reason (lnpath review --biopsy FILE with not_evaluable: {component: reason})"
        )
    at = _now()
    new = {
        **result,
        "status": "confirmed",
        "confirmation": {
            "pathologist": pathologist,
            "confirmed_at": at,
            "sha256": None,
            "note": note,
        },
    }
    event = {"event": "confirmed", "at": at, "by": pathologist, "note": note}
    write_result(folder, new, event, overwrite=True, signing_key=key)
    return SlideResult.load(folder)


def add_addendum(
    result_dir: str | os.PathLike[str] | SlideResult,
    text: str,
    *,
    pathologist: str,
    key: str | os.PathLike[str] | None = None,
) -> SlideResult:
    """Add an addendum to a confirmed result, as a signed report takes one.

    The confirmed revision, its scores and its seal do not change; the addendum (text, who,
    when) is appended to ``result.json``'s ``addenda``, shown under the report's comment, and
    recorded as its own event in the hash-chained audit trail, which :func:`verify` holds the
    addenda to. A draft takes a comment instead (``review(comment=...)``). ``result_dir`` is
    the folder or its SlideResult. With ``key`` (an Ed25519 private key file) the addendum is
    signed like a confirmation (a named key only as its pathologist); unsigned, its text and the
    report and overlay re-rendered with it rest on hashes alone, and :func:`verify` says so.

    Raises:
        SignOutRefused: the result is not confirmed (a :class:`ResultError`, exit 4).
        ResultError: the folder fails :func:`verify`.
        InputError: the text is empty, the pathologist's name is missing, or the key is
            unusable or names another pathologist.
    """
    folder = real_path(result_dir, "add_addendum")
    who = _name(pathologist, "add an addendum")
    if not isinstance(text, str) or not text.strip():
        raise InputError("an addendum needs its text (--text, or text= in Python)")
    check_free_text(text, "an addendum")
    private_key = None if key is None else load_private_key(key)
    if key is not None:
        check_key_owner(key, who, "addendum")
    with exclusive(folder):
        verify(folder)
        result = load_result_json(folder)
        _check_held(folder, result, _held_revision(result_dir), "adding to it")
        if result["status"] != "confirmed":
            raise SignOutRefused(
                f"{folder}: revision {result['revision']} is not signed out; addenda follow a "
                "confirmed report (put a draft's remarks in its comment: lnpath review "
                "--comment, or review(comment=...) in Python)"
            )
        at = _now()
        entry = {"text": text.strip(), "by": who, "at": at}
        new = {**result, "addenda": [*(result.get("addenda") or []), entry]}
        event = {"event": "addendum", "at": at, "by": who, "note": None, "text": entry["text"]}
        write_result(folder, new, event, overwrite=True, signing_key=private_key)
        if private_key is None and confirmation_event(read_audit(folder)).get("signature"):
            LOG.warning(
                "%s: the confirmation is signed but this addendum is not (--key signs it)", folder
            )
    LOG.info("%s: addendum by %s", folder, who)
    return SlideResult.load(folder)
