"""Evaluate the morphometry global-sclerosis call on the eval-only sets; print JSON.

Evaluation only: the eval-only images are read in place, nothing is copied, trained or tuned on them
(the thresholds are fixed in ``lnpath.lesions.MorphometryThresholds``).

* ``cmil-pas-sclerosis-crops``: 72 PAS bounding-box crops, no masks. The glomerulus mask is the
  ellipse inscribed in the crop, shrunk to 90 % (the crops are a glomerulus bounding box plus a
  little context, so the inscribed ellipse approximates the outline without tubules). µm/px is not
  recorded; the provenance estimate (0.25 µm/px, 40x) is used and crops are resampled to 0.5.
* ``bupt-multistain-glomeruli``: labelme polygons on PAS / PASM / Masson snapshots; ``gs`` (global
  sclerosis) vs ``gn`` (normal), and ``gs`` vs every other class. µm/px estimated at 0.4
  (provenance: 0.3-0.5). The snapshots are under-exposed (glass ≈150/255), so each crop is
  measured against the white point (``estimate_white``) of its whole snapshot.

Usage: ``python scripts/eval_sclerosis.py [--data ../shared/data]``
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from skimage import draw, io, transform

from lnpath.errors import InputError
from lnpath.lesion_training import binary_metrics
from lnpath.lesions import MorphometryThresholds, calls_from_measurements
from lnpath.measure import DEFAULT_MPP, MEASUREMENTS, estimate_white, measure_crop

CMIL_MPP = 0.25
BUPT_MPP = 0.4


def _resample(rgb: np.ndarray, mask: np.ndarray, mpp: float) -> tuple[np.ndarray, np.ndarray]:
    scale = mpp / DEFAULT_MPP
    shape = (max(1, round(rgb.shape[0] * scale)), max(1, round(rgb.shape[1] * scale)))
    out = transform.resize(rgb[..., :3], shape, anti_aliasing=True)
    small = transform.resize(mask.astype(float), shape, order=1, anti_aliasing=False) >= 0.5
    return np.clip(out * 255 + 0.5, 0, 255).astype(np.uint8), small


def _measure(
    rgb: np.ndarray, mask: np.ndarray, mpp: float, white: np.ndarray | None = None
) -> dict[str, float]:
    rgb, mask = _resample(rgb, mask, mpp)
    try:
        return measure_crop(rgb, mask, DEFAULT_MPP, white=white)
    except InputError as exc:
        print(f"not measured: {exc}", file=sys.stderr)
        return dict.fromkeys(MEASUREMENTS, math.nan)


def _ellipse_mask(shape: tuple[int, int], shrink: float = 0.9) -> np.ndarray:
    h, w = shape
    mask = np.zeros(shape, bool)
    rr, cc = draw.ellipse(h / 2, w / 2, shrink * h / 2, shrink * w / 2, shape=shape)
    mask[rr, cc] = True
    return mask


def _summary(truth: np.ndarray, table: pd.DataFrame) -> dict[str, float]:
    called = table["global_sclerosis"]
    assessed = called.notna().to_numpy()
    metrics = binary_metrics(truth[assessed], called[assessed].astype(float).to_numpy())
    metrics["not_assessed"] = int((~assessed).sum())
    frac = table["m_sclerosed_fraction"].to_numpy(dtype=float)
    ok = ~np.isnan(frac)
    metrics["auc_sclerosed_fraction"] = binary_metrics(truth[ok], frac[ok])["auc"]
    return {k: round(v, 3) if isinstance(v, float) else v for k, v in metrics.items()}


def eval_cmil(root: Path) -> dict[str, object]:
    with (root / "labels.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    measured, truth = [], []
    for i, row in enumerate(rows):
        label = int(row["ground_truth_globally_sclerotic"])
        folder = "globally_sclerotic" if label else "non_globally_sclerotic"
        rgb = io.imread(root / folder / row["name"])[..., :3]
        measured.append(
            {"glomerulus_id": i, **_measure(rgb, _ellipse_mask(rgb.shape[:2]), CMIL_MPP)}
        )
        truth.append(bool(label))
    table = calls_from_measurements(pd.DataFrame(measured), MorphometryThresholds())
    return {
        "set": "cmil-pas-sclerosis-crops",
        "mask": "inscribed ellipse (90 %)",
        "assumed_mpp": CMIL_MPP,
        "PAS": _summary(np.array(truth), table),
    }


def _stain(name: str) -> str:
    for stain in ("PASM", "Masson", "PAS"):
        if f"-{stain}" in name:
            return stain
    return "unknown"


def eval_bupt(root: Path) -> dict[str, object]:
    records = []
    for path in sorted((root / "labelme").glob("*.json")):
        doc = json.loads(path.read_text())
        image = io.imread(root / "images" / doc["imagePath"])[..., :3]
        white = estimate_white(image)
        for shape in doc["shapes"]:
            pts = np.asarray(shape["points"], float)
            x0, y0 = np.floor(pts.min(0)).astype(int)
            x1, y1 = np.ceil(pts.max(0)).astype(int)
            x0, y0 = max(x0 - 10, 0), max(y0 - 10, 0)
            x1, y1 = min(x1 + 10, image.shape[1]), min(y1 + 10, image.shape[0])
            crop = image[y0:y1, x0:x1]
            mask = np.zeros(crop.shape[:2], bool)
            rr, cc = draw.polygon(pts[:, 1] - y0, pts[:, 0] - x0, shape=mask.shape)
            mask[rr, cc] = True
            m = _measure(crop, mask, BUPT_MPP, white)
            records.append({"stain": _stain(path.stem), "cls": shape["label"], **m})
    frame = pd.DataFrame(records)
    frame["glomerulus_id"] = np.arange(len(frame))
    calls = calls_from_measurements(frame, MorphometryThresholds())
    out: dict[str, object] = {"set": "bupt-multistain-glomeruli", "assumed_mpp": BUPT_MPP}
    for stain in ("PAS", "PASM", "Masson"):
        sel = (frame["stain"] == stain).to_numpy()
        gs_gn = sel & frame["cls"].isin(["gs", "gn"]).to_numpy()
        out[stain] = {
            "gs_vs_gn": _summary((frame["cls"] == "gs").to_numpy()[gs_gn], calls[gs_gn]),
            "gs_vs_all": _summary((frame["cls"] == "gs").to_numpy()[sel], calls[sel]),
        }
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = Path(__file__).resolve().parents[2] / "shared" / "data"
    parser.add_argument("--data", type=Path, default=default, help="shared data folder")
    args = parser.parse_args()
    root = args.data / "eval-only"
    result = {
        "rule": "m_sclerosed_fraction > 0.5 (ISN/RPS 2003), thresholds not tuned on these sets",
        "cmil": eval_cmil(root / "cmil-pas-sclerosis-crops"),
        "bupt": eval_bupt(root / "bupt-multistain-glomeruli"),
    }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
