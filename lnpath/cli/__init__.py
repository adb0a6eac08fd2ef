"""Command-line entry points: ``lnpath <command>`` and ``score_slide``.

Each sub-command lives in its own module exposing ``register(subparsers)``; the parser it adds sets
``func`` to a callable ``(argparse.Namespace) -> int``. Errors a user can cause are
:class:`~lnpath.core.errors.LnpathError` and print as one line, exiting with their class's
``exit_code`` (:data:`EXIT_CODES`); anything else is an internal error, also one line unless
``LNPATH_DEBUG=1`` asks for the traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence

from lnpath import __version__
from lnpath.core.errors import LnpathError

_COMMAND_MODULES = (
    "slides",
    "scoring",
    "segment",
    "lesions",
    "pipeline",
    "keys",
    "compare",
    "batch",
    "workstation",
)


EXIT_CODES = """\
exit status:
  0    done
  1    internal error, or a batch with a failed slide
  2    bad input (an option, file, slide, model or key lnpath cannot use), or an
       output it cannot write
  3    a result folder failed its checks: changed outside lnpath (tampered), missing or
       not a result, held by another writer, or changed since the revision you edited
  4    refused by the sign-out rules on an intact result: an index not ready to sign,
       a confirmed result without --supersede, an addendum to an unconfirmed result
  130  interrupted (Ctrl-C)
"""
"""The one list of exit codes: ``lnpath --help`` shows it, README's table says the same."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lnpath",
        description="Digital pathology for lupus nephritis biopsies.\n"
        "Every output is a proposal until a pathologist confirms it.",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"lnpath {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _COMMAND_MODULES:
        importlib.import_module(f".{name}", __name__).register(subparsers)
    return parser


def _run(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> int:
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except LnpathError as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt as exc:  # a command may say what was finished before it
        print(f"{parser.prog}: {str(exc) or 'interrupted'}", file=sys.stderr)
        return 130
    except Exception as exc:  # last resort: never a traceback for a user
        if os.environ.get("LNPATH_DEBUG"):
            raise
        print(
            f"{parser.prog}: internal error: {type(exc).__name__}: {exc} "
            "(set LNPATH_DEBUG=1 for the traceback)",
            file=sys.stderr,
        )
        return 1


def main(argv: Sequence[str] | None = None) -> int:
    """``lnpath COMMAND ...``; ``lnpath score_slide`` (the README's command name typed after
    ``lnpath``) runs ``lnpath score``."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] in (["score_slide"], ["score-slide"]):
        args[0] = "score"
    return _run(build_parser(), args)


def score_slide_main(argv: Sequence[str] | None = None) -> int:
    """``score_slide SLIDE ...``: the same as ``lnpath score SLIDE ...``."""
    args = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    parser.prog = "score_slide"
    for action in parser._subparsers._group_actions if parser._subparsers else ():
        if isinstance(action, argparse._SubParsersAction) and "score" in action.choices:
            action.choices["score"].prog = "score_slide"  # usage and errors name the command run
    if args[:1] == ["--version"]:
        return _run(parser, args)
    return _run(parser, ["score", *args])
