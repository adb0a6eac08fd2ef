"""``lnpath score`` (= ``score_slide``), ``lnpath review``, ``lnpath confirm``, ``lnpath verify``.

Progress goes to stderr (one line per stage, with the inner progress bars of the long stages);
the summary table and change lists go to stdout so they can be captured.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lnpath.cli._rich import escape, new_console, new_table
from lnpath.core.errors import InputError

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

STAGE_LABELS = {
    "open": "Open slide",
    "segment": "Find glomeruli",
    "lesions": "Call glomerular lesions",
    "cortex": "Measure cortex",
    "score": "Score NIH indices and ISN/RPS class",
    "write": "Write result folder and report",
}


def register(subparsers: Any) -> None:
    """Add ``score``, ``review``, ``confirm`` and ``verify``.

    Long because it declares the options of the score, review, confirm and verify commands, one
    statement each.
    """
    score = subparsers.add_parser(
        "score",
        help="score a whole biopsy slide: report, findings, QuPath GeoJSON",
        description="Score one biopsy slide end to end and write a result folder "
        "(result.json, findings.csv, glomeruli.geojson, report.html, overlay.png). "
        "Every output is PROVISIONAL until a pathologist confirms it.",
    )
    score.add_argument("slide", type=Path, help="the slide (SVS, NDPI, MRXS, generic TIFF, ...)")
    score.add_argument("--out", type=Path, help="result folder (default ./lnpath-result-<slide>)")
    score.add_argument("--mpp", type=float, help="level-0 µm/px when the file lacks it")
    score.add_argument("--stain", default="PAS", help="stain of the section (default PAS)")
    score.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    score.add_argument("--config", type=Path, help="scoring configuration (YAML or JSON)")
    score.add_argument("--lesion-model", help="trained lesion model name or path")
    score.add_argument(
        "--no-tta",
        action="store_true",
        help="segment with one forward pass instead of four flips (segmentation about 1.5x faster "
        "on a CPU with VNNI, where the flips run in int8, 2x elsewhere; slightly rougher outlines)",
    )
    score.add_argument(
        "--glomeruli", type=Path, help="QuPath GeoJSON outlines to use instead of segmenting"
    )
    score.add_argument("--patient-id", help="printed on the report")
    score.add_argument("--date", dest="biopsy_date", help="biopsy date (YYYY-MM-DD)")
    score.add_argument(
        "--biopsy",
        type=Path,
        metavar="FILE",
        help="biopsy-level findings (YAML/JSON): IF/EM, vessels, not-evaluable marks",
    )
    score.add_argument("--overwrite", action="store_true", help="replace an existing result folder")
    score.add_argument(
        "--supersede",
        action="store_true",
        help="with --overwrite, move a confirmed result aside to OUT.superseded-<time> "
        "(a confirmed result is never replaced otherwise)",
    )
    score.set_defaults(func=run_score)

    review = subparsers.add_parser(
        "review",
        help="apply a pathologist's edits to a result and re-score (new revision)",
        description="Re-score a result from a QuPath-edited GeoJSON export, an edited findings CSV "
        "and/or cortex fractions; writes a new provisional revision and lists every change.",
    )
    review.add_argument("result", type=Path, help="result folder")
    review.add_argument("--geojson", type=Path, help="QuPath export of the edited glomeruli")
    review.add_argument("--findings", type=Path, help="edited findings.csv")
    review.add_argument(
        "--cortex",
        action="append",
        default=[],
        metavar="NAME=FRACTION",
        help="set a cortex fraction, e.g. interstitial_fibrosis=0.3 (or =none); repeatable",
    )
    review.add_argument(
        "--biopsy",
        type=Path,
        metavar="FILE",
        help="biopsy-level findings (YAML/JSON): IF/EM, vessels, "
        "not_evaluable: {component: reason}",
    )
    review.add_argument("--comment", help="the report's comment (empty to clear)")
    review.add_argument("--class", dest="klass", metavar="CLASS", help="set the ISN/RPS class")
    review.add_argument("--class-reason", help="why the class differs from the machine's")
    review.add_argument(
        "--exclude",
        action="append",
        default=[],
        metavar="ID=KIND",
        help="exclude a glomerulus: ischemic (out of the class fraction) or not_glomerulus "
        "(out of every count), optionally ID=KIND:reason; ID= clears it; repeatable",
    )
    review.add_argument(
        "--merge",
        choices=("keep-current", "take-export"),
        help="apply an export made from an older revision: keep-current keeps later changes "
        "where both changed, take-export lets the export win there",
    )
    review.add_argument(
        "--supersede",
        action="store_true",
        help="revise a confirmed result (recorded as superseding that confirmation)",
    )
    review.add_argument(
        "--pathologist", "--reviewer", dest="pathologist", help="who makes the edits (required)"
    )
    review.add_argument("--note", help="note for the audit trail")
    review.add_argument(
        "--allow-deletions",
        action="store_true",
        help="allow an edit that deletes many glomeruli (more than 3 and a quarter of them)",
    )
    review.set_defaults(func=run_review)

    confirm = subparsers.add_parser(
        "confirm",
        help="confirm the current revision as pathologist (seals it)",
        description="Seal the current revision as confirmed by PATHOLOGIST. Refused with exit 4 "
        "(3 is a folder that fails verify) while an index has a component neither assessed nor "
        "marked not evaluable (lnpath review --biopsy FILE with not_evaluable: {component: "
        "reason}), or once the revision is confirmed.",
    )
    confirm.add_argument("result", type=Path, help="result folder")
    confirm.add_argument("--pathologist", required=True, help="name of the confirming pathologist")
    confirm.add_argument("--note", help="note recorded with the confirmation")
    confirm.add_argument(
        "--key",
        type=Path,
        help="sign with this Ed25519 private key (lnpath keygen); a key that names a "
        "pathologist signs only as that --pathologist",
    )
    confirm.set_defaults(func=run_confirm)

    addendum = subparsers.add_parser(
        "addendum",
        help="add an addendum to a confirmed result (the signed revision stays as it is)",
        description="Append TEXT to a confirmed result as its own audit event; the confirmed "
        "content, its seal and its signature stay as signed. After a key-signed confirmation an "
        "addendum without --key is listed by verify as not checked.",
    )
    addendum.add_argument("result", type=Path, help="result folder")
    addendum.add_argument("--pathologist", required=True, help="who writes the addendum")
    addendum.add_argument("--text", required=True, help="the addendum, as the report shows it")
    addendum.add_argument(
        "--key",
        type=Path,
        help="sign with this Ed25519 private key (lnpath keygen); a key that names a "
        "pathologist signs only as that --pathologist",
    )
    addendum.set_defaults(func=run_addendum)

    verify = subparsers.add_parser(
        "verify", help="check a result folder for edits made outside lnpath (exit 3 if tampered)"
    )
    verify.add_argument("result", type=Path, help="result folder")
    verify.add_argument(
        "--public-key",
        type=Path,
        help="also require the confirmation to be signed by this key's private key (addenda it "
        "did not sign are listed as not checked), and, where the key names a pathologist, "
        "made as that name",
    )

    verify.set_defaults(func=run_verify)


def _summary(result: Any, seconds: float) -> Table:
    from lnpath.report.lesion_note import lesion_calls_note
    from lnpath.report.slide import index_text, status_text

    data = result.to_dict()
    scores = data["scores"]
    adequacy = scores.get("adequacy") or {}
    table = new_table(title=f"lnpath: {data['slide']['name']}", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    table.add_row("Slide", escape(str(data["slide"]["path"])))
    table.add_row("Glomeruli", f"{adequacy.get('n_glomeruli')} ({adequacy.get('status')})")
    table.add_row(
        "ISN/RPS class proposal", scores["isn_rps_class"].get("proposal") or "not proposed"
    )
    legacy = scores["isn_rps_class"].get("legacy_2003")
    if legacy:
        table.add_row("ISN/RPS 2003 (legacy)", legacy.get("label") or "not proposed")
    table.add_row("Activity index", index_text(scores["activity_index"]))
    table.add_row("Chronicity index", index_text(scores["chronicity_index"]))
    table.add_row("Status", status_text(data))
    note = lesion_calls_note(data)
    if note:
        table.add_row("Lesion calls", escape(note))
    for warning in data.get("warnings") or []:
        table.add_row("[yellow]Warning[/yellow]", escape(warning))
    table.add_row("Report", escape(str(result.report_path.resolve())))
    stages = ", ".join(
        f"{k} {v:.1f} s"
        for k, v in (data.get("timings") or {}).items()
        if k in STAGE_LABELS and v >= 0.5
    )
    table.add_row("Time", f"{seconds:.1f} s ({stages})" if stages else f"{seconds:.1f} s")
    return table


def run_score(args: argparse.Namespace) -> int:
    """``score_slide SLIDE ...``."""
    from lnpath.cli.slides import missing_mpp
    from lnpath.workflow.pipeline import default_output, score_slide
    from lnpath.wsi.slide import MissingMppError, check_mpp

    if args.mpp is not None:
        check_mpp(args.mpp, "--mpp")
    err = new_console(stderr=True)
    started: dict[str, float] = {}

    def on_stage(stage: str, done: bool) -> None:
        label = STAGE_LABELS.get(stage, stage)
        if not done:
            started[stage] = time.perf_counter()
            err.print(f"[cyan]▶[/] {label} …", highlight=False)
        else:
            err.print(
                f"[green]✓[/] {label} ({time.perf_counter() - started[stage]:.1f} s)",
                highlight=False,
            )

    start = time.perf_counter()
    begun = dt.datetime.now(dt.UTC).replace(microsecond=0)
    try:
        result = _score(score_slide, args, on_stage)
    except MissingMppError as exc:
        raise missing_mpp(exc, "--mpp") from None
    except KeyboardInterrupt:
        target = Path(args.out) if args.out else default_output(Path(args.slide))
        if not _written_since(target, begun):
            raise
        raise KeyboardInterrupt(
            f"interrupted after {target} was written in full (`lnpath verify` checks it)"
        ) from None
    new_console().print(_summary(result, time.perf_counter() - start))
    return 0


def _written_since(target: Path, begun: dt.datetime) -> bool:
    """Whether ``target`` holds an intact result scored since ``begun``: Ctrl-C right after
    the write would otherwise read as if the result had not been written."""
    from lnpath.core.errors import LnpathError
    from lnpath.results.seal import verify

    try:
        created = json.loads((target / "result.json").read_text(encoding="utf-8"))["created_at"]
        verify(target)
        return dt.datetime.fromisoformat(created) >= begun
    except (LnpathError, OSError, ValueError, KeyError, TypeError):
        return False


def _score(score_slide: Any, args: argparse.Namespace, on_stage: Any) -> Any:
    """The API call the command makes, with every option it takes."""
    return score_slide(
        args.slide,
        out=args.out,
        mpp=args.mpp,
        stain=args.stain,
        device=args.device,
        config=args.config,
        lesion_model=args.lesion_model,
        patient_id=args.patient_id,
        biopsy_date=args.biopsy_date,
        overwrite=args.overwrite,
        progress=None,  # bars on a terminal only; LNPATH_PROGRESS decides otherwise
        on_stage=on_stage,
        glomeruli=args.glomeruli,
        biopsy=args.biopsy,
        supersede=args.supersede,
        tta=False if args.no_tta else None,
    )


def _parse_cortex(items: list[str]) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep:
            raise InputError(f"--cortex {item!r}: expected NAME=FRACTION")
        text = value.strip().lower()
        if text in ("none", "na", ""):
            out[name.strip()] = None
            continue
        try:
            number = float(text.rstrip("%")) / (100 if text.endswith("%") else 1)
        except ValueError:
            raise InputError(f"--cortex {item!r}: {value!r} is not a number") from None
        out[name.strip()] = number
    return out


def _parse_exclusions(items: list[str]) -> dict[int, str] | None:
    out: dict[int, str] = {}
    for item in items:
        gid, sep, kind = item.partition("=")
        try:
            out[int(gid.strip().lstrip("Gg"))] = kind.strip()
        except ValueError:
            raise InputError(f"--exclude {item!r}: expected ID=KIND, e.g. 4=ischemic") from None
        if not sep:
            raise InputError(f"--exclude {item!r}: expected ID=KIND, e.g. 4=ischemic")
    return out or None


def _print_merge(out: Console, merge: dict[str, Any]) -> None:
    """What a merge of a stale export applied and what it refused."""
    base = merge["base_revision"]
    out.print(
        f"Merged an export made from revision {base} ({merge['policy']}): "
        f"{len(merge['applied'])} change(s) applied.",
        highlight=False,
        markup=False,
    )
    for entry in merge["refused"]:
        gid = entry.get("glomerulus")
        verb = "refused" if entry["resolution"] == "current" else "overridden"
        out.print(
            f"  {verb} (changed since revision {base}): G{gid} {entry['field']}: export "
            f"{entry['export']}, current {entry['current']}",
            highlight=False,
            markup=False,
        )


def _changes_table(changes: list[dict[str, Any]], revision: int) -> Table:
    table = new_table(title=f"Changes in revision {revision}")
    for column in ("Glomerulus", "Field", "Before", "After"):
        table.add_column(column)
    for change in changes:
        if change.get("revision") == revision:
            gid = change.get("glomerulus")
            table.add_row(
                "biopsy" if gid is None else f"G{gid}",
                escape(str(change["field"])),
                escape(str(change["before"])),
                escape(str(change["after"])),
            )
    return table


def run_review(args: argparse.Namespace) -> int:
    """``lnpath review RESULT --geojson F | --findings F | --cortex NAME=F``."""
    from lnpath.io.configfile import load_biopsy
    from lnpath.results.folder import SlideResult
    from lnpath.workflow.signoff import review

    if args.class_reason and not args.klass:
        raise InputError("--class-reason: give the class with --class")
    before = SlideResult.load(args.result).revision
    result = review(
        args.result,
        pathologist=args.pathologist,
        geojson=args.geojson,
        findings=args.findings,
        cortex=_parse_cortex(args.cortex),
        biopsy=load_biopsy(args.biopsy) if args.biopsy is not None else None,
        class_override=(
            {"class": args.klass, "reason": args.class_reason} if args.klass is not None else None
        ),
        comment=args.comment,
        exclusions=_parse_exclusions(args.exclude),
        supersede=args.supersede,
        merge=args.merge,
        note=args.note,
        allow_deletions=args.allow_deletions,
    )
    out = new_console()
    if result.revision == before:
        out.print(f"No changes: {args.result} stays at revision {before}.")
        return 0
    out.print(_changes_table(result.to_dict()["changes"], result.revision), highlight=False)
    merge = result.to_dict().get("merge")
    if merge:
        _print_merge(out, merge)
    out.print(
        f"{result.diagnosis_line()}\nReport: {result.report_path}", highlight=False, markup=False
    )
    return 0


def run_confirm(args: argparse.Namespace) -> int:
    """``lnpath confirm RESULT --pathologist NAME``."""
    from lnpath.workflow.signoff import confirm

    result = confirm(args.result, pathologist=args.pathologist, note=args.note, key=args.key)
    seal = result.to_dict()["confirmation"]["sha256"]
    new_console().print(
        f"Revision {result.revision} confirmed by {args.pathologist} (sha256 {seal}).\n"
        f"{result.diagnosis_line()}",
        highlight=False,
        markup=False,
    )
    return 0


def run_addendum(args: argparse.Namespace) -> int:
    """``lnpath addendum RESULT --pathologist NAME --text TEXT``."""
    from lnpath.workflow.signoff import add_addendum

    result = add_addendum(args.result, args.text, pathologist=args.pathologist, key=args.key)
    count = len(result.to_dict().get("addenda") or [])
    new_console().print(
        f"Addendum {count} to revision {result.revision} added by {args.pathologist}; "
        f"the confirmation stands. Report: {result.report_path}",
        highlight=False,
        markup=False,
    )
    return 0


def run_verify(args: argparse.Namespace) -> int:
    """``lnpath verify RESULT``: exit 0 if intact, 3 (ResultError) if tampered with."""
    from lnpath.results.seal import verify

    check = verify(args.result, public_key=args.public_key)
    named = Path(args.result)
    folder = named.parent if named.is_file() else named  # R/result.json was checked as R
    new_console().print(
        f"OK: {folder} revision {check.revision} ({check.status}) is intact; "
        f"checked {', '.join(check.checked)}; content sha256 {check.content_sha256}"
        + (f"; not checked: {'; '.join(check.unchecked)}" if check.unchecked else ""),
        highlight=False,
        markup=False,
    )
    return 0
