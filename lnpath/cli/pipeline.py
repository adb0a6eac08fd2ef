"""``lnpath score`` (= ``score_slide``), ``lnpath review``, ``lnpath confirm``, ``lnpath verify``.

Progress goes to stderr (one line per stage, with the inner progress bars of the long stages);
the summary table and change lists go to stdout so they can be captured.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from lnpath.core.errors import InputError

STAGE_LABELS = {
    "open": "Open slide",
    "segment": "Find glomeruli",
    "lesions": "Call glomerular lesions",
    "cortex": "Measure cortex",
    "score": "Score NIH indices and ISN/RPS class",
    "write": "Write result folder and report",
}


def register(subparsers: Any) -> None:
    """Add ``score``, ``review``, ``confirm`` and ``verify``."""
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
        "--glomeruli", type=Path, help="QuPath GeoJSON outlines to use instead of segmenting"
    )
    score.add_argument("--patient-id", help="printed on the report")
    score.add_argument("--date", dest="biopsy_date", help="biopsy date (YYYY-MM-DD)")
    score.add_argument("--overwrite", action="store_true", help="replace an existing result folder")
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
    review.add_argument("--reviewer", help="who made the edits (audit trail)")
    review.add_argument("--note", help="note for the audit trail")
    review.set_defaults(func=run_review)

    confirm = subparsers.add_parser(
        "confirm", help="confirm the current revision as pathologist (seals it)"
    )
    confirm.add_argument("result", type=Path, help="result folder")
    confirm.add_argument("--pathologist", required=True, help="name of the confirming pathologist")
    confirm.add_argument("--note", help="note recorded with the confirmation")
    confirm.set_defaults(func=run_confirm)

    verify = subparsers.add_parser(
        "verify", help="check a result folder for edits made outside lnpath (exit 3 if tampered)"
    )
    verify.add_argument("result", type=Path, help="result folder")
    verify.set_defaults(func=run_verify)


def _summary(result: Any, seconds: float) -> Table:
    from lnpath.report.lesion_note import lesion_calls_note
    from lnpath.report.slide import index_text, status_text

    data = result.to_dict()
    scores = data["scores"]
    adequacy = scores.get("adequacy") or {}
    table = Table(title=f"lnpath: {data['slide']['name']}", show_header=False)
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
    from lnpath.workflow.pipeline import score_slide

    err = Console(stderr=True)
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
    result = score_slide(
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
        progress=True,
        on_stage=on_stage,
        glomeruli=args.glomeruli,
    )
    Console().print(_summary(result, time.perf_counter() - start))
    return 0


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


def _changes_table(changes: list[dict[str, Any]], revision: int) -> Table:
    table = Table(title=f"Changes in revision {revision}")
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
    from lnpath.results.folder import SlideResult
    from lnpath.workflow.signoff import review

    before = SlideResult.load(args.result).revision
    result = review(
        args.result,
        geojson=args.geojson,
        findings=args.findings,
        cortex=_parse_cortex(args.cortex),
        reviewer=args.reviewer,
        note=args.note,
    )
    out = Console()
    if result.revision == before:
        out.print(f"No changes: {args.result} stays at revision {before}.")
        return 0
    out.print(_changes_table(result.to_dict()["changes"], result.revision), highlight=False)
    out.print(
        f"{result.diagnosis_line()}\nReport: {result.report_path}", highlight=False, markup=False
    )
    return 0


def run_confirm(args: argparse.Namespace) -> int:
    """``lnpath confirm RESULT --pathologist NAME``."""
    from lnpath.workflow.signoff import confirm

    result = confirm(args.result, args.pathologist, note=args.note)
    seal = result.to_dict()["confirmation"]["sha256"]
    Console().print(
        f"Revision {result.revision} confirmed by {args.pathologist} (sha256 {seal}).\n"
        f"{result.diagnosis_line()}",
        highlight=False,
        markup=False,
    )
    return 0


def run_verify(args: argparse.Namespace) -> int:
    """``lnpath verify RESULT``: exit 0 if intact, 3 (ResultError) if tampered with."""
    from lnpath.results.seal import verify

    check = verify(args.result)
    Console().print(
        f"OK: {args.result} revision {check.revision} ({check.status}) is intact; "
        f"checked {', '.join(check.checked)}; content sha256 {check.content_sha256}",
        highlight=False,
        markup=False,
    )
    return 0
