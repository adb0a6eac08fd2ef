"""``lnpath score-findings``: score a findings table (CSV, Parquet, QuPath GeoJSON) in the shell."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from lnpath.cli._rich import new_console, new_table
from lnpath.core.errors import InputError
from lnpath.scoring.presets import PRESETS

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

    from lnpath.scoring.indices import Component, IndexScore
    from lnpath.scoring.score import BiopsyScore


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``score-findings`` sub-command."""
    parser = subparsers.add_parser(
        "score-findings",
        help="NIH activity/chronicity indices, ISN/RPS class proposal from a findings table",
        description="Score a per-glomerulus findings table (CSV, TSV, Parquet, or a QuPath "
        "GeoJSON of classified glomeruli, QuPath 0.2-0.5). A result's findings.csv is scored with "
        "its exclusions (not_glomerulus out of every count, ischemic out of the class fraction). "
        "JSON on stdout by default. Every output is a proposal for a renal pathologist to confirm.",
    )
    parser.add_argument(
        "findings",
        type=Path,
        help="GLOMERULI.csv | .tsv | .parquet, or a QuPath .geojson/.json export",
    )
    parser.add_argument(
        "--cortex",
        type=Path,
        metavar="CORTEX.json",
        help="cortex fractions: interstitial_inflammation, interstitial_fibrosis, tubular_atrophy",
    )
    parser.add_argument("--config", type=Path, metavar="FILE", help="YAML/JSON scoring config")
    parser.add_argument(
        "--preset",
        action="append",
        default=[],
        choices=sorted(PRESETS),
        metavar="NAME",
        help="apply a named preset on top of --config (repeatable): " + ", ".join(sorted(PRESETS)),
    )
    parser.add_argument(
        "--biopsy",
        type=Path,
        metavar="FILE",
        help="biopsy-level IF/EM inputs (YAML/JSON, as score --biopsy), e.g. membranous: true",
    )
    parser.add_argument(
        "--format", choices=("json", "table"), default="json", help="json (default) or a table"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Score and print; an empty table is reported (inadequate), not an error."""
    from lnpath.io.configfile import load_biopsy, load_config
    from lnpath.io.jsonfile import read_cortex
    from lnpath.scoring.biopsy import class_inputs
    from lnpath.workflow.scoring import score_findings

    config = load_config(args.config).with_presets(*args.preset)  # the command line wins
    # the same file as score/review --biopsy (YAML or JSON, nested or the old flat keys)
    biopsy = class_inputs(load_biopsy(args.biopsy)) if args.biopsy is not None else None
    cortex = read_cortex(args.cortex) if args.cortex is not None else None
    try:
        score = score_findings(args.findings, cortex=cortex, config=config, biopsy=biopsy)
    except InputError as exc:
        if str(exc).startswith(str(args.findings)):  # the reader named the file already
            raise
        origin = {"cortex": args.cortex, "biopsy": args.biopsy}.get(str(exc).split(":")[0])
        raise InputError(f"{origin or args.findings}: {exc}") from None
    if args.format == "json":
        sys.stdout.write(score.to_json() + "\n")
    else:
        render(score, new_console(width=max(new_console().width, 120)))
    return 0


def _short_note(c: Component) -> str:
    if c.assessed:
        # glomeruli not assessed inside a band they cannot change: named, the score stands
        return (
            f"{c.n_not_assessed}/{c.N} not assessed; {c.score} either way"
            if c.n_not_assessed
            else ""
        )
    if c.N is None:
        return "no cortex measurement"
    if not c.N:
        return "no glomeruli"
    low, high = c.score_range or (0, 3)
    return f"{c.n_not_assessed}/{c.N} not assessed; {low}-{high}"


def _index_rows(table: Table, label: str, index: IndexScore) -> None:
    from lnpath.scoring.uncertainty import band_pct  # 49/197 reads 24.9% (band 1), never 25%

    for name, c in index.components.items():
        count = f"{c.n}/{c.N}" if c.N is not None else "-"
        pct = band_pct(c.fraction) if c.fraction is not None and c.assessed else "-"
        score = str(c.score) if c.score is not None else "n.a."
        weighted = str(c.weighted) if c.weighted is not None else "n.a."
        table.add_row(label, name, count, pct, score, f"x{c.weight}", weighted, _short_note(c))
    if index.total is None:
        total = "not computable"
    else:
        total = f"{index.total}/{index.maximum}"
        if not index.complete and index.total_range:
            total += f" (incomplete; full {index.total_range[0]}-{index.total_range[1]})"
        if index.band:  # §1.7's word, as the report heads the index
            total += f" {index.band}"
    table.add_row(label, "[bold]total[/bold]", "", "", "", "", f"[bold]{total}[/bold]", "")
    table.add_section()


def render(score: BiopsyScore, console: Console) -> None:
    """A readable component table, then class, adequacy and what awaits the pathologist."""
    table = new_table(title=f"Modified NIH indices ({score.nih_version}) - provisional")
    for column in ("Index", "Component", "n/N", "%", "Score", "Weight", "Weighted", "Note"):
        table.add_column(column, no_wrap=column in ("Component", "Note"))
    _index_rows(table, "AI", score.activity_index)
    _index_rows(table, "CI", score.chronicity_index)
    console.print(table)
    console.print(f"ISN/RPS class: {score.isn_rps_class.label}")
    console.print(f"  {score.isn_rps_class.rationale}", highlight=False)
    legacy = score.isn_rps_class.legacy_2003
    if legacy:
        console.print(f"ISN/RPS 2003 (legacy): {legacy['label'] or 'not proposed'}")
        console.print(f"  {legacy['rationale']}", highlight=False)
    console.print(f"Adequacy: {score.adequacy.status} - {score.adequacy.message}")
    if score.pending_review:
        console.print("Pending review:")
        for item in score.pending_review:
            console.print(f"  - {item}", highlight=False)
