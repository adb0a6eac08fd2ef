"""``lnpath keygen``: the Ed25519 key pair that signs confirmations and addenda.

Its own module so the key's name, and what it binds, is documented where the key is made.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from lnpath.cli._rich import new_console


def register(subparsers: Any) -> None:
    """Add the ``keygen`` sub-command."""
    keygen = subparsers.add_parser(
        "keygen",
        help="write an Ed25519 key pair for signing confirmations and addenda",
        description="Write STEM.pem (private, mode 0600: keep it outside result folders) and "
        "STEM.pub.pem (give it to whoever verifies), both naming the pathologist with "
        "--pathologist as a 'Pathologist: NAME' line before the key.",
    )
    keygen.add_argument("--out", type=Path, required=True, metavar="STEM", help="key file stem")
    keygen.add_argument(
        "--pathologist",
        metavar="NAME",
        help="whose key it is (one line): confirm and addendum then sign with it only as NAME, "
        "and verify --public-key fails a signature made as anyone else. Optional, but a key "
        "made without it names nobody and cannot be checked against the signer's name",
    )
    keygen.set_defaults(func=run_keygen)


def run_keygen(args: argparse.Namespace) -> int:
    """``lnpath keygen --out STEM [--pathologist NAME]``."""
    from lnpath.results.integrity import generate_key
    from lnpath.results.keyname import key_pathologist

    private, public = generate_key(args.out, pathologist=args.pathologist)
    owner = key_pathologist(public)
    whose = f"of {owner}" if owner else "naming no pathologist (--pathologist names one)"
    new_console().print(
        f"Private key {private} (keep it outside result folders), public key {public}, {whose}.",
        highlight=False,
        markup=False,
    )
    return 0
