"""``lnpath workstation RESULT_DIR [RESULT_DIR ...]``: review and sign out in the browser."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``workstation``."""
    parser = subparsers.add_parser(
        "workstation",
        help="open results in the browser to score, correct and sign out",
        description="Start a local web application to review result folders glomerulus by "
        "glomerulus, with the indices recomputed as you go. Saves are review revisions and "
        "sign-out is a confirmation, exactly as with 'lnpath review' and 'lnpath confirm'.",
    )
    parser.add_argument("results", nargs="+", type=Path, metavar="RESULT_DIR")
    parser.add_argument(
        "--slide",
        action="append",
        default=[],
        type=Path,
        metavar="PATH",
        help="slide file of a result whose slide moved (repeat for several; matched by "
        "fingerprint)",
    )
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="interface to listen on (default 127.0.0.1, this computer only); another host "
        "exposes the results to the network, guarded only by the token in the URL",
    )
    parser.add_argument("--port", type=int, default=0, help="port (default: any free port)")
    parser.add_argument("--open", action="store_true", help="open the URL in the browser")
    parser.set_defaults(func=run_workstation)


def run_workstation(args: argparse.Namespace) -> int:
    """Serve until Ctrl-C."""
    from lnpath.workstation import workstation

    workstation(
        args.results,
        slides=args.slide,
        host=args.host,
        port=args.port,
        open_browser=args.open,
        announce=lambda line: print(line, flush=True),
    )
    return 0
