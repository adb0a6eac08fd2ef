"""The result folder: what ``score_slide`` writes and ``review`` revises, and how to read it back.

A result is one folder, written atomically (an interrupted write never leaves half a result):

- ``result.json``: provenance (slide fingerprint, µm/px and its source, models, config), timings and
  the scores; status ``provisional`` until a pathologist confirms it
  (:mod:`lnpath.workflow.signoff`);
- ``findings.csv``: one row per glomerulus (calls, probabilities, measurements, outline centroid);
- ``glomeruli.geojson``: the same glomeruli as QuPath annotations, classified by their main call,
  so that the pathologist can re-classify, delete or add glomeruli in QuPath and return the export;
- ``report.html`` and ``overlay.png`` (:mod:`lnpath.report.slide`);
- ``assets/``: the thumbnail and glomerulus crops, so the report can be re-rendered after review
  without the slide;
- ``revisions/``: a snapshot of every revision and ``audit.jsonl``, the audit trail.

Keeping the format in its own module lets scoring, review, reports and batch runs share one
reader and one writer.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import shutil
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from shapely.geometry.base import BaseGeometry

from lnpath.core.errors import ResultError
from lnpath.core.findings import LESIONS, is_missing
from lnpath.core.vocabulary import CLASS_COLOURS
from lnpath.io.atomic import atomic_dir, carry_entry, link_tree, write_json, write_text
from lnpath.io.hashing import bytes_sha256, file_sha256
from lnpath.io.qupath import QuPathFeature, feature_collection, geojson_text, read_qupath
from lnpath.report.assets import Assets
from lnpath.report.slide import diagnosis_line, render_overlay, render_report
from lnpath.results.stamp import STAMP_COLUMNS, STAMP_MEASUREMENT, export_stamp, stamped
from lnpath.results.views import plot_result, result_html
from lnpath.scoring.score import BiopsyScore

from .integrity import chained, check_chain, not_a_folder, recover, result_path, seal, sign, signer

LOG = logging.getLogger(__name__)

SCHEMA_VERSION = 1
FEATURE_NAMESPACE = uuid.UUID("b3c1f0de-6f55-4c86-9d0a-6c2f4f1e7a21")


def feature_id(slide_sha256: str, glomerulus_id: int) -> str:
    """A stable QuPath object id, unique to this slide, that survives a QuPath round trip."""
    return str(uuid.uuid5(FEATURE_NAMESPACE, f"{slide_sha256}:{glomerulus_id}"))


def json_safe(value: Any) -> Any:
    """A plain-JSON copy of run metadata (numbers, strings, lists, dicts)."""
    return json.loads(json.dumps(value, default=str))


def json_value(value: Any) -> Any:
    if is_missing(value):
        return None
    if isinstance(value, np.generic):
        return value.item()
    return value


# --------------------------------------------------------------------------------------------
# Images kept with the result


# --------------------------------------------------------------------------------------------
# Glomeruli table <-> QuPath features


def glomeruli_features(
    findings: pd.DataFrame,
    polygons: Mapping[int, BaseGeometry],
    slide_sha256: str,
    revision: int | None = None,
) -> list[QuPathFeature]:
    """One QuPath annotation per glomerulus: class = main call; calls and measurements attached.

    Lesion calls become ``call: <lesion>`` measurements (1 present, 0 absent, left out = not
    assessed) because QuPath measurements are numbers; missing values are left out rather than
    written as null, which not every QuPath version imports. The pathologist edits the class, and
    :func:`lnpath.workflow.signoff.review` reads both back. ``revision`` becomes the ``lnpath
    revision`` measurement, the one stamp a QuPath re-export keeps.
    """
    features = []
    for row in findings.to_dict("records"):
        gid = int(row["glomerulus_id"])
        label = str(row["main_call"])
        measurements: dict[str, float] = {}
        for lesion in LESIONS:
            value = row.get(lesion)
            if not is_missing(value):
                measurements[f"call: {lesion}"] = float(bool(value))
        for column, value in row.items():
            key = str(column)
            measured = key.startswith(("p_", "m_")) or key in ("area_um2", "probability")
            if measured and not is_missing(value):
                measurements[key] = float(value)
        if revision is not None:
            measurements[STAMP_MEASUREMENT] = revision
        features.append(
            QuPathFeature(
                geometry=polygons[gid],
                classification=label,
                color=CLASS_COLOURS.get(label),
                object_type="annotation",
                measurements=measurements,
                id=str(row["feature_id"]),
                name=f"G{gid}",
                properties={"lnpath_glomerulus": gid, "lnpath_slide": slide_sha256[:16]},
            )
        )
    return features


def read_polygons(folder: Path) -> dict[int, BaseGeometry]:
    """Glomerulus id → outline from a result's ``glomeruli.geojson``."""
    out = {}
    for feature in read_qupath(folder / "glomeruli.geojson"):
        gid = feature.properties.get("lnpath_glomerulus")
        if gid is None:
            raise ResultError(
                f"{folder / 'glomeruli.geojson'}: feature {feature.id} has no glomerulus id"
            )
        out[int(gid)] = feature.geometry
    return out


