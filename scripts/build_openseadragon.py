"""Build the OpenSeadragon asset shipped in ``lnpath/workstation/static/openseadragon/``.

The workstation's slide viewer is OpenSeadragon (BSD-3-Clause). It is never fetched at run time:
this script runs ``npm pack openseadragon@<major>`` in a temporary folder, checks the tarball's
sha512 against npm's ``integrity`` record, and copies the minified build, its navigation images and
its licence into the package. The output is committed; rerun this only to upgrade.

    python scripts/build_openseadragon.py            # OpenSeadragon 5
    python scripts/build_openseadragon.py --major 4
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

TARGET = Path(__file__).resolve().parents[1] / "lnpath" / "workstation" / "static" / "openseadragon"
BUILD = "package/build/openseadragon/"


def pack(major: int, workdir: Path) -> tuple[Path, dict[str, str]]:
    """``npm pack`` the package; return the tarball and npm's record of it."""
    out = subprocess.run(
        ["npm", "pack", "--json", f"openseadragon@{major}"],
        cwd=workdir,
        check=True,
        capture_output=True,
        text=True,
    )
    record = json.loads(out.stdout)[0]
    tarball = workdir / record["filename"]
    algorithm, _, expected = record["integrity"].partition("-")
    digest = base64.b64encode(hashlib.new(algorithm, tarball.read_bytes()).digest()).decode()
    if digest != expected:
        raise SystemExit(f"{tarball.name}: {algorithm} does not match npm's integrity record")
    return tarball, {"version": record["version"], "integrity": record["integrity"]}


def extract(tarball: Path, target: Path) -> list[str]:
    """Copy the minified build, images/ and LICENSE.txt out of the tarball into ``target``."""
    written = []
    with tarfile.open(tarball) as tar:
        for member in tar.getmembers():
            name = member.name
            if name == "package/LICENSE.txt":
                rel = "LICENSE.txt"
            elif name == f"{BUILD}openseadragon.min.js" or name.startswith(f"{BUILD}images/"):
                rel = name[len(BUILD) :]
            else:
                continue
            if not member.isfile() or ".." in Path(rel).parts:
                continue
            path = target / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            source = tar.extractfile(member)
            assert source is not None  # a regular file
            path.write_bytes(source.read())
            written.append(rel)
    missing = {"LICENSE.txt", "openseadragon.min.js"} - set(written)
    if missing:
        raise SystemExit(f"{tarball.name}: has no {', '.join(sorted(missing))}")
    return sorted(written)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--major", type=int, default=5, choices=(4, 5))
    args = parser.parse_args(argv)
    if shutil.which("npm") is None:
        print("build_openseadragon: npm is not installed", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory() as tmp:
        tarball, record = pack(args.major, Path(tmp))
        if TARGET.exists():
            shutil.rmtree(TARGET)
        TARGET.mkdir(parents=True)
        files = extract(tarball, TARGET)
    (TARGET / "VERSION.json").write_text(
        json.dumps({"package": "openseadragon", **record, "files": files}, indent=1) + "\n"
    )
    print(f"openseadragon {record['version']}: {len(files)} files -> {TARGET}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
