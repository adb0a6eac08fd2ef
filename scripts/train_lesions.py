"""Train a lesion classifier on a lab's own labels: the same as ``lnpath train-lesions``.

Examples::

    python scripts/train_lesions.py --qupath TPATH065.geojson TPATH065.svs --out models/my-lesions
    python scripts/train_lesions.py --crops crops/ --labels labels.csv \\
        --map Sclerotic=global_sclerosis --map Normal= --out models/my-lesions
"""

from __future__ import annotations

import sys

from lnpath.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["train-lesions", *sys.argv[1:]]))