def read_findings_csv(path: Path) -> pd.DataFrame:
    """Read a result's ``findings.csv`` with the lesion columns as nullable booleans."""
    text = {"feature_id": str, "main_call": str, "source": str}
    text.update(dict.fromkeys(("exclusion", "exclusion_reason", *STAMP_COLUMNS), str))
    try:
        table = pd.read_csv(path, dtype=text)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise ResultError(f"{path}: unreadable findings table ({exc})") from None
    table = table.drop(columns=[c for c in STAMP_COLUMNS if c in table])
    for lesion in (*LESIONS, "ischemic"):
        if lesion in table:
            table[lesion] = table[lesion].astype("boolean")
    return table


# --------------------------------------------------------------------------------------------
# Writing and hashing a result folder

HASHED_EXCLUDED_KEYS = ("status", "confirmation", "seal", "addenda")
"""Not part of the content a confirmation seals: addenda follow a signed report and are
covered, field by field, by their own events in the hash-chained audit trail."""
DERIVED_FILES = ("report.html", "overlay.png")
SNAPSHOT_FILES = ("result.json", "findings.csv", "glomeruli.geojson", *DERIVED_FILES)
RESULT_ENTRIES = (*SNAPSHOT_FILES, "assets", "revisions")
"""What lnpath writes in a result folder; anything else there (a QuPath export, notes) is the
user's: every write carries it over untouched, and ``verify`` names it as not checked."""


def content_sha256(folder: Path, result: Mapping[str, Any] | None = None) -> str:
    """sha256 over everything the result asserts, excluding its status, confirmation and seal.

    It covers result.json (canonical JSON without ``status``/``confirmation``/``seal``/``addenda``),
    findings.csv, glomeruli.geojson and assets/; a confirmation stores it, and any later edit
    changes it. The rendered report and overlay are sealed separately (their sha256 in the
    confirmation), since they show the confirmation itself.
    """
    if result is None:
        result = load_result_json(folder)
    body = {k: v for k, v in result.items() if k not in HASHED_EXCLUDED_KEYS}
    digest = hashlib.sha256()
    canonical = json.dumps(
        body, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str
    )
    digest.update(b"result.json\0" + bytes_sha256(canonical.encode()).encode() + b"\n")
    files = [folder / "findings.csv", folder / "glomeruli.geojson"]
    files += sorted(p for p in (folder / "assets").rglob("*") if p.is_file())
    for path in files:
        if not path.is_file():
            raise ResultError(f"{path}: missing from the result folder")
        rel = path.relative_to(folder).as_posix()
        digest.update(rel.encode() + b"\0" + bytes_sha256(path.read_bytes()).encode() + b"\n")
    return digest.hexdigest()


