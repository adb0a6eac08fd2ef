"""Evaluate the morphometry global-sclerosis call on the eval-only sets; print JSON.

Evaluation only: the eval-only images are read in place, nothing is copied, trained or tuned on them
(the thresholds are fixed in ``lnpath.analysis.lesions.MorphometryThresholds``).

* ``cmil-pas-sclerosis-crops``: 72 PAS bounding-box crops, no masks. The glomerulus mask is the
  ellipse inscribed in the crop, shrunk to 90 % (the crops are a glomerulus bounding box plus a
  little context, so the inscribed ellipse approximates the outline without tubules). µm/px is not
  recorded; the provenance estimate (0.25 µm/px, 40x) is used and crops are resampled to 0.5.
* ``bupt-multistain-glomeruli``: labelme polygons on PAS / PASM / Masson snapshots; ``gs`` (global
  sclerosis) vs ``gn`` (normal), and ``gs`` vs every other class. µm/px is not recorded: 0.4 is
  assumed for 200x snapshots (provenance: 0.3-0.5) and half that for the ten whose file name says
  400x (:func:`eval_sets.bupt_mpp`). The snapshots are under-exposed (glass ≈150/255), so each
  crop is measured against the white point (``estimate_white``) of its whole snapshot.

Nothing is fitted, calibrated or cross-validated on these sets (they carry no licence: aggregate
evaluation only). What a lab's own calibration (``lnpath train-lesions --method morphometry``)
reaches is measured on that lab's labels: the command prints its cross-validated metrics.

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
from eval_sets import BUPT_MPP_200X, CMIL_MPP, bupt_mpp
from shapely.geometry import Polygon
from skimage import io

from lnpath.analysis.lesions import MorphometryThresholds, calls_from_measurements
from lnpath.analysis.measure import (
    DEFAULT_MPP,
    MEASUREMENTS,
    estimate_white,
    measure_crop,
    rasterize,
)
from lnpath.core.errors import InputError
from lnpath.training.calibration import ellipse_mask, resample_crop
from lnpath.training.lesions import binary_metrics


def _measure(
    rgb: np.ndarray, mask: np.ndarray, mpp: float, white: np.ndarray | None = None
) -> dict[str, float]:
    rgb, mask = resample_crop(rgb, mask, mpp)
    try:
        return measure_crop(rgb, mask, DEFAULT_MPP, white=white)
    except InputError as exc:
        print(f"not measured: {exc}", file=sys.stderr)
        return dict.fromkeys(MEASUREMENTS, math.nan)


def _summary(truth: np.ndarray, table: pd.DataFrame) -> dict[str, float]:
    called = table["global_sclerosis"]
    assessed = called.notna().to_numpy()
    metrics = binary_metrics(truth[assessed], called[assessed].astype(float).to_numpy())
    metrics["not_assessed"] = int((~assessed).sum())
    frac = table["m_sclerosed_fraction"].to_numpy(dtype=float)
    ok = ~np.isnan(frac)
    metrics["auc_sclerosed_fraction"] = binary_metrics(truth[ok], frac[ok])["auc"]
    return {k: round(v, 3) if isinstance(v, float) else v for k, v in metrics.items()}


def measure_cmil(root: Path) -> pd.DataFrame:
    """One row per CMIL crop: ``glomerulus_id``, ``m_*``, ``truth``, ``patient``, ``crop``."""
    with (root / "labels.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    measured = []
    for i, row in enumerate(rows):
        label = int(row["ground_truth_globally_sclerotic"])
        folder = "globally_sclerotic" if label else "non_globally_sclerotic"
        rgb = io.imread(root / folder / row["name"])[..., :3]
        m = _measure(rgb, ellipse_mask(rgb.shape[:2]), CMIL_MPP)
        patient = row["name"].split("_PAS")[0]
        measured.append(
            {"glomerulus_id": i, **m, "truth": bool(label), "patient": patient, "crop": row["name"]}
        )
    return pd.DataFrame(measured)


def eval_cmil(root: Path, frame: pd.DataFrame | None = None) -> dict[str, object]:
    frame = measure_cmil(root) if frame is None else frame
    table = calls_from_measurements(frame, MorphometryThresholds())
    return {
        "set": "cmil-pas-sclerosis-crops",
        "mask": "inscribed ellipse (90 %)",
        "assumed_mpp": CMIL_MPP,
        "PAS": _summary(frame["truth"].to_numpy(bool), table),
    }


def _stain(name: str) -> str:
    for stain in ("PASM", "Masson", "PAS"):
        if f"-{stain}" in name:
            return stain
    return "unknown"


def measure_bupt(root: Path) -> pd.DataFrame:
    """One row per bupt polygon: ``glomerulus_id``, ``m_*``, stain, class, patient, image."""
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
            mask = rasterize(Polygon(pts), crop.shape[:2], origin=(x0, y0), scale=1.0)
            m = _measure(crop, mask, bupt_mpp(path.stem), white)
            records.append(
                {
                    "stain": _stain(path.stem),
                    "cls": shape["label"],
                    "patient": path.stem.split("-")[0],
                    "image": path.stem,
                    **m,
                }
            )
    frame = pd.DataFrame(records)
    frame["glomerulus_id"] = np.arange(len(frame))
    return frame


def eval_bupt(root: Path, frame: pd.DataFrame | None = None) -> dict[str, object]:
    frame = measure_bupt(root) if frame is None else frame
    calls = calls_from_measurements(frame, MorphometryThresholds())
    out: dict[str, object] = {
        "set": "bupt-multistain-glomeruli",
        "assumed_mpp": f"{BUPT_MPP_200X} at 200x, {BUPT_MPP_200X / 2} at 400x (file name)",
    }
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
