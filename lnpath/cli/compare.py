"""``lnpath compare BASELINE_DIR FOLLOWUP_DIR``: the histological response endpoint of two biopsies.

Writes response.json and a self-contained response.html into ``--out`` (each file atomically, the
JSON last so that its presence marks a complete output) and prints a summary table or the JSON.
``lnpath compare --list-presets`` explains every preset and its literature source.
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lnpath.cli._rich import new_console, new_table
from lnpath.core.errors import InputError
from lnpath.io.atomic import outside_results, write_json, write_text

if TYPE_CHECKING:
    from rich.console import Console


def register(subparsers: Any) -> None:
    """Add the ``compare`` sub-command."""
    parser = subparsers.add_parser(
        "compare",
        help="baseline vs follow-up biopsy: histological response endpoint",
        description="Compare a baseline and a follow-up result folder (from `lnpath score`) under "
        "a named response preset (clinical-scoring.md §3). The endpoint is 'final' only when a "
        "pathologist has confirmed both biopsies.",
    )
    parser.add_argument(
        "baseline",
        nargs="?",
        metavar="BASELINE_DIR",
        help="baseline result folder (or result.json)",
    )
    parser.add_argument(
        "followup", nargs="?", metavar="FOLLOWUP_DIR", help="follow-up result folder (or its json)"
    )
    parser.add_argument(
        "--preset",
        metavar="NAME",
        help="response preset (default: the response_preset the biopsies were scored with, "
        "lnhr_default unless configured; see --list-presets)",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one preset threshold, e.g. --set remission_max_ai=3 (repeatable)",
    )
    parser.add_argument(
        "--out", type=Path, metavar="DIR", help="write response.json and response.html here"
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace an existing response in --out"
    )
    parser.add_argument(
        "--format",
        choices=("table", "json"),
        default="table",
        help="what to print on stdout: a summary table (default) or the response JSON",
    )
    parser.add_argument(
        "--list-presets", action="store_true", help="explain each preset and its source"
    )
    parser.set_defaults(func=run)


def _parse_overrides(items: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise InputError(f"--set {item!r}: expected KEY=VALUE")
        out[key.strip()] = value.strip()
    return out


def run(args: argparse.Namespace) -> int:
    """Run the comparison (or list presets); returns the exit status."""
    from lnpath.response.endpoint import list_presets
    from lnpath.workflow.compare import compare

    if args.list_presets:
        _print_presets(list_presets(), args.format)
        return 0
    if not args.baseline or not args.followup:
        raise InputError("compare needs BASELINE_DIR and FOLLOWUP_DIR (or --list-presets)")
    overrides: dict[str, Any] = _parse_overrides(args.overrides)
    if args.out is not None:
        _check_out(args.out, args.overwrite)
    result = compare(Path(args.baseline), Path(args.followup), preset=args.preset, **overrides)
    data = result.to_dict()
    if args.out is not None:
        out: Path = args.out
        target = out / "response.json"
        write_text(out / "response.html", result.to_html())
        write_json(target, data)
    if args.format == "json":
        print(json.dumps(data, indent=2, ensure_ascii=False))
    else:
        console = new_console(file=sys.stdout, width=max(100, new_console().width))
        _print_summary(console, data, args.out)
    return 0


def _print_presets(presets: list[dict[str, Any]], fmt: str) -> None:
    from lnpath.response.endpoint import DEFAULT_PARAMS, PARAM_HELP
    from lnpath.response.rules import rule_text

    if fmt == "json":
        print(json.dumps(presets, indent=2, ensure_ascii=False))
        return
    print("Response presets (clinical-scoring.md §3.3); select with --preset NAME.\n")
    for p in presets:
        flag = {"validated": "", "proposed": "   (proposed)"}.get(
            p["label"], "   ** NOT VALIDATED **"
        )
        print(f"{p['name']}  ->  endpoint: {p['endpoint']}{flag}  [index: {p['nih_version']}]")
        print(textwrap.fill(p["description"], 96, initial_indent="    ", subsequent_indent="    "))
        print(
            textwrap.fill(
                f"source: {p['source']}", 96, initial_indent="    ", subsequent_indent="    "
            )
        )
        if p["rule"]:
            text = f"component rule: {rule_text(p['rule'])}"
            print(textwrap.fill(text, 96, initial_indent="    ", subsequent_indent="    "))
        changed = {k: v for k, v in p["params"].items() if v != DEFAULT_PARAMS[k]}
        if changed:
            print("    thresholds: " + ", ".join(f"{k}={v}" for k, v in changed.items()))
        print()
    print("Thresholds (lnhr_default values); override any with --set KEY=VALUE:")
    for key, value in DEFAULT_PARAMS.items():
        print(f"    {key}={value}: {PARAM_HELP[key]}")


def _check_out(out: Path, overwrite: bool) -> None:
    """Refuse an ``--out`` that is a file, holds a response already, or is a result folder: a
    response written into a biopsy's result would sit among its sealed files as a stranger."""
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: --out exists and is not a folder")
    outside_results(out, including_itself=True)
    target = out / "response.json"
    if target.exists() and not overwrite:
        raise InputError(f"{target}: already exists (use --overwrite to replace it)")


def _print_summary(console: Console, data: dict[str, Any], out: Path | None) -> None:
    endpoint = data["endpoint"]
    status = data["status"]
    value = endpoint["value"] if status != "not_evaluable" else "not evaluable"
    console.print(
        f"{data['preset']['name']}: {endpoint['name']} = {value} [{status}]",
        markup=False,
        highlight=False,
    )
    table = new_table()
    for col in ("", "baseline", "follow-up", "Δ"):
        table.add_column(col)
    for key, label in (("activity_index", "AI"), ("chronicity_index", "CI")):
        d = (data.get("deltas") or {}).get(key, {})
        bl, fu = data["baseline"][key], data["followup"][key]
        table.add_row(
            label,
            str(bl["total"]) if bl["complete"] else "incomplete",
            str(fu["total"]) if fu["complete"] else "incomplete",
            "—" if d.get("delta") is None else f"{d['delta']:+d}",
        )
    table.add_row(
        "class", str(data["baseline"]["isn_rps_class"]), str(data["followup"]["isn_rps_class"]), ""
    )
    console.print(table)
    for name, rec in (data.get("panel") or {}).items():
        shown = rec["value"] if rec["evaluable"] else f"not evaluable ({rec['reason']})"
        console.print(f"  {name}: {shown}", markup=False, highlight=False)
    for reason in data.get("reasons") or []:
        console.print(f"  not evaluable: {reason}", markup=False, highlight=False)
    p = (data.get("uncertainty") or {}).get("endpoint_probability")
    if p is not None:
        console.print(f"  P({endpoint['name']} holds) = {100 * p:.1f}%", markup=False)
    if out is not None:
        console.print(f"wrote {out / 'response.json'} and {out / 'response.html'}", markup=False)
