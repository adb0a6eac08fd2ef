"""Build the axe-core test asset the browser tests inject into the report (tests/assets/axe-core/).

The accessibility check runs axe-core inside headless Chromium; nothing may download at test time,
so the script is kept in the repository. This fetches it once from its npm package (``npm pack``,
at development time), verifies the tarball's integrity against what npm reported, and copies
``axe.min.js``, ``LICENSE`` and a ``VERSION`` note (package version and tarball sha512).

Usage: ``python scripts/build_axe.py [--spec axe-core@4] [--out tests/assets/axe-core]``
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FILES = {"package/axe.min.js": "axe.min.js", "package/LICENSE": "LICENSE"}


def build(spec: str, out: Path) -> dict[str, str]:
    """``npm pack`` ``spec`` into a temporary folder and copy the script and licence to ``out``."""
    with tempfile.TemporaryDirectory() as tmp:
        done = subprocess.run(
            ["npm", "pack", spec, "--json", "--pack-destination", tmp],
            check=True,
            capture_output=True,
            text=True,
        )
        info = json.loads(done.stdout)[0]
        tarball = Path(tmp) / info["filename"]
        algo, _, expected = info["integrity"].partition("-")
        actual = base64.b64encode(hashlib.new(algo, tarball.read_bytes()).digest()).decode()
        if actual != expected:
            raise SystemExit(f"{tarball.name}: integrity mismatch ({algo})")
        out.mkdir(parents=True, exist_ok=True)
        with tarfile.open(tarball) as archive:
            for member, name in FILES.items():
                source = archive.extractfile(member)
                if source is None:
                    raise SystemExit(f"{tarball.name}: {member} missing")
                with source, (out / name).open("wb") as target:
                    shutil.copyfileobj(source, target)
        version = {"package": info["id"], "integrity": info["integrity"]}
        (out / "VERSION").write_text(json.dumps(version, indent=2) + "\n", encoding="utf-8")
        return version


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--spec", default="axe-core@4", help="npm package spec (default axe-core@4)"
    )
    parser.add_argument("--out", type=Path, default=REPO / "tests" / "assets" / "axe-core")
    args = parser.parse_args()
    version = build(args.spec, args.out)
    sys.stdout.write(f"{version['package']} -> {args.out}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
