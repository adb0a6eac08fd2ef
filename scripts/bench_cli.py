"""Benchmark CLI start-up against the bare Python interpreter, interleaved in one run.

Prints JSON: for each command line, the median wall seconds of a fresh process, the median
seconds over a bare ``python -c pass`` started the same way (what lnpath itself costs), the
ratio to the bare interpreter, and how many modules the command had imported when it exited.
The goal is ``lnpath --help`` under 0.2 s; the interpreter's own start-up (site packages, .pth
hooks, a pyenv shim) is the floor no package can go below, so it is measured beside it.

Usage: python scripts/bench_cli.py [--repeats 7]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

COMMANDS: dict[str, list[str]] = {
    "lnpath --help": ["--help"],
    "lnpath verify --help": ["verify", "--help"],
    "lnpath score --help": ["score", "--help"],
}
# Runs the CLI's main() as the console script does, then reports what it imported.
PROBE = (
    "import sys\n"
    "from lnpath.cli import main\n"
    "try:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
    "heavy = ('numpy', 'pandas', 'openslide', 'torch', 'scipy', 'dask', 'shapely', 'rich')\n"
    "sys.stderr.write('MODULES %d %s\\n' % (len(sys.modules), "
    "','.join(m for m in heavy if m in sys.modules)))\n"
)


def timed(argv: list[str]) -> tuple[float, str]:
    start = time.perf_counter()
    run = subprocess.run(argv, capture_output=True, text=True, check=True)
    return time.perf_counter() - start, run.stderr


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    load_before = os.getloadavg()
    bare: list[float] = []
    runs: dict[str, list[float]] = {name: [] for name in COMMANDS}
    modules: dict[str, str] = {}
    timed([sys.executable, "-c", PROBE, "--help"])  # warm the file cache once
    for _ in range(args.repeats):
        bare.append(timed([sys.executable, "-c", "pass"])[0])
        for name, cli_args in COMMANDS.items():
            seconds, stderr = timed([sys.executable, "-c", PROBE, *cli_args])
            runs[name].append(seconds)
            modules[name] = stderr.strip().splitlines()[-1].removeprefix("MODULES ")
    floor = statistics.median(bare)
    result = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
        "python": platform.python_version(),
        "repeats": args.repeats,
        "load_avg_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
        "bare_interpreter_s": round(floor, 3),
        "commands": {
            name: {
                "median_s": round(statistics.median(times), 3),
                "over_interpreter_s": round(statistics.median(times) - floor, 3),
                "ratio_to_interpreter": round(statistics.median(times) / floor, 2),
                "modules_and_heavy_imports": modules[name],
            }
            for name, times in runs.items()
        },
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