def load_result_json(folder: str | Path, label: str = "result") -> dict[str, Any]:
    """Read and minimally validate ``result.json`` of a result folder (or the file itself).

    The one reader of result.json: scoring, review, comparison and batch resumption all use it.
    ``label`` names the folder in errors ("baseline", "follow-up").

    Raises:
        ResultError: no such folder, no result.json, unreadable JSON, or not an lnpath result.
    """
    folder = Path(folder)
    path = folder if folder.is_file() else folder / "result.json"
    if folder.is_file() and folder.name != "result.json":  # not read as if it were one
        raise not_a_folder(folder)
    if not folder.exists():
        raise ResultError(f"{folder}: {label} folder not found")
    if not path.is_file():
        raise ResultError(f"{folder}: not a result folder (no result.json)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ResultError(f"{path}: unreadable result.json ({exc})") from None
    if not isinstance(data, dict):
        raise ResultError(f"{path}: not an lnpath result (not a JSON object)")
    missing = {"schema_version", "status", "revision", "slide", "scores"} - set(data)
    if missing:  # the scores first: they are what every reader needs
        names = ", ".join(repr(k) for k in sorted(missing, key=lambda k: (k != "scores", k)))
        raise ResultError(f"{path}: not an lnpath result (no {names})")
    if type(data["revision"]) is not int:  # not int("two") deep inside a review
        raise ResultError(f"{path}: revision {data['revision']!r} is not a revision number")
    if data["schema_version"] != SCHEMA_VERSION:
        raise ResultError(
            f"{path}: schema version {data['schema_version']} is not {SCHEMA_VERSION}"
        )
    return data


def read_audit(folder: Path) -> list[dict[str, Any]]:
    """The audit trail: one event per line in ``revisions/audit.jsonl``.

    Raises:
        ResultError: a line is not a JSON object (only an edit outside lnpath does that).
    """
    path = folder / "revisions" / "audit.jsonl"
    if not path.is_file():
        return []
    events = []
    # "\n" only: JSON escapes it inside strings, but not U+2028/U+2029, which splitlines() also
    # splits at (a note holding one made the whole trail unreadable, "edited by hand")
    lines = path.read_bytes().decode("utf-8").split("\n")
    for number, line in enumerate(lines, start=1):
        if not line:
            continue
        try:
            event = json.loads(line)
        except ValueError:
            event = None
        if not isinstance(event, dict):
            raise ResultError(f"{path}: line {number} is not an audit event (edited by hand)")
        events.append(event)
    return events


def snapshot_name(revisions: Path, revision: int, event: str) -> str:
    """A new, never-used snapshot folder name: ``rNNN`` first, then ``rNNN-<event>``,
    ``rNNN-<event>-2``, ... (several addenda to one revision)."""
    names = [f"r{revision:03d}", f"r{revision:03d}-{event}"]
    names += [f"r{revision:03d}-{event}-{k}" for k in range(2, 1000)]
    for name in names:
        if not (revisions / name).exists():
            return name
    raise ResultError(
        f"{revisions}: snapshot {name} exists already; snapshots are written once, never replaced"
    )


@dataclass
class ResultContent:
    """What a revision asserts about the glomeruli: their table, outlines and images."""

    findings: pd.DataFrame
    polygons: dict[int, BaseGeometry]
    assets: Assets

    @classmethod
    def load(cls, folder: Path) -> ResultContent:
        """The content of an existing result folder."""
        return cls(
            read_findings_csv(folder / "findings.csv"), read_polygons(folder), Assets.load(folder)
        )


def write_result(
    target: Path,
    result: dict[str, Any],
    event: Mapping[str, Any],
    content: ResultContent | None = None,
    overwrite: bool = False,
    signing_key: Any = None,
    move_aside: Callable[[], None] | None = None,
) -> None:
    """Write (or replace) a whole result folder atomically, snapshot it, and append ``event``.

    With ``content`` None (a confirmation), the existing glomerulus files are copied byte for
    byte. Otherwise they are written from ``content``. Earlier revisions and the audit trail are
    carried over unless ``event`` is a fresh scoring, so the history survives every review and
    confirmation. Every event gets its own write-once snapshot and is hash-chained to the one
    before it, and result.json's ``seal`` names the chain's head (:mod:`.integrity`); with
    ``signing_key`` (an Ed25519 private key) the event is signed. ``move_aside`` (a
    :class:`.supersede.Supersession`'s) moves the confirmed folder at ``target`` aside, intact and
    with its own files, only once the new result is complete. The caller holds
    :func:`.integrity.result_lock`.
    """

    target = Path(target)
    recover(target)
    keeps_its_files = move_aside is None and target.is_dir()
    with atomic_dir(
        target, overwrite=overwrite or move_aside is not None, marker="result.json",
        before_swap=move_aside,
    ) as tmp:  # fmt: skip
        for entry in sorted(target.iterdir()) if keeps_its_files else []:
            if entry.name not in RESULT_ENTRIES:  # the swap would delete the user's own files
                carry_entry(entry, tmp / entry.name)
        old_revisions = target / "revisions"
        if event["event"] != "scored" and old_revisions.is_dir():
            link_tree(old_revisions, tmp / "revisions")
        if content is None:
            content = ResultContent.load(target)
            for name in ("findings.csv", "glomeruli.geojson"):
                shutil.copy2(target / name, tmp / name)
            link_tree(target / "assets", tmp / "assets")
        else:
            stamp = export_stamp(content.findings, content.polygons, result["revision"])
            result["export_stamp"] = stamp
            stamped(content.findings, stamp).to_csv(tmp / "findings.csv", index=False)
            sha = result["slide"]["fingerprint"]["sha256"]
            features = glomeruli_features(
                content.findings, content.polygons, sha, revision=stamp["revision"]
            )
            collection = {**feature_collection(features), "lnpath": stamp}
            write_text(tmp / "glomeruli.geojson", geojson_text(collection))
            content.assets.save(tmp, keep=content.polygons)
        table, polygons, assets = content.findings, content.polygons, content.assets
        result["seal"] = None
        write_json(tmp / "result.json", result)
        sha = content_sha256(tmp, result)
        history = read_audit(tmp)
        check_chain(target, history)  # never extend a trail that is already broken
        new = {**event, "revision": result["revision"], "content_sha256": sha}
        if result["confirmation"] is not None:
            result["confirmation"]["sha256"] = sha
        overlay = render_overlay(result, table, polygons, assets)
        (tmp / "overlay.png").write_bytes(overlay)
        write_text(
            tmp / "report.html",
            render_report(result, table, polygons, assets, [*history, new], target.name),
        )
        if event["event"] == "confirmed":  # an addendum later re-renders, never re-seals
            result["confirmation"]["files"] = {n: file_sha256(tmp / n) for n in DERIVED_FILES}
            write_json(tmp / "result.json", result)
        revisions = tmp / "revisions"
        name = snapshot_name(revisions, int(result["revision"]), str(event["event"]))
        snapshot = revisions / name
        snapshot.mkdir(parents=True)
        for file in SNAPSHOT_FILES:
            shutil.copy2(tmp / file, snapshot / file)
        new["snapshot_dir"] = name
        new["snapshot"] = {file: file_sha256(snapshot / file) for file in SNAPSHOT_FILES}
        if signing_key is not None:
            new["signer"] = signer(signing_key)
        new = chained(history, new)
        if signing_key is not None:
            new["signature"] = sign(signing_key, new["hash"])
        audit = [*history, new]
        write_text(
            revisions / "audit.jsonl",
            "".join(json.dumps(e, ensure_ascii=False, default=str) + "\n" for e in audit),
        )
        result["seal"] = seal(audit)
        write_json(tmp / "result.json", result)


# --------------------------------------------------------------------------------------------
# The result object


@dataclass
class SlideResult:
    """A scored slide: the result folder and its ``result.json`` contents.

    Every value in it is a machine proposal until ``status`` is ``confirmed``.
    """

    folder: Path
    data: dict[str, Any]

    @classmethod
    def load(cls, folder: str | Path) -> SlideResult:
        """Open an existing result folder.

        Raises:
            ResultError: no such folder, or not an lnpath result.
            InputError: ``folder`` is not a path.
        """
        path = result_path(folder, "SlideResult.load")
        return cls(path, load_result_json(path))

    def to_dict(self) -> dict[str, Any]:
        """The ``result.json`` contents (a copy)."""
        return copy.deepcopy(self.data)

    @property
    def score(self) -> Any:
        """The :class:`lnpath.scoring.score.BiopsyScore` of this revision, with the folder's
        status: the scores a pathologist confirmed say ``confirmed``, not ``provisional``."""

        return BiopsyScore.from_dict({**self.data["scores"], "status": self.status})

    @property
    def findings(self) -> pd.DataFrame:
        """One row per glomerulus: calls, probabilities and measurements."""
        return read_findings_csv(self.folder / "findings.csv")

    @property
    def status(self) -> str:
        """``provisional`` or ``confirmed``."""
        return str(self.data["status"])

    @property
    def revision(self) -> int:
        """The revision number (1 = the machine's first proposal)."""
        return int(self.data["revision"])

    @property
    def report_path(self) -> Path:
        """The self-contained HTML report."""
        return self.folder / "report.html"

    def diagnosis_line(self) -> str:
        """The one-line diagnosis the report leads with."""

        return diagnosis_line(self.data)

    def _repr_html_(self) -> str:
        return result_html(self)

    def plot(self) -> Any:
        """The overlay and the points of every index component; returns the matplotlib Figure."""
        return plot_result(self)

    def __repr__(self) -> str:
        return (
            f"SlideResult({str(self.folder)!r}, revision={self.revision}, status={self.status!r})"
        )
